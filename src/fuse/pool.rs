//! The workers that serve every `/dev/fuse` connection of the daemon. A mount costs no
//! thread of its own and no buffer of its own; a worker owns one request buffer
//! (`conn::BUF_SIZE`, every page present: see `conn::request_buffer`).
//!
//! Each worker has its own epoll set holding every connection's descriptor with
//! `EPOLLEXCLUSIVE`: a request wakes one waiting worker (the kernel skips sets whose worker
//! is busy), which reads it, serves it and waits again; several requests of one mount wake
//! several workers, so they run in parallel. Per request: epoll_wait, read and writev, where
//! a thread blocked in read(2) per mount needed read and writev. A woken worker that finds
//! nothing to read (another took it) just waits again.
//!
//! Sleeping in epoll_wait costs a wakeup (tens of microseconds on this VM) before every
//! request of a synchronous caller, which sends its next request right after the answer to
//! the last: the worker that just answered first polls its set without sleeping for up to
//! `SNAPFS_FUSE_SPIN_US` (default 50 us; 0: never), one worker at a time. An idle mount
//! costs nothing (no request, no spin).
//!
//! The pool grows and shrinks with demand: a request that may wait (an fsync, a snapshot
//! waiting for the kernel to write cached pages back through other requests) starts one
//! more worker first if none is idle (up to `max`), so it never holds up the others;
//! workers idle for `IDLE_EXIT` leave, down to `min`. A new worker registers every
//! connection in its own set; a new connection is registered in every worker's set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno as NixErrno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::conn::Conn;

/// How long a worker beyond `min` waits for work before it leaves.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// Most workers at once (`SNAPFS_FUSE_THREADS` overrides it, for measuring).
const MAX_WORKERS: usize = 64;

/// How long the worker that just answered a request polls for the next one before it
/// sleeps (`SNAPFS_FUSE_SPIN_US` overrides it; 0 turns it off).
const SPIN: Duration = Duration::from_micros(50);

fn spin_time() -> Duration {
    std::env::var("SNAPFS_FUSE_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|us| *us <= 10_000)
        .map_or(SPIN, Duration::from_micros)
}

fn max_workers() -> usize {
    std::env::var("SNAPFS_FUSE_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| (2..=1024).contains(n))
        .unwrap_or(MAX_WORKERS)
}

/// The daemon's serving pool.
pub(crate) struct Pool {
    reg: Mutex<Registry>,
    next_token: AtomicU64,
    next_worker: AtomicU64,
    /// Workers waiting in epoll.
    idle: AtomicUsize,
    /// Workers alive.
    workers: AtomicUsize,
    /// A worker is polling for the next request without sleeping.
    spinning: std::sync::atomic::AtomicBool,
    spin: Duration,
    min: usize,
    max: usize,
}

/// The connections served and the workers' epoll sets, changed together.
#[derive(Default)]
struct Registry {
    conns: HashMap<u64, Arc<Conn>>,
    epolls: HashMap<u64, Arc<Epoll>>,
}

fn interest(token: u64) -> EpollEvent {
    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, token)
}

static POOL: OnceLock<Result<Arc<Pool>, String>> = OnceLock::new();

/// The daemon's pool, started on first use.
pub(crate) fn get() -> std::io::Result<Arc<Pool>> {
    POOL.get_or_init(|| Pool::start().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| std::io::Error::other(format!("FUSE workers: {e}")))
}

impl Pool {
    fn start() -> std::io::Result<Arc<Pool>> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max = max_workers();
        let pool = Arc::new(Pool {
            reg: Mutex::new(Registry::default()),
            next_token: AtomicU64::new(1),
            next_worker: AtomicU64::new(1),
            idle: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            spinning: std::sync::atomic::AtomicBool::new(false),
            spin: spin_time(),
            min: cpus.clamp(2, max),
            max,
        });
        for _ in 0..pool.min {
            pool.spawn()?;
        }
        Ok(pool)
    }

    fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let n = self.workers.fetch_add(1, Ordering::SeqCst);
        if n >= self.max {
            self.workers.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("snapfs-fuse".into())
            .spawn(move || pool.work());
        if let Err(e) = spawned {
            self.workers.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        crate::metrics::get().fuse_workers.inc();
        Ok(())
    }

    fn registry(&self) -> std::io::Result<std::sync::MutexGuard<'_, Registry>> {
        self.reg
            .lock()
            .map_err(|_| std::io::Error::other("FUSE pool poisoned"))
    }

    /// Starts serving `conn`.
    pub fn add(&self, conn: Arc<Conn>) -> std::io::Result<()> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut reg = self.registry()?;
        for ep in reg.epolls.values() {
            // epoll keys on (descriptor, open file): always the connection's own descriptor.
            if let Err(e) = ep.add(conn.fd(), interest(token)) {
                for ep in reg.epolls.values() {
                    let _ = ep.delete(conn.fd());
                }
                return Err(e.into());
            }
        }
        reg.conns.insert(token, conn);
        Ok(())
    }

    fn conn(&self, token: u64) -> Option<Arc<Conn>> {
        self.reg.lock().ok()?.conns.get(&token).cloned()
    }

    /// The connection of `token` is gone: stop polling it and wake who waits for its end.
    fn ended(&self, conn: &Conn, token: u64) {
        if let Ok(mut reg) = self.reg.lock() {
            if reg.conns.remove(&token).is_some() {
                for ep in reg.epolls.values() {
                    let _ = ep.delete(conn.fd());
                }
            }
        }
        conn.set_ended();
    }

    /// A new worker's epoll set, holding every connection, listed in the registry.
    fn join(&self, id: u64) -> std::io::Result<Arc<Epoll>> {
        let ep = Arc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
        let mut reg = self.registry()?;
        for (&token, conn) in &reg.conns {
            ep.add(conn.fd(), interest(token))?;
        }
        reg.epolls.insert(id, ep.clone());
        Ok(ep)
    }

    fn work(self: Arc<Self>) {
        let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let ep = match self.join(id) {
            Ok(ep) => ep,
            Err(e) => {
                log::error!("FUSE pool: a worker cannot start: {e}");
                self.workers.fetch_sub(1, Ordering::SeqCst);
                crate::metrics::get().fuse_workers.dec();
                return;
            }
        };
        let mut buf = super::conn::request_buffer();
        let mut events = [EpollEvent::empty()];
        let timeout = EpollTimeout::try_from(IDLE_EXIT).unwrap_or(EpollTimeout::NONE);
        let mut served = false;
        loop {
            self.idle.fetch_add(1, Ordering::SeqCst);
            let mut r = Ok(0);
            if served {
                r = self.spin_wait(&ep, &mut events);
            }
            if !matches!(r, Ok(n) if n > 0) {
                r = ep.wait(&mut events, timeout);
            }
            self.idle.fetch_sub(1, Ordering::SeqCst);
            served = false;
            match r {
                Ok(0) => {
                    if self.leave() {
                        if let Ok(mut reg) = self.reg.lock() {
                            reg.epolls.remove(&id);
                        }
                        crate::metrics::get().fuse_workers.dec();
                        return;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(NixErrno::EINTR) => continue,
                Err(e) => {
                    log::error!("FUSE pool: epoll_wait: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let token = events[0].data();
            let Some(conn) = self.conn(token) else {
                // Ended meanwhile (its descriptor is being taken out of every set).
                continue;
            };
            match conn.read(&mut buf) {
                Ok(Some(n)) => {
                    // A request that may wait must leave a worker for the others (the
                    // pool's own idle count, re-read: workers woken meanwhile are busy).
                    let slow = || {
                        if self.idle.load(Ordering::SeqCst) == 0 {
                            if let Err(e) = self.spawn() {
                                log::warn!("FUSE pool: cannot start a worker: {e}");
                            }
                        }
                    };
                    conn.serve(&mut buf, n, slow);
                    served = true;
                }
                // Another worker took it.
                Ok(None) => {}
                Err(e) => {
                    if e != NixErrno::ENODEV {
                        log::warn!("FUSE connection {} read failed: {e}", conn.minor());
                    }
                    self.ended(&conn, token);
                }
            }
        }
    }

    /// After an answer: polls `ep` without sleeping for up to the spin time, unless another
    /// worker already does (a synchronous caller's next request comes within microseconds).
    fn spin_wait(&self, ep: &Epoll, events: &mut [EpollEvent]) -> nix::Result<usize> {
        if self.spin.is_zero()
            || self
                .spinning
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Ok(0);
        }
        let start = std::time::Instant::now();
        let mut r = Ok(0);
        while start.elapsed() < self.spin {
            r = ep.wait(events, EpollTimeout::ZERO);
            if !matches!(r, Ok(0)) {
                break;
            }
            std::hint::spin_loop();
        }
        self.spinning.store(false, Ordering::Release);
        r
    }

    /// Stops taking requests (a daemon handing its mounts over to the next one): every
    /// connection leaves the workers' sets, still open; waits up to `timeout` for the
    /// requests being served to be answered. What is left unread, the next daemon reads.
    pub fn quiesce(&self, timeout: Duration) -> bool {
        if let Ok(mut reg) = self.reg.lock() {
            let conns: Vec<Arc<Conn>> = reg.conns.drain().map(|(_, c)| c).collect();
            for ep in reg.epolls.values() {
                for c in &conns {
                    let _ = ep.delete(c.fd());
                }
            }
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.idle.load(Ordering::SeqCst) >= self.workers.load(Ordering::SeqCst) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether an idle worker may leave (more than `min` are running).
    fn leave(&self) -> bool {
        let mut n = self.workers.load(Ordering::SeqCst);
        while n > self.min {
            match self
                .workers
                .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }
}
