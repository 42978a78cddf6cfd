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

/// Asks the kernel to read every `*.log` file of the RocksDB directory `db` into the page
/// cache (in the background; pages already there cost a lookup). Best effort.
pub(super) fn keep_cached(db: &Path) {
    let Ok(dir) = std::fs::read_dir(db) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().ends_with(b".log") {
            continue;
        }
        // A log deleted meanwhile (flushed and not kept) is simply gone.
        let Ok(f) = File::open(entry.path()) else {
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
    fn logs_are_read_into_the_page_cache() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let log = dir.path().join("000012.log");
        std::fs::write(&log, vec![7u8; 1 << 20]).expect("write");
        let other = dir.path().join("MANIFEST-000001");
        std::fs::write(&other, b"x").expect("write");
        let f = File::open(&log).expect("open");
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
        keep_cached(dir.path());
        // WILLNEED starts reads: within a while, every page is resident.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let resident = resident_pages(&f, 1 << 20);
            if resident == 256 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{resident} of 256 pages cached"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
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
