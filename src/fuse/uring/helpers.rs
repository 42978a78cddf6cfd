//! The helper threads of every ring: slow requests wait here, not on a ring's thread. One
//! more is started whenever none is idle (up to `MAX`), idle ones leave after a while.

use super::*;

const MAX: usize = 64;
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct Helpers {
    tx: Sender<SlowJob>,
    rx: Receiver<SlowJob>,
    idle: AtomicUsize,
    threads: AtomicUsize,
}

static HELPERS: OnceLock<Helpers> = OnceLock::new();

fn get() -> &'static Helpers {
    HELPERS.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded();
        Helpers {
            tx,
            rx,
            idle: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
        }
    })
}

/// Queues a slow request; false if no helper can serve it.
pub(super) fn submit(job: SlowJob) -> bool {
    let h = get();
    if h.idle.load(Ordering::SeqCst) == 0 {
        if h.threads.fetch_add(1, Ordering::SeqCst) >= MAX {
            h.threads.fetch_sub(1, Ordering::SeqCst);
        } else if let Err(e) = std::thread::Builder::new()
            .name("snapfs-slow".into())
            .spawn(move || helper(h))
        {
            h.threads.fetch_sub(1, Ordering::SeqCst);
            log::warn!("io_uring: cannot start a helper thread: {e}");
        } else {
            crate::metrics::get().fuse_ring_helpers.inc();
        }
    }
    h.threads.load(Ordering::SeqCst) > 0 && h.tx.send(job).is_ok()
}

/// Serves slow requests; leaves after `IDLE_EXIT` without one, unless it is the last
/// helper (so a queued request always has one).
fn helper(h: &'static Helpers) {
    loop {
        h.idle.fetch_add(1, Ordering::SeqCst);
        let job = h.rx.recv_timeout(IDLE_EXIT);
        h.idle.fetch_sub(1, Ordering::SeqCst);
        match job {
            Ok(job) => serve(job),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let n = h.threads.load(Ordering::SeqCst);
                if n > 1
                    && h.threads
                        .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    crate::metrics::get().fuse_ring_helpers.dec();
                    return;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn serve(job: SlowJob) {
    let input_len = job.input.len();
    let mut buf = job.input;
    // Slow replies are small (an entry, or nothing).
    buf.resize(input_len.max(abi::ENTRY_OUT_SIZE * 2), 0);
    let r =
        guarded(|| dispatch::serve(job.conn.ops(), &job.header, &job.op_in, &mut buf, input_len));
    let reply = r.map(|n| {
        buf.truncate(n);
        buf
    });
    let done = Done {
        slot: job.slot,
        entry: job.entry,
        unique: job.header.unique,
        reply,
    };
    if let Err(e) = send(job.ring, Msg::Done(done), false) {
        log::error!("a slow reply is lost: {e}");
    }
}
