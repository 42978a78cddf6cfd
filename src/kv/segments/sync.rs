//! Background fdatasync of segments: a sealed segment, and the open one every `sync_bytes`,
//! are synced by a thread of their own so that the writer goes on appending meanwhile (inline,
//! a 64 MiB sync stalled every writer: sustained writes ran ~17 % slower). What a completed
//! sync makes durable is taken in by the next batch (`SegmentedKv::absorb_syncs`); an fsync
//! never relies on it: it syncs whatever is still pending itself.

use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{io_err, journal_key, SegmentStore, SegmentedKv, State};
use crate::kv::{Batch, KvError, KvResult, Space};

/// Segment bytes to make durable: (segment, up to).
pub(super) type Uploads = Vec<(u64, u64)>;

struct Job {
    seg: u64,
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
    pub fn start(store: Arc<dyn SegmentStore>) -> Syncer {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = Arc::new(Mutex::new(Vec::new()));
        let out = done.clone();
        let spawned = std::thread::Builder::new()
            .name("snapfs-segsync".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let error = store.sync(job.seg, job.upto).err().map(|e| e.to_string());
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

    /// Asks for segment `seg` to be durable up to `upto`; false if it cannot be queued (the
    /// caller syncs inline).
    pub fn request(&self, seg: u64, upto: u64) -> bool {
        match &*self.tx.lock() {
            Some(tx) => tx.send(Job { seg, upto }).is_ok(),
            None => false,
        }
    }

    pub fn take_done(&self) -> Vec<Done> {
        std::mem::take(&mut *self.done.lock())
    }
}

impl SegmentedKv {
    /// fdatasyncs the open segment if it has bytes not known durable.
    pub(super) fn sync_open(&self, st: &mut State) -> KvResult<()> {
        let Some(open) = st.open.as_mut() else {
            return Ok(());
        };
        if open.synced < open.len {
            self.store
                .sync(open.seg, open.len)
                .map_err(|e| io_err(&format!("syncing segment {:016x}", open.seg), e))?;
            open.synced = open.len;
            open.journaled = open.len;
            open.reset_tail();
            if let Some(info) = st.segs.get_mut(&open.seg) {
                info.rec.durable = open.len;
            }
            st.dirty.insert(open.seg);
            let seg = open.seg;
            self.drop_journal(st, seg, u64::MAX);
        }
        Ok(())
    }

    /// Asks the background thread to sync the open segment up to its length (inline if it
    /// cannot).
    pub(super) fn request_sync(&self, st: &mut State) -> KvResult<()> {
        let Some(open) = st.open.as_mut() else {
            return Ok(());
        };
        if open.requested >= open.len || open.synced >= open.len {
            return Ok(());
        }
        if self.syncer.request(open.seg, open.len) {
            open.requested = open.len;
            Ok(())
        } else {
            self.sync_open(st)
        }
    }

    /// Journal records of `seg` whose bytes end at or before `upto` are no longer needed.
    pub(super) fn drop_journal(&self, st: &mut State, seg: u64, upto: u64) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.journal)
            .into_iter()
            .partition(|(s, _, end)| *s == seg && *end <= upto);
        st.journal = kept;
        st.journal_drop.extend(gone.into_iter().map(|(_, k, _)| k));
    }

    /// Takes in what background syncs made durable.
    pub(super) fn absorb_syncs(&self, st: &mut State) {
        let mut done = self.syncer.take_done();
        // What the store made durable on its own (an object store uploads for its log).
        let watched = st.open.as_ref().map(|o| (o.seg, o.synced));
        let sealed = st
            .unsynced
            .iter()
            .filter_map(|s| st.segs.get(s).map(|i| (*s, i.rec.durable)));
        for (seg, known) in watched.into_iter().chain(sealed) {
            match self.store.synced(seg) {
                Some(upto) if upto > known => done.push(Done {
                    seg,
                    upto,
                    error: None,
                }),
                _ => {}
            }
        }
        for d in done {
            if let Some(e) = d.error {
                log::error!("syncing segment {:016x}: {e}", d.seg);
                st.sync_error = Some(format!("syncing segment {:016x}: {e}", d.seg));
                continue;
            }
            if let Some(info) = st.segs.get_mut(&d.seg) {
                if d.upto > info.rec.durable {
                    info.rec.durable = d.upto;
                    st.dirty.insert(d.seg);
                }
                if info.rec.durable >= info.rec.len {
                    st.unsynced.remove(&d.seg);
                }
            }
            if let Some(open) = st.open.as_mut().filter(|o| o.seg == d.seg) {
                open.synced = open.synced.max(d.upto);
            }
            self.drop_journal(st, d.seg, d.upto);
        }
    }

    /// Makes every sealed segment durable now (an fsync: a background sync may be pending).
    pub(super) fn sync_sealed(&self, st: &mut State) -> KvResult<()> {
        let jobs = self.pending_sealed(st)?;
        self.run_uploads(&jobs)?;
        self.made_durable(st, &jobs);
        Ok(())
    }

    /// The sealed segments an fsync must make durable: (segment, length). Fails with the
    /// error of a background sync that did not tell anyone yet.
    pub(super) fn pending_sealed(&self, st: &mut State) -> KvResult<Uploads> {
        if let Some(e) = st.sync_error.take() {
            return Err(KvError::Io(e));
        }
        // Only sealed segments can be here (the open one is handled by `durable_tail`).
        let State { unsynced, segs, .. } = st;
        unsynced.retain(|s| segs.get(s).is_some_and(|i| i.rec.durable < i.rec.len));
        Ok(unsynced
            .iter()
            .filter_map(|s| segs.get(s).map(|i| (*s, i.rec.len)))
            .collect())
    }

    /// fdatasyncs (on object storage: uploads) each segment up to its length in `jobs`.
    pub(super) fn run_uploads(&self, jobs: &Uploads) -> KvResult<()> {
        for &(seg, upto) in jobs {
            self.store
                .sync(seg, upto)
                .map_err(|e| io_err(&format!("syncing segment {seg:016x}"), e))?;
        }
        Ok(())
    }

    /// Takes in that `jobs` are durable: the records say so with the next batch, and the
    /// journal records they cover go.
    pub(super) fn made_durable(&self, st: &mut State, jobs: &Uploads) {
        for &(seg, upto) in jobs {
            if let Some(info) = st.segs.get_mut(&seg) {
                info.rec.durable = info.rec.durable.max(upto);
                if info.rec.durable >= info.rec.len {
                    st.unsynced.remove(&seg);
                }
            }
            st.dirty.insert(seg);
            if let Some(open) = st.open.as_mut().filter(|o| o.seg == seg) {
                open.synced = open.synced.max(upto);
                open.journaled = open.journaled.max(upto);
                if open.synced >= open.len {
                    open.reset_tail();
                }
            }
            self.drop_journal(st, seg, upto);
        }
    }

    /// Writes `out` into the inner store while `uploads` run beside it (the store's log
    /// write and the segment uploads in one round; see `SegmentOptions::upload_beside_log`).
    /// Returns both outcomes: the batch's, then the uploads'.
    pub(super) fn write_beside(
        &self,
        out: Batch,
        durable: bool,
        uploads: &Uploads,
    ) -> (KvResult<()>, KvResult<()>) {
        if uploads.is_empty() {
            return (self.inner.write(out, durable), Ok(()));
        }
        std::thread::scope(|s| {
            let beside = std::thread::Builder::new()
                .name("snapfs-segup".into())
                .spawn_scoped(s, || self.run_uploads(uploads));
            match beside {
                Ok(h) => {
                    let wrote = self.inner.write(out, durable);
                    let up = h.join().unwrap_or_else(|_| {
                        Err(KvError::Io("the segment upload thread panicked".into()))
                    });
                    (wrote, up)
                }
                // No thread: the uploads first, then the batch (two rounds, same order).
                Err(_) => match self.run_uploads(uploads) {
                    Ok(()) => (self.inner.write(out, durable), Ok(())),
                    Err(e) => (Err(e.clone()), Err(e)),
                },
            }
        })
    }

    /// Makes the open segment's bytes durable with the batch `out` about to be synced: a
    /// short unsynced tail goes into `out` as a journal record, a long one joins `uploads`
    /// (fdatasynced before `out`, or uploaded beside it with `upload_beside_log`).
    pub(super) fn durable_tail(
        &self,
        st: &mut State,
        out: &mut Batch,
        uploads: &mut Uploads,
    ) -> KvResult<()> {
        let Some(open) = st.open.as_mut() else {
            return Ok(());
        };
        let from = open.synced.max(open.journaled);
        if from >= open.len {
            return Ok(());
        }
        // What is new since the last sync or journal record: a short piece goes into the
        // log (the journal then grows until the next background sync drops it).
        if open.len - from > self.opts.journal_max {
            uploads.push((open.seg, open.len));
            // The batch carries the segment's record (never empty: its covering must reach
            // the store's write-behind buffer, see `Batch::covers`).
            let seg = open.seg;
            st.dirty.insert(seg);
            return Ok(());
        }
        let bytes = if open.tail_whole && open.tail_start <= from {
            open.tail[(from - open.tail_start) as usize..].to_vec()
        } else {
            self.store
                .read_at(open.seg, from, (open.len - from) as usize)
                .map_err(|e| io_err(&format!("reading segment {:016x}", open.seg), e))?
        };
        let key = journal_key(open.seg, from);
        out.put(Space::Segments, key.clone(), bytes);
        open.journaled = open.len;
        open.reset_tail();
        let (seg, end) = (open.seg, open.len);
        st.journal.push((seg, key, end));
        Ok(())
    }
}
