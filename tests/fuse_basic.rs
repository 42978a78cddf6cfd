//! File data and basic namespace operations through a real kernel mount: create, read,
//! write, append, O_EXCL, O_TRUNC, unlink, symlinks, hard links, statfs, fsync, access,
//! and persistence across unmount + mount.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::{expect_errno, sh_as, Mount, USER_A};
use nix::errno::Errno;
use nix::unistd::AccessFlags;
use rand::{Rng, SeedableRng};

#[test]
fn create_new_file_reads_back_same_bytes() {
    let m = Mount::new();
    let p = m.join("hello.txt");
    fs::write(&p, b"hello, snapfs\n").expect("write");
    assert_eq!(fs::read(&p).expect("read"), b"hello, snapfs\n");
    let md = fs::metadata(&p).expect("stat");
    assert!(md.is_file());
    assert_eq!(md.len(), 14);
    assert_eq!(md.nlink(), 1);
    // A new file is empty.
    let e = m.join("empty");
    File::create(&e).expect("create empty");
    assert_eq!(fs::metadata(&e).expect("stat").len(), 0);
    assert_eq!(fs::read(&e).expect("read empty"), b"");
}

#[test]
fn write_random_offsets_matches_in_memory_model() {
    // 4 KiB blocks, then the default: writes straddle, fill and partly overwrite blocks.
    for (block, span) in [(Some(4096u64), 4096usize), (None, 65536)] {
        let mut m = match block {
            Some(b) => Mount::with_block_size(b),
            None => Mount::new(),
        };
        let p = m.join("model.bin");
        let model = random_writes(&p, span);
        assert_eq!(fs::metadata(&p).expect("stat").len(), model.len() as u64);
        assert!(
            fs::read(&p).expect("read") == model,
            "content differs from model (block {block:?})"
        );
        m.remount();
        assert!(
            fs::read(&p).expect("read after remount") == model,
            "content differs from model after remount (block {block:?})"
        );
    }
}

/// Applies 300 seeded random writes and truncations to `p`, checking reads on the
/// way; returns the expected content.
fn random_writes(p: &Path, span: usize) -> Vec<u8> {
    let mut model: Vec<u8> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .expect("open");
    for i in 0..300 {
        if rng.gen_range(0..10) == 0 {
            let len = rng.gen_range(0..6 * span);
            f.set_len(len as u64).expect("set_len");
            model.resize(len, 0);
        } else {
            let off = rng.gen_range(0..5 * span);
            let len = rng.gen_range(1..3 * span);
            let data = common::random_bytes(i, len);
            f.write_all_at(&data, off as u64).expect("pwrite");
            if model.len() < off + len {
                model.resize(off + len, 0);
            }
            model[off..off + len].copy_from_slice(&data);
        }
        if i % 25 == 0 {
            let start = rng.gen_range(0..model.len().max(1)).min(model.len());
            let want = &model[start..];
            let mut got = vec![0u8; want.len()];
            f.read_exact_at(&mut got, start as u64).expect("pread");
            assert!(got == want, "pread at {start} after op {i} differs");
        }
    }
    model
}

#[test]
fn write_concurrent_threads_all_land() {
    let m = Mount::with_block_size(4096);
    let p = m.join("shared");
    File::create(&p).expect("create");
    const CHUNK: usize = 5000; // not block aligned: neighbours share blocks
    std::thread::scope(|s| {
        for t in 0..4usize {
            let p = p.clone();
            s.spawn(move || {
                let f = OpenOptions::new().write(true).open(&p).expect("open");
                for c in (t..256).step_by(4) {
                    f.write_all_at(&[c as u8; CHUNK], (c * CHUNK) as u64)
                        .expect("pwrite");
                }
            });
        }
    });
    let got = fs::read(&p).expect("read");
    assert_eq!(got.len(), 256 * CHUNK);
    for (c, chunk) in got.chunks(CHUNK).enumerate() {
        assert!(chunk.iter().all(|&b| b == c as u8), "chunk {c} damaged");
    }
    // Concurrent O_APPEND writers never overwrite or tear each other's records.
    let log = m.join("log");
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let log = log.clone();
            s.spawn(move || {
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("open append");
                for i in 0..100u8 {
                    let mut rec = vec![b'a' + t; 36];
                    rec[0] = i;
                    rec.push(b'\n');
                    f.write_all(&rec).expect("append");
                }
            });
        }
    });
    let got = fs::read(&log).expect("read log");
    assert_eq!(got.len(), 4 * 100 * 37, "appended length");
    let mut seen = std::collections::BTreeSet::new();
    for rec in got.chunks(37) {
        let t = rec[1];
        assert!(
            rec[1..36].iter().all(|&b| b == t) && rec[36] == b'\n',
            "torn record {rec:?}"
        );
        assert!(seen.insert((t, rec[0])), "record repeated");
    }
    assert_eq!(seen.len(), 400);
}

#[test]
fn write_past_eof_zero_fills_gap() {
    let m = Mount::new();
    let p = m.join("gap");
    let f = File::create(&p).expect("create");
    f.write_all_at(b"head", 0).expect("write head");
    f.write_all_at(b"tail", 200_000).expect("write tail");
    drop(f);
    let data = fs::read(&p).expect("read");
    assert_eq!(data.len(), 200_004);
    assert_eq!(&data[..4], b"head");
    assert!(data[4..200_000].iter().all(|&b| b == 0), "gap not zero");
    assert_eq!(&data[200_000..], b"tail");
}

#[test]
fn append_mode_writes_always_at_end() {
    let m = Mount::new();
    let p = m.join("log");
    fs::write(&p, b"one\n").expect("write");
    {
        let mut f = OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("open append");
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(b"two\n").expect("append two");
    }
    {
        // A second appender opened before the first one wrote.
        let mut a = OpenOptions::new().append(true).open(&p).expect("open a");
        let mut b = OpenOptions::new().append(true).open(&p).expect("open b");
        a.write_all(b"three\n").expect("append three");
        b.write_all(b"four\n").expect("append four");
    }
    assert_eq!(fs::read(&p).expect("read"), b"one\ntwo\nthree\nfour\n");
}

#[test]
fn open_excl_existing_file_fails_eexist() {
    let m = Mount::new();
    let p = m.join("x");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .expect("first O_EXCL create");
    expect_errno(
        OpenOptions::new().write(true).create_new(true).open(&p),
        Errno::EEXIST,
        "O_CREAT|O_EXCL on existing file",
    );
    std::os::unix::fs::symlink("nowhere", m.join("dangling")).expect("symlink");
    expect_errno(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.join("dangling")),
        Errno::EEXIST,
        "O_CREAT|O_EXCL on a dangling symlink",
    );
    fs::create_dir(m.join("d")).expect("mkdir");
    expect_errno(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.join("d")),
        Errno::EEXIST,
        "O_CREAT|O_EXCL on a directory",
    );
}

#[test]
fn open_trunc_existing_file_empties_it() {
    let m = Mount::new();
    let p = m.join("t");
    fs::write(&p, vec![7u8; 100_000]).expect("write");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .expect("open O_TRUNC");
        assert_eq!(f.metadata().expect("fstat").len(), 0);
        f.write_all(b"new").expect("write");
    }
    assert_eq!(fs::read(&p).expect("read"), b"new");
}

#[test]
fn read_at_eof_returns_zero_bytes() {
    let m = Mount::new();
    let p = m.join("short");
    fs::write(&p, b"abc").expect("write");
    let mut f = File::open(&p).expect("open");
    let mut buf = [0u8; 16];
    assert_eq!(f.read_at(&mut buf, 3).expect("pread at eof"), 0);
    assert_eq!(f.read_at(&mut buf, 1_000_000).expect("pread past eof"), 0);
    assert_eq!(f.read_at(&mut buf, 1).expect("short pread"), 2);
    assert_eq!(&buf[..2], b"bc");
    let mut all = Vec::new();
    f.read_to_end(&mut all).expect("read_to_end");
    assert_eq!(all, b"abc");
}

#[test]
fn open_missing_file_fails_enoent() {
    let m = Mount::new();
    expect_errno(File::open(m.join("nope")), Errno::ENOENT, "open missing");
    expect_errno(
        fs::metadata(m.join("nope/deeper")),
        Errno::ENOENT,
        "stat below missing",
    );
    fs::write(m.join("file"), b"x").expect("write");
    expect_errno(
        fs::metadata(m.join("file/child")),
        Errno::ENOTDIR,
        "stat below a file",
    );
}

#[test]
fn unlink_file_removes_entry() {
    let m = Mount::new();
    let p = m.join("gone");
    fs::write(&p, b"data").expect("write");
    fs::remove_file(&p).expect("unlink");
    expect_errno(fs::metadata(&p), Errno::ENOENT, "stat after unlink");
    assert_eq!(fs::read_dir(m.path()).expect("readdir").count(), 0);
    // The name can be reused for a new, independent file.
    fs::write(&p, b"again").expect("recreate");
    assert_eq!(fs::read(&p).expect("read"), b"again");
}

#[test]
fn unlink_directory_fails_eisdir_and_missing_fails_enoent() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    expect_errno(
        fs::remove_file(m.join("d")),
        Errno::EISDIR,
        "unlink a directory",
    );
    expect_errno(
        fs::remove_file(m.join("missing")),
        Errno::ENOENT,
        "unlink missing",
    );
    assert!(m.join("d").is_dir());
}

#[test]
fn unlinked_open_file_keeps_data_and_nlink_zero_until_close() {
    let m = Mount::new();
    let p = m.join("tmpfile");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("open");
    f.write_all(b"hello").expect("write");
    fs::remove_file(&p).expect("unlink while open");
    expect_errno(fs::metadata(&p), Errno::ENOENT, "stat after unlink");
    assert_eq!(
        f.metadata().expect("fstat").nlink(),
        0,
        "nlink after unlink"
    );
    f.write_all(b" world").expect("write after unlink");
    f.sync_all().expect("fsync after unlink");
    // A new file under the old name is a different file.
    fs::write(&p, b"other").expect("create same name");
    let mut buf = vec![0u8; 11];
    f.read_exact_at(&mut buf, 0).expect("pread after unlink");
    assert_eq!(buf, b"hello world");
    assert_eq!(f.metadata().expect("fstat").len(), 11);
    assert_eq!(f.metadata().expect("fstat").nlink(), 0);
    assert_eq!(fs::read(&p).expect("read new"), b"other");
    drop(f);
    assert_eq!(fs::read(&p).expect("read new after close"), b"other");
}

#[test]
fn symlink_relative_target_readlink_roundtrips() {
    let m = Mount::new();
    fs::create_dir(m.join("dir")).expect("mkdir");
    fs::write(m.join("dir/target"), b"through the link").expect("write");
    std::os::unix::fs::symlink("dir/target", m.join("link")).expect("symlink");
    assert_eq!(
        fs::read_link(m.join("link")).expect("readlink"),
        Path::new("dir/target")
    );
    let lmd = fs::symlink_metadata(m.join("link")).expect("lstat");
    assert!(lmd.file_type().is_symlink());
    assert_eq!(lmd.len(), "dir/target".len() as u64, "symlink st_size");
    assert_eq!(
        fs::read(m.join("link")).expect("read through link"),
        b"through the link"
    );
    std::os::unix::fs::symlink("dir", m.join("dirlink")).expect("symlink to dir");
    assert!(m.join("dirlink/target").is_file());
    // Dangling: lstat works, stat fails.
    std::os::unix::fs::symlink("../outside/none", m.join("dangling")).expect("symlink");
    assert!(fs::symlink_metadata(m.join("dangling")).is_ok());
    expect_errno(
        fs::metadata(m.join("dangling")),
        Errno::ENOENT,
        "stat dangling",
    );
    expect_errno(
        std::os::unix::fs::symlink("x", m.join("link")),
        Errno::EEXIST,
        "symlink onto existing name",
    );
}

#[test]
fn symlink_4095_byte_target_roundtrips() {
    let mut m = Mount::new();
    let target: String = (0..4095)
        .map(|i| if i % 100 == 99 { '/' } else { 'a' })
        .collect();
    assert_eq!(target.len(), 4095);
    std::os::unix::fs::symlink(&target, m.join("long")).expect("symlink 4095");
    assert_eq!(
        fs::read_link(m.join("long")).expect("readlink").as_os_str(),
        target.as_str()
    );
    assert_eq!(
        fs::symlink_metadata(m.join("long")).expect("lstat").len(),
        4095
    );
    m.remount();
    assert_eq!(
        fs::read_link(m.join("long"))
            .expect("readlink after remount")
            .as_os_str(),
        target.as_str()
    );
}

#[test]
fn hard_link_shares_inode_and_counts_nlink() {
    let mut m = Mount::new();
    fs::create_dir(m.join("a")).expect("mkdir");
    fs::write(m.join("a/orig"), b"shared").expect("write");
    fs::hard_link(m.join("a/orig"), m.join("second")).expect("link");
    fs::hard_link(m.join("a/orig"), m.join("a/third")).expect("link");
    let ino = fs::metadata(m.join("a/orig")).expect("stat").ino();
    for name in ["a/orig", "second", "a/third"] {
        let md = fs::metadata(m.join(name)).expect("stat");
        assert_eq!(md.ino(), ino, "{name} inode");
        assert_eq!(md.nlink(), 3, "{name} nlink");
    }
    // A write through one name is seen through the others.
    OpenOptions::new()
        .append(true)
        .open(m.join("second"))
        .expect("open")
        .write_all(b"+more")
        .expect("append");
    assert_eq!(fs::read(m.join("a/third")).expect("read"), b"shared+more");
    fs::remove_file(m.join("a/orig")).expect("unlink");
    assert_eq!(fs::metadata(m.join("second")).expect("stat").nlink(), 2);
    m.remount();
    assert_eq!(fs::metadata(m.join("second")).expect("stat").nlink(), 2);
    assert_eq!(
        fs::metadata(m.join("a/third")).expect("stat").ino(),
        fs::metadata(m.join("second")).expect("stat").ino()
    );
    fs::remove_file(m.join("second")).expect("unlink");
    let md = fs::metadata(m.join("a/third")).expect("stat");
    assert_eq!(md.nlink(), 1);
    assert_eq!(fs::read(m.join("a/third")).expect("read"), b"shared+more");
}

#[test]
fn hard_link_to_directory_fails_eperm_and_onto_existing_fails_eexist() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    expect_errno(
        fs::hard_link(m.join("d"), m.join("d2")),
        Errno::EPERM,
        "link a directory",
    );
    fs::write(m.join("f"), b"1").expect("write");
    fs::write(m.join("g"), b"2").expect("write");
    expect_errno(
        fs::hard_link(m.join("f"), m.join("g")),
        Errno::EEXIST,
        "link onto existing name",
    );
    expect_errno(
        fs::hard_link(m.join("missing"), m.join("h")),
        Errno::ENOENT,
        "link missing source",
    );
    assert_eq!(fs::metadata(m.join("f")).expect("stat").nlink(), 1);
}

#[test]
fn statfs_reports_nonzero_sizes() {
    let m = Mount::new();
    let st = nix::sys::statvfs::statvfs(m.path()).expect("statvfs");
    assert!(st.block_size() > 0, "f_bsize is 0");
    assert!(st.fragment_size() > 0, "f_frsize is 0");
    assert!(st.blocks() > 0, "f_blocks is 0");
    assert!(st.blocks_free() <= st.blocks(), "f_bfree > f_blocks");
    assert!(st.blocks_available() <= st.blocks(), "f_bavail > f_blocks");
    assert!(st.blocks_available() > 0, "f_bavail is 0 on a fresh store");
    assert_eq!(st.name_max(), 255, "f_namemax");
    let fst = nix::sys::statfs::statfs(m.path()).expect("statfs");
    assert!(fst.blocks() > 0, "statfs f_blocks is 0");
    assert!(fst.block_size() > 0, "statfs f_bsize is 0");
}

#[test]
fn fsync_and_fdatasync_succeed_on_files_and_dirs() {
    let m = Mount::new();
    fs::create_dir(m.join("d")).expect("mkdir");
    let mut f = File::create(m.join("d/f")).expect("create");
    f.write_all(&vec![1u8; 300_000]).expect("write");
    f.sync_all().expect("fsync file");
    f.write_all(b"more").expect("write");
    f.sync_data().expect("fdatasync file");
    let d = File::open(m.join("d")).expect("open dir");
    nix::unistd::fsync(d.as_raw_fd()).expect("fsync dir");
    nix::unistd::fdatasync(d.as_raw_fd()).expect("fdatasync dir");
    let root = File::open(m.path()).expect("open root");
    nix::unistd::fsync(root.as_raw_fd()).expect("fsync root");
    nix::unistd::syncfs(root.as_raw_fd()).expect("syncfs");
    // A read-only descriptor can be synced too.
    let ro = File::open(m.join("d/f")).expect("open ro");
    ro.sync_all().expect("fsync read-only fd");
}

#[test]
fn access_follows_mode_bits_and_caller() {
    let m = Mount::new();
    let shared = m.join("shared");
    common::mkdir_mode(&shared, 0o755);
    let private = shared.join("private");
    let public = shared.join("public");
    let noexec = shared.join("noexec");
    fs::write(&private, b"p").expect("write");
    fs::write(&public, b"p").expect("write");
    fs::write(&noexec, b"p").expect("write");
    common::chmod(&private, 0o600);
    common::chmod(&public, 0o666);
    common::chmod(&noexec, 0o644);

    nix::unistd::access(&private, AccessFlags::R_OK | AccessFlags::W_OK).expect("root R|W");
    nix::unistd::access(&noexec, AccessFlags::F_OK).expect("F_OK");
    expect_errno(
        nix::unistd::access(&noexec, AccessFlags::X_OK),
        Errno::EACCES,
        "root X_OK on a file with no x bit",
    );
    expect_errno(
        nix::unistd::access(&shared.join("missing"), AccessFlags::F_OK),
        Errno::ENOENT,
        "access missing",
    );

    let check = |flag: &str, p: &Path| {
        sh_as(USER_A, USER_A, &format!("test {flag} {}", common::q(p))).success()
    };
    assert!(
        !check("-r", &private),
        "uid {USER_A} can read a 0600 root file"
    );
    assert!(
        !check("-w", &private),
        "uid {USER_A} can write a 0600 root file"
    );
    assert!(check("-r", &public), "uid {USER_A} cannot read a 0666 file");
    assert!(
        check("-w", &public),
        "uid {USER_A} cannot write a 0666 file"
    );
    assert!(
        !check("-w", &noexec),
        "uid {USER_A} can write a 0644 root file"
    );
    assert!(
        check("-x", &shared),
        "uid {USER_A} cannot search a 0755 dir"
    );
    // The kernel's checks are enforced, not only reported.
    let out = sh_as(USER_A, USER_A, &format!("cat {}", common::q(&private)));
    assert!(!out.success(), "uid {USER_A} read a 0600 root file");
    assert!(
        out.stderr.contains("Permission denied"),
        "expected EACCES: {}",
        out.describe()
    );
}

#[test]
fn data_survives_remount_byte_for_byte() {
    let mut m = Mount::new();
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "big.bin".into(),
            common::random_bytes(1, 6 * 1024 * 1024 + 123),
        ),
        ("dir/mid.bin".into(), common::random_bytes(2, 1024 * 1024)),
        ("dir/sub/small.bin".into(), common::random_bytes(3, 4097)),
        ("dir/one".into(), vec![0x42]),
    ];
    fs::create_dir_all(m.join("dir/sub")).expect("mkdirs");
    for (name, data) in &files {
        // No fsync: the unmount itself must flush everything.
        let mut f = File::create(m.join(name)).expect("create");
        for chunk in data.chunks(128 * 1024 + 7) {
            f.write_all(chunk).expect("write");
        }
    }
    // An overwrite in the middle of the big file, still unsynced.
    let mut expected = files.clone();
    let patch = common::random_bytes(4, 300_000);
    OpenOptions::new()
        .write(true)
        .open(m.join("big.bin"))
        .expect("open")
        .write_all_at(&patch, 2_000_000)
        .expect("pwrite");
    expected[0].1[2_000_000..2_300_000].copy_from_slice(&patch);

    for round in 0..2 {
        m.remount();
        for (name, data) in &expected {
            let got = fs::read(m.join(name)).expect("read after remount");
            assert_eq!(got.len(), data.len(), "{name} length, round {round}");
            let first_diff = got.iter().zip(data).position(|(a, b)| a != b);
            assert_eq!(first_diff, None, "{name} differs, round {round}");
        }
    }
}
