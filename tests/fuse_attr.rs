//! getattr/setattr through a real kernel mount: chmod, chown (32-bit ids), truncate,
//! utimensat (nanoseconds, before 1970, after 2038, UTIME_NOW, UTIME_OMIT), time
//! updates, setuid/setgid clearing, sticky and setgid directories, caller ownership.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{chmod, expect_errno, mode_of, q, sh_as, times, Mount, USER_A, USER_B};
use nix::errno::Errno;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{chown, Gid, Uid};

fn set_times(p: &Path, atime: TimeSpec, mtime: TimeSpec) {
    utimensat(None, p, &atime, &mtime, UtimensatFlags::FollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[test]
fn chmod_sets_permission_bits() {
    let mut m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    for mode in [0o640, 0o000, 0o777, 0o4755, 0o2755, 0o1644, 0o7777, 0o600] {
        chmod(&f, mode);
        assert_eq!(mode_of(&f) & 0o7777, mode, "mode after chmod {mode:o}");
        assert_eq!(mode_of(&f) & 0o170000, 0o100000, "still a regular file");
    }
    let d = m.join("d");
    fs::create_dir(&d).expect("mkdir");
    chmod(&d, 0o1777);
    assert_eq!(mode_of(&d) & 0o7777, 0o1777);
    assert_eq!(mode_of(&d) & 0o170000, 0o040000, "still a directory");
    m.remount();
    assert_eq!(mode_of(&f) & 0o7777, 0o600);
    assert_eq!(mode_of(&d) & 0o7777, 0o1777);
}

#[test]
fn chown_to_large_uid_gid_roundtrips() {
    let mut m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    chown(
        &f,
        Some(Uid::from_raw(4_000_000_000)),
        Some(Gid::from_raw(4_000_000_001)),
    )
    .expect("chown");
    let md = fs::metadata(&f).expect("stat");
    assert_eq!((md.uid(), md.gid()), (4_000_000_000, 4_000_000_001));
    // -1 keeps the other field.
    chown(&f, Some(Uid::from_raw(123)), None).expect("chown uid only");
    let md = fs::metadata(&f).expect("stat");
    assert_eq!((md.uid(), md.gid()), (123, 4_000_000_001));
    chown(&f, None, Some(Gid::from_raw(4_294_967_294))).expect("chown gid only");
    let md = fs::metadata(&f).expect("stat");
    assert_eq!((md.uid(), md.gid()), (123, 4_294_967_294));
    // Symlinks are owned too (lchown).
    std::os::unix::fs::symlink("f", m.join("l")).expect("symlink");
    std::os::unix::fs::lchown(m.join("l"), Some(3_000_000_000), Some(7)).expect("lchown");
    m.remount();
    let md = fs::metadata(&f).expect("stat after remount");
    assert_eq!((md.uid(), md.gid()), (123, 4_294_967_294));
    let lmd = fs::symlink_metadata(m.join("l")).expect("lstat");
    assert_eq!((lmd.uid(), lmd.gid()), (3_000_000_000, 7));
}

#[test]
fn truncate_down_then_up_zero_fills() {
    for block in [Some(4096u64), None] {
        let m = match block {
            Some(b) => Mount::with_block_size(b),
            None => Mount::new(),
        };
        let p = m.join("t");
        let data = common::random_bytes(9, 3 * 65536 + 1000);
        fs::write(&p, &data).expect("write");
        // Down to an offset inside a block, then up past the old end.
        nix::unistd::truncate(&p, 5000).expect("truncate down");
        assert_eq!(fs::metadata(&p).expect("stat").len(), 5000);
        nix::unistd::truncate(&p, 300_000).expect("truncate up");
        let got = fs::read(&p).expect("read");
        assert_eq!(
            got.len(),
            300_000,
            "size after truncate up (block {block:?})"
        );
        assert_eq!(&got[..5000], &data[..5000], "kept prefix (block {block:?})");
        let nonzero = got[5000..].iter().position(|&b| b != 0);
        assert_eq!(
            nonzero, None,
            "old bytes resurfaced after truncate (block {block:?})"
        );
        // Truncate to zero and grow again.
        nix::unistd::truncate(&p, 0).expect("truncate 0");
        nix::unistd::truncate(&p, 70_000).expect("truncate up");
        assert!(
            fs::read(&p).expect("read").iter().all(|&b| b == 0),
            "zeros after 0 and up"
        );
    }
}

#[test]
fn ftruncate_on_open_file_zero_fills() {
    let mut m = Mount::with_block_size(4096);
    let p = m.join("t");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("open");
    f.write_all_at(&[0xAA; 10_000], 0).expect("write");
    f.set_len(4100).expect("ftruncate down");
    f.set_len(12_000).expect("ftruncate up");
    let mut buf = vec![0u8; 12_000];
    f.read_exact_at(&mut buf, 0).expect("read");
    assert!(buf[..4100].iter().all(|&b| b == 0xAA), "prefix kept");
    assert_eq!(buf[4100..].iter().position(|&b| b != 0), None, "tail zero");
    // Writing after shrinking does not bring back the old bytes either.
    f.write_all_at(b"Z", 11_000).expect("write");
    drop(f);
    m.remount();
    let got = fs::read(&p).expect("read");
    assert_eq!(got.len(), 12_000);
    assert!(got[..4100].iter().all(|&b| b == 0xAA));
    assert!(
        got[4100..11_000].iter().all(|&b| b == 0),
        "zeros before Z after remount"
    );
    assert_eq!(got[11_000], b'Z');
}

#[test]
fn utimensat_nanoseconds_roundtrip() {
    let mut m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    set_times(
        &f,
        TimeSpec::new(1_234_567_890, 123_456_789),
        TimeSpec::new(1_500_000_000, 987_654_321),
    );
    let check = |f: &Path| {
        let (a, mt, _) = times(f);
        assert_eq!(a, (1_234_567_890, 123_456_789), "atime");
        assert_eq!(mt, (1_500_000_000, 987_654_321), "mtime");
    };
    check(&f);
    // On a symlink itself, without following it.
    std::os::unix::fs::symlink("f", m.join("l")).expect("symlink");
    utimensat(
        None,
        &m.join("l"),
        &TimeSpec::new(1_000_000_001, 1),
        &TimeSpec::new(1_000_000_002, 999_999_999),
        UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat nofollow");
    let (la, lm, _) = times(&m.join("l"));
    assert_eq!((la, lm), ((1_000_000_001, 1), (1_000_000_002, 999_999_999)));
    check(&f);
    m.remount();
    check(&f);
    assert_eq!(
        times(&m.join("l")).1,
        (1_000_000_002, 999_999_999),
        "symlink mtime after remount"
    );
}

#[test]
fn utimensat_before_1970_roundtrips() {
    let mut m = Mount::new();
    let f = m.join("old");
    fs::write(&f, b"x").expect("write");
    set_times(
        &f,
        TimeSpec::new(-1, 500_000_000),
        TimeSpec::new(-2_000_000_000, 123),
    );
    assert_eq!(times(&f).0, (-1, 500_000_000), "atime just before 1970");
    assert_eq!(times(&f).1, (-2_000_000_000, 123), "mtime 1906");
    m.remount();
    assert_eq!(
        times(&f).1,
        (-2_000_000_000, 123),
        "mtime 1906 after remount"
    );
    let out = common::sh(m.path(), "stat -c %Y old");
    assert_eq!(out.assert_success().stdout.trim(), "-2000000000");
}

#[test]
fn utimensat_after_2038_roundtrips() {
    let mut m = Mount::new();
    let f = m.join("future");
    fs::write(&f, b"x").expect("write");
    // 2038-01-19T03:14:08Z is 2^31; 2100 and 2445 are well past it (2445 is ext4's limit).
    set_times(
        &f,
        TimeSpec::new(2_147_483_648, 1),
        TimeSpec::new(4_102_444_800, 999_999_999),
    );
    assert_eq!(times(&f).0, (2_147_483_648, 1), "atime 2^31");
    assert_eq!(times(&f).1, (4_102_444_800, 999_999_999), "mtime 2100");
    set_times(&f, TimeSpec::UTIME_OMIT, TimeSpec::new(15_000_000_000, 5));
    assert_eq!(times(&f).1, (15_000_000_000, 5), "mtime in 2445");
    m.remount();
    assert_eq!(times(&f).0, (2_147_483_648, 1), "atime after remount");
    assert_eq!(times(&f).1, (15_000_000_000, 5), "mtime after remount");
}

#[test]
fn utimensat_utime_now_sets_current_time() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    set_times(
        &f,
        TimeSpec::new(1_000_000_000, 0),
        TimeSpec::new(1_000_000_000, 0),
    );
    let before = now_secs();
    set_times(&f, TimeSpec::UTIME_NOW, TimeSpec::UTIME_NOW);
    let after = now_secs();
    let (a, mt, c) = times(&f);
    for (name, t) in [("atime", a), ("mtime", mt), ("ctime", c)] {
        assert!(
            t.0 >= before - 1 && t.0 <= after + 1,
            "{name} {t:?} not now ({before}..{after})"
        );
    }
    // A writer who is not the owner may set "now" (utime(NULL) rule) ...
    let d = m.join("shared");
    common::mkdir_mode(&d, 0o777);
    let g = d.join("g");
    fs::write(&g, b"x").expect("write");
    chmod(&g, 0o666);
    set_times(
        &g,
        TimeSpec::new(1_000_000_000, 0),
        TimeSpec::new(1_000_000_000, 0),
    );
    sh_as(USER_A, USER_A, &format!("touch {}", q(&g))).assert_success();
    assert!(
        times(&g).1 .0 >= before - 1,
        "touch by a writer did not set now"
    );
    // ... but not an explicit time.
    let out = sh_as(USER_A, USER_A, &format!("touch -d @1000 {}", q(&g)));
    assert!(
        !out.success(),
        "non-owner set an explicit mtime: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("Operation not permitted"),
        "expected EPERM: {}",
        out.describe()
    );
}

#[test]
fn utimensat_utime_omit_leaves_time_unchanged() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    set_times(
        &f,
        TimeSpec::new(1_111_111_111, 111),
        TimeSpec::new(1_222_222_222, 222),
    );
    set_times(&f, TimeSpec::UTIME_OMIT, TimeSpec::new(1_333_333_333, 333));
    assert_eq!(
        times(&f).0,
        (1_111_111_111, 111),
        "atime kept with UTIME_OMIT"
    );
    assert_eq!(times(&f).1, (1_333_333_333, 333), "mtime set");
    set_times(&f, TimeSpec::new(1_444_444_444, 444), TimeSpec::UTIME_OMIT);
    assert_eq!(times(&f).0, (1_444_444_444, 444), "atime set");
    assert_eq!(
        times(&f).1,
        (1_333_333_333, 333),
        "mtime kept with UTIME_OMIT"
    );
    let (_, _, c0) = times(&f);
    sleep(Duration::from_millis(20));
    set_times(&f, TimeSpec::UTIME_OMIT, TimeSpec::UTIME_OMIT);
    assert_eq!(times(&f).0, (1_444_444_444, 444), "both omitted: atime");
    assert_eq!(times(&f).1, (1_333_333_333, 333), "both omitted: mtime");
    assert!(times(&f).2 >= c0);
}

#[test]
fn write_updates_mtime_and_ctime() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"first").expect("write");
    let (_, m0, c0) = times(&f);
    assert!(
        (m0.0 - now_secs()).abs() <= 5,
        "new file mtime {m0:?} is not now"
    );
    sleep(Duration::from_millis(50));
    OpenOptions::new()
        .append(true)
        .open(&f)
        .expect("open")
        .write_all(b" second")
        .expect("write");
    let (_, m1, c1) = times(&f);
    assert!(m1 > m0, "mtime not advanced by write: {m0:?} -> {m1:?}");
    assert!(c1 > c0, "ctime not advanced by write: {c0:?} -> {c1:?}");
    sleep(Duration::from_millis(50));
    nix::unistd::truncate(&f, 3).expect("truncate");
    let (_, m2, c2) = times(&f);
    assert!(m2 > m1 && c2 > c1, "truncate must change mtime and ctime");
}

#[test]
fn chmod_changes_ctime_only() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    let (a0, m0, c0) = times(&f);
    sleep(Duration::from_millis(50));
    chmod(&f, 0o600);
    let (a1, m1, c1) = times(&f);
    assert_eq!(m1, m0, "chmod changed mtime");
    assert_eq!(a1, a0, "chmod changed atime");
    assert!(c1 > c0, "chmod did not change ctime: {c0:?} -> {c1:?}");
    sleep(Duration::from_millis(50));
    chown(&f, Some(Uid::from_raw(5)), None).expect("chown");
    let (_, m2, c2) = times(&f);
    assert_eq!(m2, m0, "chown changed mtime");
    assert!(c2 > c1, "chown did not change ctime");
}

#[test]
fn create_and_unlink_update_parent_mtime() {
    let m = Mount::new();
    let d = m.join("d");
    fs::create_dir(&d).expect("mkdir");
    let (_, m0, c0) = times(&d);
    sleep(Duration::from_millis(50));
    fs::write(d.join("f"), b"x").expect("create");
    let (_, m1, c1) = times(&d);
    assert!(
        m1 > m0 && c1 > c0,
        "create did not update parent mtime/ctime"
    );
    sleep(Duration::from_millis(50));
    let (_, _, fc) = times(&d.join("f"));
    fs::hard_link(d.join("f"), d.join("g")).expect("link");
    assert!(
        times(&d.join("f")).2 > fc,
        "link did not update the file's ctime"
    );
    let (_, m2, c2) = times(&d);
    assert!(m2 > m1 && c2 > c1, "link did not update parent mtime/ctime");
    sleep(Duration::from_millis(50));
    fs::remove_file(d.join("f")).expect("unlink");
    let (_, m3, c3) = times(&d);
    assert!(
        m3 > m2 && c3 > c2,
        "unlink did not update parent mtime/ctime"
    );
}

#[test]
fn write_by_non_owner_clears_setuid_setgid() {
    let m = Mount::new();
    let d = m.join("shared");
    common::mkdir_mode(&d, 0o777);
    let f = d.join("suid");
    fs::write(&f, b"orig").expect("write");
    chmod(&f, 0o6777);
    assert_eq!(mode_of(&f) & 0o7777, 0o6777);
    sh_as(USER_A, USER_A, &format!("printf more >> {}", q(&f))).assert_success();
    assert_eq!(
        fs::read(&f).expect("read"),
        b"origmore",
        "non-owner's write landed"
    );
    assert_eq!(
        mode_of(&f) & 0o7777,
        0o0777,
        "setuid/setgid not cleared by a non-owner's write: mode {:o}",
        mode_of(&f)
    );
    // The same through O_TRUNC by a non-owner.
    let g = d.join("sgid");
    fs::write(&g, b"orig").expect("write");
    chmod(&g, 0o6777);
    sh_as(USER_A, USER_A, &format!(": > {}", q(&g))).assert_success();
    assert_eq!(fs::metadata(&g).expect("stat").len(), 0);
    assert_eq!(
        mode_of(&g) & 0o7777,
        0o0777,
        "setuid/setgid not cleared by a non-owner's truncate: mode {:o}",
        mode_of(&g)
    );
}

#[test]
fn chown_by_root_clears_setuid_setgid() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    chmod(&f, 0o6755);
    chown(&f, Some(Uid::from_raw(USER_A)), Some(Gid::from_raw(USER_A))).expect("chown");
    assert_eq!(
        mode_of(&f) & 0o7777,
        0o0755,
        "chown of a regular file must clear setuid and (group-exec) setgid"
    );
}

#[test]
fn sticky_dir_refuses_deleting_other_users_file() {
    let m = Mount::new();
    let d = m.join("tmp");
    common::mkdir_mode(&d, 0o1777);
    let f = d.join("mine");
    sh_as(USER_A, USER_A, &format!("printf x > {}", q(&f))).assert_success();
    let md = fs::metadata(&f).expect("stat");
    assert_eq!(
        (md.uid(), md.gid()),
        (USER_A, USER_A),
        "file owned by its creator"
    );
    let out = sh_as(USER_B, USER_B, &format!("rm -f {}", q(&f)));
    assert!(
        !out.success(),
        "another user deleted a file in a sticky dir"
    );
    assert!(
        out.stderr.contains("Operation not permitted") || out.stderr.contains("Permission denied"),
        "expected EPERM or EACCES: {}",
        out.describe()
    );
    let out = sh_as(
        USER_B,
        USER_B,
        &format!("mv {} {}", q(&f), q(&d.join("stolen"))),
    );
    assert!(
        !out.success(),
        "another user renamed a file in a sticky dir"
    );
    assert!(f.exists(), "file is gone");
    sh_as(USER_A, USER_A, &format!("rm {}", q(&f))).assert_success();
    assert!(!f.exists(), "the owner could not delete the file");
}

#[test]
fn create_by_other_user_is_owned_by_caller() {
    let mut m = Mount::new();
    let d = m.join("pub");
    common::mkdir_mode(&d, 0o777);
    sh_as(
        USER_A,
        2000,
        &format!(
            "cd {} && printf x > f && mkdir sub && ln -s f l && mkfifo p",
            q(&d)
        ),
    )
    .assert_success();
    m.remount();
    for n in ["f", "sub", "l", "p"] {
        let md = fs::symlink_metadata(d.join(n)).expect("lstat");
        assert_eq!((md.uid(), md.gid()), (USER_A, 2000), "owner of {n}");
    }
    // And the new user cannot write what it may not.
    let out = sh_as(USER_B, USER_B, &format!("printf y >> {}", q(&d.join("f"))));
    assert!(
        !out.success(),
        "uid {USER_B} wrote a 0644 file of uid {USER_A}"
    );
}

#[test]
fn create_in_setgid_dir_inherits_group() {
    let m = Mount::new();
    let d = m.join("team");
    fs::create_dir(&d).expect("mkdir");
    chown(&d, None, Some(Gid::from_raw(5000))).expect("chgrp");
    chmod(&d, 0o2777);
    fs::write(d.join("f"), b"x").expect("create");
    assert_eq!(
        fs::metadata(d.join("f")).expect("stat").gid(),
        5000,
        "file group"
    );
    fs::create_dir(d.join("sub")).expect("mkdir");
    let md = fs::metadata(d.join("sub")).expect("stat");
    assert_eq!(md.gid(), 5000, "subdir group");
    assert_ne!(
        md.mode() & 0o2000,
        0,
        "subdir inherits setgid: {:o}",
        md.mode()
    );
    sh_as(USER_A, USER_A, &format!("printf x > {}", q(&d.join("g")))).assert_success();
    let md = fs::metadata(d.join("g")).expect("stat");
    assert_eq!(
        (md.uid(), md.gid()),
        (USER_A, 5000),
        "other user's file group"
    );
}

#[test]
fn write_by_owner_without_permission_fails_eacces() {
    let m = Mount::new();
    let d = m.join("pub");
    common::mkdir_mode(&d, 0o777);
    let f = d.join("ro");
    sh_as(
        USER_A,
        USER_A,
        &format!("printf x > {} && chmod 0444 {}", q(&f), q(&f)),
    )
    .assert_success();
    let out = sh_as(USER_A, USER_A, &format!("printf y >> {}", q(&f)));
    assert!(!out.success(), "write to own 0444 file succeeded");
    assert!(
        out.stderr.contains("Permission denied"),
        "expected EACCES: {}",
        out.describe()
    );
    // Root still can (CAP_DAC_OVERRIDE) and the owner can chmod.
    let mut h = OpenOptions::new()
        .append(true)
        .open(&f)
        .expect("root opens 0444 for write");
    h.write_all(b"r").expect("root write");
    drop(h);
    sh_as(
        USER_A,
        USER_A,
        &format!("chmod 0644 {} && printf z >> {}", q(&f), q(&f)),
    )
    .assert_success();
    assert_eq!(fs::read(&f).expect("read"), b"xrz");
    let out = sh_as(USER_B, USER_B, &format!("chmod 0777 {}", q(&f)));
    assert!(!out.success(), "non-owner chmod succeeded");
    expect_errno(File::open(d.join("none")), Errno::ENOENT, "open missing");
}
