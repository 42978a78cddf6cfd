//! The write side of the store: the write lock, the id counters and the metadata cache.
//!
//! [`Versions`] is one lock group of [`Store`] (see "Lock order" there).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Store;
use crate::ids::Epoch;
use crate::keys;
use crate::kv::{Batch, Space};

/// What every read-modify-write of the store goes through: the write lock that serializes
/// them, the counters that hand out inode, data and epoch ids, and the cache of resolved
/// metadata versions that commits keep up to date.
///
/// Locks: `write_lock` is the outermost store lock but one (only `Reclaim::run` is taken
/// before it); while holding it, any other group's lock may be taken. `cache` is a leaf:
/// nothing else is taken while it is held. The counters are atomics, bumped under
/// `write_lock` (their new values go into the batch it guards).
pub(super) struct Versions {
    /// Serializes every read-modify-write of the store (all containers).
    write_lock: Mutex<()>,
    next_id: AtomicU64,
    next_epoch: AtomicU64,
    /// Resolved inode and directory-entry versions per view (see [`MetaCache`]).
    cache: Mutex<MetaCache>,
}

impl Versions {
    pub(super) fn new(next_id: u64, next_epoch: u64) -> Versions {
        Versions {
            write_lock: Mutex::new(()),
            next_id: AtomicU64::new(next_id),
            next_epoch: AtomicU64::new(next_epoch),
            cache: Mutex::new(MetaCache::default()),
        }
    }
}

/// Most entries the metadata cache holds before it starts over.
const CACHE_MAX: usize = 200_000;

/// What a view resolves an inode or directory-entry key to, by (view epoch, unversioned key):
/// `Some(raw value)` (possibly a tombstone) or `None` (no version). A view's resolution only
/// changes when that view itself writes (reclaim moves or drops versions without changing
/// what any live view resolves to), so writers update their own view's entries after each
/// commit, and readers insert only if no commit happened since they started reading.
#[derive(Default)]
pub struct MetaCache {
    map: HashMap<(Epoch, Vec<u8>), Option<Vec<u8>>>,
    generation: u64,
    /// Change-index entries each view has committed since the store opened (an upper bound
    /// on the keys it newly shadowed; reclaim re-prunes a retired parent of a head after
    /// enough of them).
    writes: HashMap<Epoch, u64>,
    /// Lookups served from the map, and those that were not (for metrics).
    hits: u64,
    misses: u64,
    /// (view, id) pairs where every key under the id (an inode's or directory's: see
    /// `keys::owner_id`) is in `map` or resolves to nothing: ids allocated by a commit of
    /// that view. Nothing under them existed before; the view's own commits keep `map`
    /// exact for them (a dropped version leaves nothing else to resolve to), and no other
    /// writer can put a version under them in that view. So a miss there is an answer: a
    /// new directory's entries and a new file's extended attributes cost no read.
    fresh: HashSet<(Epoch, u64)>,
}

/// Whether a key of this table is cached: inodes, entries and extended attributes (a write
/// looks up `security.capability` of its file every time; see `Fs::drop_privileges`).
pub fn cacheable(base: &[u8]) -> bool {
    matches!(
        base.first(),
        Some(&keys::TAG_INODE) | Some(&keys::TAG_DIRENT) | Some(&keys::TAG_XATTR)
    )
}

/// Larger values (big extended attributes) are not cached: the cache is bounded by entries.
/// An inode with the longest symlink target stays below it.
const CACHED_VALUE_MAX: usize = 4608;

impl MetaCache {
    /// Starts over (the cache is full): forgets every resolution and every fresh id.
    fn clear(&mut self) {
        self.map.clear();
        self.fresh.clear();
    }
}

impl Store {
    /// The cached resolution of `base` in view `epoch`, and the cache generation to pass to
    /// [`Store::cache_insert`] after a miss.
    pub fn cache_get(&self, epoch: Epoch, base: &[u8]) -> Result<Option<Vec<u8>>, u64> {
        let mut c = self.versions.cache.lock();
        match c.map.get(&(epoch, base.to_vec())) {
            Some(v) => {
                let v = v.clone();
                c.hits += 1;
                Ok(v)
            }
            None if keys::owner_id(base).is_some_and(|id| c.fresh.contains(&(epoch, id))) => {
                c.hits += 1;
                Ok(None)
            }
            None => {
                c.misses += 1;
                Err(c.generation)
            }
        }
    }

    /// Metadata cache lookups so far: (hits, misses).
    pub fn cache_stats(&self) -> (u64, u64) {
        let c = self.versions.cache.lock();
        (c.hits, c.misses)
    }

    /// Remembers a resolution read from the kv, unless a commit happened since `generation`.
    pub fn cache_insert(&self, generation: u64, epoch: Epoch, base: &[u8], value: Option<Vec<u8>>) {
        let mut c = self.versions.cache.lock();
        if c.generation != generation || value.as_ref().is_some_and(|v| v.len() > CACHED_VALUE_MAX)
        {
            return;
        }
        if c.map.len() >= CACHE_MAX {
            c.clear();
        }
        c.map.insert((epoch, base.to_vec()), value);
    }

    /// After a committed batch written by view `epoch`: its own versions of cached keys are
    /// what that view now resolves; dropped ones are forgotten. `fresh` are the ids the batch
    /// allocated: from now on the cache answers for every key under them in that view (see
    /// [`MetaCache::fresh`]).
    pub fn cache_commit(&self, epoch: Epoch, ops: &[crate::kv::BatchOp], fresh: &[u64]) {
        let mut c = self.versions.cache.lock();
        if c.fresh.len() + fresh.len() > CACHE_MAX {
            c.clear();
        }
        c.fresh.extend(fresh.iter().map(|&id| (epoch, id)));
        c.generation += 1;
        let mut changes = 0u64;
        for op in ops {
            match op {
                crate::kv::BatchOp::Put(Space::Meta, k, _)
                    if k.first() == Some(&keys::TAG_CHANGE) =>
                {
                    changes += 1;
                }
                crate::kv::BatchOp::Put(Space::Meta, k, v) => {
                    if let Some((base, e)) = keys::split_version(k) {
                        if e == epoch && cacheable(base) {
                            if v.len() <= CACHED_VALUE_MAX {
                                c.map.insert((epoch, base.to_vec()), Some(v.clone()));
                            } else {
                                c.map.remove(&(epoch, base.to_vec()));
                                // Not in the map, yet there: the cache no longer answers
                                // for everything under its id.
                                if let Some(id) = keys::owner_id(base) {
                                    c.fresh.remove(&(epoch, id));
                                }
                            }
                        }
                    }
                }
                crate::kv::BatchOp::Delete(Space::Meta, k) => {
                    if let Some((base, e)) = keys::split_version(k) {
                        if e == epoch && cacheable(base) {
                            c.map.remove(&(epoch, base.to_vec()));
                        }
                    }
                }
                _ => {}
            }
        }
        if changes > 0 {
            *c.writes.entry(epoch).or_default() += changes;
        }
    }

    /// Filesystem commits since the store opened (reclaim's own batches excluded).
    pub fn commit_count(&self) -> u64 {
        self.versions.cache.lock().generation
    }

    /// Change-index entries view `epoch` committed since the store opened.
    pub fn writes_of(&self, epoch: Epoch) -> u64 {
        self.versions
            .cache
            .lock()
            .writes
            .get(&epoch)
            .copied()
            .unwrap_or(0)
    }

    /// Forgets nothing but makes in-flight readers' results stale (after a failed write).
    pub fn cache_bump(&self) {
        self.versions.cache.lock().generation += 1;
    }

    /// Held across every read-modify-write batch.
    pub fn write_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.versions.write_lock.lock()
    }

    /// Allocates a fresh inode / data id; the new counter goes into `batch`.
    /// Call with the write lock held.
    pub fn alloc_id(&self, batch: &mut Batch) -> u64 {
        let id = self.versions.next_id.fetch_add(1, Ordering::SeqCst);
        batch.put(
            Space::Meta,
            keys::setting("next_id"),
            (id + 1).to_be_bytes().to_vec(),
        );
        id
    }

    /// The next inode / data id to be handed out.
    pub(super) fn next_id(&self) -> u64 {
        self.versions.next_id.load(Ordering::SeqCst)
    }

    /// Raises the id counter to at least `at_least` (ids a received stream brought), in
    /// `batch`. Call with the write lock held.
    pub(super) fn raise_next_id(&self, batch: &mut Batch, at_least: u64) {
        let now = self.versions.next_id.fetch_max(at_least, Ordering::SeqCst);
        batch.put(
            Space::Meta,
            keys::setting("next_id"),
            now.max(at_least).to_be_bytes().to_vec(),
        );
    }

    pub(super) fn alloc_epoch(&self, batch: &mut Batch) -> Epoch {
        let e = self.versions.next_epoch.fetch_add(1, Ordering::SeqCst);
        batch.put(
            Space::Meta,
            keys::setting("next_epoch"),
            (e + 1).to_be_bytes().to_vec(),
        );
        Epoch::new(e)
    }
}
