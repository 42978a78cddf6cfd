//! Whole trees through a real kernel mount: a tarball of a few thousand files with
//! random sizes, modes, owners, times, symlinks, hard links, xattrs and special files
//! extracted with `tar -xp --xattrs`, and a `cp -a` copy; both compared with
//! `diff -r --no-dereference`, `stat` and `getfattr` against the host.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{assert_same_lines, q, sh, stat_lines, Mount};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The stat fields every copy must keep.
const STAT_FORMAT: &str = "%n %f %u %g %s %Y";

/// Builds a reproducible tree under `root`; returns the number of entries made.
fn build_tree(root: &Path, seed: u64, files: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut regular: Vec<PathBuf> = Vec::new();
    let mut count = 0;
    for i in 0..60 {
        let parent = dirs[rng.gen_range(0..dirs.len())].clone();
        let d = parent.join(format!("dir {i}-ü"));
        fs::create_dir(&d).expect("mkdir");
        dirs.push(d);
        count += 1;
    }
    let owners = [0u32, 1000, 65534, 4_000_000_000];
    let modes = [
        0o644, 0o600, 0o755, 0o700, 0o444, 0o640, 0o4755, 0o2755, 0o000, 0o777,
    ];
    for i in 0..files {
        let dir = &dirs[rng.gen_range(0..dirs.len())];
        let p = dir.join(format!("file-{i}{}", if i % 7 == 0 { ".tx t" } else { "" }));
        let size = match rng.gen_range(0..100) {
            0..=69 => rng.gen_range(0..4096),
            70..=96 => rng.gen_range(4096..65536),
            _ => rng.gen_range(65536..1_500_000),
        };
        fs::write(&p, common::random_bytes(seed ^ i as u64, size)).expect("write");
        if i % 20 == 0 {
            rustix::fs::setxattr(
                &p,
                "user.note",
                format!("file {i}").as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
            .expect("host setxattr");
        }
        if i % 50 == 0 {
            // A sparse file.
            let f = fs::OpenOptions::new().write(true).open(&p).expect("open");
            f.set_len(size as u64 + 3_000_000).expect("extend");
        }
        let own = owners[rng.gen_range(0..owners.len())];
        std::os::unix::fs::chown(&p, Some(own), Some(owners[rng.gen_range(0..owners.len())]))
            .expect("chown");
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(modes[rng.gen_range(0..modes.len())]),
        )
        .expect("chmod");
        regular.push(p);
        count += 1;
    }
    for i in 0..150 {
        let target = &regular[rng.gen_range(0..regular.len())];
        let dir = &dirs[rng.gen_range(0..dirs.len())];
        let l = dir.join(format!("hardlink-{i}"));
        if fs::hard_link(target, &l).is_ok() {
            count += 1;
        }
    }
    for i in 0..200 {
        let dir = &dirs[rng.gen_range(0..dirs.len())];
        let target = match i % 4 {
            0 => "../somewhere/else".to_string(),
            1 => "/absolute/dangling".to_string(),
            2 => regular[rng.gen_range(0..regular.len())]
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string(),
            _ => ".".to_string(),
        };
        let l = dir.join(format!("symlink-{i}"));
        symlink(&target, &l).expect("symlink");
        std::os::unix::fs::lchown(&l, Some(owners[i % owners.len()]), Some(0)).expect("lchown");
        count += 1;
    }
    for i in 0..5 {
        let dir = &dirs[rng.gen_range(0..dirs.len())];
        nix::unistd::mkfifo(
            &dir.join(format!("fifo-{i}")),
            Mode::from_bits_truncate(0o640),
        )
        .expect("mkfifo");
        mknod(
            &dir.join(format!("dev-c{i}")),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            makedev(i + 1, i * 7),
        )
        .expect("mknod c");
        mknod(
            &dir.join(format!("dev-b{i}")),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(8, i * 16),
        )
        .expect("mknod b");
        count += 3;
    }
    // Times last, deepest first, so that directories keep theirs.
    let mut all: Vec<PathBuf> = Vec::new();
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in &all {
        let secs = match rng.gen_range(0..50) {
            0 => -rng.gen_range(1..2_000_000_000i64),
            1 => rng.gen_range(2_147_483_648..4_102_444_800i64),
            _ => rng.gen_range(600_000_000..1_800_000_000i64),
        };
        let t = TimeSpec::new(secs, rng.gen_range(0..1_000_000_000));
        utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink).expect("utimensat");
    }
    for (i, d) in dirs.iter().enumerate().skip(1) {
        let mode = [0o755, 0o700, 0o1777, 0o2775, 0o555][i % 5];
        fs::set_permissions(d, fs::Permissions::from_mode(mode)).expect("chmod dir");
    }
    count
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("readdir") {
        let e = e.expect("entry");
        let p = e.path();
        if e.file_type().expect("type").is_dir() {
            collect(&p, out);
        }
        out.push(p);
    }
}

/// `user.*` xattrs of every path, from `getfattr --dump`, keyed by relative path.
fn xattr_map(root: &Path) -> BTreeMap<String, Vec<String>> {
    let out = sh(root, "getfattr -R -P -h -d -m '^user\\.' .");
    out.assert_success();
    let mut map = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in out.stdout.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            cur = Some(f.to_string());
        } else if !line.is_empty() {
            let f = cur
                .clone()
                .unwrap_or_else(|| panic!("getfattr output: {}", out.stdout));
            map.entry(f).or_insert_with(Vec::new).push(line.to_string());
        }
    }
    for v in map.values_mut() {
        v.sort();
    }
    map
}

/// Groups of paths sharing an inode (non-directories with nlink > 1).
fn link_groups(root: &Path) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stat_lines(root, "%i %h %F|%n") {
        let (head, name) = line.split_once('|').expect("stat line");
        let mut parts = head.splitn(3, ' ');
        let ino = parts.next().expect("ino").to_string();
        let nlink: u64 = parts.next().expect("nlink").parse().expect("nlink number");
        let kind = parts.next().expect("type");
        if kind != "directory" && nlink > 1 {
            by_ino.entry(ino).or_default().push(name.to_string());
        }
    }
    by_ino
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect()
}

/// Compares two trees: content, the stat fields, nanosecond mtimes of regular files,
/// xattrs and hard-link groups.
fn compare_trees(expected: &Path, got: &Path) {
    let out = common::run(
        std::process::Command::new("diff")
            .args([
                "-r",
                "--no-dereference",
                "--exclude=fifo-*",
                "--exclude=dev-*",
            ])
            .arg(expected)
            .arg(got),
    );
    assert!(
        out.success(),
        "diff -r found differences: {}",
        out.describe()
    );
    assert_same_lines(
        "stat -c '%n %f %u %g %s %Y'",
        &stat_lines(expected, STAT_FORMAT),
        &stat_lines(got, STAT_FORMAT),
    );
    assert_same_lines(
        "device numbers",
        &stat_lines(expected, "%n %F %t:%T"),
        &stat_lines(got, "%n %F %t:%T"),
    );
    let reg_ns = |root: &Path| -> Vec<String> {
        stat_lines(root, "%F|%n %.9Y")
            .into_iter()
            .filter_map(|l| {
                l.strip_prefix("regular file|")
                    .or(l.strip_prefix("regular empty file|"))
                    .map(str::to_string)
            })
            .collect()
    };
    assert_same_lines("nanosecond mtimes", &reg_ns(expected), &reg_ns(got));
    let (xe, xg) = (xattr_map(expected), xattr_map(got));
    assert!(!xe.is_empty(), "reference tree has no xattrs");
    assert_eq!(xe, xg, "user xattrs differ");
    let (le, lg) = (link_groups(expected), link_groups(got));
    assert!(!le.is_empty(), "reference tree has no hard links");
    assert_eq!(le, lg, "hard-link groups differ");
}

#[test]
fn tar_extract_of_thousands_of_files_matches_host() {
    let host = tempfile::Builder::new()
        .prefix("snapfs-tree-")
        .tempdir()
        .expect("host temp dir");
    let src = host.path().join("src");
    let reference = host.path().join("ref");
    fs::create_dir(&src).expect("mkdir");
    fs::create_dir(&reference).expect("mkdir");
    let made = build_tree(&src, 42, 3000);
    assert!(made > 3000);
    let tarball = host.path().join("tree.tar");
    sh(
        host.path(),
        &format!(
            "tar --xattrs --xattrs-include='*' --format=posix --numeric-owner -cf {} -C {} .",
            q(&tarball),
            q(&src)
        ),
    )
    .assert_success();

    let mut m = Mount::new();
    let dst = m.join("extracted");
    fs::create_dir(&dst).expect("mkdir in mount");
    let extract = |into: &Path| {
        let out = sh(
            into,
            &format!(
                "tar --xattrs --xattrs-include='*' --numeric-owner -xpf {} -C {}",
                q(&tarball),
                q(into)
            ),
        );
        // tar warns about the times before 1970 and after now; nothing else is expected.
        let unexpected = out
            .stderr
            .lines()
            .any(|l| !l.contains("implausibly old time stamp") && !l.contains("in the future"));
        assert!(
            out.success() && !unexpected,
            "tar -x into {}: {}",
            into.display(),
            out.describe()
        );
    };
    extract(&reference);
    extract(&dst);
    compare_trees(&reference, &dst);
    let out = common::run(
        std::process::Command::new("diff")
            .args([
                "-r",
                "--no-dereference",
                "--exclude=fifo-*",
                "--exclude=dev-*",
            ])
            .arg(&src)
            .arg(&dst),
    );
    assert!(out.success(), "diff -r src vs mount: {}", out.describe());
    m.remount();
    compare_trees(&reference, &dst);
    // And back out: a tarball of the mount extracts to the same tree.
    let back = host.path().join("back");
    fs::create_dir(&back).expect("mkdir");
    sh(host.path(), &format!(
        "tar --xattrs --xattrs-include='*' --format=posix --numeric-owner -cf - -C {} . | tar --xattrs --xattrs-include='*' --numeric-owner -xpf - -C {}",
        q(&dst), q(&back)
    ))
    .assert_success();
    compare_trees(&reference, &back);
}

#[test]
fn cp_a_tree_into_mount_matches_source() {
    let host = tempfile::Builder::new()
        .prefix("snapfs-tree-")
        .tempdir()
        .expect("host temp dir");
    let src = host.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    build_tree(&src, 7, 1500);
    let mut m = Mount::new();
    let dst = m.join("copy");
    let out = sh(host.path(), &format!("cp -a {} {}", q(&src), q(&dst)));
    assert!(
        out.success() && out.stderr.is_empty(),
        "cp -a: {}",
        out.describe()
    );
    compare_trees(&src, &dst);
    m.remount();
    compare_trees(&src, &dst);
    // A second copy inside the mount, from the mount.
    let again = m.join("copy2");
    let out = sh(m.path(), &format!("cp -a {} {}", q(&dst), q(&again)));
    assert!(
        out.success() && out.stderr.is_empty(),
        "cp -a within mount: {}",
        out.describe()
    );
    compare_trees(&src, &again);
}
