//! The daemon's link to the kernel's caches: one thread sends every mount's invalidations,
//! so that no request handler ever does (the kernel would deadlock: invalidating a file's
//! pages makes it write dirty ones back through requests, and waits for them) and a caller
//! can wait for them. A mount's [`Notifier`] is its volume's [`KernelLink`].

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::conn::Conn;
use crate::fs::{KernelDrops, KernelLink};

/// A request for the notifier thread, and where to say it is done.
struct Job {
    conn: Arc<Conn>,
    drops: KernelDrops,
    done: Option<Sender<()>>,
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
        if !job.conn.is_ended() {
            for (dir, name) in &job.drops.entries {
                let _ = job.conn.inval_entry(dir.get(), name);
            }
            // Invalidating a file's pages makes the kernel write its dirty ones back first
            // (through the serving workers) and waits for them.
            for &ino in &job.drops.inodes {
                let _ = job.conn.inval_inode(ino.get());
            }
        }
        if let Some(done) = job.done {
            let _ = done.send(());
        }
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

impl KernelLink for Notifier {
    fn invalidate(&self, drops: KernelDrops, wait: Option<Duration>) -> bool {
        // Unmounted: the kernel has nothing cached any more.
        let Some(conn) = self.conn.upgrade() else {
            return true;
        };
        let job = |done| Job { conn, drops, done };
        let Some(wait) = wait else {
            return self.tx.send(job(None)).is_ok();
        };
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        self.tx.send(job(Some(done_tx))).is_ok() && done_rx.recv_timeout(wait).is_ok()
    }
}
