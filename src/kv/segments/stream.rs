//! Appends to segment files that do not pile up in the page cache ("drop-behind").
//!
//! A segment file is written once and read back rarely (the kernel keeps the FUSE file's
//! own pages for readers). Left to the page cache, a sustained write dirties gigabytes of
//! segment pages that the kernel throttles and writes back in bursts, the same bytes are
//! cached twice (the FUSE file's pages, the segment's), and every new page is memory the
//! machine must hand out fresh (on this VM a page not touched lately costs ~30 µs: 10 GiB
//! with direct I/O on the FUSE file ran at 0.4-0.6x the 1 GiB figure). So every [`CHUNK`]
//! appended, the writer starts the chunk's writeback (`sync_file_range(WRITE)`); chunks more
//! than a lag behind the newest (1 GiB, [`default_lag`]) are waited for (long done, as a
//! rule) and their pages dropped (`POSIX_FADV_DONTNEED`). The lag keeps what was written
//! lately cached for the reads that follow writes (a 4 KiB write reads the rest of its 16
//! KiB block: with no lag, random 4 KiB fsync'd writes ran 7-14% slower).
//!
//! All of that runs on a thread of its own (`snapfs-segdrop`): the appender only sends what
//! it appended ([`DropBehind`]). In the appending thread, the FUSE thread serving a
//! sustained write, the two calls took ~10 % of its time (`posix_fadvise(DONTNEED)` walks
//! the written-back range through `ext4_writepages` again), and that thread is CPU-bound on
//! this 2-vCPU VM, the other vCPU mostly idle. A bounded queue holds the appender back if the
//! thread ever falls far behind.
//!
//! What stays the same: an append returns once its bytes are in the page cache, so a killed
//! daemon loses nothing it acknowledged; durability is still the segment's `fdatasync`
//! (writeback is not a device flush). Pages are dropped only once written back, and never
//! the page holding the end of the open segment (the next append writes into it).
//!
//! O_DIRECT appends from an aligned buffer were tried first: 10 GiB held its 1 GiB figure
//! too, but each append then waited for the device (1 GiB at 459-598 MiB/s against 659-706
//! here, fio direct=1 on the FUSE file, interleaved).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

/// How far behind the writer appended pages stay cached: 1 GiB, or a sixteenth of the
/// memory on a smaller machine.
pub fn default_lag() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(16 << 30, |kib| kib << 10);
    (ram / 16).min(LAG_MAX)
}

/// The most kept behind the writer.
const LAG_MAX: u64 = 1 << 30;

/// Page size: the unit of writeback and of dropped pages.
const PAGE: u64 = 4096;
/// Appended bytes per writeback started.
const CHUNK: u64 = 4 << 20;

/// Appends noted but not yet taken by the thread, at most: the appender waits beyond it.
const QUEUE: usize = 1024;

enum Msg {
    Appended {
        seg: u64,
        off: u64,
        end: u64,
    },
    Forget(u64),
    /// Answered once every earlier message was handled.
    #[cfg(test)]
    Settle(mpsc::Sender<()>),
}

/// Drop-behind for the segment files of one directory, on a thread of its own.
pub struct DropBehind {
    tx: mpsc::SyncSender<Msg>,
}

impl DropBehind {
    /// Starts the thread for segment files named by `file_of`, keeping `lag` bytes cached
    /// behind the newest append; `None` if no thread can be started (appends then simply
    /// stay in the page cache until the kernel evicts them).
    pub fn start(
        lag: u64,
        file_of: impl Fn(u64) -> PathBuf + Send + 'static,
    ) -> Option<DropBehind> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("snapfs-segdrop".into())
            .spawn(move || {
                let mut streamer = Streamer::new(lag);
                while let Ok(msg) = rx.recv() {
                    match msg {
                        Msg::Appended { seg, off, end } => {
                            if let Err(e) = streamer.appended(seg, || file_of(seg), off, end) {
                                // Advice only: durability is the writer's fdatasync, which
                                // sees any writeback error on its own handle.
                                log::warn!("segment {seg:016x}: dropping pages behind: {e}");
                            }
                        }
                        Msg::Forget(seg) => streamer.forget(seg),
                        #[cfg(test)]
                        Msg::Settle(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => Some(DropBehind { tx }),
            Err(e) => {
                log::warn!("no drop-behind thread for segments: {e}");
                None
            }
        }
    }

    /// Bytes `[off, end)` of segment `seg` were just written through the page cache.
    pub fn appended(&self, seg: u64, off: u64, end: u64) {
        // The thread ends only when this sender is dropped: a send cannot fail.
        let _ = self.tx.send(Msg::Appended { seg, off, end });
    }

    /// Segment `seg` is deleted: its handle goes.
    pub fn forget(&self, seg: u64) {
        let _ = self.tx.send(Msg::Forget(seg));
    }

    /// Returns once everything sent before was handled.
    #[cfg(test)]
    pub fn settle(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Settle(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The segment being appended to, as the streamer sees it.
struct Current {
    seg: u64,
    /// A handle of its own: `sync_file_range` consumes a writeback error it reports on the
    /// handle it is given, and the segment's `fdatasync` must still see it on the writer's.
    file: Arc<File>,
    /// Writeback was started up to here (a page boundary).
    started: u64,
    /// Where the appended bytes end.
    end: u64,
}

/// A range whose writeback was started, its pages still cached.
struct Chunk {
    seg: u64,
    file: Arc<File>,
    from: u64,
    to: u64,
}

/// The drop-behind side of a segment directory (one writer appends at a time).
pub struct Streamer {
    /// Bytes of chunks kept cached behind the newest one.
    lag: u64,
    current: Option<Current>,
    /// Chunks in append order, across segments.
    behind: VecDeque<Chunk>,
    behind_bytes: u64,
}

impl Streamer {
    /// Pages appended more than `lag` bytes ago (and written back) leave the page cache.
    pub fn new(lag: u64) -> Streamer {
        Streamer {
            lag,
            current: None,
            behind: VecDeque::new(),
            behind_bytes: 0,
        }
    }

    /// Bytes `[off, end)` of segment `seg` were just written through the page cache: starts
    /// their writeback by the chunk and lets go of the pages appended `lag` bytes ago.
    /// `path` names the segment's file (asked for only when a new segment comes).
    pub fn appended(
        &mut self,
        seg: u64,
        path: impl FnOnce() -> PathBuf,
        off: u64,
        end: u64,
    ) -> io::Result<()> {
        let mut cur = match self.current.take() {
            Some(c) if c.seg == seg => c,
            other => {
                if let Some(old) = other {
                    // No more appends to it: the rest of it goes, the last page too.
                    self.start(old.seg, &old.file, old.started, old.end)?;
                }
                match File::open(path()) {
                    Ok(f) => Current {
                        seg,
                        file: Arc::new(f),
                        started: off / PAGE * PAGE,
                        end,
                    },
                    Err(e) => {
                        // The bytes are written: only their pages stay cached.
                        log::warn!("segment {seg:016x}: no handle to drop pages behind: {e}");
                        return Ok(());
                    }
                }
            }
        };
        cur.end = cur.end.max(end);
        let upto = cur.end / PAGE * PAGE;
        if upto >= cur.started + CHUNK {
            self.start(seg, &cur.file, cur.started, upto)?;
            cur.started = upto;
        }
        self.current = Some(cur);
        while self.behind.len() > 1
            && self.behind_bytes - self.behind.back().map_or(0, |c| c.to - c.from) > self.lag
        {
            let Some(c) = self.behind.pop_front() else {
                break;
            };
            self.behind_bytes -= c.to - c.from;
            sync_file_range(c.file.as_raw_fd(), c.from, c.to - c.from, true)?;
            drop_pages(&c.file, c.from, c.to);
        }
        Ok(())
    }

    /// Starts the writeback of `[from, to)` of segment `seg` and queues it for dropping.
    fn start(&mut self, seg: u64, file: &Arc<File>, from: u64, to: u64) -> io::Result<()> {
        if to <= from {
            return Ok(());
        }
        sync_file_range(file.as_raw_fd(), from, to - from, false)?;
        self.behind.push_back(Chunk {
            seg,
            file: file.clone(),
            from,
            to,
        });
        self.behind_bytes += to - from;
        Ok(())
    }

    /// Forgets segment `seg` (deleted).
    pub fn forget(&mut self, seg: u64) {
        if matches!(&self.current, Some(c) if c.seg == seg) {
            self.current = None;
        }
        let before = self.behind.len();
        self.behind.retain(|c| c.seg != seg);
        if self.behind.len() != before {
            self.behind_bytes = self.behind.iter().map(|c| c.to - c.from).sum();
        }
    }
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
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    /// What `SegmentDir::append_parts` does: the write, then the note to the thread.
    fn append(d: &DropBehind, seg: u64, file: &File, bytes: &[u8], off: u64) {
        file.write_all_at(bytes, off).expect("write");
        d.appended(seg, off, off + bytes.len() as u64);
    }

    /// Drop-behind for files `1.seg`, `2.seg`... of `dir`.
    fn start(dir: &Path, lag: u64) -> DropBehind {
        let dir = dir.to_path_buf();
        DropBehind::start(lag, move |seg| dir.join(format!("{seg}.seg"))).expect("thread")
    }

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
        let (pa, pb) = (dir.path().join("1.seg"), dir.path().join("2.seg"));
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .expect("create")
        };
        let (a, b) = (open(&pa), open(&pb));
        let d = start(dir.path(), 0);
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
            append(&d, 1, &a, &chunk, want.len() as u64);
            want.extend_from_slice(&chunk);
        }
        // Moving on to segment b starts a's last chunk; with no lag it alone may stay cached
        // (of a's ~25 MiB; a few pages slack).
        let tail = bytes(100, &mut x);
        append(&d, 2, &b, &tail, 0);
        d.settle();
        assert!(
            cached_pages(&pa) <= CHUNK / PAGE + 16,
            "segment a keeps {} pages cached",
            cached_pages(&pa)
        );
        let mut got = vec![0u8; 100];
        b.read_exact_at(&mut got, 0).expect("read b");
        assert_eq!(got, tail);
        let mut got = vec![0u8; want.len()];
        a.read_exact_at(&mut got, 0).expect("read a back");
        assert!(got == want, "segment a differs from what was appended");
    }

    /// With a lag, what was appended within it stays cached and only what is older goes.
    #[test]
    fn pages_within_the_lag_stay_cached() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().join("1.seg");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        let lag = 8 * CHUNK;
        let d = start(dir.path(), lag);
        let mut x = 3u64;
        let mut off = 0u64;
        while off < 24 * CHUNK {
            let chunk = bytes(1 << 20, &mut x);
            append(&d, 1, &file, &chunk, off);
            off += chunk.len() as u64;
        }
        d.settle();
        let cached = cached_pages(&path);
        // The lag and the newest chunk (and the partial page at the end) at most; the lag's
        // pages, written back but not dropped, still there (no memory pressure here).
        assert!(cached <= (lag + 2 * CHUNK) / PAGE, "{cached} pages cached");
        assert!(cached >= lag / PAGE, "only {cached} pages cached");
    }
}
