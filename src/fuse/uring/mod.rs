//! FUSE-over-io_uring (Linux 6.14+): the kernel hands requests to per-CPU queues of ring
//! entries instead of `read(2)` on `/dev/fuse`, and takes each reply together with the
//! fetch of the next request (one `io_uring_enter` per batch instead of a read and a write
//! per request). Requests from a task on CPU N go to queue N, served by one thread pinned to
//! CPU N.
//!
//! Between INIT (where we take FUSE_OVER_IO_URING) and the registration of the last queue,
//! the kernel holds new requests (`fuse_block_alloc` in `fs/fuse/dev.c`: the connection has
//! io_uring but no ready ring); a REGISTER it refuses clears the connection's io_uring flag
//! and releases them to `/dev/fuse`, which is how a failed setup falls back
//! ([`ring::refuse`]). What always stays on `/dev/fuse` (fuser's threads keep reading it):
//! FORGET/BATCH_FORGET and INTERRUPT (the kernel's io_uring queue ops send those through the
//! `/dev/fuse` queue: `fuse_dev_queue_forget`, `fuse_dev_queue_interrupt` in
//! `fs/fuse/dev_uring.c`), and every notification we send (inval_inode / inval_entry are
//! writes to `/dev/fuse`; the ring refuses `unique == 0` replies).
//!
//! Per mount: one queue per possible CPU, `depth` entries per queue (8; 128 in total past 16
//! CPUs, at least 2 per queue; `SNAPFS_FUSE_URING_DEPTH` overrides), each a 288-byte header
//! and a payload buffer of `max_write` (1 MiB). Address space: CPUs × depth × 1 MiB (16 MiB on
//! 2 CPUs); resident only what requests touched (one page per entry for metadata, up to the
//! largest write or read seen). Threads: one per queue, plus two for slow requests (below).
//!
//! A queue has one thread, so a request that waits must not hold it: FSYNC/FSYNCDIR (a WAL
//! sync) and MKDIR in `.snapshots` (a snapshot first waits for the kernel to write cached
//! pages back, which arrive as WRITE requests, possibly on the same queue) run on two
//! helper threads; the queue keeps serving and commits their replies when they are done.
//! Handlers on queue threads never wait for the kernel, so the writeback cache is safe too.

mod abi;
mod dispatch;
mod ring;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::fusectl::abort_connection;
use super::ops::{Errno, Ops, MAX_WRITE};
use abi::InHeader;
use ring::{Queue, EVENT_TAG};

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// `SNAPFS_FUSE_URING`: `0` never, `1` always (turning the kernel's switch on if needed),
/// unset: whenever the kernel offers it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Off,
    Auto,
    Force,
}

fn mode() -> Mode {
    match std::env::var("SNAPFS_FUSE_URING").as_deref().map(str::trim) {
        Ok("0") | Ok("off") | Ok("false") | Ok("no") => Mode::Off,
        Ok("1") | Ok("on") | Ok("true") | Ok("yes") => Mode::Force,
        _ => Mode::Auto,
    }
}

/// What one mount wants and what its INIT decided.
pub(crate) struct Selection {
    mode: Mode,
    offered: AtomicBool,
    accepted: AtomicBool,
}

impl Selection {
    /// Reads `SNAPFS_FUSE_URING`; with `1`, turns the kernel's global switch on first (it
    /// applies to connections made afterwards).
    pub fn from_env() -> Arc<Selection> {
        let mode = mode();
        if mode == Mode::Force {
            enable_kernel_switch();
        }
        Arc::new(Selection {
            mode,
            offered: AtomicBool::new(false),
            accepted: AtomicBool::new(false),
        })
    }

    pub fn wanted(&self) -> bool {
        self.mode != Mode::Off
    }

    /// Records INIT's outcome: did the kernel offer FUSE_OVER_IO_URING, did we take it.
    pub fn negotiated(&self, offered: bool, accepted: bool) {
        self.offered.store(offered, Ordering::SeqCst);
        self.accepted.store(accepted, Ordering::SeqCst);
    }

    pub fn accepted(&self) -> bool {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Why the rings are not used (for the mount's log line), if they are not.
    pub fn why_not(&self) -> Option<&'static str> {
        if self.mode == Mode::Off {
            Some("SNAPFS_FUSE_URING=0")
        } else if !self.offered.load(Ordering::SeqCst) {
            Some("not offered by the kernel (enable_uring is off or absent)")
        } else if !self.accepted() {
            Some("refused at INIT")
        } else {
            None
        }
    }
}

/// Sets `enable_uring` to Y once per process, loudly: it is one switch for the whole host.
fn enable_kernel_switch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| match std::fs::read_to_string(ENABLE_URING) {
        Ok(v) if v.trim() == "Y" => {}
        Ok(_) => match std::fs::write(ENABLE_URING, "Y") {
            Ok(()) => log::warn!(
                "SNAPFS_FUSE_URING=1: turned FUSE-over-io_uring on for the whole host \
                 ({ENABLE_URING}=Y; it applies to every FUSE mount made from now on)"
            ),
            Err(e) => log::warn!("SNAPFS_FUSE_URING=1 but cannot set {ENABLE_URING}: {e}"),
        },
        Err(e) => log::warn!("SNAPFS_FUSE_URING=1 but this kernel has no {ENABLE_URING}: {e}"),
    });
}

/// Counters of a mount's rings.
#[derive(Default)]
pub(crate) struct Stats {
    /// Requests served through the rings.
    pub requests: AtomicU64,
}

/// A mount's running queues and helper threads.
pub(crate) struct Rings {
    queues: Vec<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
    slow: Option<Sender<SlowJob>>,
    pub stats: Arc<Stats>,
    pub nr_queues: usize,
    pub depth: usize,
}

impl Rings {
    /// Waits for every thread (the queues end when the kernel tears the connection down).
    pub fn join(mut self) {
        for t in self.queues.drain(..) {
            let _ = t.join();
        }
        self.slow = None; // the helpers end once their channel closes
        for t in self.helpers.drain(..) {
            let _ = t.join();
        }
    }
}

/// A request handed to a helper thread, with copies of its arguments.
struct SlowJob {
    entry: usize,
    header: InHeader,
    op_in: [u8; abi::OP_IN_SIZE],
    input: Vec<u8>,
    done: Sender<Done>,
    wake: Arc<EventFd>,
}

/// A helper's answer for a queue's entry: the reply body or an errno.
struct Done {
    entry: usize,
    unique: u64,
    reply: Result<Vec<u8>, Errno>,
}

/// CPUs the kernel makes queues for (`num_possible_cpus()`).
fn possible_cpus() -> usize {
    let count = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim().split(',').try_fold(0usize, |n, r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                Some(n + b.checked_sub(a)? + 1)
            })
        });
    count
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Entries per queue.
fn queue_depth(queues: usize) -> usize {
    std::env::var("SNAPFS_FUSE_URING_DEPTH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|d| (1..=64).contains(d))
        .unwrap_or(if queues <= 16 {
            8
        } else {
            (128 / queues).max(2)
        })
}

/// The payload buffer of an entry: at least what the kernel requires (max(8 KiB, max_write,
/// max_pages pages); fuser sizes max_pages from max(max_write, readahead) and the kernel
/// offers at most 128 KiB readahead at INIT), page-aligned. `SNAPFS_FUSE_URING_PAYLOAD_KIB`
/// overrides it for tests of the fallback: smaller, the kernel refuses the queues; 0, they
/// fail before registering.
fn payload_size() -> usize {
    let default = (MAX_WRITE as usize)
        .max(abi::MIN_PAYLOAD)
        .next_multiple_of(4096);
    std::env::var("SNAPFS_FUSE_URING_PAYLOAD_KIB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(default, |kib| kib * 1024)
}

/// Whether FUSE-over-io_uring can be taken at INIT (see [`ring::probe`]).
pub(crate) fn usable() -> bool {
    match ring::probe() {
        Ok(()) => true,
        Err(e) => {
            log::warn!("FUSE-over-io_uring offered but io_uring is unusable here: {e}");
            false
        }
    }
}

/// Starts one queue per possible CPU on the connection of `fuse` and waits until each has
/// registered its entries (the kernel holds requests until then). `conn` is the
/// connection's number under fusectl, once known (aborted if a queue fails after it started
/// serving, rather than leaving that CPU's requests hanging). On error the kernel has been
/// made to fall back to `/dev/fuse`, and the queues that did register are returned too:
/// they must be kept (and joined at unmount), the kernel holds their buffers until the
/// connection ends.
pub(crate) fn start(
    ops: Arc<Ops>,
    fuse: BorrowedFd,
    conn: Arc<AtomicU64>,
) -> Result<Rings, (std::io::Error, Rings)> {
    let r = start_queues(ops, fuse, conn);
    if r.is_err() {
        if let Err(e) = ring::refuse(fuse, 0) {
            log::error!("cannot make the kernel fall back to /dev/fuse: {e}");
        }
    }
    r
}

fn start_queues(
    ops: Arc<Ops>,
    fuse: BorrowedFd,
    conn: Arc<AtomicU64>,
) -> Result<Rings, (std::io::Error, Rings)> {
    let nr = possible_cpus();
    let depth = queue_depth(nr);
    let (slow_tx, slow_rx) = crossbeam_channel::unbounded::<SlowJob>();
    let mut rings = Rings {
        queues: Vec::with_capacity(nr),
        helpers: Vec::new(),
        slow: Some(slow_tx.clone()),
        stats: Arc::new(Stats::default()),
        nr_queues: nr,
        depth,
    };
    for i in 0..2 {
        let (ops, rx) = (ops.clone(), slow_rx.clone());
        match std::thread::Builder::new()
            .name(format!("snapfs-slow-{i}"))
            .spawn(move || helper(&ops, rx))
        {
            Ok(t) => rings.helpers.push(t),
            Err(e) => return Err((e, rings)),
        }
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let mut first_err = None;
    for qid in 0..nr {
        let spawned = fuse.try_clone_to_owned().and_then(|fd| {
            let (ops, stats, slow, ready, conn) = (
                ops.clone(),
                rings.stats.clone(),
                slow_tx.clone(),
                ready_tx.clone(),
                conn.clone(),
            );
            std::thread::Builder::new()
                .name(format!("snapfs-ring-{qid}"))
                .spawn(move || queue_thread(qid, depth, fd, conn, &ops, &stats, slow, ready))
        });
        match spawned {
            Ok(t) => rings.queues.push(t),
            Err(e) => {
                first_err = Some(e);
                break;
            }
        }
    }
    drop(ready_tx);
    for _ in 0..rings.queues.len() {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(std::io::Error::other("a queue did not register"));
            }
        }
    }
    match first_err {
        None => Ok(rings),
        Some(e) => Err((e, rings)),
    }
}

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        log::debug!("io_uring queue {cpu}: not pinned to its CPU: {e}");
    }
}

#[allow(clippy::too_many_arguments)]
fn queue_thread(
    qid: usize,
    depth: usize,
    fuse: std::os::fd::OwnedFd,
    conn: Arc<AtomicU64>,
    ops: &Ops,
    stats: &Stats,
    slow: Sender<SlowJob>,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    pin_to_cpu(qid);
    let wake =
        match EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
    let qid16 = u16::try_from(qid).unwrap_or(u16::MAX);
    let mut q = match Queue::new(qid16, depth, payload_size(), fuse, wake.as_raw_fd()) {
        Ok(q) => q,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut cqes = Vec::with_capacity(2 * depth + 2);
    if let Err(e) = register(&mut q, &mut cqes) {
        let _ = ready.send(Err(e));
        return;
    }
    let _ = ready.send(Ok(()));
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let mut server = Server {
        q,
        ops,
        stats,
        slow,
        done_tx,
        wake,
    };
    if let Err(e) = server.run(&mut cqes, &done_rx) {
        log::error!("io_uring queue {qid} failed: {e}; aborting the FUSE connection");
        abort_connection(conn.load(Ordering::SeqCst));
    }
}

/// Registers every entry; Ok once the kernel took at least one (errors come back at once,
/// as CQEs of the REGISTER commands; a request may already be waiting in `cqes`).
fn register(q: &mut Queue, cqes: &mut Vec<(u64, i32)>) -> std::io::Result<()> {
    q.register()?;
    q.reap(cqes);
    let mut first = None;
    for &(tag, res) in cqes.iter() {
        if tag != EVENT_TAG && res < 0 {
            first.get_or_insert(res);
        }
    }
    match first {
        Some(res) if q.live() == 0 => Err(std::io::Error::from_raw_os_error(-res)),
        Some(res) => {
            log::warn!(
                "io_uring: {} of {} entries refused: {}",
                q.depth() - q.live(),
                q.depth(),
                std::io::Error::from_raw_os_error(-res)
            );
            Ok(())
        }
        None => Ok(()),
    }
}

struct Server<'a> {
    q: Queue,
    ops: &'a Ops,
    stats: &'a Stats,
    slow: Sender<SlowJob>,
    done_tx: Sender<Done>,
    wake: Arc<EventFd>,
}

impl Server<'_> {
    /// Serves until the kernel gave every entry back with an error (connection gone).
    fn run(&mut self, cqes: &mut Vec<(u64, i32)>, done_rx: &Receiver<Done>) -> std::io::Result<()> {
        loop {
            for &(tag, res) in cqes.iter() {
                if tag == EVENT_TAG {
                    let _ = self.wake.read();
                    while let Ok(d) = done_rx.try_recv() {
                        self.finish(d)?;
                    }
                    if self.q.live() > 0 {
                        self.q.arm_event()?;
                    }
                    continue;
                }
                let i = tag as usize;
                if res == -libc::EINTR || res == -libc::EAGAIN {
                    self.q.retry(i)?;
                } else if res < 0 {
                    if res != -libc::ENOTCONN && res != -libc::ECONNABORTED {
                        let e = std::io::Error::from_raw_os_error(-res);
                        log::info!("io_uring entry {i} given back: {e}");
                    }
                } else {
                    self.request(i)?;
                }
            }
            if self.q.live() == 0 {
                return Ok(());
            }
            self.q.submit_and_wait()?;
            self.q.reap(cqes);
        }
    }

    /// Serves the request in entry `i` (or hands it to a helper) and commits the reply.
    fn request(&mut self, i: usize) -> std::io::Result<()> {
        let ops = self.ops;
        let Some((header, payload)) = self.q.entry(i) else {
            return Ok(());
        };
        let (in_out, op_in, ent) = split_header(header);
        let (commit_id, payload_sz) = abi::ent_in_out(ent).unwrap_or((0, 0));
        let h = InHeader::parse(in_out);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let (unique, result) = match h {
            Some(h) if dispatch::is_slow(ops, &h) => {
                let input = payload.get(..payload_sz as usize).unwrap_or(&[]).to_vec();
                let mut op = [0u8; abi::OP_IN_SIZE];
                op.copy_from_slice(&op_in[..abi::OP_IN_SIZE]);
                let job = SlowJob {
                    entry: i,
                    header: h,
                    op_in: op,
                    input,
                    done: self.done_tx.clone(),
                    wake: self.wake.clone(),
                };
                self.q.set_commit_id(i, commit_id);
                if self.slow.send(job).is_ok() {
                    return Ok(());
                }
                // No helper left (cannot happen while the queue runs): answer at once.
                let Some((header, _)) = self.q.entry(i) else {
                    return Ok(());
                };
                let (in_out, _, ent) = split_header(header);
                write_reply_header(in_out, ent, h.unique, Err(libc::EIO), 0);
                return self.q.commit(i);
            }
            Some(h) => (
                h.unique,
                guarded(|| dispatch::serve(ops, &h, op_in, payload, payload_sz as usize)),
            ),
            None => (0, Err(libc::EIO)),
        };
        let len = *result.as_ref().unwrap_or(&0);
        write_reply_header(in_out, ent, unique, result.map(|_| ()), len);
        self.q.set_commit_id(i, commit_id);
        self.q.commit(i)
    }

    /// Commits a helper's reply for its entry.
    fn finish(&mut self, d: Done) -> std::io::Result<()> {
        let Some((header, payload)) = self.q.entry(d.entry) else {
            return Ok(());
        };
        let (result, len) = match d.reply {
            Ok(body) => match payload.get_mut(..body.len()) {
                Some(dst) => {
                    dst.copy_from_slice(&body);
                    (Ok(()), body.len())
                }
                None => (Err(libc::EIO), 0),
            },
            Err(e) => (Err(e), 0),
        };
        let (in_out, _, ent) = split_header(header);
        write_reply_header(in_out, ent, d.unique, result, len);
        self.q.commit(d.entry)
    }
}

/// An entry's header as (in_out, op_in, ring_ent_in_out).
fn split_header(h: &mut [u8]) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (in_out, rest) = h.split_at_mut(abi::OP_IN);
    let (op_in, ent) = rest.split_at_mut(abi::ENT_IN_OUT - abi::OP_IN);
    (in_out, op_in, ent)
}

/// Writes `fuse_out_header` into `in_out` and the reply's payload size into `ent`.
fn write_reply_header(
    in_out: &mut [u8],
    ent: &mut [u8],
    unique: u64,
    result: Result<(), Errno>,
    len: usize,
) {
    let (error, len) = match result {
        Ok(()) => (0, len),
        Err(e) => (e, 0),
    };
    in_out[..16].copy_from_slice(&abi::out_header(len, error, unique));
    // ring_ent_in_out.payload_sz (after flags and commit_id)
    ent[16..20].copy_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
}

/// Runs a handler, turning a panic into EIO: a queue's thread must outlive every request
/// (the kernel keeps routing this CPU's requests to it).
fn guarded(f: impl FnOnce() -> Result<usize, Errno>) -> Result<usize, Errno> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log::error!("a FUSE request handler panicked; answered EIO");
        Err(libc::EIO)
    })
}

/// A helper thread: serves slow requests until every queue is gone.
fn helper(ops: &Ops, jobs: Receiver<SlowJob>) {
    for job in jobs {
        let input_len = job.input.len();
        let mut buf = job.input;
        // Slow replies are small (an entry, or nothing).
        buf.resize(input_len.max(abi::ENTRY_OUT_SIZE * 2), 0);
        let r = guarded(|| dispatch::serve(ops, &job.header, &job.op_in, &mut buf, input_len));
        let reply = r.map(|n| {
            buf.truncate(n);
            buf
        });
        let _ = job.done.send(Done {
            entry: job.entry,
            unique: job.header.unique,
            reply,
        });
        let _ = job.wake.write(1);
    }
}
