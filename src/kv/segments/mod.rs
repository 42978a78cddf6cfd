//! File data written once: values of [`Space::Data`] above a threshold go to immutable
//! segment files, and the key-value store beneath keeps a small reference (segment, offset,
//! length, CRC-32) in their place, in the same atomic batch.
//!
//! [`SegmentedKv`] wraps any [`Kv`] and is itself one (the conformance suite runs over it), so
//! nothing above `kv/` knows of segments: a put of a block appends its bytes to the open
//! segment and puts the reference; a read follows the reference; a scan of a range follows
//! each. The segment catalog (per segment: length, live bytes, durable length, sealed) is kept
//! in [`Space::Segments`] of the inner store, written in the batch that changes it, so live
//! bytes are exact: every put and delete of a data key reads the reference it replaces.
//!
//! Durability order: segment bytes are written (`pwrite`) before the batch that references
//! them, and an fsync (`sync`, a durable write) makes them durable before the inner store
//! syncs: when at most `journal_max` bytes were appended to the open segment since its last
//! sync or journal record, by putting a copy of them (a *tail journal* record) into the very
//! batch the inner store syncs (one device flush per fsync, as without segments), else by
//! fdatasyncing the segment first. Sealed segments, and the open one every `sync_bytes`, are
//! fdatasynced by a background thread (`sync.rs`: the writer goes on meanwhile; an fsync
//! syncs what is still pending itself); journal records go once their bytes are synced, and
//! each catalog record says up to where its segment is durable (`durable`). Opening writes the
//! journal records back into their segments first. After a power loss the inner store may hold
//! references to bytes that never reached the disk: opening checks the entries past `durable`
//! of each segment not known synced (their CRCs) and, only if one is damaged, finds and
//! deletes the references into the damaged part (a scan of the data space), so a read returns
//! an older version or a hole, never garbage (`open.rs`).
//!
//! Garbage: a segment with no live bytes is deleted once no read view older than that moment
//! is open and `horizon` has passed; segments mostly dead (or small) are repacked: their live
//! entries (an entry is live when a key of its base still references it) are written again
//! through the normal write path (`gc.rs`); a move between two keys of one base keeps its
//! bytes (`moves.rs`). Scans read values in windows with few, merged reads (`read.rs`). fsck
//! checks every reference against its segment (`check.rs`).

mod appends;
mod check;
mod files;
mod format;
mod gc;
mod moves;
mod open;
mod read;
mod stream;
mod sync;

pub use appends::{skip_bytes, write_all_vectored_at};
pub use check::{SegmentCheck, SegmentReport};
pub use files::{Listed, SegmentDir, SegmentStore};
pub use format::{file_header, REF_LEN};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{Batch, BatchOp, Dropped, Kv, KvError, KvRead, KvResult, Maintenance, Space, Status};
use appends::Appends;
use format::{Ref, Stored};
use read::SegView;

/// The length of a key's base (the key without its epoch) in a space, if it is versioned.
pub type BaseLen = fn(Space, &[u8]) -> Option<usize>;

/// The run of a data key ([`SegmentOptions::data_run`]).
pub type DataRun = fn(&[u8]) -> &[u8];

/// Tuning of [`SegmentedKv`].
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Values of at most this many bytes stay inline in the inner store.
    pub inline_max: usize,
    /// The open segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// The open segment is fdatasynced whenever this many bytes were appended since the last
    /// sync (bounds what opening after a crash checks).
    pub sync_bytes: u64,
    /// An fsync with at most this many bytes appended to the open segment since its last
    /// sync or journal record copies them into the inner store's synced batch instead of
    /// fdatasyncing the segment.
    pub journal_max: u64,
    /// How long a segment with no live bytes is kept before it is deleted.
    pub horizon: Duration,
    /// Sealed segments with less than this fraction live are repacked...
    pub repack_live_below: f64,
    /// ...and so are those smaller than this.
    pub repack_smaller_than: u64,
    /// Bytes of segments repacked at most per call of the periodic upkeep (four times as
    /// many when the store is idle).
    pub repack_budget: u64,
    /// The length of a data key's base (the key without its epoch), as the store defines it:
    /// with it, a value moved between two keys of one base keeps its bytes (`moves.rs`).
    pub base_len: Option<BaseLen>,
    /// The run of a data key, as the store defines it: keys of one run are read together
    /// by one scan (`kv::read_keys`), and a scan never leaves its run (it would walk the
    /// tombstones between two runs). `None`: all of a batch's keys are one run.
    pub data_run: Option<DataRun>,
    /// An fsync whose tail is too long for a journal record uploads the segment bytes
    /// *beside* the inner store's synced batch (both in one round; the batch's catalog
    /// records still say the bytes are not durable, so a crash between the two leaves
    /// references that opening checks), instead of before it. For object storage, where
    /// each is a round of PUTs; a local disk keeps the order (one device, flushes queue).
    pub upload_beside_log: bool,
    /// Segment files on local disk drop appended pages from the page cache once they are
    /// written back (`stream.rs`).
    pub drop_behind: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            inline_max: 4095,
            segment_bytes: 64 << 20,
            sync_bytes: 16 << 20,
            journal_max: 256 << 10,
            horizon: Duration::from_secs(5),
            repack_live_below: 0.5,
            repack_smaller_than: 1 << 20,
            repack_budget: 256 << 20,
            base_len: None,
            data_run: None,
            upload_beside_log: false,
            drop_behind: true,
        }
    }
}

/// A segment's catalog record.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SegRecord {
    /// Bytes in the file (header and every entry appended, live or not).
    len: u64,
    /// Bytes of values that references point to.
    live: u64,
    /// The file is known to be on disk up to here.
    durable: u64,
    /// No more appends.
    sealed: bool,
}

struct SegInfo {
    rec: SegRecord,
    /// When `live` last became 0 (a deletion waits `horizon` from here).
    empty_since: Option<Instant>,
}

/// The segment being appended to.
struct OpenSeg {
    seg: u64,
    /// Bytes written to the file.
    len: u64,
    /// Bytes known durable (fdatasync'd).
    synced: u64,
    /// Bytes durable as tail journal records in the inner store (at least `synced`).
    journaled: u64,
    /// Bytes a background sync was asked for.
    requested: u64,
    /// The bytes appended since `tail_start` (the last journal record or inline sync), kept
    /// while they fit a journal record: an fsync journals them without reading them back.
    tail: Vec<u8>,
    tail_start: u64,
    /// `tail` holds every byte since `tail_start`.
    tail_whole: bool,
}

impl OpenSeg {
    /// A journal record or an inline sync covered everything so far.
    fn reset_tail(&mut self) {
        self.tail.clear();
        self.tail_start = self.len;
        self.tail_whole = true;
    }
}

#[derive(Default)]
struct State {
    open: Option<OpenSeg>,
    segs: BTreeMap<u64, SegInfo>,
    next_id: u64,
    /// Segments whose record must be written with the next batch.
    dirty: BTreeSet<u64>,
    next_id_dirty: bool,
    /// Tail journal records: segment, key, end of the bytes they hold.
    journal: Vec<(u64, Vec<u8>, u64)>,
    /// The error of a background sync, reported by the next fsync.
    sync_error: Option<String>,
    /// Sealed segments whose bytes are not all known durable yet.
    unsynced: BTreeSet<u64>,
    /// Journal records to delete with the next batch (their bytes were fdatasynced).
    journal_drop: Vec<Vec<u8>>,
}

/// Keys of [`Space::Segments`].
const KEY_NEXT_ID: &[u8] = b"\x00next";
const TAG_SEG: u8 = 0x01;
const TAG_JOURNAL: u8 = 0x02;

fn journal_key(seg: u64, off: u64) -> Vec<u8> {
    let mut k = vec![TAG_JOURNAL];
    k.extend_from_slice(&seg.to_be_bytes());
    k.extend_from_slice(&off.to_be_bytes());
    k
}

fn split_journal_key(k: &[u8]) -> Option<(u64, u64)> {
    match k {
        [TAG_JOURNAL, rest @ ..] if rest.len() == 16 => {
            let (a, b) = rest.split_at(8);
            Some((
                u64::from_be_bytes(a.try_into().ok()?),
                u64::from_be_bytes(b.try_into().ok()?),
            ))
        }
        _ => None,
    }
}

fn seg_key(seg: u64) -> Vec<u8> {
    let mut k = vec![TAG_SEG];
    k.extend_from_slice(&seg.to_be_bytes());
    k
}

fn split_seg_key(k: &[u8]) -> Option<u64> {
    match k {
        [TAG_SEG, rest @ ..] if rest.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(rest);
            Some(u64::from_be_bytes(a))
        }
        _ => None,
    }
}

fn io_err(what: &str, e: std::io::Error) -> KvError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        KvError::NoSpace
    } else {
        KvError::Io(format!("{what}: {e}"))
    }
}

/// Open read views, by when they were taken (GC keeps what they may still read).
#[derive(Default)]
struct Views {
    next: u64,
    open: BTreeMap<u64, Instant>,
}

struct ViewGuard<'a> {
    views: &'a Mutex<Views>,
    id: u64,
}

impl Drop for ViewGuard<'_> {
    fn drop(&mut self) {
        self.views.lock().open.remove(&self.id);
    }
}

/// A [`Kv`] whose large data values live in segment files (see the module doc).
pub struct SegmentedKv {
    inner: Box<dyn Kv>,
    store: Arc<dyn SegmentStore>,
    opts: SegmentOptions,
    state: Mutex<State>,
    views: Mutex<Views>,
    /// Sum of the segments' lengths and live bytes (for `disk_usage` without the lock), moved
    /// by each append and batch, recounted only when segments go.
    total_len: AtomicU64,
    total_live: AtomicU64,
    stop: AtomicBool,
    syncer: sync::Syncer,
    /// Bytes of keys and values appended to segments (the inner store's traffic report
    /// counts only what it holds itself).
    appended: AtomicU64,
    /// Segments deleted since open (emptied, or orphans).
    deleted: AtomicU64,
    /// When orphans were last looked for (listing every segment costs requests on object
    /// storage: at most once per horizon).
    orphans_checked: Mutex<Option<std::time::Instant>>,
}

impl SegmentedKv {
    /// Opens the segment layer over `inner` with its files in `dir` (see `open.rs`).
    pub fn open(inner: Box<dyn Kv>, dir: &Path, opts: SegmentOptions) -> KvResult<SegmentedKv> {
        let dir =
            SegmentDir::open(dir, opts.drop_behind).map_err(|e| io_err("segment directory", e))?;
        Self::open_in(inner, Arc::new(dir), opts)
    }

    /// Opens the segment layer over `inner` with its segments in `store`.
    pub fn open_in(
        inner: Box<dyn Kv>,
        store: Arc<dyn SegmentStore>,
        opts: SegmentOptions,
    ) -> KvResult<SegmentedKv> {
        let kv = SegmentedKv {
            inner,
            syncer: sync::Syncer::start(store.clone()),
            store,
            opts,
            state: Mutex::new(State::default()),
            views: Mutex::new(Views::default()),
            total_len: AtomicU64::new(0),
            total_live: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            orphans_checked: Mutex::new(None),
        };
        kv.recover()?;
        Ok(kv)
    }

    pub fn options(&self) -> &SegmentOptions {
        &self.opts
    }

    /// Bytes in segment files, and of those, live.
    pub fn segment_bytes(&self) -> (u64, u64) {
        (
            self.total_len.load(Ordering::Relaxed),
            self.total_live.load(Ordering::Relaxed),
        )
    }

    /// Bytes of segments not known durable yet (appended since their last sync).
    pub fn unsynced_bytes(&self) -> u64 {
        let st = self.state.lock();
        st.segs
            .values()
            .map(|i| i.rec.len.saturating_sub(i.rec.durable))
            .sum()
    }

    /// Recounts the totals from every record (opening, deletions, repairs: not per batch).
    fn refresh_totals(&self, st: &State) {
        let (mut len, mut live) = (0, 0);
        for info in st.segs.values() {
            len += info.rec.len;
            live += info.rec.live;
        }
        self.total_len.store(len, Ordering::Relaxed);
        self.total_live.store(live, Ordering::Relaxed);
    }

    /// The reference the inner store holds under data key `key`, if it holds one.
    fn stored_ref(&self, key: &[u8]) -> KvResult<Option<Ref>> {
        Ok(
            match self
                .inner
                .get(Space::Data, key)?
                .as_deref()
                .map(format::parse)
            {
                Some(Stored::Ref(r)) => Some(r),
                _ => None,
            },
        )
    }

    /// The reference `key` holds now (`seen`: what this batch already put there).
    fn current_ref(
        &self,
        seen: &HashMap<Vec<u8>, Option<Ref>>,
        pool: &moves::Pool,
        key: &[u8],
    ) -> KvResult<Option<Ref>> {
        match seen.get(key).or_else(|| pool.prefetched.get(key)) {
            Some(r) => Ok(*r),
            None => self.stored_ref(key),
        }
    }

    /// Starts a new open segment (sealing the current one first).
    fn rotate(&self, st: &mut State) -> KvResult<()> {
        self.seal_open(st)?;
        let seg = st.next_id.max(1);
        self.store
            .create(seg)
            .map_err(|e| io_err(&format!("creating segment {seg:016x}"), e))?;
        let len = format::FILE_HEADER_LEN;
        self.total_len.fetch_add(len, Ordering::Relaxed);
        st.next_id = seg + 1;
        st.next_id_dirty = true;
        st.segs.insert(
            seg,
            SegInfo {
                rec: SegRecord {
                    len,
                    live: 0,
                    durable: len,
                    sealed: false,
                },
                empty_since: None,
            },
        );
        st.dirty.insert(seg);
        st.open = Some(OpenSeg {
            seg,
            len,
            synced: len,
            journaled: len,
            requested: len,
            tail: Vec::new(),
            tail_start: len,
            tail_whole: true,
        });
        Ok(())
    }

    /// Seals the open segment (its sync left to the background thread); no segment is open
    /// afterwards.
    fn seal_open(&self, st: &mut State) -> KvResult<()> {
        self.request_sync(st)?;
        if let Some(open) = st.open.take() {
            if let Some(info) = st.segs.get_mut(&open.seg) {
                info.rec.sealed = true;
                if info.rec.durable < info.rec.len {
                    st.unsynced.insert(open.seg);
                }
                st.dirty.insert(open.seg);
            }
        }
        Ok(())
    }

    /// Writes `batch` with the state lock held (see the module doc).
    fn write_locked(&self, st: &mut State, batch: Batch, durable: bool) -> KvResult<()> {
        let mut out = Batch::new();
        let mut seen: HashMap<Vec<u8>, Option<Ref>> = HashMap::new();
        let mut delta: BTreeMap<u64, i64> = BTreeMap::new();
        let mut queued = Appends::default();
        self.absorb_syncs(st);
        let ops = batch.into_ops();
        let mut pool = self.move_pool(&ops)?;
        for op in ops {
            match op {
                BatchOp::Put(Space::Data, key, value) => {
                    if let Some(old) = self.current_ref(&seen, &pool, &key)? {
                        *delta.entry(old.seg).or_default() -= old.len as i64;
                    }
                    if value.len() > self.opts.inline_max {
                        let r = match self.take_moved(&mut pool, &key, &value)? {
                            Some(r) => r,
                            None => self.append(st, &mut queued, &key, value)?,
                        };
                        *delta.entry(r.seg).or_default() += r.len as i64;
                        out.need((r.seg, r.end()));
                        seen.insert(key.clone(), Some(r));
                        out.put(Space::Data, key, r.encode());
                    } else {
                        seen.insert(key.clone(), None);
                        out.put(Space::Data, key, format::inline(value));
                    }
                }
                BatchOp::Delete(Space::Data, key) => {
                    if let Some(old) = self.current_ref(&seen, &pool, &key)? {
                        *delta.entry(old.seg).or_default() -= old.len as i64;
                    }
                    seen.insert(key.clone(), None);
                    out.delete(Space::Data, key);
                }
                BatchOp::Put(Space::Segments, ..) | BatchOp::Delete(Space::Segments, ..) => {
                    return Err(KvError::Io(
                        "the segment catalog is written by the segment layer only".into(),
                    ));
                }
                BatchOp::Put(space, key, value) => out.put(space, key, value),
                BatchOp::Delete(space, key) => out.delete(space, key),
            }
        }
        self.flush_appends(st, &mut queued)?;
        // What this fsync makes durable besides its batch: before it (files), or beside it
        // (object storage; see the options).
        let mut uploads = sync::Uploads::new();
        if durable {
            uploads = self.pending_sealed(st)?;
            self.durable_tail(st, &mut out, &mut uploads)?;
            if !self.opts.upload_beside_log {
                self.run_uploads(&uploads)?;
                self.made_durable(st, &uploads);
                uploads.clear();
            }
            // Every segment byte so far is durable with this batch.
            if let Some(o) = &st.open {
                out.cover((o.seg, o.len));
            }
        }
        if let Some((len, done)) = st.open.as_ref().map(|o| (o.len, o.synced.max(o.requested))) {
            if len >= self.opts.segment_bytes {
                self.seal_open(st)?;
            } else if len - done >= self.opts.sync_bytes {
                self.request_sync(st)?;
            }
        }
        // The records this batch changes, with their new live counts.
        let mut records: BTreeMap<u64, SegRecord> = BTreeMap::new();
        for (&seg, &d) in &delta {
            let Some(info) = st.segs.get(&seg) else {
                log::warn!("a reference names segment {seg:016x}, which has no record");
                continue;
            };
            let mut rec = info.rec;
            let live = rec.live as i64 + d;
            if live < 0 {
                log::warn!("segment {seg:016x}: live bytes would go below 0 ({live}); kept at 0");
            }
            rec.live = live.max(0) as u64;
            records.insert(seg, rec);
        }
        for &seg in &st.dirty {
            if let Some(info) = st.segs.get(&seg) {
                records.entry(seg).or_insert(info.rec);
            }
        }
        for (seg, rec) in &records {
            out.put(Space::Segments, seg_key(*seg), encode_record(rec));
        }
        if st.next_id_dirty {
            out.put(
                Space::Segments,
                KEY_NEXT_ID.to_vec(),
                st.next_id.to_be_bytes().to_vec(),
            );
        }
        let dropped_journal = st.journal_drop.len();
        for k in &st.journal_drop {
            out.delete(Space::Segments, k.clone());
        }
        let (wrote, uploaded) = self.write_beside(out, durable, &uploads);
        wrote?;
        st.journal_drop.drain(..dropped_journal);
        let now = Instant::now();
        for (seg, rec) in records {
            if let Some(info) = st.segs.get_mut(&seg) {
                if rec.live == 0 && info.rec.live != 0 {
                    info.empty_since = Some(now);
                } else if rec.live != 0 {
                    info.empty_since = None;
                }
                // Lower first, then add: the atomic never wraps below zero.
                self.total_live.fetch_sub(info.rec.live, Ordering::Relaxed);
                self.total_live.fetch_add(rec.live, Ordering::Relaxed);
                info.rec.live = rec.live;
            }
        }
        st.dirty.clear();
        st.next_id_dirty = false;
        // The records say so with the next batch (a crash before it: opening checks them).
        uploaded?;
        self.made_durable(st, &uploads);
        Ok(())
    }

    fn register_view(&self) -> ViewGuard<'_> {
        let mut v = self.views.lock();
        v.next += 1;
        let id = v.next;
        v.open.insert(id, Instant::now());
        ViewGuard {
            views: &self.views,
            id,
        }
    }

    /// When the oldest open read view was taken.
    fn oldest_view(&self) -> Option<Instant> {
        self.views.lock().open.values().min().copied()
    }
}

fn encode_record(rec: &SegRecord) -> Vec<u8> {
    postcard::to_allocvec(rec).unwrap_or_default()
}

fn decode_record(v: &[u8]) -> Option<SegRecord> {
    postcard::from_bytes(v).ok()
}

impl Kv for SegmentedKv {
    fn write(&self, batch: Batch, durable: bool) -> KvResult<()> {
        let mut st = self.state.lock();
        if batch.is_empty() && !durable {
            return Ok(());
        }
        self.write_locked(&mut st, batch, durable)
    }

    fn sync(&self) -> KvResult<()> {
        let mut st = self.state.lock();
        self.write_locked(&mut st, Batch::new(), true)
    }

    fn writes_outlive_the_process(&self) -> bool {
        // Segment bytes are in the kernel's page cache once `write` returns.
        self.inner.writes_outlive_the_process()
    }

    fn read_view(&self) -> Box<dyn KvRead + '_> {
        let guard = self.register_view();
        Box::new(SegView {
            kv: self,
            inner: self.inner.read_view(),
            _guard: guard,
        })
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        Some(self)
    }

    fn status(&self) -> Option<&dyn Status> {
        self.inner.status().map(|_| self as &dyn Status)
    }

    fn segments(&self) -> Option<&dyn SegmentCheck> {
        Some(self)
    }
}

/// The inner store's status, its traffic report counting the bytes written to segments too.
impl Status for SegmentedKv {
    fn read_only(&self) -> bool {
        self.inner.status().is_some_and(|s| s.read_only())
    }

    fn fenced(&self) -> bool {
        self.inner.status().is_some_and(|s| s.fenced())
    }

    fn write_stopped(&self) -> bool {
        self.inner.status().is_some_and(|s| s.write_stopped())
    }

    fn delayed_write_rate(&self) -> u64 {
        self.inner.status().map_or(0, |s| s.delayed_write_rate())
    }

    fn remote_status(&self) -> Option<super::RemoteStatus> {
        let mut r = self.inner.status()?.remote_status()?;
        r.written_bytes += self.appended.load(Ordering::Relaxed);
        r.backlog_bytes += self.store.pending_bytes();
        r.cache_bytes += self.store.cached_bytes();
        let (len, live) = self.segment_bytes();
        r.segment_bytes = len;
        r.segment_live_bytes = live;
        r.segments_deleted = self.deleted.load(Ordering::Relaxed);
        Some(r)
    }
}

impl Maintenance for SegmentedKv {
    fn disk_usage(&self) -> u64 {
        let inner = self.inner.maintenance().map_or(0, |m| m.disk_usage());
        inner + self.total_len.load(Ordering::Relaxed)
    }

    fn known_garbage(&self) -> u64 {
        let inner = self.inner.maintenance().map_or(0, |m| m.known_garbage());
        let (len, live) = self.segment_bytes();
        inner + len.saturating_sub(live)
    }

    fn reserve_bytes(&self) -> u64 {
        self.inner.maintenance().map_or(0, |m| m.reserve_bytes())
    }

    fn path(&self) -> Option<&Path> {
        match self.inner.maintenance().and_then(|m| m.path()) {
            Some(p) => Some(p),
            None => Some(self.store.path()),
        }
    }

    fn compact(&self, space: Space) -> KvResult<()> {
        if let Some(m) = self.inner.maintenance() {
            m.compact(space)?;
        }
        if space == Space::Data {
            self.collect(true, u64::MAX)?;
        }
        Ok(())
    }

    fn flush_buffers(&self) -> KvResult<()> {
        {
            let mut st = self.state.lock();
            self.absorb_syncs(&mut st);
            self.sync_open(&mut st)?;
            self.sync_sealed(&mut st)?;
            if !st.dirty.is_empty() || !st.journal_drop.is_empty() {
                self.write_locked(&mut st, Batch::new(), false)?;
            }
        }
        match self.inner.maintenance() {
            Some(m) => m.flush_buffers(),
            None => Ok(()),
        }
    }

    fn cancel_background_work(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(m) = self.inner.maintenance() {
            m.cancel_background_work();
        }
    }

    fn keep_warm(&self) {
        if let Some(m) = self.inner.maintenance() {
            m.keep_warm();
        }
    }

    fn tidy(&self, idle: bool, dropped: &dyn Dropped) {
        if let Some(m) = self.inner.maintenance() {
            m.tidy(idle, dropped);
        }
        // Idle: repack four times as much per round (nothing competes for the disk).
        let budget = if idle {
            self.opts.repack_budget.saturating_mul(4)
        } else {
            self.opts.repack_budget
        };
        if let Err(e) = self.collect(idle, budget) {
            log::warn!("segment garbage collection: {e}");
        }
    }
}
