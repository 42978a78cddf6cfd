//! Background reclaim of retired epochs (deleted snapshots, heads replaced by a restore,
//! deleted containers).
//!
//! Work is driven by the change index and always walks the *smaller* side of a parent/child
//! pair, so deleting a snapshot costs what it and its neighbour wrote, never the size of the
//! container (union by size: a version moves only into a side at least as large as its own,
//! so no version moves more than log2(versions) times, however many snapshots are deleted).
//! Every step is one atomic batch and idempotent, so a reclaim interrupted by a crash or a
//! shutdown resumes at the next run. For a retired epoch R:
//!
//! - no children: nobody can see its versions; they are dropped, then R leaves the tree.
//! - one retired child C (a run of deleted snapshots): the two merge, the smaller into the
//!   larger. C into R: C's versions overwrite R's and C's children move up to R. R into C:
//!   R's versions C does not shadow move down, C takes R's parent. Either way one retired
//!   epoch is left, and it is looked at again.
//! - one live child C (a snapshot or a head): if R wrote no more than C, R merges down into C
//!   as above and leaves the tree. Otherwise R stays in the chain and is *pruned*: every
//!   version of R that C shadows is dropped (found by walking C's changes), the rest is what
//!   C's views still read. A frozen C never changes, so a pruned marker (`keys::pruned`)
//!   records that the work is done; a head C keeps writing, so R is pruned again once the
//!   head has written as many new versions as it had (amortized O(1) per write).
//! - two or more children: R is still a shared base: it stays.
//!
//! Retired epochs left in a chain are each followed by a live epoch or a branch, so a chain
//! holds at most about twice as many epochs as live snapshots: read cost does not grow with
//! the number of deleted snapshots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use super::{EpochKind, Store};
use crate::codec;
use crate::error::FsResult;
use crate::ids::{DataId, Epoch};
use crate::keys;
use crate::kv::{Batch, Dir, Space};

/// Versions handled per batch by default. Each batch holds the store's write lock, so this
/// bounds how long reclaim can stall a writer.
pub const DEFAULT_CHUNK: usize = 512;

/// A retired parent of a head is pruned again after the head wrote at least this many new
/// versions (or as many as it had at the last prune, if more).
const PRUNE_AGAIN_MIN: u64 = 4096;

/// What reclaim did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimStats {
    pub epochs_removed: u64,
    pub versions_dropped: u64,
    /// Versions rewritten under another epoch (merges).
    pub versions_moved: u64,
    /// Change-index entries of a live child walked to prune its retired parent.
    pub versions_scanned: u64,
    pub bytes_dropped: u64,
    pub batches: u64,
}

impl ReclaimStats {
    fn add(&mut self, o: &ReclaimStats) {
        self.epochs_removed += o.epochs_removed;
        self.versions_dropped += o.versions_dropped;
        self.versions_moved += o.versions_moved;
        self.versions_scanned += o.versions_scanned;
        self.bytes_dropped += o.bytes_dropped;
        self.batches += o.batches;
    }

    /// Versions reclaim touched: its work, whatever it found.
    pub fn work(&self) -> u64 {
        self.versions_dropped + self.versions_moved + self.versions_scanned
    }
}

/// Reclaim's progress: whether a run is under way and what it did so far, what all runs
/// since the store opened did, and what waits.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReclaimProgress {
    pub running: bool,
    /// The run under way, so far (zero when none).
    pub current: ReclaimStats,
    /// Every finished run since the store opened.
    pub total: ReclaimStats,
    /// Retired epochs queued for reclaim to look at.
    pub queued_epochs: usize,
    /// Retired epochs in the tree (queued, or kept as shared bases).
    pub retired_epochs: usize,
}

/// Marks a run as under way while it lives.
struct RunningGuard<'a>(&'a Store);

impl<'a> RunningGuard<'a> {
    fn start(s: &'a Store) -> Self {
        s.reclaim.progress.lock().running = true;
        RunningGuard(s)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.reclaim.progress.lock().running = false;
    }
}

/// How a reclaim run is paced and stopped. The default never stops and never pauses.
pub trait ReclaimControl {
    /// Checked before every batch: true stops the run (what is left resumes next run).
    fn should_stop(&self) -> bool {
        false
    }
    /// Called after every batch with the time it took; may sleep to bound reclaim's share
    /// of the CPU and of the store's write lock.
    fn after_batch(&self, _took: Duration) {}
}

struct Unpaced;
impl ReclaimControl for Unpaced {}

/// A retired epoch pruned against its only child, a head.
#[derive(Debug, Clone, Copy)]
struct HeadPrune {
    head: Epoch,
    /// The head's write count when the prune started.
    writes: u64,
    /// How many versions the head had then.
    entries: u64,
}

/// What reclaim keeps in memory between runs (lost on restart: the retired epochs are
/// then all looked at again).
#[derive(Default)]
pub struct ReclaimState {
    head_pruned: HashMap<Epoch, HeadPrune>,
}

/// Reclaim's lock group of [`Store`]. Locks (see "Lock order" on `Store`): `run` first,
/// before the write lock; `state` under the write lock or alone, and may then take the
/// catalog's epoch tree or the metadata cache (one at a time); `progress` and `dropped`
/// are leaves (`dropped` taken by any writer after its batch).
pub(super) struct Reclaim {
    /// Versions handled per batch.
    chunk: AtomicUsize,
    /// Held by a reclaim run from start to end, and by readers that pause reclaim.
    run: Mutex<()>,
    /// What reclaim remembers between passes.
    state: Mutex<ReclaimState>,
    /// What reclaim is doing (for the status API).
    progress: Mutex<ReclaimProgress>,
    /// Versions physically deleted and not yet compacted away (see [`super::Dropped`]).
    pub(super) dropped: Mutex<super::Dropped>,
}

impl Default for Reclaim {
    fn default() -> Self {
        Reclaim {
            chunk: AtomicUsize::new(DEFAULT_CHUNK),
            run: Mutex::new(()),
            state: Mutex::default(),
            progress: Mutex::default(),
            dropped: Mutex::default(),
        }
    }
}

/// One change-index entry: the version's space, unversioned key and stored size.
type Entry = (Space, Vec<u8>, u64);

/// What [`Store::consume`] does with one entry (space, key, size) into the batch; false ends
/// the batch early.
type EntryStep<'a> =
    dyn FnMut(&mut Batch, Space, &[u8], u64, &mut ReclaimStats) -> FsResult<bool> + 'a;

/// Outcome of a step that may be stopped between batches.
#[must_use]
enum Step {
    Done,
    Stopped,
}

fn size_of(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes)
}

/// The data id whose "gone" marker `base` is, if it is one.
fn gone_id(space: Space, base: &[u8]) -> Option<DataId> {
    if space == Space::Meta {
        keys::split_data_gone(base)
    } else {
        None
    }
}

impl Store {
    /// Sets how many versions reclaim handles per batch (at least 1). Smaller batches make
    /// reclaim take longer; the crash test uses that to kill the daemon mid-reclaim.
    pub fn set_reclaim_chunk(&self, n: usize) {
        self.reclaim.chunk.store(n.max(1), Ordering::Relaxed);
    }

    fn chunk(&self) -> usize {
        self.reclaim.chunk.load(Ordering::Relaxed)
    }

    /// Reclaims everything reclaimable now, without pauses. Returns what was done.
    pub fn reclaim(&self) -> FsResult<ReclaimStats> {
        self.reclaim_with(&Unpaced)
    }

    /// Holds reclaim off (between its batches) until the guard drops: for readers that
    /// walk the versions of several epochs and must not see them move meanwhile (diffs).
    pub fn pause_reclaim(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.reclaim.run.lock()
    }

    /// Is there reclaim work queued?
    pub fn reclaim_pending(&self) -> bool {
        self.requeue_pruned_heads();
        self.catalog.read_tree(|t| t.has_dirty())
    }

    /// Reclaims what is queued, paced and stoppable by `ctl`.
    pub fn reclaim_with(&self, ctl: &dyn ReclaimControl) -> FsResult<ReclaimStats> {
        // One run at a time: each step reshapes the tree the next one reads.
        let _run = self.reclaim.run.lock();
        let mut stats = ReclaimStats::default();
        let _progress = RunningGuard::start(self);
        let r = self.reclaim_run_steps(ctl, &mut stats);
        let mut p = self.reclaim.progress.lock();
        p.total.add(&stats);
        p.current = ReclaimStats::default();
        r.map(|()| stats)
    }

    /// What reclaim is doing and has done (for `GET /api/v1/status`).
    pub fn reclaim_progress(&self) -> ReclaimProgress {
        let mut p = *self.reclaim.progress.lock();
        self.catalog.read_tree(|t| {
            p.queued_epochs = t.dirty_count();
            p.retired_epochs = t.retired_count();
        });
        p
    }

    fn reclaim_run_steps(
        &self,
        ctl: &dyn ReclaimControl,
        stats: &mut ReclaimStats,
    ) -> FsResult<()> {
        self.requeue_pruned_heads();
        loop {
            if ctl.should_stop() {
                break;
            }
            let Some(e) = self.catalog.edit_tree(|t| t.pop_dirty()) else {
                break;
            };
            match self.reclaim_epoch(e, ctl, stats) {
                Ok(Step::Done) => {}
                Ok(Step::Stopped) => {
                    self.catalog.edit_tree(|t| t.mark_dirty(e));
                    break;
                }
                Err(err) => {
                    self.catalog.edit_tree(|t| t.mark_dirty(e));
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Queues the retired parents of heads that wrote enough since they were pruned.
    fn requeue_pruned_heads(&self) {
        let mut st = self.reclaim.state.lock();
        let due: Vec<Epoch> = st
            .head_pruned
            .iter()
            .filter(|(_, p)| {
                self.writes_of(p.head).saturating_sub(p.writes) >= p.entries.max(PRUNE_AGAIN_MIN)
            })
            .map(|(r, _)| *r)
            .collect();
        self.catalog.edit_tree(|tree| {
            for r in due {
                st.head_pruned.remove(&r);
                tree.mark_dirty(r);
            }
        });
    }

    fn reclaim_epoch(
        &self,
        r: Epoch,
        ctl: &dyn ReclaimControl,
        stats: &mut ReclaimStats,
    ) -> FsResult<Step> {
        let (rec, children) = self
            .catalog
            .read_tree(|t| (t.get(r).cloned(), t.children(r)));
        let Some(rec) = rec else {
            return Ok(Step::Done);
        };
        if rec.kind != EpochKind::Retired {
            return Ok(Step::Done);
        }
        match children.as_slice() {
            [] => {
                if let Step::Stopped = self.drain(r, None, ctl, stats)? {
                    return Ok(Step::Stopped);
                }
                self.remove_drained(r, None, stats)
            }
            [c] => {
                let c = *c;
                let Some(crec) = self.epoch(c) else {
                    return Ok(Step::Done);
                };
                if crec.kind == EpochKind::Retired {
                    if self.not_larger(c, r)? {
                        if let Step::Stopped = self.merge_up(c, r, ctl, stats)? {
                            return Ok(Step::Stopped);
                        }
                        self.remove_merged_up(c, r, stats)
                    } else {
                        if let Step::Stopped = self.drain(r, Some(c), ctl, stats)? {
                            return Ok(Step::Stopped);
                        }
                        self.remove_drained(r, Some(c), stats)
                    }
                } else if self.pruned_against(r, c, &crec.kind)? {
                    Ok(Step::Done)
                } else if self.not_larger(r, c)? {
                    if let Step::Stopped = self.drain(r, Some(c), ctl, stats)? {
                        return Ok(Step::Stopped);
                    }
                    self.remove_drained(r, Some(c), stats)
                } else {
                    self.prune(r, c, ctl, stats)
                }
            }
            _ => Ok(Step::Done),
        }
    }

    /// Has `r` already been pruned against its current child `c`?
    fn pruned_against(&self, r: Epoch, c: Epoch, kind: &EpochKind) -> FsResult<bool> {
        Ok(match kind {
            EpochKind::Frozen => self
                .kv
                .get(Space::Meta, &keys::pruned(r))?
                .is_some_and(|v| size_of(&v) == c.get()),
            EpochKind::Head { .. } => self
                .reclaim
                .state
                .lock()
                .head_pruned
                .get(&r)
                .is_some_and(|p| p.head == c),
            EpochKind::Retired => false,
        })
    }

    /// Up to `limit` change-index entries of `e` from `from` on.
    pub(super) fn changes(&self, e: Epoch, from: &[u8], limit: usize) -> FsResult<Vec<Entry>> {
        let end = crate::kv::prefix_end(&keys::epoch_changes(e));
        let mut out = Vec::new();
        self.kv
            .scan(Space::Meta, from, &end, Dir::Forward, &mut |k, v| {
                if let Some((_, space, base)) = keys::split_change(k) {
                    out.push((space, base.to_vec(), size_of(v)));
                }
                out.len() < limit
            })?;
        Ok(out)
    }

    /// How many versions `e` holds, counting no further than `limit`.
    fn count_upto(&self, e: Epoch, limit: usize) -> FsResult<usize> {
        let start = keys::epoch_changes(e);
        let end = crate::kv::prefix_end(&start);
        let mut n = 0usize;
        self.kv
            .scan(Space::Meta, &start, &end, Dir::Forward, &mut |_, _| {
                n += 1;
                n < limit
            })?;
        Ok(n)
    }

    /// Does `a` hold no more versions than `b`? Costs O(min(|a|, |b|)).
    fn not_larger(&self, a: Epoch, b: Epoch) -> FsResult<bool> {
        let mut limit = 1024usize;
        loop {
            let na = self.count_upto(a, limit)?;
            let nb = self.count_upto(b, limit)?;
            if na < limit || nb < limit {
                return Ok(na <= nb);
            }
            limit = limit.saturating_mul(4);
        }
    }

    /// Puts into `b` the drops of up to `limit` of `r`'s blocks of data id `d`; returns how
    /// many (fewer than `limit`: none are left).
    fn drop_blocks_of(
        &self,
        b: &mut Batch,
        r: Epoch,
        d: DataId,
        limit: usize,
        stats: &mut ReclaimStats,
    ) -> FsResult<usize> {
        let start = keys::change(r, Space::Data, &keys::block_prefix(d));
        let blocks = self.changes(r, &start, limit)?;
        let prefix = keys::block_prefix(d);
        let mut n = 0;
        for (space, base, size) in blocks {
            if space != Space::Data || !base.starts_with(&prefix) {
                break;
            }
            super::drop_version(b, space, &base, r);
            stats.versions_dropped += 1;
            stats.bytes_dropped += size;
            n += 1;
        }
        Ok(n)
    }

    /// Writes `b`; `before` is `stats.bytes_dropped` before the batch was built (the
    /// difference goes to the store's account of dropped versions).
    fn commit(&self, b: Batch, stats: &mut ReclaimStats, before: u64) -> FsResult<()> {
        if b.is_empty() {
            return Ok(());
        }
        let span = super::dropped_span(b.ops());
        self.forget_sizes(b.ops());
        self.kv.write(b, false)?;
        stats.batches += 1;
        self.reclaim.progress.lock().current = *stats;
        self.account_drops(stats.bytes_dropped - before, span);
        Ok(())
    }

    /// The stored size of `e`'s own version of `base`, if it has one (its change-index
    /// entry, which exists exactly when the version does).
    fn own_size(&self, e: Epoch, space: Space, base: &[u8]) -> FsResult<Option<u64>> {
        Ok(self
            .kv
            .get(Space::Meta, &keys::change(e, space, base))?
            .map(|v| size_of(&v)))
    }

    /// Consumes `e`'s change index in batches: a chunk of entries at a time, under the write
    /// lock, each chunk one atomic batch, paced and stoppable by `ctl`. `each` handles one
    /// entry and must drop `e`'s version of it (else the next chunk sees it again); it
    /// returns false to end the batch early.
    fn consume(
        &self,
        e: Epoch,
        ctl: &dyn ReclaimControl,
        stats: &mut ReclaimStats,
        each: &mut EntryStep<'_>,
    ) -> FsResult<Step> {
        let start = keys::epoch_changes(e);
        let chunk = self.chunk();
        loop {
            if ctl.should_stop() {
                return Ok(Step::Stopped);
            }
            let t0 = Instant::now();
            let guard = self.write_lock();
            let entries = self.changes(e, &start, chunk)?;
            if entries.is_empty() {
                return Ok(Step::Done);
            }
            let before = stats.bytes_dropped;
            let mut b = Batch::new();
            for (space, base, size) in entries {
                if !each(&mut b, space, &base, size, stats)? {
                    break;
                }
            }
            self.commit(b, stats, before)?;
            drop(guard);
            ctl.after_batch(t0.elapsed());
        }
    }

    /// Empties retired `r`: every version it wrote is dropped (`into` is None: a leaf) or,
    /// for `into` = its only child, dropped if the child shadows it and moved down otherwise.
    fn drain(
        &self,
        r: Epoch,
        into: Option<Epoch>,
        ctl: &dyn ReclaimControl,
        stats: &mut ReclaimStats,
    ) -> FsResult<Step> {
        self.consume(r, ctl, stats, &mut |b, space, base, size, stats| {
            match into {
                Some(c) if !self.shadowed_in(c, space, base)? => {
                    if let Some(v) = self.kv.get(space, &keys::versioned(base, r))? {
                        super::put_version(b, space, base, c, v);
                        stats.versions_moved += 1;
                    }
                }
                _ => {
                    stats.versions_dropped += 1;
                    stats.bytes_dropped += size;
                }
            }
            super::drop_version(b, space, base, r);
            Ok(true)
        })
    }

    /// Moves retired `c`'s versions up into its retired parent `r`, where they replace r's
    /// own (r's versions are seen only through c). A "data gone" marker moves only once r's
    /// blocks of that data id are dropped (else they would look live to r's new children).
    fn merge_up(
        &self,
        c: Epoch,
        r: Epoch,
        ctl: &dyn ReclaimControl,
        stats: &mut ReclaimStats,
    ) -> FsResult<Step> {
        let chunk = self.chunk();
        self.consume(c, ctl, stats, &mut |b, space, base, _, stats| {
            if let Some(d) = gone_id(space, base) {
                if self.kills(c, d)? && self.drop_blocks_of(b, r, d, chunk, stats)? == chunk {
                    return Ok(false); // more of r's blocks next batch; the marker waits
                }
            }
            if let Some(size) = self.own_size(r, space, base)? {
                stats.versions_dropped += 1;
                stats.bytes_dropped += size;
            }
            if let Some(v) = self.kv.get(space, &keys::versioned(base, c))? {
                super::put_version(b, space, base, r, v);
                stats.versions_moved += 1;
            }
            super::drop_version(b, space, base, c);
            Ok(true)
        })
    }

    /// Drops every version of retired `r` that its only, live child `c` shadows, walking
    /// c's changes; then records that r is pruned against c.
    fn prune(
        &self,
        r: Epoch,
        c: Epoch,
        ctl: &dyn ReclaimControl,
        stats: &mut ReclaimStats,
    ) -> FsResult<Step> {
        let writes = self.writes_of(c);
        let chunk = self.chunk();
        let frozen = matches!(self.epoch(c).map(|x| x.kind), Some(EpochKind::Frozen));
        // A frozen child never changes, so a prune against it resumes where the last run
        // stopped (the marker holds c and the cursor until the prune is done).
        let mut cursor = match self.kv.get(Space::Meta, &keys::pruned(r))? {
            Some(v) if frozen && v.len() > 8 && v[..8] == c.get().to_be_bytes() => v[8..].to_vec(),
            _ => keys::epoch_changes(c),
        };
        let mut entries_seen = 0u64;
        loop {
            if ctl.should_stop() {
                return Ok(Step::Stopped);
            }
            let t0 = Instant::now();
            let _g = self.write_lock();
            let entries = self.changes(c, &cursor, chunk)?;
            let Some((space, base, _)) = entries.last() else {
                break;
            };
            cursor = crate::kv::successor(&keys::change(c, *space, base));
            let before = stats.bytes_dropped;
            let mut b = Batch::new();
            let mut gone = Vec::new();
            for (space, base, _) in &entries {
                stats.versions_scanned += 1;
                entries_seen += 1;
                if let Some(d) = gone_id(*space, base) {
                    if self.kills(c, d)? {
                        gone.push(d);
                    }
                    continue;
                }
                if let Some(size) = self.own_size(r, *space, base)? {
                    super::drop_version(&mut b, *space, base, r);
                    stats.versions_dropped += 1;
                    stats.bytes_dropped += size;
                }
            }
            self.commit(b, stats, before)?;
            // r's blocks of data ids c marked gone: possibly many, in batches of their own.
            for d in gone {
                loop {
                    let before = stats.bytes_dropped;
                    let mut b = Batch::new();
                    let n = self.drop_blocks_of(&mut b, r, d, chunk, stats)?;
                    self.commit(b, stats, before)?;
                    if n < chunk {
                        break;
                    }
                }
            }
            if frozen {
                let mut b = Batch::new();
                b.put(
                    Space::Meta,
                    keys::pruned(r),
                    [&c.get().to_be_bytes()[..], &cursor].concat(),
                );
                self.kv.write(b, false)?;
            }
            drop(_g);
            ctl.after_batch(t0.elapsed());
        }
        // Done: remember it, unless c changed meanwhile (then r was queued again anyway).
        let _g = self.write_lock();
        let (still, kind) = self.catalog.read_tree(|t| {
            let still =
                t.get(r).is_some_and(|x| x.kind == EpochKind::Retired) && t.children(r) == [c];
            (still, t.get(c).map(|x| x.kind.clone()))
        });
        match kind {
            Some(EpochKind::Frozen) if still && self.writes_of(c) == writes => {
                let mut b = Batch::new();
                b.put(Space::Meta, keys::pruned(r), c.get().to_be_bytes().to_vec());
                self.kv.write(b, false)?;
            }
            Some(EpochKind::Head { .. }) if still => {
                self.reclaim.state.lock().head_pruned.insert(
                    r,
                    HeadPrune {
                        head: c,
                        writes,
                        entries: entries_seen,
                    },
                );
            }
            _ => self.catalog.edit_tree(|t| t.mark_dirty(r)),
        }
        Ok(Step::Done)
    }

    /// Takes drained `r` out of the tree; its only child `child` (if any) takes r's parent.
    fn remove_drained(
        &self,
        r: Epoch,
        child: Option<Epoch>,
        stats: &mut ReclaimStats,
    ) -> FsResult<Step> {
        let _g = self.write_lock();
        let Some(rec) = self.epoch(r) else {
            return Ok(Step::Done);
        };
        let mut b = Batch::new();
        b.delete(Space::Meta, keys::epoch(r));
        b.delete(Space::Meta, keys::pruned(r));
        b.delete(Space::Meta, keys::usage(r));
        let mut moved = None;
        if let Some(c) = child {
            if let Some(mut crec) = self.epoch(c) {
                crec.parent = rec.parent;
                b.put(Space::Meta, keys::epoch(c), codec::encode_plain(&crec));
                moved = Some((c, crec));
            }
        }
        self.kv.write(b, true)?;
        self.catalog.edit_tree(|t| {
            if let Some((c, crec)) = moved {
                t.insert(c, crec);
            }
            t.remove(r);
        });
        self.reclaim.state.lock().head_pruned.remove(&r);
        self.drop_from_head_chains(r);
        stats.epochs_removed += 1;
        Ok(Step::Done)
    }

    /// Takes retired `c`, merged up into its parent `r`, out of the tree: c's children
    /// become r's.
    fn remove_merged_up(&self, c: Epoch, r: Epoch, stats: &mut ReclaimStats) -> FsResult<Step> {
        let _g = self.write_lock();
        let grandchildren: Vec<(Epoch, super::EpochRecord)> = self.catalog.read_tree(|t| {
            t.children(c)
                .into_iter()
                .filter_map(|g| t.get(g).map(|rec| (g, rec.clone())))
                .collect()
        });
        let mut b = Batch::new();
        b.delete(Space::Meta, keys::epoch(c));
        b.delete(Space::Meta, keys::pruned(c));
        b.delete(Space::Meta, keys::pruned(r));
        b.delete(Space::Meta, keys::usage(c));
        let mut moved = Vec::new();
        for (g, mut grec) in grandchildren {
            grec.parent = Some(r);
            b.put(Space::Meta, keys::epoch(g), codec::encode_plain(&grec));
            moved.push((g, grec));
        }
        self.kv.write(b, true)?;
        self.catalog.edit_tree(|t| {
            for (g, grec) in moved {
                t.insert(g, grec);
            }
            t.remove(c);
            t.mark_dirty(r);
        });
        {
            let mut st = self.reclaim.state.lock();
            st.head_pruned.remove(&c);
            st.head_pruned.remove(&r);
        }
        self.drop_from_head_chains(c);
        stats.epochs_removed += 1;
        Ok(Step::Done)
    }

    /// Does epoch `c` itself make the version of `base` of its parent invisible to every
    /// view at or below `c`? True when `c` has its own version of `base`, or for a block
    /// whose data id `c` marked dead.
    pub(super) fn shadowed_in(&self, c: Epoch, space: Space, base: &[u8]) -> FsResult<bool> {
        if self.kv.get(space, &keys::versioned(base, c))?.is_some() {
            return Ok(true);
        }
        if space == Space::Data {
            if let Some((d, _)) = keys::split_block(base) {
                return self.kills(c, d);
            }
        }
        Ok(false)
    }

    /// Is data id `d` dead for every view at or below epoch `c`? True when `c` marked it gone
    /// (a live marker: truncated to zero or freed) and no epoch below `c` revived it (a path
    /// restore brings a file back with its old data id and writes a tombstone of the marker).
    /// The marker has one version per epoch that freed or revived `d`: a short scan.
    fn kills(&self, c: Epoch, d: DataId) -> FsResult<bool> {
        let base = keys::data_gone(d);
        match self.kv.get(Space::Meta, &keys::versioned(&base, c))? {
            Some(v) if !codec::is_tombstone(&v) => {}
            _ => return Ok(false),
        }
        let mut revived_at = Vec::new();
        let end = crate::kv::prefix_end(&base);
        self.kv
            .scan(Space::Meta, &base, &end, Dir::Forward, &mut |k, v| {
                if let Some((_, e)) = keys::split_version(k) {
                    if e != c && codec::is_tombstone(v) {
                        revived_at.push(e);
                    }
                }
                true
            })?;
        Ok(!revived_at.into_iter().any(|e| self.is_below(e, c)))
    }

    /// Is epoch `e` a strict descendant of `ancestor`? O(depth).
    fn is_below(&self, e: Epoch, ancestor: Epoch) -> bool {
        e != ancestor
            && self
                .catalog
                .read_tree(|t| t.chain_members(e).contains(&ancestor))
    }
}
