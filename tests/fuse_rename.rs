//! rename(2) and renameat2(2) through a real kernel mount.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{expect_errno, Mount};
use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .ino()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    v.sort();
    v
}

fn rename2(from: &Path, to: &Path, flags: RenameFlags) -> nix::Result<()> {
    renameat2(None, from, None, to, flags)
}

#[test]
fn rename_file_same_dir_moves_name_and_keeps_inode() {
    let mut m = Mount::new();
    fs::write(m.join("a"), b"content").expect("write");
    let i = ino(&m.join("a"));
    fs::rename(m.join("a"), m.join("b")).expect("rename");
    expect_errno(fs::metadata(m.join("a")), Errno::ENOENT, "old name");
    assert_eq!(fs::read(m.join("b")).expect("read"), b"content");
    assert_eq!(ino(&m.join("b")), i, "inode kept");
    assert_eq!(names(m.path()), ["b"]);
    m.remount();
    assert_eq!(names(m.path()), ["b"]);
    assert_eq!(fs::read(m.join("b")).expect("read"), b"content");
    // Renaming a name onto itself is a no-op.
    fs::rename(m.join("b"), m.join("b")).expect("rename onto itself");
    assert_eq!(fs::read(m.join("b")).expect("read"), b"content");
}

#[test]
fn rename_dir_across_dirs_moves_subtree() {
    let mut m = Mount::new();
    fs::create_dir_all(m.join("src/tree/deep")).expect("mkdir");
    fs::create_dir(m.join("dst")).expect("mkdir");
    fs::write(m.join("src/tree/deep/f"), b"deep file").expect("write");
    std::os::unix::fs::symlink("deep/f", m.join("src/tree/l")).expect("symlink");
    fs::rename(m.join("src/tree"), m.join("dst/moved")).expect("rename dir");
    expect_errno(fs::metadata(m.join("src/tree")), Errno::ENOENT, "old dir");
    assert!(names(&m.join("src")).is_empty());
    assert_eq!(names(&m.join("dst")), ["moved"]);
    assert_eq!(
        fs::read(m.join("dst/moved/deep/f")).expect("read"),
        b"deep file"
    );
    assert_eq!(
        fs::read(m.join("dst/moved/l")).expect("read via link"),
        b"deep file"
    );
    m.remount();
    assert_eq!(
        fs::read(m.join("dst/moved/deep/f")).expect("read"),
        b"deep file"
    );
    assert!(names(&m.join("src")).is_empty(), "after remount");
}

#[test]
fn rename_file_across_dirs_moves_it() {
    let m = Mount::new();
    fs::create_dir(m.join("a")).expect("mkdir");
    fs::create_dir(m.join("b")).expect("mkdir");
    fs::write(m.join("a/f"), b"x").expect("write");
    fs::rename(m.join("a/f"), m.join("b/g")).expect("rename");
    assert!(names(&m.join("a")).is_empty());
    assert_eq!(names(&m.join("b")), ["g"]);
    assert_eq!(fs::read(m.join("b/g")).expect("read"), b"x");
}

#[test]
fn rename_over_existing_file_replaces_it() {
    let mut m = Mount::new();
    fs::write(m.join("new"), b"new content").expect("write");
    fs::write(m.join("old"), b"old content").expect("write");
    let new_ino = ino(&m.join("new"));
    // A descriptor on the replaced file keeps reading the replaced data.
    let mut held = File::open(m.join("old")).expect("open old");
    fs::rename(m.join("new"), m.join("old")).expect("rename over file");
    assert_eq!(names(m.path()), ["old"]);
    assert_eq!(fs::read(m.join("old")).expect("read"), b"new content");
    assert_eq!(ino(&m.join("old")), new_ino);
    let mut s = String::new();
    held.read_to_string(&mut s).expect("read replaced file");
    assert_eq!(s, "old content");
    assert_eq!(
        held.metadata().expect("fstat").nlink(),
        0,
        "replaced file nlink"
    );
    drop(held);
    m.remount();
    assert_eq!(fs::read(m.join("old")).expect("read"), b"new content");
}

#[test]
fn rename_over_hard_linked_file_drops_its_nlink() {
    let m = Mount::new();
    fs::write(m.join("victim"), b"victim").expect("write");
    fs::hard_link(m.join("victim"), m.join("other-link")).expect("link");
    fs::write(m.join("src"), b"src").expect("write");
    fs::rename(m.join("src"), m.join("victim")).expect("rename over linked file");
    let md = fs::metadata(m.join("other-link")).expect("stat");
    assert_eq!(md.nlink(), 1, "surviving link's nlink");
    assert_eq!(fs::read(m.join("other-link")).expect("read"), b"victim");
    assert_eq!(fs::read(m.join("victim")).expect("read"), b"src");
}

#[test]
fn rename_dir_over_empty_dir_replaces_it() {
    let m = Mount::new();
    fs::create_dir(m.join("full")).expect("mkdir");
    fs::write(m.join("full/f"), b"x").expect("write");
    fs::create_dir(m.join("empty")).expect("mkdir");
    fs::rename(m.join("full"), m.join("empty")).expect("rename over empty dir");
    assert_eq!(names(m.path()), ["empty"]);
    assert_eq!(fs::read(m.join("empty/f")).expect("read"), b"x");
    assert_eq!(
        fs::metadata(m.path()).expect("stat").nlink(),
        3,
        "root nlink"
    );
}

#[test]
fn rename_onto_nonempty_dir_fails_enotempty() {
    let m = Mount::new();
    fs::create_dir(m.join("a")).expect("mkdir");
    fs::create_dir(m.join("b")).expect("mkdir");
    fs::write(m.join("b/keep"), b"x").expect("write");
    expect_errno(
        fs::rename(m.join("a"), m.join("b")),
        Errno::ENOTEMPTY,
        "rename onto non-empty dir",
    );
    assert!(m.join("a").is_dir());
    assert_eq!(names(&m.join("b")), ["keep"]);
}

#[test]
fn rename_type_mismatch_fails() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    fs::write(m.join("f"), b"x").expect("write");
    expect_errno(
        fs::rename(m.join("f"), m.join("d")),
        Errno::EISDIR,
        "file onto dir",
    );
    expect_errno(
        fs::rename(m.join("d"), m.join("f")),
        Errno::ENOTDIR,
        "dir onto file",
    );
    expect_errno(
        fs::rename(m.join("missing"), m.join("x")),
        Errno::ENOENT,
        "rename missing",
    );
    assert_eq!(names(m.path()), ["d", "f"]);
}

#[test]
fn rename_noreplace_onto_existing_fails_eexist() {
    let m = Mount::new();
    fs::write(m.join("a"), b"a").expect("write");
    fs::write(m.join("b"), b"b").expect("write");
    expect_errno(
        rename2(&m.join("a"), &m.join("b"), RenameFlags::RENAME_NOREPLACE),
        Errno::EEXIST,
        "RENAME_NOREPLACE onto file",
    );
    assert_eq!(fs::read(m.join("a")).expect("read"), b"a");
    assert_eq!(fs::read(m.join("b")).expect("read"), b"b");
    fs::create_dir(m.join("d")).expect("mkdir");
    expect_errno(
        rename2(&m.join("a"), &m.join("d"), RenameFlags::RENAME_NOREPLACE),
        Errno::EEXIST,
        "RENAME_NOREPLACE onto dir",
    );
    rename2(&m.join("a"), &m.join("c"), RenameFlags::RENAME_NOREPLACE)
        .expect("RENAME_NOREPLACE to a free name");
    assert_eq!(names(m.path()), ["b", "c", "d"]);
    assert_eq!(fs::read(m.join("c")).expect("read"), b"a");
}

#[test]
fn rename_exchange_swaps_file_and_dir() {
    let mut m = Mount::new();
    fs::create_dir(m.join("p")).expect("mkdir");
    fs::create_dir(m.join("q")).expect("mkdir");
    fs::write(m.join("p/file"), b"file data").expect("write");
    fs::create_dir(m.join("q/dir")).expect("mkdir");
    fs::write(m.join("q/dir/inner"), b"inner").expect("write");
    let (fi, di) = (ino(&m.join("p/file")), ino(&m.join("q/dir")));
    rename2(
        &m.join("p/file"),
        &m.join("q/dir"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .expect("RENAME_EXCHANGE");
    assert_eq!(ino(&m.join("p/file")), di);
    assert_eq!(ino(&m.join("q/dir")), fi);
    assert_eq!(fs::read(m.join("p/file/inner")).expect("read"), b"inner");
    assert_eq!(fs::read(m.join("q/dir")).expect("read"), b"file data");
    let nl = |p: &str| fs::metadata(m.join(p)).expect("stat").nlink();
    assert_eq!(
        (nl("p"), nl("q")),
        (3, 2),
        "parents' nlink follow the directory"
    );
    assert_eq!(
        fs::metadata(m.join("p/file/..")).expect("stat").ino(),
        ino(&m.join("p")),
        ".. of the exchanged dir"
    );
    m.remount();
    assert_eq!(fs::read(m.join("p/file/inner")).expect("read"), b"inner");
    assert_eq!(fs::read(m.join("q/dir")).expect("read"), b"file data");
}

#[test]
fn rename_exchange_two_files_swaps_contents() {
    let m = Mount::new();
    fs::write(m.join("a"), b"AAA").expect("write");
    fs::write(m.join("b"), b"B").expect("write");
    rename2(&m.join("a"), &m.join("b"), RenameFlags::RENAME_EXCHANGE).expect("exchange");
    assert_eq!(fs::read(m.join("a")).expect("read"), b"B");
    assert_eq!(fs::read(m.join("b")).expect("read"), b"AAA");
    expect_errno(
        rename2(
            &m.join("a"),
            &m.join("missing"),
            RenameFlags::RENAME_EXCHANGE,
        ),
        Errno::ENOENT,
        "exchange with a missing name",
    );
    assert_eq!(fs::read(m.join("a")).expect("read"), b"B");
}

#[test]
fn rename_dir_into_own_subdir_fails_einval() {
    let m = Mount::new();
    fs::create_dir_all(m.join("a/b/c")).expect("mkdir");
    expect_errno(
        fs::rename(m.join("a"), m.join("a/b/c/a")),
        Errno::EINVAL,
        "move dir into its own subdir",
    );
    expect_errno(
        fs::rename(m.join("a"), m.join("a/x")),
        Errno::EINVAL,
        "move dir into itself",
    );
    assert!(m.join("a/b/c").is_dir());
    assert_eq!(names(m.path()), ["a"]);
}

#[test]
fn rename_many_files_between_dirs_keeps_every_file() {
    let mut m = Mount::new();
    fs::create_dir(m.join("from")).expect("mkdir");
    fs::create_dir(m.join("to")).expect("mkdir");
    for i in 0..300 {
        fs::write(m.join(format!("from/f{i}")), format!("{i}")).expect("write");
    }
    for i in 0..300 {
        fs::rename(m.join(format!("from/f{i}")), m.join(format!("to/g{i}"))).expect("rename");
    }
    m.remount();
    assert!(names(&m.join("from")).is_empty());
    assert_eq!(names(&m.join("to")).len(), 300);
    for i in 0..300 {
        assert_eq!(
            fs::read(m.join(format!("to/g{i}"))).expect("read"),
            format!("{i}").as_bytes()
        );
    }
}
