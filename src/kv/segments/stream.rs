//! Appends to segment files that do not pile up in the page cache ("drop-behind").
//!
//! A segment file is written once and read back rarely (the kernel keeps the FUSE file's
//! own pages for readers). Left to the page cache, a sustained write dirties gigabytes of
//! segment pages that the kernel throttles and writes back in bursts, and every new page is
//! memory the machine must hand out fresh (on this VM a fresh page costs ~30 µs: 10 GiB
//! through the page cache ran at 0.2x the 1 GiB figure). So every [`CHUNK`] appended, the
//! writer starts the chunk's writeback (`sync_file_range(WRITE)`), waits for the one before
//! it (usually done by then) and drops its pages (`POSIX_FADV_DONTNEED`): the segment file
//! holds at most two chunks of pages per open segment, recycled as it goes.
//!
//! What stays the same: an append returns once its bytes are in the page cache, so a killed
//! daemon loses nothing it acknowledged; durability is still the segment's `fdatasync`
//! (writeback is not a device flush). Pages are dropped only once written back, and never
//! the page holding the end of the file (the next append writes into it). A segment left
//! for another (rotation) has its last chunks written back and dropped at once.
//!
//! O_DIRECT appends from an aligned buffer were tried first: 10 GiB held its 1 GiB figure
//! too, but each append then waited for the device (1 GiB at 459-598 MiB/s against 646-706
//! here, fio direct=1 on the FUSE file, interleaved).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Page size: the unit of writeback and of dropped pages.
const PAGE: u64 = 4096;
/// Appended bytes per writeback started.
const CHUNK: u64 = 4 << 20;

/// The segment being appended to, as the streamer sees it.
struct Current {
    seg: u64,
    file: Arc<File>,
    /// Writeback was started up to here (a page boundary).
    started: u64,
    /// Started but not yet waited for and dropped.
    pending: Option<(u64, u64)>,
    /// Where the appended bytes end.
    end: u64,
}

/// The drop-behind side of a segment directory (one writer appends at a time).
pub struct Streamer {
    on: bool,
    current: Option<Current>,
}

impl Streamer {
    pub fn new(on: bool) -> Streamer {
        Streamer { on, current: None }
    }

    /// Writes `bytes` at `off` of segment `seg` (open as `file`) through the page cache,
    /// then lets go of the pages appended a chunk ago.
    pub fn append(&mut self, seg: u64, file: &Arc<File>, bytes: &[u8], off: u64) -> io::Result<()> {
        file.write_all_at(bytes, off)?;
        if !self.on {
            return Ok(());
        }
        let end = off + bytes.len() as u64;
        let cur = match self.current.take() {
            Some(c) if c.seg == seg => c,
            other => {
                if let Some(old) = other {
                    finish(&old)?;
                }
                Current {
                    seg,
                    file: file.clone(),
                    started: off / PAGE * PAGE,
                    pending: None,
                    end,
                }
            }
        };
        let cur = self.current.insert(cur);
        cur.end = cur.end.max(end);
        let upto = cur.end / PAGE * PAGE;
        if upto < cur.started + CHUNK {
            return Ok(());
        }
        let fd = cur.file.as_raw_fd();
        sync_file_range(fd, cur.started, upto - cur.started, false)?;
        if let Some((a, b)) = cur.pending.take() {
            sync_file_range(fd, a, b - a, true)?;
            drop_pages(&cur.file, a, b);
        }
        cur.pending = Some((cur.started, upto));
        cur.started = upto;
        Ok(())
    }

    /// Forgets segment `seg` (deleted).
    pub fn forget(&mut self, seg: u64) {
        if matches!(&self.current, Some(c) if c.seg == seg) {
            self.current = None;
        }
    }
}

/// Writes back and drops what is left of a segment no longer appended to.
fn finish(cur: &Current) -> io::Result<()> {
    let from = cur.pending.map_or(cur.started, |(a, _)| a);
    if cur.end > from {
        sync_file_range(cur.file.as_raw_fd(), from, cur.end - from, true)?;
        drop_pages(&cur.file, from, cur.end);
    }
    Ok(())
}

/// Asks the kernel to drop the (written back) pages of `[from, to)`; advice only, so a
/// refusal changes nothing but memory use.
fn drop_pages(file: &File, from: u64, to: u64) {
    let (Ok(off), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    if let Err(e) = nix::fcntl::posix_fadvise(
        file.as_raw_fd(),
        off,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    ) {
        log::debug!("dropping segment pages: {e}");
    }
}

/// `sync_file_range` over `[off, off + len)`: starts writeback of its dirty pages, and with
/// `wait` waits for all of its writeback (earlier and new) to end. Not a device flush.
#[allow(unsafe_code)]
fn sync_file_range(fd: i32, off: u64, len: u64, wait: bool) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "segment range past i64",
        ));
    };
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // SAFETY: sync_file_range takes a descriptor and plain integers, no pointers; `fd` is
    // kept open by the caller's `File` for the whole call.
    let rc = unsafe { libc::sync_file_range(fd, off, len, flags) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn bytes(len: u64, x: &mut u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*x >> 56) as u8
            })
            .collect()
    }

    /// Pages of `path` in the page cache (mincore over a mapping).
    fn cached_pages(path: &std::path::Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("run fincore (util-linux)");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .expect("fincore prints bytes")
            / PAGE
    }

    /// Appends of every shape (long and short, aligned or not, across chunk boundaries and
    /// two segments) read back whole, and the first segment keeps few pages cached.
    #[test]
    fn appends_read_back_whole_and_leave_few_pages_behind() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let open = |name: &str| {
            Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(dir.path().join(name))
                    .expect("create"),
            )
        };
        let (a, b) = (open("a.seg"), open("b.seg"));
        let mut s = Streamer::new(true);
        let mut want = Vec::new();
        let mut x = 7u64;
        for len in [
            37u64,
            300 << 10,
            5,
            3 << 20,
            4096,
            64 << 10,
            (5 << 20) + 4095,
            1,
        ]
        .iter()
        .cycle()
        .take(24)
        {
            let chunk = bytes(*len, &mut x);
            s.append(1, &a, &chunk, want.len() as u64).expect("append");
            want.extend_from_slice(&chunk);
        }
        // Moving on to segment b lets go of a's last pages (a page or two may be read back
        // in meanwhile by the kernel's own writeback; none of a's ~20 MiB should stay).
        let tail = bytes(100, &mut x);
        s.append(2, &b, &tail, 0).expect("append to b");
        assert!(
            cached_pages(&dir.path().join("a.seg")) <= 16,
            "segment a keeps {} pages cached",
            cached_pages(&dir.path().join("a.seg"))
        );
        let mut got = vec![0u8; 100];
        b.read_exact_at(&mut got, 0).expect("read b");
        assert_eq!(got, tail);
        let mut got = vec![0u8; want.len()];
        a.read_exact_at(&mut got, 0).expect("read a back");
        assert!(got == want, "segment a differs from what was appended");
    }
}
