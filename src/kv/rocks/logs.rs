//! Keeping the store's write-ahead logs in the page cache.
//!
//! The store recycles its old log (see `set_recycle_log_file_num` in `rocks.rs`): a new log
//! is written over an old file rather than appended to a fresh one. When the old file's pages
//! left the page cache (memory pressure, or `drop_caches`), every write of the new log to a
//! page not cached yet first reads that page back from disk, synchronously, in the writer's
//! thread: a 10 GiB direct write ran its first seconds at 450-720 MiB/s instead of
//! 960-1,150 (`perf record -e sched:sched_switch`: the FUSE thread asleep in
//! `ext4_block_write_begin` under RocksDB's log append). A read of the logs just before the
//! write removed the slow start. So the daemon asks the kernel every second to read the logs
//! ahead (`POSIX_FADV_WILLNEED`): asynchronous, and a no-op for pages already cached.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Asks the kernel to read the newest and the oldest `*.log` file of the RocksDB directory
/// `db` into the page cache (in the background; pages already there cost a lookup). Best
/// effort. The newest is the log being written (over an old file's pages when it was
/// recycled); the oldest, the one the next recycling takes (logs become obsolete oldest
/// first). Logs between them are only read again by recovery: left alone, so that under
/// memory pressure this never keeps more than two logs (two write buffers) cached.
pub(super) fn keep_cached(db: &Path) {
    let Ok(dir) = std::fs::read_dir(db) else {
        return;
    };
    let mut logs: Vec<(u64, std::path::PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let number = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
            Some((number, e.path()))
        })
        .collect();
    logs.sort();
    let ends = match logs.as_slice() {
        [] => return,
        [only] => vec![only],
        [first, .., last] => vec![first, last],
    };
    for (_, path) in ends {
        // A log deleted meanwhile (flushed and not kept) is simply gone.
        let Ok(f) = File::open(path) else {
            continue;
        };
        let _ = nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_and_the_oldest_log_are_read_into_the_page_cache() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let other = dir.path().join("MANIFEST-000001");
        std::fs::write(&other, b"x").expect("write");
        let logs: Vec<File> = ["000009.log", "000012.log", "000031.log"]
            .iter()
            .map(|name| {
                let path = dir.path().join(name);
                std::fs::write(&path, vec![7u8; 1 << 20]).expect("write");
                let f = File::open(&path).expect("open");
                f.sync_all().expect("sync");
                // Out of the cache (clean pages: DONTNEED drops them).
                nix::fcntl::posix_fadvise(
                    f.as_raw_fd(),
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                )
                .expect("dontneed");
                assert!(
                    resident_pages(&f, 1 << 20) < 256,
                    "the test's file system keeps every page cached (tmpfs?): nothing to show"
                );
                f
            })
            .collect();
        keep_cached(dir.path());
        // WILLNEED starts reads: within a while, every page of both ends is resident.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let resident = [&logs[0], &logs[2]].map(|f| resident_pages(f, 1 << 20));
            if resident == [256, 256] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{resident:?} of 256 pages cached"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            resident_pages(&logs[1], 1 << 20) < 256,
            "a log between the two ends was read too"
        );
        // A missing directory is not an error.
        keep_cached(&dir.path().join("missing"));
    }

    /// Pages of the first `len` bytes of `f` in the page cache (`mincore` of a mapping).
    #[allow(unsafe_code)]
    fn resident_pages(f: &File, len: usize) -> usize {
        // SAFETY: a read-only shared mapping of a file we keep open, unmapped before
        // returning; `vec` has one byte per page of it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap");
            let mut vec = vec![0u8; len.div_ceil(4096)];
            let rc = libc::mincore(p, len, vec.as_mut_ptr());
            libc::munmap(p, len);
            assert_eq!(rc, 0, "mincore");
            vec.iter().filter(|b| **b & 1 == 1).count()
        }
    }
}
