//! A "bad input everywhere" sweep through a real kernel mount: every limit of the
//! filesystem (name length, non-UTF-8 names, path length, file size, xattr name and
//! value size, symlink target length) is probed just inside and just outside. Inside
//! must work exactly; outside must fail with the right errno, create nothing, and
//! leave everything written before intact. Every test ends with `snapfs fsck` on the
//! unmounted store, which must be clean.

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{expect_errno, snapfs, Mount};
use nix::errno::Errno;
use rustix::fs::{getxattr, listxattr, setxattr, XattrFlags};

/// The filesystem's limits (src/fs/mod.rs), repeated here on purpose.
const NAME_MAX: usize = 255;
const SYMLINK_MAX: usize = 4095;
/// The kernel's limit for FUSE files (MAX_LFS_FILESIZE), which snapfs uses as its own.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;
const XATTR_VALUE_MAX: usize = 65536;

/// A name of `len` bytes made of `c`.
fn name(c: char, len: usize) -> String {
    c.to_string().repeat(len)
}

/// Every name in `dir` (without `.` and `..`), as raw bytes.
fn listing(dir: &Path) -> BTreeSet<Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.expect("readdir entry").file_name().as_bytes().to_vec())
        .collect()
}

fn set_of(names: &[&[u8]]) -> BTreeSet<Vec<u8>> {
    names.iter().map(|n| n.to_vec()).collect()
}

fn get_xattr(p: &Path, name: &str) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XATTR_VALUE_MAX + 16];
    let n = getxattr(p, name, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf)
}

fn list_xattrs(p: &Path) -> BTreeSet<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let n = listxattr(p, &mut buf[..]).expect("listxattr");
    buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect()
}

/// Unmounts and asserts that `snapfs fsck STORE` exits 0.
#[track_caller]
fn umount_and_fsck(mut m: Mount) {
    m.umount();
    let out = snapfs([OsStr::new("fsck"), m.store().path().as_os_str()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck not clean after the bad-input sweep: {}",
        out.describe()
    );
}

#[test]
fn names_of_255_bytes_work_and_256_bytes_fail_enametoolong() {
    let m = Mount::new();
    fs::write(m.join("src"), b"source").expect("create src");
    fs::write(m.join("keep"), b"keep me").expect("create keep");

    let (file, dir, sym, renamed, linked) = (
        name('f', NAME_MAX),
        name('d', NAME_MAX),
        name('s', NAME_MAX),
        name('r', NAME_MAX),
        name('l', NAME_MAX),
    );
    fs::write(m.join(&file), b"long").expect("create 255-byte name");
    fs::create_dir(m.join(&dir)).expect("mkdir 255-byte name");
    symlink("keep", m.join(&sym)).expect("symlink 255-byte name");
    fs::rename(m.join("src"), m.join(&renamed)).expect("rename to a 255-byte name");
    fs::hard_link(m.join("keep"), m.join(&linked)).expect("link to a 255-byte name");

    let want = set_of(&[
        b"keep",
        file.as_bytes(),
        dir.as_bytes(),
        sym.as_bytes(),
        renamed.as_bytes(),
        linked.as_bytes(),
    ]);
    assert_eq!(listing(m.path()), want, "readdir of 255-byte names");
    assert_eq!(fs::read(m.join(&renamed)).expect("read renamed"), b"source");
    assert_eq!(fs::read(m.join(&linked)).expect("read link"), b"keep me");
    assert_eq!(
        fs::read(m.join(&sym)).expect("read via symlink"),
        b"keep me"
    );

    let long = m.join(name('z', NAME_MAX + 1));
    let create = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&long);
    expect_errno(
        create,
        Errno::ENAMETOOLONG,
        "open(O_CREAT) of a 256-byte name",
    );
    expect_errno(fs::create_dir(&long), Errno::ENAMETOOLONG, "mkdir 256");
    expect_errno(symlink("keep", &long), Errno::ENAMETOOLONG, "symlink 256");
    expect_errno(
        fs::rename(m.join(&renamed), &long),
        Errno::ENAMETOOLONG,
        "rename to 256",
    );
    expect_errno(
        fs::hard_link(m.join("keep"), &long),
        Errno::ENAMETOOLONG,
        "link to 256",
    );
    expect_errno(fs::metadata(&long), Errno::ENAMETOOLONG, "stat of 256");
    expect_errno(
        fs::symlink_metadata(&long),
        Errno::ENAMETOOLONG,
        "lstat 256",
    );

    assert_eq!(
        listing(m.path()),
        want,
        "refused 256-byte names created something"
    );
    assert_eq!(
        fs::read(m.join(&renamed)).expect("read"),
        b"source",
        "rename source"
    );
    assert_eq!(fs::read(m.join("keep")).expect("read keep"), b"keep me");
    umount_and_fsck(m);
}

#[test]
fn non_utf8_names_round_trip_through_readdir_rename_unlink_and_remount() {
    let mut m = Mount::new();
    let a: &[u8] = b"\xff\xfe-caf\xe9";
    let b: &[u8] = b"\x80";
    let c: &[u8] = b"\xc3\x28-renamed\xa0";
    let d: &[u8] = b"dir-\xfe\xff";
    let path = |n: &[u8]| m.join(OsStr::from_bytes(n));
    fs::write(path(a), b"first").expect("create non-UTF-8 name a");
    fs::write(path(b), b"second").expect("create non-UTF-8 name b");
    fs::create_dir(path(d)).expect("mkdir non-UTF-8 name");
    fs::write(path(d).join(OsStr::from_bytes(b)), b"nested").expect("create nested");
    assert_eq!(listing(m.path()), set_of(&[a, b, d]), "readdir bytes");

    fs::rename(path(a), path(c)).expect("rename non-UTF-8 to non-UTF-8");
    fs::remove_file(path(b)).expect("unlink non-UTF-8 name");
    expect_errno(
        fs::metadata(path(a)),
        Errno::ENOENT,
        "old name after rename",
    );
    expect_errno(fs::metadata(path(b)), Errno::ENOENT, "unlinked name");
    assert_eq!(
        listing(m.path()),
        set_of(&[c, d]),
        "readdir after rename+unlink"
    );

    m.remount();
    let path = |n: &[u8]| m.join(OsStr::from_bytes(n));
    assert_eq!(listing(m.path()), set_of(&[c, d]), "readdir after remount");
    assert_eq!(fs::read(path(c)).expect("read renamed"), b"first");
    assert_eq!(
        listing(&path(d)),
        set_of(&[b]),
        "nested readdir after remount"
    );
    assert_eq!(
        fs::read(path(d).join(OsStr::from_bytes(b))).expect("read nested"),
        b"nested"
    );
    umount_and_fsck(m);
}

#[test]
fn paths_near_path_max_work_and_longer_ones_fail_enametoolong() {
    let m = Mount::new();
    // Components of 200 bytes until the directory path is just under 4000 bytes.
    let mut deep = m.path().to_path_buf();
    let mut i = 0u8;
    while deep.as_os_str().len() + 201 < 4000 - 10 {
        deep.push(name((b'a' + i % 26) as char, 200));
        i += 1;
    }
    let pad = 3980 - deep.as_os_str().len() - 1;
    deep.push(name('p', pad));
    fs::create_dir_all(&deep).expect("create nested directories near PATH_MAX");
    let file = deep.join("deep-file");
    let len = file.as_os_str().len();
    assert!((3980..4096).contains(&len), "deep path has {len} bytes");
    fs::write(&file, b"deep content").expect("create a file ~4000 bytes deep");
    assert_eq!(
        fs::read(&file).expect("read the deep file"),
        b"deep content"
    );

    // Longer than PATH_MAX - 1 (4095 bytes): the kernel refuses before any lookup.
    let mut too_long = deep.clone();
    too_long.push(name('x', 150));
    too_long.push("f");
    assert!(too_long.as_os_str().len() > 4095, "path is not too long");
    expect_errno(
        fs::write(&too_long, b"x"),
        Errno::ENAMETOOLONG,
        "create >4095",
    );
    expect_errno(fs::metadata(&too_long), Errno::ENAMETOOLONG, "stat >4095");
    expect_errno(
        fs::create_dir_all(&too_long),
        Errno::ENAMETOOLONG,
        "mkdir -p >4095",
    );

    // The daemon is alive and nothing was damaged.
    assert_eq!(fs::read(&file).expect("read again"), b"deep content");
    fs::write(m.join("after"), b"ok").expect("create after refusals");
    assert_eq!(fs::read(m.join("after")).expect("read after"), b"ok");
    assert_eq!(
        listing(&deep),
        set_of(&[b"deep-file"]),
        "deepest dir listing"
    );
    umount_and_fsck(m);
}

#[test]
fn writes_at_the_maximum_file_size_are_refused_and_the_edge_works() {
    let m = Mount::new();
    let keep = m.join("keep");
    let content = common::random_bytes(7, 100_000);
    fs::write(&keep, &content).expect("write keep");

    let path = m.join("big");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create big");
    f.write_all_at(b"head", 0).expect("write head");
    // The limit is the largest loff_t: a write reaching past it overflows the offset, which
    // the kernel refuses (EINVAL, as on XFS and Btrfs, whose limit is the same) before the
    // daemon or the page cache sees it (a size past it cannot even be passed to ftruncate).
    expect_errno(
        f.write_at(b"!", MAX_FILE_SIZE),
        Errno::EINVAL,
        "pwrite of 1 byte at the maximum size",
    );
    expect_errno(
        f.write_at(b"xy", MAX_FILE_SIZE - 1),
        Errno::EINVAL,
        "pwrite straddling the maximum size",
    );
    let st = f.metadata().expect("fstat after refusals");
    assert_eq!(st.len(), 4, "refused writes changed the size");

    // Far offsets inside the limit work, and the byte ending exactly at it too.
    f.write_all_at(b"far", 1 << 62).expect("write at 2^62");
    f.write_all_at(b"Z", MAX_FILE_SIZE - 1)
        .expect("1-byte write ending at the maximum size");
    f.sync_all().expect("fsync");
    let st = f.metadata().expect("fstat");
    assert_eq!(st.len(), MAX_FILE_SIZE, "size after the edge write");
    let mut buf = [0xAAu8; 4];
    f.read_exact_at(&mut buf, 0).expect("read head");
    assert_eq!(&buf, b"head");
    let mut far = [0u8; 3];
    f.read_exact_at(&mut far, 1 << 62).expect("read at 2^62");
    assert_eq!(&far, b"far");
    for off in [
        4u64,
        4096,
        1 << 30,
        1 << 50,
        (1 << 62) + 3,
        MAX_FILE_SIZE - 4096,
    ] {
        let mut hole = [0xAAu8; 16];
        f.read_exact_at(&mut hole, off)
            .unwrap_or_else(|e| panic!("read the hole at {off}: {e}"));
        assert_eq!(hole, [0u8; 16], "hole at {off} is not zeros");
    }
    // (A read may not reach past the largest loff_t either: 4 bytes end exactly there.)
    let mut tail = [0xAAu8; 4];
    f.read_exact_at(&mut tail, MAX_FILE_SIZE - 4)
        .expect("read tail");
    assert_eq!(&tail, b"\0\0\0Z", "last bytes of the file");
    let blocks = f.metadata().expect("fstat").blocks();
    assert!(
        blocks <= 1024,
        "a sparse 2^63-byte file with 8 bytes of data uses {blocks} 512-byte blocks"
    );
    drop(f);

    // The same through a fresh mount (no page cache): what the store holds.
    let mut m = m;
    m.remount();
    let f = File::open(m.join("big")).expect("reopen big");
    assert_eq!(f.metadata().expect("fstat").len(), MAX_FILE_SIZE);
    let mut tail = [0u8; 1];
    f.read_exact_at(&mut tail, MAX_FILE_SIZE - 1)
        .expect("read the last byte");
    assert_eq!(&tail, b"Z");
    drop(f);
    assert_eq!(
        fs::read(m.join("keep")).expect("read keep"),
        content,
        "keep damaged"
    );
    umount_and_fsck(m);
}

#[test]
fn xattr_value_and_name_limits_are_enforced_without_damage() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"file data").expect("write");
    let set = |n: &str, v: &[u8]| setxattr(&f, n, v, XattrFlags::empty());
    set("user.before", b"old value").expect("set user.before");

    let max_value = common::random_bytes(3, XATTR_VALUE_MAX);
    set("user.big", &max_value).expect("set a 65536-byte value");
    assert_eq!(get_xattr(&f, "user.big").expect("get big"), max_value);

    let over = vec![b'v'; XATTR_VALUE_MAX + 1];
    expect_errno(set("user.over", &over), Errno::E2BIG, "65537-byte value");
    expect_errno(set("user.big", &over), Errno::E2BIG, "replace with 65537");
    expect_errno(
        get_xattr(&f, "user.over"),
        Errno::ENODATA,
        "refused value set",
    );

    let long_name = format!("user.{}", name('n', NAME_MAX - 5));
    assert_eq!(long_name.len(), 255);
    set(&long_name, b"long-named").expect("set a 255-byte xattr name");
    assert_eq!(get_xattr(&f, &long_name).expect("get"), b"long-named");
    let too_long = format!("user.{}", name('n', NAME_MAX - 4));
    expect_errno(set(&too_long, b"x"), Errno::ERANGE, "set 256-byte name");
    expect_errno(get_xattr(&f, &too_long), Errno::ERANGE, "get 256-byte name");

    let want: BTreeSet<Vec<u8>> = ["user.before", "user.big", long_name.as_str()]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(list_xattrs(&f), want, "xattr list after refused calls");
    assert_eq!(get_xattr(&f, "user.before").expect("get"), b"old value");
    assert_eq!(
        get_xattr(&f, "user.big").expect("get"),
        max_value,
        "big changed"
    );
    assert_eq!(fs::read(&f).expect("read"), b"file data", "content changed");
    umount_and_fsck(m);
}

#[test]
fn symlink_targets_of_4095_bytes_work_and_4096_fail_enametoolong() {
    let mut m = Mount::new();
    // A target made of short components, so it is a plausible (dangling) path.
    let target: String = "abcdefg/".repeat(SYMLINK_MAX / 8) + &name('t', SYMLINK_MAX % 8);
    assert_eq!(target.len(), SYMLINK_MAX);
    symlink(&target, m.join("max")).expect("symlink with a 4095-byte target");
    let got = fs::read_link(m.join("max")).expect("readlink");
    assert_eq!(got.as_os_str().as_bytes(), target.as_bytes(), "readlink");
    assert_eq!(
        fs::symlink_metadata(m.join("max")).expect("lstat").len(),
        4095
    );

    let over = name('o', SYMLINK_MAX + 1);
    expect_errno(
        symlink(&over, m.join("over")),
        Errno::ENAMETOOLONG,
        "symlink with a 4096-byte target",
    );
    expect_errno(
        fs::symlink_metadata(m.join("over")),
        Errno::ENOENT,
        "refused",
    );
    assert_eq!(
        listing(m.path()),
        set_of(&[b"max"]),
        "readdir after refusal"
    );

    m.remount();
    let got: PathBuf = fs::read_link(m.join("max")).expect("readlink after remount");
    assert_eq!(
        got.as_os_str().as_bytes(),
        target.as_bytes(),
        "after remount"
    );
    umount_and_fsck(m);
}

#[test]
fn the_mount_survives_a_mixed_bad_input_burst() {
    let m = Mount::new();
    fs::write(m.join("data"), b"precious").expect("write data");
    let long = OsString::from(name('q', 300));
    for _ in 0..20 {
        let _ = File::create(m.join(&long));
        let _ = fs::create_dir(m.join(OsStr::from_bytes(&[b'x'; 1000])));
        let _ = symlink(name('s', 5000), m.join("s"));
        let _ = setxattr(
            m.join("data"),
            "user.v",
            &[0u8; 70_000],
            XattrFlags::empty(),
        );
        let _ = OpenOptions::new()
            .write(true)
            .open(m.join("data"))
            .and_then(|f| f.set_len(MAX_FILE_SIZE + 1));
    }
    assert_eq!(fs::read(m.join("data")).expect("read data"), b"precious");
    assert_eq!(
        listing(m.path()),
        set_of(&[b"data"]),
        "burst created something"
    );
    assert!(
        list_xattrs(&m.join("data")).is_empty(),
        "burst set an xattr"
    );
    umount_and_fsck(m);
}
