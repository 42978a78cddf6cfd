//! Directories and names through a real kernel mount: mkdir/rmdir, directory nlink,
//! readdir (large, types, stable under changes), name length limits, non-UTF-8 names,
//! and deep paths.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{expect_errno, Mount};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

fn nlink(p: &Path) -> u64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .nlink()
}

/// Every name in `dir` (without `.` and `..`), with how often it was listed.
fn listing(dir: &Path) -> BTreeMap<OsString, usize> {
    let mut seen = BTreeMap::new();
    for e in fs::read_dir(dir).expect("readdir") {
        *seen.entry(e.expect("entry").file_name()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn mkdir_then_rmdir_roundtrips() {
    let m = Mount::new();
    let d = m.join("d");
    fs::create_dir(&d).expect("mkdir");
    let md = fs::metadata(&d).expect("stat");
    assert!(md.is_dir());
    assert_eq!(md.nlink(), 2, "new directory nlink");
    assert_eq!(fs::read_dir(&d).expect("readdir").count(), 0);
    fs::remove_dir(&d).expect("rmdir");
    expect_errno(fs::metadata(&d), Errno::ENOENT, "stat after rmdir");
    fs::create_dir(&d).expect("mkdir again");
}

#[test]
fn mkdir_existing_name_fails_eexist() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    fs::write(m.join("f"), b"").expect("write");
    expect_errno(fs::create_dir(m.join("d")), Errno::EEXIST, "mkdir over dir");
    expect_errno(
        fs::create_dir(m.join("f")),
        Errno::EEXIST,
        "mkdir over file",
    );
    expect_errno(
        fs::create_dir(m.join("missing/sub")),
        Errno::ENOENT,
        "mkdir in missing parent",
    );
}

#[test]
fn rmdir_nonempty_dir_fails_enotempty() {
    let m = Mount::new();
    fs::create_dir_all(m.join("d/sub")).expect("mkdir");
    fs::write(m.join("e"), b"").expect("write");
    fs::create_dir(m.join("withfile")).expect("mkdir");
    fs::write(m.join("withfile/f"), b"x").expect("write");
    expect_errno(
        fs::remove_dir(m.join("d")),
        Errno::ENOTEMPTY,
        "rmdir dir with subdir",
    );
    expect_errno(
        fs::remove_dir(m.join("withfile")),
        Errno::ENOTEMPTY,
        "rmdir dir with file",
    );
    expect_errno(fs::remove_dir(m.join("e")), Errno::ENOTDIR, "rmdir a file");
    expect_errno(
        fs::remove_dir(m.join("missing")),
        Errno::ENOENT,
        "rmdir missing",
    );
    // Emptied, it can go.
    fs::remove_file(m.join("withfile/f")).expect("unlink");
    fs::remove_dir(m.join("withfile")).expect("rmdir emptied dir");
    fs::remove_dir(m.join("d/sub")).expect("rmdir sub");
    fs::remove_dir(m.join("d")).expect("rmdir d");
}

#[test]
fn dir_nlink_tracks_subdirs_created_and_removed() {
    let mut m = Mount::new();
    let root_before = nlink(m.path());
    assert_eq!(root_before, 2, "fresh root nlink");
    let p = m.join("p");
    fs::create_dir(&p).expect("mkdir");
    assert_eq!(nlink(m.path()), 3, "root nlink after mkdir");
    for i in 0..5 {
        fs::create_dir(p.join(format!("s{i}"))).expect("mkdir sub");
    }
    // Files and symlinks do not count.
    fs::write(p.join("file"), b"").expect("write");
    std::os::unix::fs::symlink("s0", p.join("link")).expect("symlink");
    assert_eq!(nlink(&p), 7, "2 + 5 subdirs");
    fs::remove_dir(p.join("s3")).expect("rmdir");
    fs::remove_dir(p.join("s4")).expect("rmdir");
    assert_eq!(nlink(&p), 5, "2 + 3 subdirs");
    m.remount();
    assert_eq!(nlink(&p), 5, "after remount");
    assert_eq!(nlink(m.path()), 3, "root after remount");
}

#[test]
fn dir_nlink_tracks_subdirs_renamed_in_and_out() {
    let m = Mount::new();
    let a = m.join("a");
    let b = m.join("b");
    fs::create_dir_all(a.join("x/inner")).expect("mkdir");
    fs::create_dir(a.join("y")).expect("mkdir");
    fs::create_dir(&b).expect("mkdir");
    assert_eq!((nlink(&a), nlink(&b)), (4, 2));
    fs::rename(a.join("x"), b.join("x")).expect("rename dir a -> b");
    assert_eq!((nlink(&a), nlink(&b)), (3, 3), "after moving x to b");
    assert_eq!(nlink(&b.join("x")), 3, "moved dir keeps its own nlink");
    // Renaming within the same parent changes nothing.
    fs::rename(b.join("x"), b.join("x2")).expect("rename in place");
    assert_eq!(nlink(&b), 3);
    // Replacing an empty directory: one subdir gone, one arrives.
    fs::create_dir(b.join("empty")).expect("mkdir");
    assert_eq!(nlink(&b), 4);
    fs::rename(a.join("y"), b.join("empty")).expect("rename over empty dir");
    assert_eq!((nlink(&a), nlink(&b)), (2, 4), "after replacing empty dir");
    // A file moved between directories does not count.
    fs::write(a.join("f"), b"").expect("write");
    fs::rename(a.join("f"), b.join("f")).expect("rename file");
    assert_eq!((nlink(&a), nlink(&b)), (2, 4));
    // And back out of b into the root.
    let root = nlink(m.path());
    fs::rename(b.join("x2"), m.join("x3")).expect("rename to root");
    assert_eq!((nlink(&b), nlink(m.path())), (3, root + 1));
    // `..` of the moved directory now names the root.
    assert_eq!(
        fs::metadata(m.join("x3/..")).expect("stat ..").ino(),
        fs::metadata(m.path()).expect("stat root").ino()
    );
}

#[test]
fn readdir_5000_entries_lists_each_once() {
    let mut m = Mount::new();
    let d = m.join("big");
    fs::create_dir(&d).expect("mkdir");
    let names: Vec<String> = (0..5000)
        .map(|i| format!("entry-{i:05}-{}", "x".repeat(i % 40)))
        .collect();
    for n in &names {
        File::create(d.join(n)).expect("create");
    }
    for round in 0..2 {
        let seen = listing(&d);
        let dups: Vec<_> = seen.iter().filter(|(_, &c)| c != 1).take(5).collect();
        assert!(dups.is_empty(), "listed more than once: {dups:?}");
        assert_eq!(seen.len(), 5000, "entries listed, round {round}");
        for n in &names {
            assert!(seen.contains_key(OsStr::new(n)), "{n} missing");
        }
        m.remount();
    }
}

#[test]
fn readdir_unlinking_seen_entries_midway_skips_nothing() {
    let m = Mount::new();
    let d = m.join("d");
    fs::create_dir(&d).expect("mkdir");
    for i in 0..2000 {
        File::create(d.join(format!("f{i:04}"))).expect("create");
    }
    let mut dir =
        Dir::open(&d, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).expect("opendir");
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut removed = false;
    for e in dir.iter() {
        let e = e.expect("readdir entry");
        let name = e.file_name().to_bytes().to_vec();
        if name == b"." || name == b".." {
            continue;
        }
        *seen.entry(name).or_insert(0) += 1;
        if !removed && seen.len() == 500 {
            // Delete every entry already returned, and add new ones.
            for n in seen.keys() {
                fs::remove_file(d.join(OsStr::from_bytes(n))).expect("unlink seen");
            }
            for i in 0..300 {
                File::create(d.join(format!("new{i:03}"))).expect("create new");
            }
            removed = true;
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &c)| c != 1).take(5).collect();
    assert!(dups.is_empty(), "listed more than once: {dups:?}");
    for i in 0..2000 {
        let n = format!("f{i:04}");
        assert!(
            seen.contains_key(n.as_bytes()),
            "{n} existed during the whole listing but was skipped"
        );
    }
}

#[test]
fn readdir_reports_types_and_dot_entries() {
    let m = Mount::new();
    fs::create_dir(m.join("dir")).expect("mkdir");
    fs::write(m.join("file"), b"").expect("write");
    std::os::unix::fs::symlink("file", m.join("link")).expect("symlink");
    nix::unistd::mkfifo(&m.join("fifo"), Mode::from_bits_truncate(0o644)).expect("mkfifo");
    let mut types = BTreeMap::new();
    for e in fs::read_dir(m.path()).expect("readdir") {
        let e = e.expect("entry");
        let t = e.file_type().expect("d_type");
        let kind = if t.is_dir() {
            "dir"
        } else if t.is_file() {
            "file"
        } else if t.is_symlink() {
            "symlink"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                "fifo"
            } else {
                "other"
            }
        };
        types.insert(e.file_name().into_string().expect("utf8"), kind);
    }
    let want: BTreeMap<String, &str> = [
        ("dir", "dir"),
        ("file", "file"),
        ("link", "symlink"),
        ("fifo", "fifo"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect();
    assert_eq!(types, want, "readdir types (the root lists nothing else)");

    let mut dir = Dir::open(
        &m.join("dir"),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .expect("opendir");
    let mut names: Vec<Vec<u8>> = dir
        .iter()
        .map(|e| e.expect("entry").file_name().to_bytes().to_vec())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![b".".to_vec(), b"..".to_vec()],
        "empty dir lists . and .. once"
    );
}

#[test]
fn name_255_bytes_works() {
    let mut m = Mount::new();
    let name = "n".repeat(255);
    let dname = "d".repeat(255);
    let lname = "l".repeat(255);
    fs::write(m.join(&name), b"long name").expect("create 255-byte name");
    fs::create_dir(m.join(&dname)).expect("mkdir 255-byte name");
    std::os::unix::fs::symlink(&name, m.join(&lname)).expect("symlink 255-byte name");
    fs::write(m.join(&dname).join(&name), b"nested").expect("create nested");
    m.remount();
    assert_eq!(fs::read(m.join(&name)).expect("read"), b"long name");
    assert_eq!(
        fs::read(m.join(&lname)).expect("read via link"),
        b"long name"
    );
    let seen = listing(m.path());
    for n in [&name, &dname, &lname] {
        assert_eq!(
            seen.get(OsStr::new(n)),
            Some(&1),
            "{}-byte name listed",
            n.len()
        );
    }
    fs::rename(m.join(&name), m.join("m".repeat(255))).expect("rename to 255 bytes");
}

#[test]
fn name_256_bytes_fails_enametoolong() {
    let m = Mount::new();
    let long = "z".repeat(256);
    fs::write(m.join("f"), b"").expect("write");
    expect_errno(
        File::create(m.join(&long)),
        Errno::ENAMETOOLONG,
        "create 256",
    );
    expect_errno(
        fs::create_dir(m.join(&long)),
        Errno::ENAMETOOLONG,
        "mkdir 256",
    );
    expect_errno(
        std::os::unix::fs::symlink("f", m.join(&long)),
        Errno::ENAMETOOLONG,
        "symlink 256",
    );
    expect_errno(
        fs::hard_link(m.join("f"), m.join(&long)),
        Errno::ENAMETOOLONG,
        "link 256",
    );
    expect_errno(
        fs::rename(m.join("f"), m.join(&long)),
        Errno::ENAMETOOLONG,
        "rename to 256",
    );
    expect_errno(
        nix::unistd::mkfifo(&m.join(&long), Mode::from_bits_truncate(0o644)),
        Errno::ENAMETOOLONG,
        "mkfifo 256",
    );
    expect_errno(
        fs::metadata(m.join(&long)),
        Errno::ENAMETOOLONG,
        "lookup 256",
    );
    assert_eq!(listing(m.path()).len(), 1, "nothing was created");
}

#[test]
fn non_utf8_names_roundtrip_through_readdir() {
    let mut m = Mount::new();
    let raw: Vec<Vec<u8>> = vec![
        b"caf\xe9".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"mixed-\xc3\xa9-\xc3-\x80".to_vec(),
        b"\x01\x02ctl\x7f".to_vec(),
        "ünïcödé-名前".as_bytes().to_vec(),
        b"back\\slash and space".to_vec(),
    ];
    for (i, n) in raw.iter().enumerate() {
        fs::write(m.join(OsStr::from_bytes(n)), format!("{i}")).expect("create raw name");
    }
    fs::create_dir(m.join(OsStr::from_bytes(b"dir\xa0"))).expect("mkdir raw name");
    for round in 0..2 {
        let seen = listing(m.path());
        let mut want: BTreeMap<OsString, usize> = raw
            .iter()
            .map(|n| (OsString::from_vec(n.clone()), 1))
            .collect();
        want.insert(OsString::from_vec(b"dir\xa0".to_vec()), 1);
        assert_eq!(seen, want, "listed names, round {round}");
        for (i, n) in raw.iter().enumerate() {
            assert_eq!(
                fs::read(m.join(OsStr::from_bytes(n))).expect("read raw name"),
                format!("{i}").as_bytes()
            );
        }
        m.remount();
    }
}

#[test]
fn deep_path_near_4000_bytes_works() {
    let mut m = Mount::new();
    let base_len = m.path().as_os_str().len();
    let comp = "c".repeat(99);
    let mut p: PathBuf = m.path().to_path_buf();
    let mut depth = 0;
    // Grow until the file path is just under 4000 bytes.
    while p.as_os_str().len() + 100 + "/leaf.txt".len() < 4000 {
        p.push(&comp);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir at depth {depth}: {e}"));
        depth += 1;
    }
    let leaf = p.join("leaf.txt");
    let len = leaf.as_os_str().len();
    assert!(
        len > 3900 && len < 4096,
        "path length {len} (base {base_len})"
    );
    fs::write(&leaf, b"deep").expect("write deep file");
    m.remount();
    assert_eq!(fs::read(&leaf).expect("read deep file"), b"deep");
    let mut walked = 0;
    let mut cur = m.path().to_path_buf();
    while let Some(e) = fs::read_dir(&cur).expect("readdir").next() {
        let e = e.expect("entry");
        if e.file_name() == "leaf.txt" {
            break;
        }
        cur = e.path();
        walked += 1;
    }
    assert_eq!(walked, depth, "directory levels found by readdir");
    let out = common::sh(m.path(), "find . -name leaf.txt | wc -l");
    assert_eq!(
        out.assert_success().stdout.trim(),
        "1",
        "find sees the leaf"
    );
    fs::remove_dir_all(m.join(&comp)).expect("rm -r deep tree");
}
