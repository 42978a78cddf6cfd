//! The `.snapshots/` directory through a real kernel mount: visibility, the reserved name,
//! taking snapshots with `mkdir`, aliases (`mv`, `mv -T`, `ln -sfn`, `rm`), deleting with
//! `rmdir`, permissions, the `user.snapfs.*` attributes and persistence across remounts.
//! Contents of snapshot views are covered by `fuse_snapshots_more.rs`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{expect_errno, q, sh, sh_as, AsErrno, Mount, Store, USER_A, USER_B};
use nix::errno::Errno::{self, EEXIST, EINVAL, EISDIR, ENAMETOOLONG, ENOENT, ENOTDIR, EXDEV};
use nix::fcntl::{renameat2, RenameFlags};

const SNAPDIR: &str = ".snapshots";

fn sd(m: &Mount) -> PathBuf {
    m.join(SNAPDIR)
}

fn xattr(p: &Path, name: &str) -> rustix::io::Result<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::getxattr(p, name, &mut buf[..])?;
    Ok(String::from_utf8(buf[..n].to_vec()).expect("utf8 xattr value"))
}

/// `user.snapfs.KEY` of `.snapshots/ENTRY`.
fn attr(m: &Mount, entry: &str, key: &str) -> String {
    xattr(&sd(m).join(entry), &format!("user.snapfs.{key}"))
        .unwrap_or_else(|e| panic!("get user.snapfs.{key} of {entry}: {e}"))
}

fn set_expiry(m: &Mount, entry: &str, value: &str) -> rustix::io::Result<()> {
    let p = sd(m).join(entry);
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(p, "user.snapfs.expires_at", value.as_bytes(), flags)
}

/// `mkdir .snapshots/ALIAS`; returns the new snapshot's name (its `user.snapfs.name`).
fn take(m: &Mount, alias: &str) -> String {
    let p = sd(m).join(alias);
    fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    xattr(&p, "user.snapfs.name").expect("user.snapfs.name of the new snapshot")
}

/// Names in `.snapshots` from readdir alone (no lookup of any entry).
fn readdir_names(m: &Mount) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sd(m))
        .expect("readdir .snapshots")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    v.sort();
    v
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Alias(String, String),
    Snap(String),
}

fn alias(a: &str, n: &str) -> Entry {
    Entry::Alias(a.into(), n.into())
}

fn snap(n: &str) -> Entry {
    Entry::Snap(n.into())
}

/// `.snapshots` as `ls -l` shows it: readdir, then lstat (and readlink) of every entry in
/// readdir order. Checks that lstat agrees with the readdir type.
fn listing(m: &Mount) -> Vec<Entry> {
    let mut v = Vec::new();
    for e in fs::read_dir(sd(m)).expect("readdir .snapshots") {
        let e = e.expect("entry");
        let name = e.file_name().into_string().expect("utf8");
        let dtype = e.file_type().expect("d_type");
        let md = fs::symlink_metadata(e.path())
            .unwrap_or_else(|err| panic!("lstat .snapshots/{name}: {err}"));
        assert_eq!(
            (dtype.is_dir(), dtype.is_symlink()),
            (md.is_dir(), md.file_type().is_symlink()),
            "readdir and lstat disagree on the type of .snapshots/{name}"
        );
        if md.is_dir() {
            v.push(Entry::Snap(name));
        } else if md.file_type().is_symlink() {
            let t = fs::read_link(e.path()).expect("readlink alias");
            v.push(Entry::Alias(name, t.to_str().expect("utf8").into()));
        } else {
            panic!(".snapshots/{name} is neither a directory nor a symlink: {md:?}");
        }
    }
    v.sort();
    v
}

fn sorted(mut v: Vec<Entry>) -> Vec<Entry> {
    v.sort();
    v
}

/// The listing of two snapshots with aliases `a1`/`a2`.
fn two(a1: &str, n1: &str, a2: &str, n2: &str) -> Vec<Entry> {
    sorted(vec![alias(a1, n1), snap(n1), alias(a2, n2), snap(n2)])
}

/// `snap-YYYYMMDD-HHMMSS` with an optional `-N` (N >= 2).
fn is_snap_name(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 20
        && s.starts_with("snap-")
        && digits(5..13)
        && b[13] == b'-'
        && digits(14..20)
        && (b.len() == 20
            || (b[20] == b'-'
                && b.len() > 21
                && digits(21..b.len())
                && s[21..].parse::<u32>().is_ok_and(|n| n >= 2)))
}

/// Unix milliseconds of `YYYY-MM-DDTHH:MM:SS.mmmZ` (the one form snapfs emits), via date(1).
fn parse_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    let shape = b.len() == 24
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22].map(digit) == [true; 17]
        && (b[4], b[7], b[10], b[13], b[16], b[19], b[23])
            == (b'-', b'-', b'T', b':', b':', b'.', b'Z');
    let out = shape.then(|| sh(Path::new("/"), &format!("date -u -d {s} +%s%3N")))?;
    out.success().then(|| out.stdout.trim().parse().ok())?
}

/// `YYYYMMDD-HHMMSS` (UTC) of Unix milliseconds, via date(1).
fn name_stamp(ms: i64) -> String {
    let out = sh(
        Path::new("/"),
        &format!("date -u -d @{} +%Y%m%d-%H%M%S", ms.div_euclid(1000)),
    );
    out.assert_success().stdout.trim().to_string()
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

#[test]
fn ls_root_default_hides_snapdir() {
    let m = Mount::new();
    fs::write(m.join("f"), b"x").expect("write");
    let out = sh(m.path(), "ls -a");
    out.assert_success();
    let names: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(names, [".", "..", "f"], "ls -a of the root: {}", out.stdout);
    let md = fs::metadata(sd(&m)).expect("stat .snapshots by path");
    assert!(md.is_dir(), ".snapshots is a directory");
    assert!(readdir_names(&m).is_empty(), "no snapshots yet");
    // `find` does not wander into history either.
    let out = sh(m.path(), "find . | sort");
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), [".", "./f"]);
}

#[test]
fn ls_root_with_snapdir_visible_lists_snapdir() {
    let m = Mount::on(Store::new(), &["--snapdir", "visible"]);
    fs::write(m.join("f"), b"x").expect("write");
    let out = sh(m.path(), "ls -a");
    out.assert_success();
    let names: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(names, [".", "..", ".snapshots", "f"], "{}", out.stdout);
    let name = take(&m, "a");
    assert_eq!(readdir_names(&m), vec!["a".to_string(), name]);
}

#[test]
fn create_snapdir_name_at_root_fails_eexist() {
    let m = Mount::new();
    let s = sd(&m);
    fs::write(m.join("file"), b"x").expect("write");
    fs::create_dir(m.join("dir")).expect("mkdir");
    let fifo_mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    let excl = fs::OpenOptions::new().write(true).create_new(true).clone();
    #[rustfmt::skip]
    check(&[
        ("mkdir", err(fs::create_dir(&s)), &[EEXIST]),
        ("symlink", err(std::os::unix::fs::symlink("file", &s)), &[EEXIST]),
        ("link", err(fs::hard_link(m.join("file"), &s)), &[EEXIST]),
        ("mkfifo", err(nix::unistd::mkfifo(&s, fifo_mode)), &[EEXIST]),
        ("open O_CREAT|O_EXCL", err(excl.open(&s)), &[EEXIST]),
        ("rename dir", err(fs::rename(m.join("dir"), &s)), &[EEXIST]),
        // A file onto a directory is refused by the VFS (EISDIR) before snapfs is asked.
        ("rename file", err(fs::rename(m.join("file"), &s)), &[EEXIST, EISDIR]),
    ]);
    assert_eq!(fs::read(m.join("file")).expect("file kept"), b"x");
    assert!(fs::metadata(m.join("dir")).expect("dir kept").is_dir());
    assert!(readdir_names(&m).is_empty(), "nothing in .snapshots");
    // The name is reserved only at the root.
    fs::create_dir(m.join("dir/.snapshots")).expect("mkdir dir/.snapshots");
    fs::write(m.join("dir/.snapshots/f"), b"y").expect("write in dir/.snapshots");
    assert_eq!(fs::read(m.join("dir/.snapshots/f")).expect("read"), b"y");
}

#[test]
fn mkdir_snapdir_entry_creates_snapshot_with_alias() {
    let m = Mount::new();
    fs::write(m.join("f"), b"data").expect("write");
    let before = now_ms();
    let name = take(&m, "first");
    let after = now_ms();
    assert!(is_snap_name(&name), "snapshot name {name:?}");
    assert_eq!(listing(&m), [alias("first", &name), snap(&name)]);
    let dir = sd(&m).join(&name);
    let created = attr(&m, &name, "created_at");
    let created = parse_ms(&created).unwrap_or_else(|| panic!("created_at {created:?}"));
    assert!(
        (before - 1000..=after + 1000).contains(&created),
        "created_at {created} not within mkdir's window [{before}, {after}]"
    );
    assert_eq!(
        name,
        format!("snap-{}", name_stamp(created)),
        "the name is created_at in UTC"
    );
    let md = fs::metadata(&dir).expect("stat snapshot dir");
    assert!(md.is_dir());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        md.mtime() * 1000 + md.mtime_nsec() / 1_000_000,
        created,
        "snapshot directory mtime = created_at"
    );
    assert_eq!(fs::read(dir.join("f")).expect("read in snapshot"), b"data");
    assert_eq!(
        fs::read(sd(&m).join("first/f")).expect("read via alias"),
        b"data"
    );
}

#[test]
fn mkdir_snapdir_entry_then_alias_resolves_as_symlink() {
    // Right after `mkdir .snapshots/X`, X must behave as the alias symlink that `ls`
    // shows (zero entry TTL in `.snapshots`), without looking the snapshot's name up first.
    let m = Mount::new();
    fs::write(m.join("f"), b"data").expect("write");
    fs::create_dir(sd(&m).join("x")).expect("mkdir .snapshots/x");
    let name = readdir_names(&m)
        .into_iter()
        .find(|n| n.starts_with("snap-"))
        .expect("a snapshot is listed");
    let out = sh(m.path(), "cd .snapshots/x && pwd -P");
    out.assert_success();
    assert_eq!(
        out.stdout.trim_end(),
        sd(&m).join(&name).to_str().expect("utf8"),
        "cd .snapshots/x lands in the snapshot's directory"
    );
    let md = fs::symlink_metadata(sd(&m).join("x")).expect("lstat alias");
    assert!(
        md.file_type().is_symlink(),
        "lstat .snapshots/x right after mkdir: expected a symlink, got {:?}",
        md.file_type()
    );
    assert_eq!(
        fs::read_link(sd(&m).join("x")).expect("readlink right after mkdir"),
        Path::new(&name)
    );
    fs::remove_file(sd(&m).join("x")).expect("rm .snapshots/x right after mkdir");
    assert_eq!(listing(&m), [snap(&name)]);
}

#[test]
fn mkdir_same_second_names_get_numeric_suffix() {
    let m = Mount::new();
    let mut snaps: Vec<(i64, String)> = (0..6)
        .map(|i| {
            let name = take(&m, &format!("s{i}"));
            let c = attr(&m, &name, "created_at");
            (parse_ms(&c).expect("rfc3339"), name)
        })
        .collect();
    snaps.sort();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for (created, name) in &snaps {
        assert!(is_snap_name(name), "name {name:?}");
        assert_eq!(&name[5..20], name_stamp(*created), "{name} vs created_at");
        match groups.last_mut() {
            Some(g) if g[0][..20] == name[..20] => g.push(name.clone()),
            _ => groups.push(vec![name.clone()]),
        }
    }
    assert!(
        groups.iter().any(|g| g.len() >= 2),
        "six snapshots in a row should share a second: {snaps:?}"
    );
    for g in &groups {
        let base = &g[0][..20];
        let want: Vec<String> = (1..=g.len())
            .map(|i| match i {
                1 => base.to_string(),
                i => format!("{base}-{i}"),
            })
            .collect();
        assert_eq!(g, &want, "same-second names in creation order");
    }
}

#[test]
fn mkdir_bad_alias_fails_einval() {
    let m = Mount::new();
    let mk = |a: &str| err(fs::create_dir(sd(&m).join(a)));
    #[rustfmt::skip]
    check(&[
        ("snap-x", mk("snap-x"), &[EINVAL]),
        ("shaped like a name", mk("snap-20200101-000000"), &[EINVAL]),
        ("101 characters", mk(&"a".repeat(101)), &[EINVAL, ENAMETOOLONG]),
        ("300 characters", mk(&"b".repeat(300)), &[EINVAL, ENAMETOOLONG]),
        // `.` and `..` exist in every directory: the VFS answers EEXIST.
        (".", mk("."), &[EEXIST, EINVAL]),
        ("..", mk(".."), &[EEXIST, EINVAL]),
    ]);
    assert!(readdir_names(&m).is_empty(), "no snapshot was taken");
    let ok = "c".repeat(100);
    let name = take(&m, &ok);
    assert_eq!(listing(&m), [alias(&ok, &name), snap(&name)]);
}

#[test]
fn mkdir_existing_alias_or_name_fails_eexist() {
    let m = Mount::new();
    let name = take(&m, "a");
    expect_errno(fs::create_dir(sd(&m).join("a")), EEXIST, "same alias again");
    expect_errno(fs::create_dir(sd(&m).join(&name)), EEXIST, "alias = a name");
    assert_eq!(listing(&m), [alias("a", &name), snap(&name)]);
}

#[test]
fn rename_snapshot_name_sets_alias() {
    let m = Mount::new();
    let name = take(&m, "old");
    assert_eq!(listing(&m), [alias("old", &name), snap(&name)]);
    let s = q(&sd(&m));
    sh(m.path(), &format!("mv {s}/{name} {s}/new")).assert_success();
    assert_eq!(listing(&m), [alias("new", &name), snap(&name)]);
    assert_eq!(attr(&m, &name, "alias"), "new");
    // The data never moved.
    assert!(fs::metadata(sd(&m).join(&name))
        .expect("stat name")
        .is_dir());
    expect_errno(
        fs::symlink_metadata(sd(&m).join("old")),
        ENOENT,
        "old alias",
    );
}

#[test]
fn rename_snapshot_name_then_alias_resolves_as_symlink() {
    // `mv NAME NEW` sets an alias: NEW must then be the symlink (not NAME's directory).
    let m = Mount::new();
    let name = take(&m, "old");
    assert_eq!(listing(&m), [alias("old", &name), snap(&name)]);
    let s = sd(&m);
    fs::rename(s.join(&name), s.join("new")).expect("rename NAME -> new");
    assert_eq!(
        fs::read_link(s.join("new")).expect("readlink .snapshots/new right after the rename"),
        Path::new(&name)
    );
    fs::remove_file(s.join("new")).expect("rm .snapshots/new right after the rename");
    assert_eq!(listing(&m), [snap(&name)]);
}

#[test]
fn rename_alias_with_mv_t_renames_alias() {
    let m = Mount::new();
    let name = take(&m, "a1");
    assert_eq!(listing(&m), [alias("a1", &name), snap(&name)]);
    let s = q(&sd(&m));
    sh(m.path(), &format!("mv -T {s}/a1 {s}/a2")).assert_success();
    assert_eq!(listing(&m), [alias("a2", &name), snap(&name)]);
    assert_eq!(attr(&m, &name, "alias"), "a2");
    fs::rename(sd(&m).join("a2"), sd(&m).join("a3")).expect("rename(2) of an alias");
    assert_eq!(listing(&m), [alias("a3", &name), snap(&name)]);
}

#[test]
fn rename_onto_existing_snapshot_name_fails_eexist() {
    let m = Mount::new();
    let n1 = take(&m, "s1");
    let n2 = take(&m, "s2");
    let want = two("s1", &n1, "s2", &n2);
    assert_eq!(listing(&m), want);
    let s = sd(&m);
    let noreplace = RenameFlags::RENAME_NOREPLACE;
    let (s1, name2) = (s.join("s1"), s.join(&n2));
    #[rustfmt::skip]
    check(&[
        ("rename NAME1 NAME2", err(fs::rename(s.join(&n1), &name2)), &[EEXIST]),
        ("renameat2(NOREPLACE) ALIAS1 NAME2", err(renameat2(None, &s1, None, &name2, noreplace)),
            &[EEXIST]),
        // Reserved: aliases never look like names.
        ("rename NAME1 snap-x", err(fs::rename(s.join(&n1), s.join("snap-x"))), &[EINVAL]),
        ("rename ALIAS1 snap-y", err(fs::rename(&s1, s.join("snap-y"))), &[EINVAL]),
    ]);
    for from in [&n1, "s1"] {
        let out = sh(m.path(), &format!("mv -T {0}/{from} {0}/{n2}", q(&s)));
        assert!(!out.success(), "mv -T {from} NAME2: {}", out.describe());
    }
    assert_eq!(listing(&m), want, "nothing changed");
}

#[test]
fn rename_across_snapdir_boundary_fails_exdev() {
    let m = Mount::new();
    fs::write(m.join("file"), b"x").expect("write");
    fs::create_dir(m.join("dir")).expect("mkdir");
    let name = take(&m, "a");
    let want = vec![alias("a", &name), snap(&name)];
    assert_eq!(listing(&m), want);
    let s = sd(&m);
    #[rustfmt::skip]
    check(&[
        ("alias out", err(fs::rename(s.join("a"), m.join("x"))), &[EXDEV]),
        ("snapshot out", err(fs::rename(s.join(&name), m.join("x"))), &[EXDEV]),
        ("file in", err(fs::rename(m.join("file"), s.join("x"))), &[EXDEV]),
        ("dir in", err(fs::rename(m.join("dir"), s.join("y"))), &[EXDEV]),
    ]);
    assert_eq!(listing(&m), want, "nothing changed in .snapshots");
    expect_errno(
        fs::symlink_metadata(m.join("x")),
        ENOENT,
        "nothing came out",
    );
    assert_eq!(fs::read(m.join("file")).expect("file kept"), b"x");
    assert!(fs::metadata(m.join("dir")).expect("dir kept").is_dir());
}

#[test]
fn mv_snapshot_out_or_file_in_fails() {
    let m = Mount::new();
    fs::write(m.join("file"), b"x").expect("write");
    let name = take(&m, "a");
    let want = vec![alias("a", &name), snap(&name)];
    assert_eq!(listing(&m), want);
    let s = q(&sd(&m));
    let out = sh(m.path(), &format!("mv {s}/{name} out"));
    assert!(
        !out.success(),
        "mv of a snapshot out of .snapshots: {}",
        out.describe()
    );
    let out = sh(m.path(), &format!("mv file {s}/z"));
    assert!(
        !out.success(),
        "mv of a file into .snapshots: {}",
        out.describe()
    );
    assert_eq!(
        listing(&m),
        want,
        "the snapshot and its alias stay; no alias z"
    );
    assert_eq!(fs::read(m.join("file")).expect("file kept"), b"x");
    assert_eq!(
        fs::read(sd(&m).join(&name).join("file")).expect("snapshot intact"),
        b"x"
    );
}

#[test]
fn symlink_in_snapdir_sets_and_moves_alias() {
    let m = Mount::new();
    let n1 = take(&m, "a");
    let n2 = take(&m, "b");
    let s = sd(&m);
    let qs = q(&s);
    assert_eq!(listing(&m), two("a", &n1, "b", &n2));
    // Move alias b onto n1 (n1 had alias a: one alias per snapshot, so a goes).
    sh(m.path(), &format!("ln -sfn {n1} {qs}/b")).assert_success();
    assert_eq!(
        listing(&m),
        sorted(vec![alias("b", &n1), snap(&n1), snap(&n2)])
    );
    // A new alias on the alias-less n2.
    sh(m.path(), &format!("ln -s {n2} {qs}/c")).assert_success();
    assert_eq!(listing(&m), two("b", &n1, "c", &n2));
    assert_eq!(attr(&m, &n2, "alias"), "c");
    use std::os::unix::fs::symlink;
    #[rustfmt::skip]
    check(&[
        ("no such NAME", err(symlink("snap-19990101-000000", s.join("d"))), &[ENOENT]),
        ("alias = a name", err(symlink(&n1, s.join(&n2))), &[EEXIST]),
        ("reserved alias", err(symlink(&n1, s.join("snap-q"))), &[EINVAL]),
    ]);
    assert_eq!(listing(&m), two("b", &n1, "c", &n2));
}

#[test]
fn unlink_alias_drops_alias_only() {
    let m = Mount::new();
    fs::write(m.join("f"), b"kept").expect("write");
    let name = take(&m, "a");
    assert_eq!(listing(&m), [alias("a", &name), snap(&name)]);
    sh(m.path(), &format!("rm {}/a", q(&sd(&m)))).assert_success();
    assert_eq!(listing(&m), [snap(&name)]);
    let dir = sd(&m).join(&name);
    assert_eq!(
        fs::read(dir.join("f")).expect("snapshot still readable"),
        b"kept"
    );
    assert_eq!(attr(&m, &name, "alias"), "");
    expect_errno(fs::remove_file(&dir), EISDIR, "rm NAME");
    expect_errno(
        fs::remove_file(sd(&m).join("a")),
        ENOENT,
        "rm dropped alias",
    );
    assert_eq!(listing(&m), [snap(&name)]);
}

#[test]
fn rmdir_snapshot_dir_deletes_snapshot() {
    let m = Mount::new();
    fs::write(m.join("f"), b"x").expect("write");
    let n1 = take(&m, "a");
    let n2 = take(&m, "b");
    let s = sd(&m);
    assert_eq!(listing(&m), two("a", &n1, "b", &n2));
    expect_errno(fs::remove_dir(s.join("b")), ENOTDIR, "rmdir of an alias");
    sh(m.path(), &format!("rmdir {}/{n1}", q(&s))).assert_success();
    assert_eq!(listing(&m), [alias("b", &n2), snap(&n2)]);
    expect_errno(fs::metadata(s.join(&n1)), ENOENT, "stat deleted NAME");
    expect_errno(fs::read_dir(s.join(&n1)), ENOENT, "ls deleted NAME");
    expect_errno(
        fs::symlink_metadata(s.join("a")),
        ENOENT,
        "alias of deleted",
    );
    expect_errno(fs::remove_dir(s.join(&n1)), ENOENT, "rmdir twice");
    expect_errno(fs::remove_dir(s.join("nothing")), ENOENT, "rmdir missing");
    assert_eq!(
        fs::read(s.join(&n2).join("f")).expect("other snapshot intact"),
        b"x"
    );
}

#[test]
fn mkdir_after_rmdir_in_same_second_creates_usable_snapshot() {
    // Deleting a snapshot and taking the next one within the same second: the freed alias
    // is usable again and the new snapshot (whatever its name) is a readable directory.
    let m = Mount::new();
    fs::write(m.join("f"), b"old").expect("write");
    let n0 = take(&m, "warm");
    assert_eq!(listing(&m), [alias("warm", &n0), snap(&n0)]);
    // Start at the beginning of a second so that rmdir and mkdir share it.
    while now_ms() % 1000 > 100 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let n1 = take(&m, "a");
    fs::remove_dir(sd(&m).join(&n1)).expect("rmdir");
    fs::write(m.join("f"), b"new").expect("write");
    fs::create_dir(sd(&m).join("a")).expect("mkdir .snapshots/a after deleting its holder");
    let n2 = xattr(&sd(&m).join("a"), "user.snapfs.name").expect("name of the new snapshot");
    assert_eq!(listing(&m), two("warm", &n0, "a", &n2));
    assert_eq!(
        fs::read(sd(&m).join(&n2).join("f")).expect("read new snapshot"),
        b"new"
    );
}

/// Runs `script` as `uid` and returns a failure description unless it failed with EPERM.
fn eperm_as(uid: u32, what: &str, script: &str) -> Option<String> {
    let out = sh_as(uid, uid, script);
    if !out.success() && out.stderr.contains("Operation not permitted") {
        None
    } else {
        Some(format!(
            "{what} as uid {uid}: expected EPERM: {}",
            out.describe()
        ))
    }
}

#[test]
fn snapdir_gestures_as_user_fail_eperm() {
    let m = Mount::new();
    fs::write(m.join("f"), b"public").expect("write");
    let name = take(&m, "a");
    let want = vec![alias("a", &name), snap(&name)];
    assert_eq!(listing(&m), want);
    let s = q(&sd(&m));
    let u = USER_A;
    let failures: Vec<String> = [
        ("mkdir", format!("mkdir {s}/u")),
        ("rmdir NAME", format!("rmdir {s}/{name}")),
        ("mv NAME NEW", format!("mv {s}/{name} {s}/v")),
        ("mv -T ALIAS NEW", format!("mv -T {s}/a {s}/w")),
        ("rm ALIAS", format!("rm -f {s}/a")),
        ("ln -s NAME ALIAS", format!("ln -s {name} {s}/x")),
    ]
    .iter()
    .filter_map(|(what, script)| eperm_as(u, what, script))
    .collect();
    // setxattr on the snapshot root is refused by the kernel first (EACCES: the root keeps
    // its owner and mode); either way the expiry must not change.
    let set = format!("setfattr -n user.snapfs.expires_at -v 2030-01-01T00:00:00Z {s}/{name}");
    let out = sh_as(u, u, &set);
    assert!(
        !out.success()
            && (out.stderr.contains("Operation not permitted")
                || out.stderr.contains("Permission denied")),
        "setfattr as uid {u}: {}",
        out.describe()
    );
    assert_eq!(listing(&m), want, "nothing changed");
    assert_eq!(attr(&m, &name, "expires_at"), "");
    // Reading is allowed.
    let out = sh_as(u, u, &format!("ls {s} && cat {s}/{name}/f"));
    out.assert_success();
    assert!(
        out.stdout.contains(&name) && out.stdout.ends_with("public"),
        "{}",
        out.stdout
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn snapdir_gestures_as_admin_uid_succeed() {
    let m = Mount::on(Store::new(), &["--admin-uid", &USER_A.to_string()]);
    fs::write(m.join("f"), b"x").expect("write");
    let s = q(&sd(&m));
    let a = USER_A;
    sh_as(a, a, &format!("mkdir {s}/adm")).assert_success();
    let name = xattr(&sd(&m).join("adm"), "user.snapfs.name").expect("name");
    assert_eq!(listing(&m), [alias("adm", &name), snap(&name)]);
    let failures: Vec<String> = [
        ("mkdir", format!("mkdir {s}/other")),
        ("rmdir", format!("rmdir {s}/{name}")),
    ]
    .iter()
    .filter_map(|(what, script)| eperm_as(USER_B, what, script))
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    sh_as(a, a, &format!("mv -T {s}/adm {s}/adm2")).assert_success();
    // The kernel checks write permission on the snapshot's root (owned and moded as it was)
    // before snapfs sees a setxattr, so an admin uid sets expiry through the API or CLI;
    // through the mount only root can.
    let set = format!("setfattr -n user.snapfs.expires_at -v 2031-02-03T04:05:06Z {s}/{name}");
    assert!(
        !sh_as(a, a, &set).success(),
        "kernel lets a non-owner setxattr"
    );
    sh(m.path(), &set).assert_success();
    assert_eq!(attr(&m, &name, "expires_at"), "2031-02-03T04:05:06.000Z");
    sh_as(a, a, &format!("rm {s}/adm2 && rmdir {s}/{name}")).assert_success();
    assert!(listing(&m).is_empty());
}

#[test]
fn getfattr_snapshot_dir_shows_snapfs_attrs() {
    let m = Mount::new();
    fs::write(m.join("f"), vec![7u8; 100_000]).expect("write");
    let name = take(&m, "tagged");
    assert_eq!(listing(&m), [alias("tagged", &name), snap(&name)]);
    let out = sh(m.path(), &format!("getfattr -d {}/{name}", q(&sd(&m))));
    out.assert_success();
    let mut attrs = std::collections::BTreeMap::new();
    for line in out.stdout.lines().filter(|l| l.starts_with("user.")) {
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {line:?}"));
        attrs.insert(k.to_string(), v.trim_matches('"').to_string());
    }
    let keys: Vec<&str> = attrs.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "user.snapfs.alias",
            "user.snapfs.created_at",
            "user.snapfs.expires_at",
            "user.snapfs.last_used_at",
            "user.snapfs.name",
            "user.snapfs.size"
        ],
        "getfattr -d output:\n{}",
        out.stdout
    );
    assert_eq!(attrs["user.snapfs.alias"], "tagged");
    assert_eq!(attrs["user.snapfs.name"], name);
    assert!(
        parse_ms(&attrs["user.snapfs.created_at"]).is_some(),
        "{attrs:?}"
    );
    assert_eq!(attrs["user.snapfs.expires_at"], "", "no expiry by default");
    let used = &attrs["user.snapfs.last_used_at"];
    assert!(
        used.is_empty() || parse_ms(used).is_some(),
        "last_used_at {used:?}"
    );
    assert!(
        attrs["user.snapfs.size"].parse::<u64>().is_ok(),
        "size {attrs:?}"
    );
    // Through the alias (followed) the same attributes; files inside have none.
    let via = xattr(&sd(&m).join("tagged"), "user.snapfs.name").expect("via alias");
    assert_eq!(via, name);
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::listxattr(sd(&m).join(&name).join("f"), &mut buf[..]).expect("list");
    assert_eq!(
        n, 0,
        "a file inside a snapshot has no user.snapfs.* attributes"
    );
}

#[test]
fn setfattr_expires_at_sets_expiry() {
    let m = Mount::new();
    let name = take(&m, "e");
    let dir = sd(&m).join(&name);
    let script = format!(
        "setfattr -n user.snapfs.expires_at -v 2030-01-01T00:00:00Z {}",
        q(&dir)
    );
    sh(m.path(), &script).assert_success();
    let got = attr(&m, &name, "expires_at");
    assert_eq!(got, "2030-01-01T00:00:00.000Z");
    for bad in ["tomorrow", "2030-13-01T00:00:00Z", "1700000000"] {
        let what = format!("expires_at = {bad:?}");
        expect_errno(set_expiry(&m, &name, bad), EINVAL, &what);
    }
    let out = sh(m.path(), &script.replace("2030-01-01T00:00:00Z", "soon"));
    assert!(
        !out.success(),
        "setfattr of a bad value succeeded: {}",
        out.describe()
    );
    assert_eq!(attr(&m, &name, "expires_at"), got, "unchanged");
}

#[test]
fn remount_keeps_snapshots_and_aliases() {
    let mut m = Mount::new();
    fs::write(m.join("f"), b"v1").expect("write");
    let n1 = take(&m, "one");
    fs::write(m.join("f"), b"v2").expect("write");
    fs::write(m.join("g"), b"new").expect("write");
    let n2 = take(&m, "two");
    fs::write(m.join("f"), b"v3").expect("write");
    let s = sd(&m);
    set_expiry(&m, &n1, "2030-06-01T12:00:00.250Z").expect("set expiry");
    let want = two("one", &n1, "two", &n2);
    assert_eq!(listing(&m), want);
    let created: Vec<String> = [&n1, &n2]
        .iter()
        .map(|n| attr(&m, n, "created_at"))
        .collect();
    m.remount();
    assert_eq!(listing(&m), want);
    assert_eq!(fs::read(s.join(&n1).join("f")).expect("read"), b"v1");
    expect_errno(
        fs::metadata(s.join(&n1).join("g")),
        ENOENT,
        "g absent from one",
    );
    assert_eq!(fs::read(s.join("two/f")).expect("read"), b"v2");
    assert_eq!(fs::read(s.join("two/g")).expect("read"), b"new");
    assert_eq!(fs::read(m.join("f")).expect("read head"), b"v3");
    for (n, c) in [&n1, &n2].iter().zip(&created) {
        assert_eq!(&attr(&m, n, "created_at"), c);
    }
    assert_eq!(attr(&m, &n1, "expires_at"), "2030-06-01T12:00:00.250Z");
}
