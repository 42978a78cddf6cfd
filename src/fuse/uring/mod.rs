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
//! One ring per possible CPU for the whole daemon: the thread of CPU N (pinned to it) owns
//! one io_uring and serves queue N of every connection that uses io_uring, so a mount costs
//! no thread of its own. Per mount and CPU: `depth` entries (8; 128 in total past 16 CPUs,
//! at least 2 per queue; `SNAPFS_FUSE_URING_DEPTH` overrides), each a 288-byte header and a
//! payload buffer of `max_write` (1 MiB). Address space: CPUs × depth × 1 MiB per mount (16
//! MiB on 2 CPUs); resident only what requests touched (one page per entry for metadata, up
//! to the largest write or read seen).
//!
//! A ring has one thread, so a request that waits must not hold it: FSYNC/FSYNCDIR (a WAL
//! sync) and MKDIR in `.snapshots` (a snapshot first waits for the kernel to write cached
//! pages back, which arrive as WRITE requests, possibly on the same ring) run on the shared
//! helper threads (started on demand, as many as wait at once); the ring keeps serving and
//! commits their replies when they are done. Handlers on ring threads never wait for the
//! kernel, so the writeback cache is safe too.

mod helpers;
mod ring;

use super::{abi, dispatch};

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::conn::{guarded, Conn};
use super::fusectl::abort_connection;
use super::ops::{Errno, MAX_WRITE};
use abi::InHeader;
use ring::{Queue, Ring, EVENT_TAG};

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// `SNAPFS_FUSE_URING`: `0` never, `1` always (turning the kernel's switch on if needed),
/// unset: whenever the kernel offers it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Off,
    /// Off because the mounts are kept across daemon restarts.
    KeptOff,
    Auto,
    Force,
}

fn mode() -> Mode {
    match std::env::var("SNAPFS_FUSE_URING").as_deref().map(str::trim) {
        Ok("0") | Ok("off") | Ok("false") | Ok("no") => Mode::Off,
        Ok("1") | Ok("on") | Ok("true") | Ok("yes") => Mode::Force,
        // A daemon whose mounts outlive it (an fd store keeps them) mounts over /dev/fuse:
        // a ring dies with its daemon, and the requests it had handed out with it.
        _ if crate::fdstore::store().is_some() => Mode::KeptOff,
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
        !matches!(self.mode, Mode::Off | Mode::KeptOff)
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
        } else if self.mode == Mode::KeptOff {
            Some("the mount outlives the daemon: io_uring queues would not; SNAPFS_FUSE_URING=1 forces them")
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

/// A mount's queues, one on each CPU's ring.
pub(crate) struct Rings {
    /// Queues of this connection still on their rings.
    live: Arc<Live>,
    pub stats: Arc<Stats>,
    pub nr_queues: usize,
    pub depth: usize,
}

/// How many of a connection's queues are still on their rings.
#[derive(Default)]
struct Live {
    queues: Mutex<usize>,
    cv: Condvar,
}

impl Live {
    fn add(&self) {
        *self.queues.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn done(&self) {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        *q = q.saturating_sub(1);
        self.cv.notify_all();
    }
}

impl Rings {
    /// Waits until every queue of the connection has left its ring (they leave once the
    /// kernel gave all their entries back: at connection teardown).
    pub fn join(self) {
        let q = self.live.queues.lock().unwrap_or_else(|e| e.into_inner());
        let _q = self
            .live
            .cv
            .wait_while(q, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// What a ring's thread is asked to do.
enum Msg {
    /// Put a connection's queue on the ring and register its entries.
    Add(Box<NewQueue>),
    /// A helper's answer for an entry.
    Done(Done),
}

struct NewQueue {
    /// The queue's own descriptor of the connection.
    fuse: OwnedFd,
    /// The connection (its operations; aborted if its queue fails).
    conn: Arc<Conn>,
    depth: usize,
    payload_size: usize,
    stats: Arc<Stats>,
    live: Arc<Live>,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
}

/// A ring's thread, as the rest of the daemon reaches it.
struct RingHandle {
    tx: Sender<Msg>,
    wake: Arc<EventFd>,
}

/// The running rings, by CPU. A ring starts with the first queue put on it and ends once it
/// serves none (so a daemon without io_uring mounts has no ring, and none outlives its
/// last mount); both under this lock, so a message is never sent to a ring that is leaving.
static RINGS: Mutex<Vec<Option<RingHandle>>> = Mutex::new(Vec::new());

/// Sends `m` to the ring of `cpu`; with `start`, starts that ring if it is not running.
fn send(cpu: usize, m: Msg, start: bool) -> std::io::Result<()> {
    let mut rings = RINGS
        .lock()
        .map_err(|_| std::io::Error::other("io_uring rings poisoned"))?;
    if rings.len() <= cpu {
        rings.resize_with(cpu + 1, || None);
    }
    if rings[cpu].is_none() {
        if !start {
            return Err(std::io::Error::other(format!(
                "io_uring ring {cpu} is gone"
            )));
        }
        rings[cpu] = Some(start_ring(cpu)?);
    }
    let h = rings[cpu]
        .as_ref()
        .ok_or_else(|| std::io::Error::other("io_uring ring missing"))?;
    h.tx.send(m)
        .map_err(|_| std::io::Error::other(format!("io_uring ring {cpu} is gone")))?;
    h.wake.write(1)?;
    Ok(())
}

fn start_ring(cpu: usize) -> std::io::Result<RingHandle> {
    let wake = Arc::new(EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?);
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let w = wake.clone();
    std::thread::Builder::new()
        .name(format!("snapfs-ring-{cpu}"))
        .spawn(move || ring_thread(cpu, w, rx, ready_tx))?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| std::io::Error::other("a ring thread did not start"))??;
    Ok(RingHandle { tx, wake })
}

/// Called by a ring's thread that serves no queue: true (and the ring is unlisted) if no
/// message is waiting for it.
fn leave(cpu: usize, rx: &Receiver<Msg>) -> bool {
    let Ok(mut rings) = RINGS.lock() else {
        return false;
    };
    if !rx.is_empty() {
        return false;
    }
    if let Some(r) = rings.get_mut(cpu) {
        *r = None;
    }
    true
}

/// Puts one queue of `conn` on every CPU's ring and waits until each has registered its
/// entries (the kernel holds requests until then). A queue that fails after it started
/// serving aborts the connection, rather than leaving that CPU's requests hanging. On error the kernel has been
/// made to fall back to `/dev/fuse`, and the queues that did register are returned too:
/// they stay on their rings until the connection ends (the kernel holds their buffers).
pub(crate) fn start(conn: &Arc<Conn>) -> Result<Rings, (std::io::Error, Rings)> {
    let r = start_queues(conn);
    if r.is_err() {
        if let Err(e) = ring::refuse(conn.fd(), 0) {
            log::error!("cannot make the kernel fall back to /dev/fuse: {e}");
        }
    }
    r
}

fn start_queues(conn: &Arc<Conn>) -> Result<Rings, (std::io::Error, Rings)> {
    let nr = possible_cpus();
    let depth = queue_depth(nr);
    let rings_of_conn = Rings {
        live: Arc::new(Live::default()),
        stats: Arc::new(Stats::default()),
        nr_queues: nr,
        depth,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let mut first_err = None;
    let mut sent = 0;
    for cpu in 0..nr {
        let fd = match conn.fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                first_err = Some(e);
                break;
            }
        };
        rings_of_conn.live.add();
        let q = NewQueue {
            fuse: fd,
            conn: conn.clone(),
            depth,
            payload_size: payload_size(),
            stats: rings_of_conn.stats.clone(),
            live: rings_of_conn.live.clone(),
            ready: ready_tx.clone(),
        };
        if let Err(e) = send(cpu, Msg::Add(Box::new(q)), true) {
            rings_of_conn.live.done();
            first_err = Some(e);
            break;
        }
        sent += 1;
    }
    drop(ready_tx);
    for _ in 0..sent {
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
        None => Ok(rings_of_conn),
        Some(e) => Err((e, rings_of_conn)),
    }
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

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        log::debug!("io_uring queue {cpu}: not pinned to its CPU: {e}");
    }
}

/// A queue on a ring, with what serving it needs.
struct Slot {
    q: Queue,
    conn: Arc<Conn>,
    stats: Arc<Stats>,
    live: Arc<Live>,
}

/// A request handed to a helper thread, with copies of its arguments.
struct SlowJob {
    ring: usize,
    slot: usize,
    entry: usize,
    conn: Arc<Conn>,
    header: InHeader,
    op_in: [u8; abi::OP_IN_SIZE],
    input: Vec<u8>,
}

/// A helper's answer for a queue's entry: the reply body or an errno.
struct Done {
    slot: usize,
    entry: usize,
    unique: u64,
    reply: Result<Vec<u8>, Errno>,
}

fn ring_thread(
    cpu: usize,
    wake: Arc<EventFd>,
    rx: Receiver<Msg>,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    pin_to_cpu(cpu);
    let ring = match Ring::new(wake.as_raw_fd()) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut server = Server {
        cpu,
        ring,
        slots: Vec::new(),
        wake,
    };
    if let Err(e) = server.ring.arm_event().and_then(|()| server.ring.submit()) {
        let _ = ready.send(Err(e));
        return;
    }
    let _ = ready.send(Ok(()));
    if let Err(e) = server.run(&rx) {
        log::error!("io_uring ring {cpu} failed: {e}; aborting its FUSE connections");
        while !leave(cpu, &rx) {
            // Queues sent meanwhile are given up too.
            while let Ok(m) = rx.try_recv() {
                if let Msg::Add(q) = m {
                    q.live.done();
                    let _ = q
                        .ready
                        .send(Err(std::io::Error::other("io_uring ring failed")));
                }
            }
        }
        for s in server.slots.iter().flatten() {
            abort_connection(s.conn.minor());
            s.live.done();
        }
    }
}

struct Server {
    cpu: usize,
    ring: Ring,
    slots: Vec<Option<Slot>>,
    wake: Arc<EventFd>,
}

impl Server {
    /// Serves the queues of the ring until it has none left.
    fn run(&mut self, rx: &Receiver<Msg>) -> std::io::Result<()> {
        let mut cqes = Vec::with_capacity(256);
        loop {
            let mut i = 0;
            while i < cqes.len() {
                let (tag, res) = cqes[i];
                i += 1;
                if tag == EVENT_TAG {
                    let _ = self.wake.read();
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Msg::Add(q) => self.add(*q, &mut cqes)?,
                            Msg::Done(d) => self.finish(d)?,
                        }
                    }
                    self.ring.arm_event()?;
                    continue;
                }
                self.completion(tag, res)?;
            }
            cqes.clear();
            if self.slots.iter().all(Option::is_none) && leave(self.cpu, rx) {
                return Ok(());
            }
            self.ring.submit_and_wait()?;
            self.ring.reap(&mut cqes);
        }
    }

    /// Puts a connection's queue on the ring and registers its entries; says on `ready`
    /// whether the kernel took them (refusals come back at once, as CQEs of the REGISTER
    /// commands; the other completions reaped meanwhile are appended to `cqes`).
    fn add(&mut self, n: NewQueue, cqes: &mut Vec<(u64, i32)>) -> std::io::Result<()> {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let qid = u16::try_from(self.cpu).unwrap_or(u16::MAX);
        let mut q = match Queue::new(qid, slot, n.depth, n.payload_size, n.fuse) {
            Ok(q) => q,
            Err(e) => {
                n.live.done();
                let _ = n.ready.send(Err(e));
                return Ok(());
            }
        };
        q.register(&mut self.ring)?;
        self.ring.submit()?;
        let start = cqes.len();
        self.ring.reap(cqes);
        let mut refused = 0;
        let mut first = None;
        for &(tag, res) in &cqes[start..] {
            if tag != EVENT_TAG && ring::untag(tag).0 == slot && res < 0 {
                refused += 1;
                first.get_or_insert(res);
            }
        }
        let depth = q.depth();
        self.slots[slot] = Some(Slot {
            q,
            conn: n.conn,
            stats: n.stats,
            live: n.live,
        });
        let answer = match first {
            Some(res) if refused == depth => Err(std::io::Error::from_raw_os_error(-res)),
            Some(res) => {
                log::warn!(
                    "io_uring: {refused} of {depth} entries refused: {}",
                    std::io::Error::from_raw_os_error(-res)
                );
                Ok(())
            }
            None => Ok(()),
        };
        let _ = n.ready.send(answer);
        Ok(())
    }

    /// Handles the completion of an entry: a request to serve, a retry, or an entry given
    /// back for good (a queue whose entries are all back leaves the ring).
    fn completion(&mut self, tag: u64, res: i32) -> std::io::Result<()> {
        let (slot, i) = ring::untag(tag);
        let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        s.q.completed(i, res);
        if res == -libc::EINTR || res == -libc::EAGAIN {
            s.q.retry(&mut self.ring, i)?;
        } else if res < 0 {
            if res != -libc::ENOTCONN && res != -libc::ECONNABORTED {
                let e = std::io::Error::from_raw_os_error(-res);
                log::info!("io_uring entry {i} given back: {e}");
            }
            if s.q.live() == 0 {
                if let Some(s) = self.slots[slot].take() {
                    s.live.done();
                }
            }
        } else {
            self.request(slot, i)?;
        }
        Ok(())
    }

    /// Serves the request in entry `i` of queue `slot` (or hands it to a helper) and
    /// commits the reply.
    fn request(&mut self, slot: usize, i: usize) -> std::io::Result<()> {
        let cpu = self.cpu;
        let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let conn = s.conn.clone();
        let ops = conn.ops();
        let Some((header, payload)) = s.q.entry(i) else {
            return Ok(());
        };
        let (in_out, op_in, ent) = split_header(header);
        let (commit_id, payload_sz) = abi::ent_in_out(ent).unwrap_or((0, 0));
        let h = InHeader::parse(in_out);
        s.stats.requests.fetch_add(1, Ordering::Relaxed);
        let (unique, result) = match h {
            Some(h) if dispatch::is_slow(ops, &h) => {
                let input = payload.get(..payload_sz as usize).unwrap_or(&[]).to_vec();
                let mut op = [0u8; abi::OP_IN_SIZE];
                op.copy_from_slice(&op_in[..abi::OP_IN_SIZE]);
                s.q.set_commit_id(i, commit_id);
                let job = SlowJob {
                    ring: cpu,
                    slot,
                    entry: i,
                    conn: conn.clone(),
                    header: h,
                    op_in: op,
                    input,
                };
                if helpers::submit(job) {
                    return Ok(());
                }
                // No helper could be started: answer at once.
                let Some((header, _)) = s.q.entry(i) else {
                    return Ok(());
                };
                let (in_out, _, ent) = split_header(header);
                write_reply_header(in_out, ent, h.unique, Err(libc::EIO), 0);
                return s.q.commit(&mut self.ring, i);
            }
            Some(h) => (
                h.unique,
                guarded(|| dispatch::serve(ops, &h, op_in, payload, payload_sz as usize)),
            ),
            None => (0, Err(libc::EIO)),
        };
        let len = *result.as_ref().unwrap_or(&0);
        write_reply_header(in_out, ent, unique, result.map(|_| ()), len);
        s.q.set_commit_id(i, commit_id);
        s.q.commit(&mut self.ring, i)
    }

    /// Commits a helper's reply for its entry.
    fn finish(&mut self, d: Done) -> std::io::Result<()> {
        let Some(s) = self.slots.get_mut(d.slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let Some((header, payload)) = s.q.entry(d.entry) else {
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
        s.q.commit(&mut self.ring, d.entry)
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
