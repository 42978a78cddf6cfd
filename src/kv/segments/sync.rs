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
        if let Some(e) = st.sync_error.take() {
            return Err(KvError::Io(e));
        }
        // Only sealed segments can be here (the open one is handled by `durable_tail`).
        let pending: Vec<(u64, u64)> = std::mem::take(&mut st.unsynced)
            .into_iter()
            .filter_map(|s| {
                let i = st.segs.get(&s)?;
                (i.rec.durable < i.rec.len).then_some((s, i.rec.len))
            })
            .collect();
        for (seg, len) in pending {
            self.store
                .sync(seg, len)
                .map_err(|e| io_err(&format!("syncing segment {seg:016x}"), e))?;
            if let Some(info) = st.segs.get_mut(&seg) {
                info.rec.durable = len;
            }
            st.dirty.insert(seg);
            self.drop_journal(st, seg, u64::MAX);
        }
        Ok(())
    }

    /// Makes the open segment's bytes durable with the batch `out` about to be synced: a
    /// short unsynced tail goes into `out` as a journal record, a long one is fdatasynced.
    pub(super) fn durable_tail(&self, st: &mut State, out: &mut Batch) -> KvResult<()> {
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
            return self.sync_open(st);
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
