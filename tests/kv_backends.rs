//! Backend-specific behaviour of the [`Kv`] backends: persistence across reopen, locking,
//! disk usage and compaction (RocksDB), no disk at all (memory). The behaviour both share is
//! in `kv_conformance.rs`.

mod kv_common;

use std::collections::BTreeMap;

use kv_common::*;
use snapfs::kv::mem::MemKv;
use snapfs::kv::rocks::{RocksKv, RocksOptions};
use snapfs::kv::{Batch, Dir, Kv, KvError, Maintenance, Space};

mod mem_only {
    use super::*;

    #[test]
    fn memory_store_has_no_disk_and_no_status() {
        let kv = MemKv::new();
        put(&kv, Space::Data, b"k", &[0; 10_000]);
        // No maintenance capability: no disk usage, no path for statfs, nothing to compact.
        assert!(kv.maintenance().is_none());
        assert!(kv.status().is_none());
    }
}

mod rocks_only {
    use super::*;

    /// Direct I/O for flushes (opt-in) works where the file system takes it (ext4 on a
    /// loop device; tmpfs only since Linux 6.6); either way the store writes, flushes,
    /// compacts and reads back what it wrote, and the probe leaves nothing behind.
    #[test]
    fn direct_io_follows_the_file_system() {
        for (fstype, expect_direct) in [("tmpfs", None), ("ext4", Some(true))] {
            let fs = ScratchFs::mount(fstype);
            let direct = RocksOptions::direct_io_works(&fs.path());
            if let Some(expect) = expect_direct {
                assert_eq!(direct, expect, "{fstype}");
            }
            // Off unless asked for (SNAPFS_DIRECT_IO=1).
            assert!(!RocksOptions::for_disk(&fs.path()).direct_flush);
            let leftovers: Vec<_> = std::fs::read_dir(fs.path())
                .expect("list")
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("direct-io-probe"))
                .collect();
            assert!(leftovers.is_empty(), "{fstype}: probe file left behind");
            let db = fs.path().join("db");
            let small = RocksOptions {
                direct_flush: direct,
                ..small_rocks_options()
            };
            {
                let kv = RocksKv::open(&db, &small).expect("open");
                for i in 0..64u32 {
                    put(&kv, Space::Data, &i.to_be_bytes(), &vec![i as u8; 16 << 10]);
                }
                kv.flush_buffers().expect("flush");
                kv.compact(Space::Data).expect("compact");
            }
            let kv = RocksKv::open(&db, &small).expect("reopen");
            for i in 0..64u32 {
                assert_eq!(
                    get(&kv, Space::Data, &i.to_be_bytes()),
                    Some(vec![i as u8; 16 << 10]),
                    "{fstype}: key {i}"
                );
            }
        }
    }

    #[test]
    fn reopen_after_writes_data_persists() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        {
            let kv = open_rocks(dir.path());
            let mut b = Batch::new();
            b.put(Space::Meta, b"durable".to_vec(), b"m".to_vec());
            b.put(Space::Data, b"durable".to_vec(), vec![7; 10_000]);
            kv.write(b, true).expect("durable write");
            put(&kv, Space::Meta, b"lazy", b"l");
            del(&kv, Space::Meta, b"never");
            kv.sync().expect("sync");
        }
        let kv = open_rocks(dir.path());
        assert_eq!(
            get(&kv, Space::Meta, b"durable").as_deref(),
            Some(&b"m"[..])
        );
        assert_eq!(get(&kv, Space::Data, b"durable"), Some(vec![7; 10_000]));
        assert_eq!(get(&kv, Space::Meta, b"lazy").as_deref(), Some(&b"l"[..]));
        assert_eq!(get(&kv, Space::Data, b"lazy"), None);
    }

    #[test]
    fn reopen_after_flushes_and_deletes_state_persists() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        {
            let kv = open_rocks(dir.path());
            // Enough data to spill the 64 KiB memtable several times.
            for i in 0u32..3000 {
                let k = i.to_be_bytes().to_vec();
                let v = vec![(i % 251) as u8; 100];
                put(&kv, Space::Data, &k, &v);
                model.insert(k, v);
            }
            for i in (0u32..3000).step_by(7) {
                let k = i.to_be_bytes().to_vec();
                del(&kv, Space::Data, &k);
                model.remove(&k);
            }
        }
        let kv = open_rocks(dir.path());
        let got = scan_all(&kv, Space::Data, b"", b"\xff", Dir::Forward);
        assert_eq!(got, model.into_iter().collect::<Pairs>());
    }

    #[test]
    fn open_same_dir_twice_returns_busy() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let first = open_rocks(dir.path());
        match RocksKv::open(dir.path(), &small_rocks_options()) {
            Err(KvError::Busy) => {}
            Err(other) => panic!("expected Busy, got {other:?}"),
            Ok(_) => panic!("second open of a locked store succeeded"),
        }
        // The first handle is unaffected, and the lock is released on drop.
        put(&first, Space::Meta, b"k", b"v");
        drop(first);
        let again = open_rocks(dir.path());
        assert_eq!(get(&again, Space::Meta, b"k").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn open_missing_nested_dir_creates_it() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("a/b/store");
        let kv = RocksKv::open(&path, &RocksOptions::default()).expect("open");
        assert_eq!(kv.path(), Some(path.as_path()));
        assert!(path.is_dir());
    }

    #[test]
    fn open_path_is_a_file_returns_error() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("file");
        std::fs::write(&path, b"not a db").expect("write file");
        assert!(matches!(
            RocksKv::open(&path, &small_rocks_options()),
            Err(KvError::Io(_))
        ));
    }

    #[test]
    fn disk_usage_after_writes_is_nonzero() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let kv = open_rocks(dir.path());
        let before = kv.disk_usage();
        for i in 0u32..200 {
            put(&kv, Space::Data, &i.to_be_bytes(), &[3; 4096]);
        }
        kv.compact(Space::Data).expect("compact");
        assert!(
            kv.disk_usage() >= before + 200 * 4096,
            "usage {} -> {}",
            before,
            kv.disk_usage()
        );
    }

    /// Total size of the blob files under `dir`.
    fn blob_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "blob"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    #[test]
    fn compact_data_after_delete_reclaims_blob_space() {
        const N: u32 = 512;
        const SIZE: usize = 16 << 10; // 8 MiB in total, all in blob files
        let dir = tempfile::TempDir::new().expect("tempdir");
        let opts = RocksOptions {
            write_buffer_bytes: 1 << 20,
            ..small_rocks_options()
        };
        let kv = RocksKv::open(dir.path(), &opts).expect("open");
        for i in 0..N {
            put(
                &kv,
                Space::Data,
                &i.to_be_bytes(),
                &vec![(i % 251) as u8; SIZE],
            );
        }
        kv.compact(Space::Data).expect("compact");
        let (full, full_blobs) = (kv.disk_usage(), blob_bytes(dir.path()));
        assert!(
            full_blobs >= u64::from(N) * SIZE as u64,
            "blobs {full_blobs}"
        );

        // Keep every 16th block, so every blob file still holds some live blobs; only blob GC
        // (not just dropping unreferenced files) can reclaim the rest.
        for i in (0..N).filter(|i| i % 16 != 0) {
            del(&kv, Space::Data, &i.to_be_bytes());
        }
        kv.compact(Space::Data).expect("compact");
        let (after, after_blobs) = (kv.disk_usage(), blob_bytes(dir.path()));
        assert!(
            after_blobs < full_blobs / 4 && after < full / 4,
            "blob space not reclaimed: disk {full} -> {after}, blobs {full_blobs} -> {after_blobs}"
        );
        for i in 0..N {
            let want = (i % 16 == 0).then(|| vec![(i % 251) as u8; SIZE]);
            assert_eq!(get(&kv, Space::Data, &i.to_be_bytes()), want, "block {i}");
        }
    }
}
