//! Contents of snapshot views through a real kernel mount: read-only (EROFS), what is
//! preserved (owner, mode, times, xattrs, symlinks, hard links, holes, inode numbers),
//! point-in-time capture, restore with `cp -a`, `diff -r` against a copy, and deletion
//! (open descriptors, space reclaim). The `.snapshots` gestures are in `fuse_snapshots.rs`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{chown, lchown, symlink, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    assert_same_lines, chmod, expect_errno, expect_errno_any, q, random_bytes, sh, sh_as,
    stat_lines, AsErrno, Mount, USER_A, USER_B,
};
use nix::errno::Errno::{self, EBADF, EINVAL, EIO, ENOENT, ENOTEMPTY, EROFS, ESTALE, EXDEV};
use nix::fcntl::{renameat2, RenameFlags};
use nix::sys::stat::Mode;
use rustix::fs::{SeekFrom, Timespec, Timestamps, XattrFlags, CWD};

const MIB: usize = 1 << 20;

/// `mkdir .snapshots/ALIAS`; returns the snapshot's root directory (by name).
fn take(m: &Mount, alias: &str) -> PathBuf {
    let p = m.join(".snapshots").join(alias);
    fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::getxattr(&p, "user.snapfs.name", &mut buf[..]).expect("snapshot name");
    m.join(".snapshots")
        .join(std::str::from_utf8(&buf[..n]).expect("utf8"))
}

fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> rustix::io::Result<()> {
    let ts = |(s, n): (i64, i64)| Timespec {
        tv_sec: s,
        tv_nsec: n,
    };
    let t = Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    };
    rustix::fs::utimensat(CWD, p, &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
}

fn setx(p: &Path, name: &str, v: &[u8]) -> rustix::io::Result<()> {
    rustix::fs::setxattr(p, name, v, XattrFlags::empty())
}

/// `getfattr -R -h -d -m -` of `root` (relative paths), without snapfs's own attributes.
fn xattr_dump(root: &Path) -> Vec<String> {
    let out = sh(root, "getfattr -R -h -d -m - . 2>/dev/null");
    out.assert_success();
    let mut v: Vec<String> = Vec::new();
    let mut file = String::new();
    for l in out.stdout.lines() {
        if let Some(f) = l.strip_prefix("# file: ") {
            file = f.to_string();
        } else if !l.is_empty() && !l.starts_with("user.snapfs.") {
            v.push(format!("{file}: {l}"));
        }
    }
    v.sort();
    v
}

/// A tree with the usual variety (no special files, so `diff -r` can read it all).
fn build_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("etc/conf.d")).expect("mkdir");
    fs::create_dir_all(root.join("var/lib/empty")).expect("mkdir");
    fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").expect("write");
    fs::write(root.join("etc/conf.d/a.conf"), b"a = 1\n").expect("write");
    fs::write(root.join("etc/empty"), b"").expect("write");
    fs::write(root.join("usr/bin/tool"), random_bytes(seed, 3 * MIB + 123)).expect("write");
    fs::write(root.join("var/lib/db"), random_bytes(seed + 1, 70_001)).expect("write");
    chmod(&root.join("usr/bin/tool"), 0o755);
    chmod(&root.join("var/lib/db"), 0o600);
    symlink("../usr/bin/tool", root.join("etc/tool-link")).expect("symlink");
    symlink("does/not/exist", root.join("etc/dangling")).expect("symlink");
    fs::hard_link(root.join("etc/hosts"), root.join("var/hosts.hard")).expect("link");
    for i in 0..40 {
        fs::write(root.join(format!("var/lib/f{i:02}")), format!("file {i}\n")).expect("write");
    }
}

/// Runs `diff -r --no-dereference a b`; returns its output (empty when equal).
fn diff(a: &Path, b: &Path) -> String {
    let out = sh(
        Path::new("/"),
        &format!("diff -r --no-dereference {} {}", q(a), q(b)),
    );
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "diff failed: {}",
        out.describe()
    );
    out.stdout + &out.stderr
}

/// The errno of a failed call; `None` if it succeeded.
fn err<T, E: AsErrno>(r: Result<T, E>) -> Option<Errno> {
    r.err().map(|e| e.errno())
}

/// Checks every `(what, errno got, errnos allowed)` row and reports all mismatches at once.
#[track_caller]
fn check(rows: &[(&str, Option<Errno>, &[Errno])]) {
    let bad: Vec<String> = rows
        .iter()
        .filter(|(_, got, ok)| !got.is_some_and(|g| ok.contains(&g)))
        .map(|(what, got, ok)| format!("{what}: expected {ok:?}, got {got:?} (None = success)"))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

const STAT_FMT: &str = "%n %f %u %g %s %h %b %x %y %z";

#[test]
fn write_in_snapshot_fails_erofs() {
    let m = Mount::new();
    fs::write(m.join("f"), b"content").expect("write");
    fs::write(m.join("open"), b"anyone").expect("write");
    chmod(&m.join("open"), 0o666);
    let s = take(&m, "a");
    let f = s.join("f");
    let o = || OpenOptions::new();
    #[rustfmt::skip]
    check(&[
        ("O_WRONLY", err(o().write(true).open(&f)), &[EROFS]),
        ("O_RDWR", err(o().read(true).write(true).open(&f)), &[EROFS]),
        ("O_APPEND", err(o().append(true).open(&f)), &[EROFS]),
        ("O_TRUNC", err(o().write(true).truncate(true).open(&f)), &[EROFS]),
    ]);
    let out = sh_as(
        USER_A,
        USER_A,
        &format!("printf x >> {}", q(&s.join("open"))),
    );
    assert!(
        !out.success() && out.stderr.contains("Read-only file system"),
        "a 0666 file in a snapshot written by uid {USER_A}: {}",
        out.describe()
    );
    assert_eq!(fs::read(&f).expect("read"), b"content");
    assert_eq!(fs::read(s.join("open")).expect("read"), b"anyone");
}

#[test]
fn create_in_snapshot_fails_erofs() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    fs::write(m.join("f"), b"x").expect("write");
    let s = take(&m, "a");
    let d = s.join("d");
    let create = OpenOptions::new().write(true).create(true).clone();
    let fifo = Mode::from_bits_truncate(0o644);
    #[rustfmt::skip]
    check(&[
        ("create", err(create.open(d.join("new"))), &[EROFS]),
        ("mkdir", err(fs::create_dir(d.join("sub"))), &[EROFS]),
        ("symlink", err(symlink("x", d.join("sl"))), &[EROFS]),
        ("mknod fifo", err(nix::unistd::mkfifo(&d.join("fifo"), fifo)), &[EROFS]),
        ("link within", err(fs::hard_link(s.join("f"), d.join("l"))), &[EROFS]),
        ("link head->snap", err(fs::hard_link(m.join("f"), d.join("l"))), &[EROFS]),
        // Into the head: a cross-view link, not a write in the snapshot.
        ("link snap->head", err(fs::hard_link(s.join("f"), m.join("l"))), &[EXDEV, EROFS]),
    ]);
    expect_errno(fs::symlink_metadata(m.join("l")), ENOENT, "no link in head");
    assert!(
        fs::read_dir(&d).expect("readdir").next().is_none(),
        "d still empty"
    );
}

#[test]
fn unlink_or_rmdir_in_snapshot_fails_erofs() {
    let m = Mount::new();
    fs::create_dir_all(m.join("d/empty")).expect("mkdir");
    fs::write(m.join("d/f"), b"x").expect("write");
    symlink("f", m.join("d/sl")).expect("symlink");
    let s = take(&m, "a");
    #[rustfmt::skip]
    check(&[
        ("unlink file", err(fs::remove_file(s.join("d/f"))), &[EROFS]),
        ("unlink symlink", err(fs::remove_file(s.join("d/sl"))), &[EROFS]),
        ("rmdir empty dir", err(fs::remove_dir(s.join("d/empty"))), &[EROFS]),
        ("rmdir non-empty dir", err(fs::remove_dir(s.join("d"))), &[EROFS, ENOTEMPTY]),
    ]);
    let out = sh(&s, "rm -rf d");
    assert!(!out.success(), "rm -rf in a snapshot: {}", out.describe());
    assert_eq!(fs::read(s.join("d/f")).expect("read"), b"x");
    assert!(fs::metadata(s.join("d/empty")).expect("stat").is_dir());
}

#[test]
fn rename_within_snapshot_fails_erofs() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    fs::write(m.join("f"), b"1").expect("write");
    fs::write(m.join("g"), b"2").expect("write");
    let s = take(&m, "a");
    let (f, g) = (s.join("f"), s.join("g"));
    let exchange = RenameFlags::RENAME_EXCHANGE;
    #[rustfmt::skip]
    check(&[
        ("rename f h", err(fs::rename(&f, s.join("h"))), &[EROFS]),
        ("rename onto g", err(fs::rename(&f, &g)), &[EROFS]),
        ("rename into d", err(fs::rename(&f, s.join("d/f"))), &[EROFS]),
        ("rename dir", err(fs::rename(s.join("d"), s.join("e"))), &[EROFS]),
        ("exchange", err(renameat2(None, &f, None, &g, exchange)), &[EROFS]),
    ]);
    assert_eq!(fs::read(&f).expect("read"), b"1");
    assert_eq!(fs::read(&g).expect("read"), b"2");
}

#[test]
fn rename_into_snapshot_dir_fails_erofs() {
    // One mount, two views: EROFS (a write in the snapshot) or EXDEV (another view) are both
    // fair answers; the point is that nothing moves.
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    fs::write(m.join("f"), b"head").expect("write");
    let s = take(&m, "a");
    #[rustfmt::skip]
    check(&[
        ("head file -> snap", err(fs::rename(m.join("f"), s.join("d/f"))), &[EROFS, EXDEV]),
        ("head dir -> snap", err(fs::rename(m.join("d"), s.join("d2"))), &[EROFS, EXDEV]),
        ("onto snapshot file", err(fs::rename(m.join("f"), s.join("f"))), &[EROFS, EXDEV]),
    ]);
    let out = sh(m.path(), &format!("mv f {}", q(&s.join("d/"))));
    assert!(!out.success(), "mv into a snapshot: {}", out.describe());
    assert_eq!(fs::read(m.join("f")).expect("head file stays"), b"head");
    assert!(fs::read_dir(s.join("d")).expect("readdir").next().is_none());
}

#[test]
fn rename_out_of_snapshot_dir_fails_and_keeps_source() {
    let m = Mount::new();
    fs::write(m.join("f"), b"old").expect("write");
    let a = take(&m, "a");
    let b = take(&m, "b");
    #[rustfmt::skip]
    check(&[
        ("snap -> head", err(fs::rename(a.join("f"), m.join("g"))), &[EXDEV, EROFS]),
        ("snap a -> snap b", err(fs::rename(a.join("f"), b.join("g"))), &[EXDEV, EROFS]),
    ]);
    // `mv` falls back to copy + unlink: the unlink in the snapshot fails.
    let out = sh(m.path(), &format!("mv {} g2", q(&a.join("f"))));
    assert!(!out.success(), "mv out of a snapshot: {}", out.describe());
    assert_eq!(fs::read(a.join("f")).expect("source stays"), b"old");
    expect_errno(
        fs::metadata(m.join("g")),
        ENOENT,
        "nothing renamed into head",
    );
}

#[test]
fn setattr_in_snapshot_fails_erofs() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    fs::write(m.join("d/f"), b"12345").expect("write");
    symlink("f", m.join("d/sl")).expect("symlink");
    let s = take(&m, "a");
    let before = stat_lines(&s, STAT_FMT);
    for rel in ["d/f", "d", "."] {
        let p = s.join(rel);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::Permissions::from_mode(0o700);
        #[rustfmt::skip]
        check(&[
            (&format!("chmod {rel}"), err(fs::set_permissions(&p, mode)), &[EROFS]),
            (&format!("chown {rel}"), err(chown(&p, Some(USER_A), None)), &[EROFS]),
            (&format!("chgrp {rel}"), err(chown(&p, None, Some(USER_B))), &[EROFS]),
            (&format!("utimes {rel}"), err(set_times(&p, (1, 0), (2, 0))), &[EROFS]),
        ]);
    }
    let ro = File::open(s.join("d/f")).expect("open read-only");
    #[rustfmt::skip]
    check(&[
        ("lchown symlink", err(lchown(s.join("d/sl"), Some(USER_A), None)), &[EROFS]),
        ("truncate(path)", err(nix::unistd::truncate(&s.join("d/f"), 1)), &[EROFS]),
        ("ftruncate read-only fd", err(ro.set_len(1)), &[EROFS, EINVAL, EBADF]),
    ]);
    let out = sh(&s, "touch d/f");
    assert!(!out.success(), "touch in a snapshot: {}", out.describe());
    assert_same_lines("snapshot attributes", &before, &stat_lines(&s, STAT_FMT));
    assert_eq!(fs::read(s.join("d/f")).expect("read"), b"12345");
}

#[test]
fn xattr_change_in_snapshot_fails_erofs() {
    let m = Mount::new();
    fs::write(m.join("f"), b"x").expect("write");
    fs::create_dir(m.join("d")).expect("mkdir");
    setx(&m.join("f"), "user.k", b"v").expect("setxattr");
    let s = take(&m, "a");
    let f = s.join("f");
    #[rustfmt::skip]
    check(&[
        ("setxattr new", err(setx(&f, "user.new", b"1")), &[EROFS]),
        ("setxattr replace", err(setx(&f, "user.k", b"2")), &[EROFS]),
        ("setxattr on a dir", err(setx(&s.join("d"), "user.k", b"3")), &[EROFS]),
        ("removexattr", err(rustix::fs::removexattr(&f, "user.k")), &[EROFS]),
    ]);
    let out = sh(&s, "setfattr -n user.x -v 1 f");
    assert!(!out.success(), "setfattr in a snapshot: {}", out.describe());
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(&f, "user.k", &mut buf[..]).expect("getxattr");
    assert_eq!(&buf[..n], b"v");
}

#[test]
fn read_in_snapshot_follows_file_modes() {
    let m = Mount::new();
    fs::write(m.join("secret"), b"root only").expect("write");
    chmod(&m.join("secret"), 0o600);
    fs::write(m.join("public"), b"everyone").expect("write");
    fs::write(m.join("mine"), b"user a").expect("write");
    chown(m.join("mine"), Some(USER_A), Some(USER_A)).expect("chown");
    chmod(&m.join("mine"), 0o600);
    fs::create_dir(m.join("private")).expect("mkdir");
    fs::write(m.join("private/x"), b"x").expect("write");
    chmod(&m.join("private"), 0o700);
    let s = take(&m, "a");
    let cat = |uid: u32, rel: &str| sh_as(uid, uid, &format!("cat {}", q(&s.join(rel))));
    let out = cat(USER_A, "secret");
    assert!(
        !out.success() && out.stderr.contains("Permission denied"),
        "uid {USER_A} read a 0600 root file in a snapshot: {}",
        out.describe()
    );
    let out = sh_as(USER_A, USER_A, &format!("ls {}", q(&s.join("private"))));
    assert!(
        !out.success(),
        "uid {USER_A} listed a 0700 root dir: {}",
        out.describe()
    );
    assert_eq!(cat(USER_A, "public").assert_success().stdout, "everyone");
    assert_eq!(cat(USER_A, "mine").assert_success().stdout, "user a");
    assert!(
        !cat(USER_B, "mine").success(),
        "uid {USER_B} read a 0600 file of {USER_A}"
    );
    assert_eq!(
        fs::read(s.join("secret")).expect("root reads"),
        b"root only"
    );
}

#[test]
fn snapshot_preserves_owner_mode_times_xattrs() {
    let m = Mount::new();
    let t = m.join("t");
    build_tree(&t, 1);
    chown(t.join("etc/hosts"), Some(USER_A), Some(USER_B)).expect("chown");
    chmod(&t.join("etc/hosts"), 0o640);
    chown(t.join("usr/bin/tool"), Some(USER_A), Some(USER_A)).expect("chown");
    chmod(&t.join("usr/bin/tool"), 0o4755);
    chown(t.join("var"), Some(USER_B), Some(USER_A)).expect("chown");
    chmod(&t.join("var"), 0o1770);
    lchown(t.join("etc/dangling"), Some(USER_B), Some(USER_B)).expect("lchown");
    setx(&t.join("etc/hosts"), "user.mime", b"text/plain").expect("setxattr");
    setx(&t.join("var/lib"), "user.dir", b"\x00\x01binary").expect("setxattr");
    setx(&t.join("var/lib/db"), "trusted.secret", b"root").expect("setxattr");
    nix::unistd::mkfifo(&t.join("fifo"), Mode::from_bits_truncate(0o620)).expect("mkfifo");
    set_times(
        &t.join("etc/conf.d/a.conf"),
        (1_000_000_000, 1),
        (1_200_000_000, 999_999_999),
    )
    .expect("utimes");
    set_times(&t.join("etc/dangling"), (5, 0), (6, 7)).expect("utimes symlink");
    set_times(
        &t.join("etc/conf.d"),
        (1_500_000_000, 0),
        (1_400_000_000, 5),
    )
    .expect("utimes");
    let head_stat = stat_lines(&t, STAT_FMT);
    let head_x = xattr_dump(&t);
    let snap = take(&m, "a").join("t");
    assert_same_lines(
        "snapshot vs head at mkdir",
        &head_stat,
        &stat_lines(&snap, STAT_FMT),
    );
    assert_eq!(xattr_dump(&snap), head_x, "xattrs");
    assert!(head_x.len() >= 3, "xattrs captured: {head_x:?}");
    // Changing the head changes nothing in the snapshot.
    chmod(&t.join("etc/hosts"), 0o600);
    chown(t.join("var"), Some(0), Some(0)).expect("chown");
    setx(&t.join("etc/hosts"), "user.mime", b"changed").expect("setxattr");
    rustix::fs::removexattr(t.join("var/lib"), "user.dir").expect("removexattr");
    set_times(&t.join("etc/conf.d/a.conf"), (7, 7), (8, 8)).expect("utimes");
    assert_ne!(stat_lines(&t, STAT_FMT), head_stat, "the head did change");
    assert_same_lines(
        "snapshot after head changes",
        &head_stat,
        &stat_lines(&snap, STAT_FMT),
    );
    assert_eq!(xattr_dump(&snap), head_x, "xattrs after head changes");
}

#[test]
fn snapshot_preserves_symlinks_hardlinks_and_holes() {
    let m = Mount::new();
    fs::write(m.join("f"), b"linked").expect("write");
    fs::hard_link(m.join("f"), m.join("f2")).expect("link");
    symlink("f", m.join("sl")).expect("symlink");
    let sparse = m.join("sparse");
    let fd = File::create(&sparse).expect("create");
    fd.write_all_at(b"start", 0).expect("write");
    let data = random_bytes(9, MIB);
    fd.write_all_at(&data, 64 * MIB as u64).expect("write far");
    drop(fd);
    let s = take(&m, "a");
    assert_eq!(
        fs::read_link(s.join("sl")).expect("readlink"),
        Path::new("f")
    );
    let (a, b) = (
        fs::metadata(s.join("f")).expect("stat"),
        fs::metadata(s.join("f2")).expect("stat"),
    );
    assert_eq!(
        a.ino(),
        b.ino(),
        "two links of one file share st_ino inside the snapshot"
    );
    assert_eq!(a.nlink(), 2);
    assert_ne!(
        a.ino(),
        fs::metadata(m.join("f")).expect("stat").ino(),
        "view-unique ino"
    );
    // Holes as they were, also after the head fills them.
    let seeks = |p: &Path| {
        let f = File::open(p).expect("open");
        let hole = rustix::fs::seek(&f, SeekFrom::Hole(0)).expect("SEEK_HOLE");
        let data = rustix::fs::seek(&f, SeekFrom::Data(hole)).expect("SEEK_DATA");
        let md = f.metadata().expect("fstat");
        (md.len(), md.blocks(), hole, data)
    };
    let head = seeks(&sparse);
    assert!(head.2 < 64 * MIB as u64, "the head has a hole: {head:?}");
    let fill = OpenOptions::new().write(true).open(&sparse).expect("open");
    fill.write_all_at(&vec![1u8; 4 * MIB], MIB as u64)
        .expect("fill the hole");
    drop(fill);
    let got = seeks(&s.join("sparse"));
    assert_eq!(
        got, head,
        "(size, blocks, first hole, next data) in the snapshot"
    );
    let f = File::open(s.join("sparse")).expect("open");
    let mut buf = vec![9u8; MIB];
    f.read_exact_at(&mut buf, MIB as u64).expect("read hole");
    assert!(buf.iter().all(|&x| x == 0), "a hole reads as zeros");
    f.read_exact_at(&mut buf, 64 * MIB as u64)
        .expect("read data");
    assert!(buf == data, "data after the hole");
}

#[test]
fn stat_in_snapshot_gives_distinct_stable_inode() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    fs::write(m.join("d/f"), b"x").expect("write");
    let a = take(&m, "a");
    let b = take(&m, "b");
    let ino = |p: PathBuf| fs::symlink_metadata(&p).expect("lstat").ino();
    for rel in ["d", "d/f"] {
        let (h, ia, ib) = (ino(m.join(rel)), ino(a.join(rel)), ino(b.join(rel)));
        assert!(
            h != ia && h != ib && ia != ib,
            "{rel}: head {h}, a {ia}, b {ib}"
        );
        for _ in 0..3 {
            assert_eq!(ino(a.join(rel)), ia, "{rel}: stable st_ino");
        }
        let dirent = fs::read_dir(a.join(rel).parent().expect("parent"))
            .expect("readdir")
            .map(|e| e.expect("entry"))
            .find(|e| Path::new(rel).file_name() == Some(&e.file_name()))
            .expect("entry listed");
        use std::os::unix::fs::DirEntryExt;
        assert_eq!(dirent.ino(), ia, "{rel}: d_ino = st_ino");
    }
    let fd = File::open(a.join("d/f")).expect("open");
    assert_eq!(fd.metadata().expect("fstat").ino(), ino(a.join("d/f")));
}

#[test]
fn mkdir_snapshot_captures_unsynced_writes() {
    let m = Mount::new();
    let mut f = File::create(m.join("log")).expect("create");
    let mut written: Vec<u8> = Vec::new();
    for i in 0..15u64 {
        let chunk = random_bytes(100 + i, 1000 + (i as usize * 37_123) % 300_000);
        f.write_all(&chunk).expect("write");
        written.extend_from_slice(&chunk);
        // Also rewrite the start in place, without fsync or close.
        f.write_all_at(&i.to_le_bytes(), 0).expect("pwrite");
        written[..8].copy_from_slice(&i.to_le_bytes());
        let s = take(&m, &format!("s{i}"));
        let got = fs::read(s.join("log")).expect("read snapshot");
        assert!(
            got == written,
            "snapshot {i}: {} bytes, expected {} (first difference at {:?})",
            got.len(),
            written.len(),
            got.iter().zip(&written).position(|(a, b)| a != b)
        );
    }
}

#[test]
fn cp_from_snapshot_restores_old_file() {
    let m = Mount::new();
    let old = random_bytes(5, 200_000);
    fs::write(m.join("f"), &old).expect("write");
    chmod(&m.join("f"), 0o640);
    set_times(&m.join("f"), (1_600_000_000, 0), (1_600_000_001, 5)).expect("utimes");
    fs::write(m.join("g"), b"deleted later").expect("write");
    let s = take(&m, "a");
    let files = |root: &Path| -> Vec<String> {
        let mut v = stat_lines(root, "%n %f %u %g %s %y");
        v.retain(|l| !l.starts_with(". ")); // the roots' own mtimes differ
        v
    };
    let want = files(&s);
    fs::write(m.join("f"), b"new content").expect("overwrite");
    chmod(&m.join("f"), 0o600);
    fs::remove_file(m.join("g")).expect("rm");
    let (sq, mq) = (q(&s), q(m.path()));
    sh(
        m.path(),
        &format!("cp -a {sq}/f {mq}/f && cp -a {sq}/g {mq}/g"),
    )
    .assert_success();
    assert!(fs::read(m.join("f")).expect("read") == old, "f restored");
    assert_eq!(fs::read(m.join("g")).expect("read"), b"deleted later");
    let got = files(m.path());
    assert_same_lines("restored attributes", &want, &got);
}

#[test]
fn diff_snapshot_against_copy_is_empty() {
    let m = Mount::new();
    let host = tempfile::tempdir().expect("host temp dir");
    build_tree(&m.join("tree"), 2);
    setx(&m.join("tree/etc/hosts"), "user.k", b"v").expect("setxattr");
    sh(
        m.path(),
        &format!("cp -a tree {}", q(&host.path().join("copy"))),
    )
    .assert_success();
    let s = take(&m, "a");
    let d = diff(&host.path().join("copy"), &s.join("tree"));
    assert!(d.is_empty(), "diff copy snapshot:\n{d}");
    let d = diff(&m.join("tree"), &s.join("tree"));
    assert!(d.is_empty(), "diff head snapshot right after mkdir:\n{d}");
}

#[test]
fn modify_head_after_snapshot_keeps_snapshot_unchanged() {
    let m = Mount::new();
    let host = tempfile::tempdir().expect("host temp dir");
    let (old, new) = (host.path().join("old"), host.path().join("new"));
    build_tree(&m.join("tree"), 3);
    sh(m.path(), &format!("cp -a tree {}", q(&old))).assert_success();
    let s = take(&m, "a").join("tree");
    let snap_stat = stat_lines(&s, STAT_FMT);
    let t = m.join("tree");
    fs::remove_file(t.join("etc/hosts")).expect("rm");
    fs::remove_dir_all(t.join("etc/conf.d")).expect("rm -r");
    fs::write(t.join("var/lib/f07"), b"changed\n").expect("overwrite");
    let tool = OpenOptions::new()
        .write(true)
        .open(t.join("usr/bin/tool"))
        .expect("open");
    tool.write_all_at(b"PATCHED", 2 * MIB as u64)
        .expect("patch");
    tool.set_len(MIB as u64 + 5).expect("truncate");
    drop(tool);
    fs::write(t.join("var/lib/added"), b"added\n").expect("add");
    fs::create_dir(t.join("new-dir")).expect("mkdir");
    fs::rename(t.join("var/lib/f10"), t.join("new-dir/f10")).expect("rename");
    fs::remove_file(t.join("etc/tool-link")).expect("rm symlink");
    symlink("elsewhere", t.join("etc/tool-link")).expect("re-symlink");
    sh(m.path(), &format!("cp -a tree {}", q(&new))).assert_success();
    let d = diff(&old, &s);
    assert!(d.is_empty(), "the snapshot shows the old tree:\n{d}");
    assert_same_lines("snapshot attributes", &snap_stat, &stat_lines(&s, STAT_FMT));
    let d = diff(&new, &t);
    assert!(d.is_empty(), "the head shows the new tree:\n{d}");
    assert!(!diff(&s, &t).is_empty(), "head and snapshot differ");
    expect_errno(fs::metadata(s.join("var/lib/added")), ENOENT, "added file");
    assert_eq!(
        fs::read(s.join("etc/hosts")).expect("deleted file"),
        b"127.0.0.1 localhost\n"
    );
}

#[test]
fn rmdir_snapshot_reclaims_space() {
    const SIZE: usize = 200 * MIB;
    const CHUNK: usize = 8 * MIB;
    let m = Mount::new();
    let fill = |seed: u64| {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(m.join("big"))
            .expect("open");
        for (i, off) in (0..SIZE).step_by(CHUNK).enumerate() {
            f.write_all_at(&random_bytes(seed + i as u64, CHUNK), off as u64)
                .expect("write");
        }
        f.sync_all().expect("fsync");
    };
    fill(1000);
    let live = m.store().disk_usage();
    let s = take(&m, "a");
    fill(2000);
    let before = m.store().disk_usage();
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "store: {:.1} MiB with one copy, {:.1} MiB with the snapshot",
        mib(live),
        mib(before)
    );
    assert!(
        before as f64 > 1.8 * SIZE as f64,
        "before rmdir the store holds both versions: {:.1} MiB",
        mib(before)
    );
    fs::remove_dir(&s).expect("rmdir snapshot");
    let start = Instant::now();
    let mut now = before;
    while start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        now = m.store().disk_usage();
        eprintln!(
            "  after {:>4.1} s: {:.1} MiB",
            start.elapsed().as_secs_f64(),
            mib(now)
        );
        if (now as f64) < 1.5 * SIZE as f64 {
            break;
        }
    }
    assert!(
        (now as f64) < 1.5 * SIZE as f64,
        "30 s after rmdir the store still uses {:.1} MiB (live data {} MiB)",
        mib(now),
        SIZE / MIB
    );
    let f = File::open(m.join("big")).expect("open");
    let mut buf = vec![0u8; CHUNK];
    f.read_exact_at(&mut buf, (SIZE - CHUNK) as u64)
        .expect("read");
    assert!(
        buf == random_bytes(2000 + (SIZE / CHUNK - 1) as u64, CHUNK),
        "head data intact"
    );
}

#[test]
fn rmdir_older_snapshot_keeps_newer_snapshot_and_head() {
    let mut m = Mount::new();
    let v1 = random_bytes(1, 8 * MIB);
    fs::write(m.join("f"), &v1).expect("write");
    let a = take(&m, "a");
    let mut v2 = v1.clone();
    v2[MIB..2 * MIB].copy_from_slice(&random_bytes(2, MIB));
    let f = OpenOptions::new()
        .write(true)
        .open(m.join("f"))
        .expect("open");
    f.write_all_at(&v2[MIB..2 * MIB], MIB as u64)
        .expect("write");
    let b = take(&m, "b");
    let mut v3 = v2.clone();
    v3[5 * MIB..6 * MIB].copy_from_slice(&random_bytes(3, MIB));
    f.write_all_at(&v3[5 * MIB..6 * MIB], 5 * MIB as u64)
        .expect("write");
    drop(f);
    fs::remove_dir(&a).expect("rmdir a");
    std::thread::sleep(Duration::from_secs(5)); // let the background reclaim run
    assert!(
        fs::read(b.join("f")).expect("read b") == v2,
        "snapshot b intact after reclaim"
    );
    assert!(
        fs::read(m.join("f")).expect("read head") == v3,
        "head intact after reclaim"
    );
    m.remount();
    assert!(
        fs::read(b.join("f")).expect("read b") == v2,
        "snapshot b after remount"
    );
    assert!(
        fs::read(m.join("f")).expect("read head") == v3,
        "head after remount"
    );
}

#[test]
fn read_deleted_snapshot_open_fd_fails_not_data() {
    let m = Mount::new();
    let data = random_bytes(77, 16 * MIB);
    fs::write(m.join("f"), &data).expect("write");
    let s = take(&m, "a");
    let f = File::open(s.join("f")).expect("open in snapshot");
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 0).expect("read before deletion");
    assert!(buf[..] == data[..4096]);
    fs::remove_dir(&s).expect("rmdir snapshot");
    expect_errno(fs::read_dir(&s), ENOENT, "ls deleted snapshot");
    expect_errno(File::open(s.join("f")), ENOENT, "open in deleted snapshot");
    let off = 8 * MIB;
    let mut buf = vec![0u8; 65536];
    let r = f.read_at(&mut buf, off as u64);
    eprintln!("read of an open descriptor after rmdir: {r:?}");
    if let Ok(n) = r {
        assert!(
            buf[..n] != data[off..off + n],
            "read {n} bytes of a deleted snapshot's data"
        );
    }
    // Not the data, and not a silent end of file either: an error.
    expect_errno_any(r, &[ESTALE, EIO, ENOENT], "read after rmdir");
    // Pages the kernel had cached before the deletion are dropped too (the daemon sends the
    // invalidation from its notifier thread right after the rmdir).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut buf = vec![0u8; 4096];
    loop {
        match f.read_at(&mut buf, 0) {
            Err(_) => break,
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(n) => panic!("cached page of a deleted snapshot still served ({n} bytes)"),
        }
    }
}

#[test]
fn lookup_snapdir_inside_snapshot_fails_enoent() {
    let m = Mount::new();
    fs::write(m.join("f"), b"x").expect("write");
    let dir = take(&m, "a");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    expect_errno(
        fs::metadata(dir.join(".snapshots")),
        ENOENT,
        "NAME/.snapshots",
    );
    let out = sh(&dir, "ls -a");
    out.assert_success();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), [".", "..", "f"]);
    // `..` of a snapshot root is `.snapshots`.
    let out = sh(&dir, "cd .. && ls");
    out.assert_success();
    assert!(out.stdout.lines().any(|l| l == name), "{}", out.stdout);
}
