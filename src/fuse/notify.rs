//! The daemon's link to the kernel's caches: one thread sends every mount's invalidations,
//! so that no request handler ever does (the kernel would deadlock: invalidating a file's
//! pages makes it write dirty ones back through requests, and waits for them) and a caller
//! can wait for them. A mount's [`Notifier`] is its volume's [`KernelLink`].

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::conn::Conn;
use crate::fs::{KernelDrops, KernelLink};
use crate::ids::KernelIno;

/// A request for the notifier thread, and where to say it is done (and whether it was).
struct Job {
    conn: Arc<Conn>,
    work: Work,
    done: Option<Sender<bool>>,
}

enum Work {
    /// Drop cached names, attributes and pages.
    Drops(KernelDrops),
    /// Write back the dirty pages of these files (kernel inode numbers).
    WriteBack(Vec<u64>),
}

static QUEUE: OnceLock<Mutex<Option<Sender<Job>>>> = OnceLock::new();

/// The queue of the notifier thread, started on first use (and again if it ever died).
fn queue() -> std::io::Result<Sender<Job>> {
    let cell = QUEUE.get_or_init(|| Mutex::new(None));
    let mut q = cell
        .lock()
        .map_err(|_| std::io::Error::other("notifier poisoned"))?;
    if let Some(tx) = q.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    std::thread::Builder::new()
        .name("snapfs-notify".into())
        .spawn(move || run(rx))?;
    *q = Some(tx.clone());
    Ok(tx)
}

fn run(rx: Receiver<Job>) {
    for job in rx {
        // A thread of its own per job, with a descriptor table of its own (see `send`).
        let ok = job.conn.is_ended()
            || std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("snapfs-inval".into())
                    .spawn_scoped(s, || send(&job))
                    .map(|t| t.join().unwrap_or(false))
            })
            .unwrap_or_else(|e| {
                log::warn!("cannot start a thread for invalidations ({e}); sent from here");
                send_all(&job)
            });
        if let Some(done) = job.done {
            let _ = done.send(ok);
        }
    }
}

/// Sends a job's invalidations from a thread with a private copy of the descriptor table.
/// Invalidating a file's pages waits for each page's lock, which a write in flight holds
/// until the daemon answers it. If the daemon is killed meanwhile, this thread cannot die
/// (it waits uninterruptibly) and, sharing the table, would keep every descriptor of the
/// process open: the store's lock too, so the next daemon could never open the store to
/// answer that write. With its own table, holding nothing but the connection, the dying
/// daemon lets go of the store, the next daemon answers the write (resent by the kernel),
/// and this thread ends.
fn send(job: &Job) -> bool {
    match nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES) {
        // Only the connection's descriptor stays: a lock held through a shared open file
        // (the object store's flock) would otherwise outlive the daemon here too.
        Ok(()) => close_all_but(job.conn.fd().as_raw_fd()),
        Err(e) => log::warn!("invalidations share the descriptor table (unshare: {e})"),
    }
    send_all(job)
}

/// Closes every descriptor of this thread's (private) table but `keep`.
fn close_all_but(keep: RawFd) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/thread-self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(e) => {
            log::warn!("cannot list the invalidation thread's descriptors: {e}");
            return;
        }
    };
    for fd in fds {
        if fd != keep {
            // The listing's own descriptor is among them, already closed: EBADF.
            let _ = nix::unistd::close(fd);
        }
    }
}

fn send_all(job: &Job) -> bool {
    match &job.work {
        Work::Drops(drops) => {
            for (dir, name) in &drops.entries {
                let _ = job.conn.inval_entry(dir.get(), name);
            }
            // Invalidating a file's pages makes the kernel write its dirty ones back first
            // (through the serving workers) and waits for them.
            for &ino in &drops.inodes {
                let _ = job.conn.inval_inode(ino.get());
            }
            true
        }
        Work::WriteBack(inos) => super::writeback::sync_open_files(job.conn.minor(), inos),
    }
}

/// A mount's way to the notifier thread. It holds its connection weakly: the volume holds
/// its notifier and the connection holds the volume (through its operations), so a strong
/// link would keep an unmounted volume, and its store, alive for good.
pub(crate) struct Notifier {
    conn: Weak<Conn>,
    tx: Sender<Job>,
}

impl Notifier {
    pub fn new(conn: &Arc<Conn>) -> std::io::Result<Notifier> {
        Ok(Notifier {
            conn: Arc::downgrade(conn),
            tx: queue()?,
        })
    }
}

impl Notifier {
    /// Queues `work` for connection `conn` and, with `wait`, waits for it to be done.
    fn submit(&self, conn: Arc<Conn>, work: Work, wait: Option<Duration>) -> bool {
        let job = |done| Job { conn, work, done };
        let Some(wait) = wait else {
            return self.tx.send(job(None)).is_ok();
        };
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        self.tx.send(job(Some(done_tx))).is_ok() && done_rx.recv_timeout(wait).unwrap_or(false)
    }
}

impl KernelLink for Notifier {
    fn invalidate(&self, drops: KernelDrops, wait: Option<Duration>) -> bool {
        // Unmounted: the kernel has nothing cached any more.
        let Some(conn) = self.conn.upgrade() else {
            return true;
        };
        self.submit(conn, Work::Drops(drops), wait)
    }

    fn write_back(&self, inos: &[KernelIno], wait: Duration) -> bool {
        // Unmounted, or every write went through to the daemon: nothing is cached.
        let Some(conn) = self.conn.upgrade().filter(|c| c.negotiated().writeback()) else {
            return true;
        };
        let inos = inos.iter().map(|i| i.get()).collect();
        self.submit(conn, Work::WriteBack(inos), Some(wait))
    }
}
