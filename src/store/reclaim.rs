//! Background reclaim of retired epochs (deleted snapshots, heads replaced by a restore).
//!
//! Work is driven by each epoch's change index, so its cost is proportional to what the
//! retired epoch wrote, never to the store's size. Every step is one atomic batch and is
//! idempotent, so a reclaim interrupted by a crash simply resumes.
//!
//! - A retired epoch with no children: nobody can see its versions; they are dropped, then
//!   the epoch leaves the tree.
//! - A retired epoch with exactly one child C: it is merged into C. For each key it wrote,
//!   if C has its own version the retired one is shadowed for every view and is dropped;
//!   otherwise the version moves to C (every view below C resolved it anyway). Then C takes
//!   the retired epoch's parent and the epoch leaves the tree.
//! - With two or more children the epoch is still a shared base: it stays.

use std::sync::atomic::Ordering;

use super::{EpochKind, EpochRecord, Store};
use crate::codec;
use crate::error::FsResult;
use crate::keys;
use crate::kv::{Batch, Dir, Space};

/// Versions handled per batch by default. Each batch holds the store's write lock, so this
/// bounds how long reclaim can stall a writer.
pub const DEFAULT_CHUNK: usize = 512;

/// What one reclaim pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimStats {
    pub epochs_removed: u64,
    pub versions_dropped: u64,
    pub versions_moved: u64,
    pub bytes_dropped: u64,
}

impl Store {
    /// Sets how many versions reclaim handles per batch (at least 1). Smaller batches make
    /// reclaim take longer; the crash test uses that to kill the daemon mid-reclaim.
    pub fn set_reclaim_chunk(&self, n: usize) {
        self.reclaim_chunk.store(n.max(1), Ordering::Relaxed);
    }

    /// Retired epochs that can be reclaimed now, oldest first, with their children.
    fn reclaimable(&self) -> Vec<(u64, EpochRecord, Vec<u64>)> {
        let epochs = self.epochs.read();
        let mut out: Vec<(u64, EpochRecord, Vec<u64>)> = epochs
            .iter()
            .filter(|(_, r)| r.kind == EpochKind::Retired)
            .map(|(e, r)| {
                let children: Vec<u64> = epochs
                    .iter()
                    .filter(|(_, c)| c.parent == *e)
                    .map(|(c, _)| *c)
                    .collect();
                (*e, r.clone(), children)
            })
            .filter(|(_, _, c)| c.len() <= 1)
            .collect();
        out.sort_by_key(|(e, _, _)| *e);
        out
    }

    /// Reclaims everything reclaimable now. Returns what was done.
    pub fn reclaim(&self) -> FsResult<ReclaimStats> {
        let mut stats = ReclaimStats::default();
        // One epoch at a time: each one reshapes the tree (parents, children) that the
        // next decision depends on.
        while let Some((e, rec, children)) = self.reclaimable().into_iter().next() {
            self.reclaim_epoch(e, &rec, children.first().copied(), &mut stats)?;
        }
        Ok(stats)
    }

    fn reclaim_epoch(
        &self,
        e: u64,
        rec: &EpochRecord,
        child: Option<u64>,
        stats: &mut ReclaimStats,
    ) -> FsResult<()> {
        let prefix = keys::epoch_changes(e);
        let end = crate::kv::prefix_end(&prefix);
        let chunk = self.reclaim_chunk.load(Ordering::Relaxed);
        loop {
            let _g = self.write_lock();
            let mut entries: Vec<(Space, Vec<u8>, u64)> = Vec::with_capacity(chunk);
            self.kv
                .scan(Space::Meta, &prefix, &end, Dir::Forward, &mut |k, v| {
                    if let Some((_, space, base)) = keys::split_change(k) {
                        let size = <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes);
                        entries.push((space, base.to_vec(), size));
                    }
                    entries.len() < chunk
                })?;
            if entries.is_empty() {
                break;
            }
            let mut b = Batch::new();
            for (space, base, size) in entries {
                let own = keys::versioned(&base, e);
                if let Some(c) = child {
                    if !self.shadowed_in(c, space, &base)? {
                        if let Some(v) = self.kv.get(space, &own)? {
                            super::put_version(&mut b, space, &base, c, v);
                            stats.versions_moved += 1;
                        }
                    } else {
                        stats.versions_dropped += 1;
                        stats.bytes_dropped += size;
                    }
                } else {
                    stats.versions_dropped += 1;
                    stats.bytes_dropped += size;
                }
                super::drop_version(&mut b, space, &base, e);
            }
            self.kv.write(b, false)?;
        }
        // The epoch wrote nothing any more: take it out of the tree.
        let _g = self.write_lock();
        let mut b = Batch::new();
        b.delete(Space::Meta, keys::epoch(e));
        if let Some(c) = child {
            if let Some(mut crec) = self.epoch(c) {
                crec.parent = rec.parent;
                b.put(Space::Meta, keys::epoch(c), codec::encode_plain(&crec));
            }
        }
        self.kv.write(b, true)?;
        {
            let mut epochs = self.epochs.write();
            epochs.remove(&e);
            if let Some(c) = child {
                if let Some(crec) = epochs.get_mut(&c) {
                    crec.parent = rec.parent;
                }
            }
        }
        self.refresh_heads();
        stats.epochs_removed += 1;
        Ok(())
    }

    /// Does epoch `c` itself make the version of `base` of its parent invisible to every
    /// view at or below `c`? True when `c` has its own version of `base`, or for a block
    /// whose data id `c` marked dead.
    fn shadowed_in(&self, c: u64, space: Space, base: &[u8]) -> FsResult<bool> {
        if self.kv.get(space, &keys::versioned(base, c))?.is_some() {
            return Ok(true);
        }
        if space == Space::Data && base.first() == Some(&keys::TAG_BLOCK) {
            if let Some(d) = keys::u64_at(base, 1) {
                let gone = keys::versioned(&keys::data_gone(d), c);
                return Ok(self.kv.get(Space::Meta, &gone)?.is_some());
            }
        }
        Ok(false)
    }

    /// Recomputes every head chain (after the tree's shape changed).
    fn refresh_heads(&self) {
        let heads: Vec<(Vec<u8>, u64)> = self
            .heads
            .read()
            .iter()
            .map(|(n, c)| (n.clone(), c.epoch))
            .collect();
        for (name, head) in heads {
            self.set_head(&name, head);
        }
    }
}
