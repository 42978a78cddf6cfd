//! Helpers shared by the kv test binaries (`kv_conformance`, `kv_backends`).
#![allow(dead_code)]

use snapfs::kv::rocks::{RocksKv, RocksOptions};
use snapfs::kv::{Batch, Dir, Kv, KvRead, Space};

pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Small RocksDB settings so tests exercise memtable flushes, SST files and blob files,
/// written with direct I/O where the temporary directory's file system takes it (the
/// opt-in mode gets the whole conformance suite too).
pub fn small_rocks_options() -> RocksOptions {
    RocksOptions {
        block_cache_bytes: 4 << 20,
        write_buffer_bytes: 64 << 10,
        blob_min_bytes: 64,
        direct_flush: RocksOptions::direct_io_works(&std::env::temp_dir()),
    }
}

pub fn put(kv: &dyn Kv, space: Space, key: &[u8], value: &[u8]) {
    let mut b = Batch::new();
    b.put(space, key.to_vec(), value.to_vec());
    kv.write(b, false).expect("put");
}

pub fn del(kv: &dyn Kv, space: Space, key: &[u8]) {
    let mut b = Batch::new();
    b.delete(space, key.to_vec());
    kv.write(b, false).expect("delete");
}

/// Compacts `space` where the backend has the maintenance capability (the in-memory one
/// has nothing to compact); what the suite checks is that reads see the same afterwards.
pub fn compact(kv: &dyn Kv, space: Space) {
    if let Some(m) = kv.maintenance() {
        m.compact(space).expect("compact");
    }
}

pub fn get<R: KvRead + ?Sized>(r: &R, space: Space, key: &[u8]) -> Option<Vec<u8>> {
    r.get(space, key).expect("get")
}

pub fn sfp<R: KvRead + ?Sized>(
    r: &R,
    space: Space,
    lower: &[u8],
    key: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    r.seek_for_prev(space, lower, key).expect("seek_for_prev")
}

/// Collects at most `limit` pairs of `[start, end)` in direction `dir`.
pub fn scan_limit<R: KvRead + ?Sized>(
    r: &R,
    space: Space,
    start: &[u8],
    end: &[u8],
    dir: Dir,
    limit: usize,
) -> Pairs {
    let mut out = Vec::new();
    if limit == 0 {
        // A callback that refuses the first pair must still have been called at most once.
        let mut calls = 0;
        r.scan(space, start, end, dir, &mut |_, _| {
            calls += 1;
            false
        })
        .expect("scan");
        assert!(
            calls <= 1,
            "scan continued after the callback returned false"
        );
        return out;
    }
    r.scan(space, start, end, dir, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        out.len() < limit
    })
    .expect("scan");
    out
}

pub fn scan_all<R: KvRead + ?Sized>(
    r: &R,
    space: Space,
    start: &[u8],
    end: &[u8],
    dir: Dir,
) -> Pairs {
    scan_limit(r, space, start, end, dir, usize::MAX)
}

pub fn keys(pairs: &Pairs) -> Vec<Vec<u8>> {
    pairs.iter().map(|(k, _)| k.clone()).collect()
}

pub fn kv_pair(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.to_vec(), v.to_vec())
}

/// A versioned key: fixed-width object id, then the epoch big-endian so versions sort by epoch.
pub fn versioned(id: u64, epoch: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'v');
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

pub fn open_rocks(dir: &std::path::Path) -> RocksKv {
    RocksKv::open(dir, &small_rocks_options()).expect("open rocks")
}

/// Segment settings small enough that the suite's values go to segments and segments seal
/// and rotate often.
pub fn small_segment_options() -> snapfs::kv::segments::SegmentOptions {
    snapfs::kv::segments::SegmentOptions {
        inline_max: 8,
        segment_bytes: 64 << 10,
        sync_bytes: 16 << 10,
        horizon: std::time::Duration::ZERO,
        ..Default::default()
    }
}

/// The segment layer over `inner`, its files under `dir`.
pub fn open_segmented(
    inner: Box<dyn Kv>,
    dir: &std::path::Path,
) -> snapfs::kv::segments::SegmentedKv {
    snapfs::kv::segments::SegmentedKv::open(inner, &dir.join("segments"), small_segment_options())
        .expect("open segments")
}

/// The segment layer with its segments as objects beside a SlateDB database (`kv`), cached
/// in `cache`: small segments, so that tests seal, upload parts and repack.
#[cfg(feature = "slatedb")]
pub fn open_slate_segmented(
    kv: snapfs::kv::slate::SlateKv,
    cache: &std::path::Path,
) -> snapfs::kv::segments::SegmentedKv {
    snapfs::kv::slate::segmented(kv, cache, 1 << 30, small_segment_options())
        .expect("open segments on object storage")
}

/// The segment files under `dir/segments`, sorted.
pub fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("segments"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Every reference of a segmented store holds and every live counter is exact.
pub fn assert_segments_clean(kv: &dyn Kv) {
    let check = kv.segments().expect("a segmented store");
    let report = check.check().expect("check segments");
    assert!(
        report.bad_refs.is_empty(),
        "bad references: {:?}",
        report.bad_refs
    );
    assert!(
        report.miscounted.is_empty(),
        "live counters: {:?}",
        report.miscounted
    );
}

/// A scratch file system of type `tmpfs` or `ext4` (a 64 MiB loop image) mounted in a
/// temporary directory, unmounted (lazily if busy) on drop, also when the test fails.
/// Needs root, as every test here does.
pub struct ScratchFs {
    dir: tempfile::TempDir,
}

impl ScratchFs {
    pub fn mount(fstype: &str) -> ScratchFs {
        use std::process::Command;
        let dir = tempfile::Builder::new()
            .prefix("snapfs-scratchfs-")
            .tempdir()
            .expect("temp dir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        let run = |cmd: &mut Command| {
            let st = cmd.status().expect("run");
            assert!(st.success(), "{cmd:?} failed: {st}");
        };
        match fstype {
            "tmpfs" => run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
                .arg(&mnt)),
            "ext4" => {
                let img = dir.path().join("img");
                run(Command::new("truncate").arg("-s").arg("64M").arg(&img));
                run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
                run(Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&img)
                    .arg(&mnt));
            }
            other => panic!("unknown scratch file system {other}"),
        }
        ScratchFs { dir }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let mnt = self.path();
        let ok = std::process::Command::new("umount")
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&mnt)
                .status();
        }
    }
}

#[cfg(feature = "slatedb")]
#[allow(dead_code)]
#[path = "../common/s3.rs"]
pub mod s3;

/// A SlateDB store on the shared loopback S3 server, under a prefix of its own.
#[cfg(feature = "slatedb")]
#[allow(dead_code)]
pub fn open_slate_s3(name: &str) -> snapfs::kv::slate::SlateKv {
    let os =
        snapfs::kv::slate::s3_client("snapfs", s3::shared().iter().cloned()).expect("S3 client");
    let prefix = format!("conformance/{}-{name}", std::process::id());
    snapfs::kv::slate::SlateKv::open(std::sync::Arc::new(os), &prefix).expect("open slatedb on S3")
}

/// Instantiates every listed suite check once per backend (the SlateDB ones with the
/// `slatedb` feature).
#[allow(unused_macros)]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod mem {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let kv = MemKv::new();
                    suite::$name(&kv);
                }
            )*
        }

        mod rocks {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::TempDir::new().expect("tempdir");
                    let kv = open_rocks(dir.path());
                    suite::$name(&kv);
                    drop(kv);
                }
            )*
        }

        /// The segment layer over the in-memory backend (files in a temporary directory).
        mod segmented_mem {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::TempDir::new().expect("tempdir");
                    let kv = open_segmented(Box::new(MemKv::new()), dir.path());
                    suite::$name(&kv);
                    assert_segments_clean(&kv);
                }
            )*
        }

        /// The segment layer over RocksDB, as an embedded store opens it.
        mod segmented_rocks {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::TempDir::new().expect("tempdir");
                    let rocks = open_rocks(&dir.path().join("db"));
                    let kv = open_segmented(Box::new(rocks), dir.path());
                    suite::$name(&kv);
                    assert_segments_clean(&kv);
                    drop(kv);
                }
            )*
        }

/// The segment layer over SlateDB, segments as objects (in memory).
        #[cfg(feature = "slatedb")]
        mod segmented_slate_memory {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::TempDir::new().expect("tempdir");
                    let slate = snapfs::kv::slate::SlateKv::in_memory().expect("open slatedb");
                    let kv = open_slate_segmented(slate, dir.path());
                    suite::$name(&kv);
                    assert_segments_clean(&kv);
                }
            )*
        }

        /// The segment layer over SlateDB on the loopback S3 server.
        #[cfg(feature = "slatedb")]
        mod segmented_slate_s3 {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::TempDir::new().expect("tempdir");
                    let slate = open_slate_s3(concat!("seg-", stringify!($name)));
                    let kv = open_slate_segmented(slate, dir.path());
                    suite::$name(&kv);
                    assert_segments_clean(&kv);
                }
            )*
        }

        #[cfg(feature = "slatedb")]
        mod slate_memory {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let kv = snapfs::kv::slate::SlateKv::in_memory().expect("open slatedb");
                    suite::$name(&kv);
                }
            )*
        }

        /// On the loopback S3 server (one per test process), each test under its own prefix.
        #[cfg(feature = "slatedb")]
        mod slate_s3 {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let kv = open_slate_s3(stringify!($name));
                    suite::$name(&kv);
                }
            )*
        }

        #[cfg(feature = "slatedb")]
        mod slate_local {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::TempDir::new().expect("tempdir");
                    let kv = snapfs::kv::slate::SlateKv::local(dir.path()).expect("open slatedb");
                    suite::$name(&kv);
                }
            )*
        }
    };
}
