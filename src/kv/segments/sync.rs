//! Background fdatasync of segments: a sealed segment, and the open one every `sync_bytes`,
//! are synced by a thread of their own so that the writer goes on appending meanwhile (inline,
//! a 64 MiB sync stalled every writer: sustained writes ran ~17 % slower). What a completed
//! sync makes durable is taken in by the next batch (`SegmentedKv::absorb_syncs`); an fsync
//! never relies on it: it syncs whatever is still pending itself.

use std::fs::File;
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;

struct Job {
    seg: u64,
    file: Arc<File>,
    upto: u64,
}

/// A finished sync: segment, bytes now durable, or the error.
pub(super) struct Done {
    pub seg: u64,
    pub upto: u64,
    pub error: Option<String>,
}

pub(super) struct Syncer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    done: Arc<Mutex<Vec<Done>>>,
}

impl Syncer {
    pub fn start() -> Syncer {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let out = done.clone();
        let spawned = std::thread::Builder::new()
            .name("snapfs-segsync".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let error = job.file.sync_data().err().map(|e| e.to_string());
                    out.lock().push(Done {
                        seg: job.seg,
                        upto: job.upto,
                        error,
                    });
                }
            });
        Syncer {
            // Without the thread, requests are dropped: every sync then happens inline.
            tx: Mutex::new(spawned.ok().map(|_| tx)),
            done,
        }
    }

    /// Asks for segment `seg` (`file`) to be durable up to `upto`; false if it cannot be
    /// queued (the caller syncs inline).
    pub fn request(&self, seg: u64, file: Arc<File>, upto: u64) -> bool {
        match &*self.tx.lock() {
            Some(tx) => tx.send(Job { seg, file, upto }).is_ok(),
            None => false,
        }
    }

    pub fn take_done(&self) -> Vec<Done> {
        std::mem::take(&mut *self.done.lock())
    }
}
