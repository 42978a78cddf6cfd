//! The store: settings, the epoch tree and containers, over any [`Kv`].
//!
//! Invariant: epoch ids come from one monotonic counter, so a child's id is always greater
//! than its parent's; the whole tree is cached in memory (it is small).

mod container;
mod epochs;
mod linkindex;
mod quota;
mod reclaim;
mod snapindex;
mod snapshot;
mod space;

pub use container::{check_container_name, ContainerRecord};
pub use epochs::EpochTree;
pub use quota::Quota;
pub use reclaim::{ReclaimControl, ReclaimProgress, ReclaimStats};
pub use snapshot::{check_alias, SnapshotInfo, SnapshotRecord};
pub use space::{SnapshotSpace, StoreSpace};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{FsError, FsResult};
use crate::ids::{ContainerId, DataId, Epoch, Ino};
use crate::keys;
use crate::kv::{Batch, Dir, Kv, KvRead, Space};

/// On-disk format version of a store written by this build.
pub const FORMAT_VERSION: u32 = 1;
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
pub const DEFAULT_BLOCK_SIZE: u32 = 16 * 1024;
/// Inode number of every container's root directory (each container's root lives in its own
/// branch of the epoch tree, so they never collide).
pub const ROOT_INO: Ino = Ino::ROOT;
/// First id handed out for inodes and block data.
const FIRST_ID: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not a snapfs store (no format record)")]
    NotAStore,
    #[error("store has format version {found}; this snapfs reads version {FORMAT_VERSION}")]
    Format { found: u32 },
    #[error("block size {0} out of range: must be a power of two from 4096 to 1048576")]
    BlockSize(u64),
    #[error("store is already initialized")]
    AlreadyInitialized,
    #[error("container {0:?} does not exist")]
    NoContainer(String),
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    #[error("invalid container name {0:?}")]
    BadContainerName(String),
    #[error("snapshot {0:?} not found")]
    NoSnapshot(String),
    #[error("alias {0:?} is already used by another snapshot")]
    AliasTaken(String),
    #[error("invalid alias {0:?}: {1}")]
    BadAlias(String, &'static str),
    #[error("the snapshot's tree holds {usage} bytes of file data, over the container's quota of {limit} bytes")]
    OverQuota { usage: u64, limit: u64 },
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl From<crate::kv::KvError> for StoreError {
    fn from(e: crate::kv::KvError) -> Self {
        StoreError::Fs(e.into())
    }
}

/// What an epoch is.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum EpochKind {
    /// The live, writable tree of a container.
    Head { container: ContainerId },
    /// A frozen epoch (a snapshot).
    Frozen,
    /// No longer reachable by any view; its versions are reclaimable.
    Retired,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    /// Parent epoch; `None` for a root epoch (stored as 0: no epoch is 0).
    #[serde(with = "parent_on_disk")]
    pub parent: Option<Epoch>,
    pub kind: EpochKind,
}

/// On disk a record's parent is a plain u64 with 0 for "none" (the format since the
/// first store); in memory it is an `Option`.
mod parent_on_disk {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ids::Epoch;

    pub fn serialize<S: Serializer>(p: &Option<Epoch>, s: S) -> Result<S::Ok, S::Error> {
        p.map_or(0, Epoch::get).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Epoch>, D::Error> {
        let n = u64::deserialize(d)?;
        Ok((n != 0).then_some(Epoch::new(n)))
    }
}

/// The set of epochs a view reads: its own and all its ancestors.
#[derive(Debug, Clone)]
pub struct Chain {
    pub epoch: Epoch,
    /// Ascending; always contains `epoch`.
    members: Vec<Epoch>,
}

impl Chain {
    pub fn contains(&self, e: Epoch) -> bool {
        self.members.binary_search(&e).is_ok()
    }
    pub fn members(&self) -> &[Epoch] {
        &self.members
    }
}

/// Visits, in reverse key order, the visible version of every versioned key in
/// `[start, end)`; `f(base, value)` returns false to stop.
pub fn scan_visible(
    r: &dyn KvRead,
    space: Space,
    start: &[u8],
    end: &[u8],
    chain: &Chain,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> FsResult<()> {
    let mut done_base: Option<Vec<u8>> = None;
    r.scan(space, start, end, Dir::Reverse, &mut |k, v| {
        let Some((base, e)) = keys::split_version(k) else {
            return true;
        };
        if done_base.as_deref() == Some(base) || !chain.contains(e) {
            return true;
        }
        done_base = Some(base.to_vec());
        f(base, v)
    })?;
    Ok(())
}

/// Resolves the version of `base` visible in `chain`: the newest version whose epoch is in the
/// chain. Returns the raw value.
///
/// A version written by the chain's own epoch (the head, which every write goes to) wins
/// outright: that is one point read, which the backends answer from the newest table that
/// has the key (bloom filters skip the others), where the scan below has to open every
/// table holding some version of `base`.
pub fn resolve(
    r: &dyn KvRead,
    space: Space,
    base: &[u8],
    chain: &Chain,
) -> FsResult<Option<Vec<u8>>> {
    if let Some(v) = r.get(space, &keys::versioned(base, chain.epoch))? {
        return Ok(Some(v));
    }
    let start = keys::versioned(base, Epoch::new(0));
    let end = keys::versioned(base, Epoch::new(chain.epoch.get().saturating_add(1)));
    let mut found = None;
    r.scan(
        space,
        &start,
        &end,
        Dir::Reverse,
        &mut |k, v| match keys::split_version(k) {
            Some((b, e)) if b == base && chain.contains(e) => {
                found = Some(v.to_vec());
                false
            }
            _ => true,
        },
    )?;
    Ok(found)
}

pub struct Store {
    kv: Arc<dyn Kv>,
    block_size: u32,
    next_id: AtomicU64,
    next_epoch: AtomicU64,
    epochs: RwLock<EpochTree>,
    /// Each container's current head chain (what its mounts read and write).
    heads: RwLock<HashMap<ContainerId, Arc<Chain>>>,
    /// Serializes every read-modify-write of the store (all containers).
    write_lock: Mutex<()>,
    /// Resolved inode and directory-entry versions per view (see [`MetaCache`]).
    cache: Mutex<MetaCache>,
    /// Versions reclaim handles per batch (see `reclaim.rs`).
    reclaim_chunk: std::sync::atomic::AtomicUsize,
    /// What reclaim remembers between passes (see `reclaim.rs`).
    reclaim_state: Mutex<reclaim::ReclaimState>,
    /// Held by a reclaim run from start to end.
    reclaim_run: Mutex<()>,
    /// Versions physically deleted and not yet compacted away (see [`Dropped`]).
    dropped: Mutex<Dropped>,
    /// Per container, the last snapshot name base and suffix handed out (`unique_name`).
    last_names: Mutex<HashMap<ContainerId, (String, u32)>>,
    /// Per container, how many snapshots it has and the newest's time (filled on first
    /// use; see `snapshot_summary`).
    snapshot_summaries: Mutex<HashMap<ContainerId, snapindex::SnapSummary>>,
    /// Quotas, usage and epoch sizes (see `quota.rs`).
    accounts: Mutex<quota::Accounts>,
    /// What reclaim is doing (see `reclaim.rs`).
    reclaim_progress: Mutex<reclaim::ReclaimProgress>,
}

/// What batches physically deleted since the daemon last compacted: the bytes of the versions
/// (their change-index sizes) and the span of data ids whose blocks went. The daemon compacts
/// just that span once enough has accumulated, so the cost of giving space back follows the
/// garbage, not the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub bytes: u64,
    /// Lowest and highest data id with a dropped block.
    pub data_ids: Option<(DataId, DataId)>,
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

fn read_u64_setting(kv: &dyn Kv, name: &str) -> FsResult<Option<u64>> {
    match kv.get(Space::Meta, &keys::setting(name))? {
        None => Ok(None),
        Some(v) => {
            let arr: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| FsError::Corrupt(format!("setting {name}")))?;
            Ok(Some(u64::from_be_bytes(arr)))
        }
    }
}

pub fn valid_block_size(n: u64) -> bool {
    n.is_power_of_two() && (MIN_BLOCK_SIZE as u64..=MAX_BLOCK_SIZE as u64).contains(&n)
}

impl Store {
    /// Writes a new store's settings and its `default` container into an empty kv.
    pub fn init(kv: Arc<dyn Kv>, block_size: u64) -> Result<Store, StoreError> {
        if !valid_block_size(block_size) {
            return Err(StoreError::BlockSize(block_size));
        }
        if kv.get(Space::Meta, &keys::setting("format"))?.is_some() {
            return Err(StoreError::AlreadyInitialized);
        }
        let mut b = Batch::new();
        b.put(
            Space::Meta,
            keys::setting("format"),
            (FORMAT_VERSION as u64).to_be_bytes().to_vec(),
        );
        b.put(
            Space::Meta,
            keys::setting("block_size"),
            block_size.to_be_bytes().to_vec(),
        );
        b.put(
            Space::Meta,
            keys::setting("next_id"),
            FIRST_ID.to_be_bytes().to_vec(),
        );
        b.put(
            Space::Meta,
            keys::setting("next_epoch"),
            1u64.to_be_bytes().to_vec(),
        );
        kv.write(b, true)?;
        let store = Store::open(kv)?;
        store.index_snapshots()?;
        store.index_links()?;
        store.create_container("default", None)?;
        Ok(store)
    }

    pub fn open(kv: Arc<dyn Kv>) -> Result<Store, StoreError> {
        let format = read_u64_setting(&*kv, "format")?.ok_or(StoreError::NotAStore)?;
        if format != FORMAT_VERSION as u64 {
            return Err(StoreError::Format {
                found: format.min(u32::MAX as u64) as u32,
            });
        }
        let block_size = read_u64_setting(&*kv, "block_size")?.unwrap_or(0);
        if !valid_block_size(block_size) {
            return Err(StoreError::BlockSize(block_size));
        }
        let mut epochs = HashMap::new();
        let start = [keys::TAG_EPOCH];
        let end = [keys::TAG_EPOCH + 1];
        let mut bad = None;
        kv.scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, v| match (
            keys::split_epoch(k),
            codec::decode_plain::<EpochRecord>(v),
        ) {
            (Some(e), Ok(rec)) => {
                epochs.insert(e, rec);
                true
            }
            _ => {
                bad = Some(k.to_vec());
                false
            }
        })?;
        if let Some(k) = bad {
            return Err(FsError::Corrupt(format!("epoch record {k:02x?}")).into());
        }
        // Counters are persisted with every allocation; also never hand out an id at or below
        // one already present, whatever the setting says.
        let mut next_id = read_u64_setting(&*kv, "next_id")?.unwrap_or(FIRST_ID);
        type IdOf = fn(&[u8]) -> Option<u64>;
        let last_ids: [(u8, Space, IdOf); 2] = [
            (keys::TAG_INODE, Space::Meta, |k| {
                keys::split_inode(k).map(Ino::get)
            }),
            (keys::TAG_BLOCK, Space::Data, |k| {
                keys::split_block(k).map(|(d, _)| d.get())
            }),
        ];
        for (tag, space, id_of) in last_ids {
            kv.scan(space, &[tag], &[tag + 1], Dir::Reverse, &mut |k, _| {
                if let Some(id) = id_of(k) {
                    next_id = next_id.max(id + 1);
                }
                false
            })?;
        }
        let max_epoch = epochs.keys().map(|e: &Epoch| e.get()).max().unwrap_or(0);
        let next_epoch = read_u64_setting(&*kv, "next_epoch")?
            .unwrap_or(1)
            .max(max_epoch + 1);
        let store = Store {
            kv,
            block_size: block_size as u32,
            next_id: AtomicU64::new(next_id),
            next_epoch: AtomicU64::new(next_epoch),
            epochs: RwLock::new(EpochTree::new(epochs)),
            heads: RwLock::new(HashMap::new()),
            write_lock: Mutex::new(()),
            cache: Mutex::new(MetaCache::default()),
            reclaim_chunk: std::sync::atomic::AtomicUsize::new(reclaim::DEFAULT_CHUNK),
            reclaim_state: Mutex::new(reclaim::ReclaimState::default()),
            reclaim_run: Mutex::new(()),
            dropped: Mutex::new(Dropped::default()),
            last_names: Mutex::new(HashMap::new()),
            snapshot_summaries: Mutex::new(HashMap::new()),
            accounts: Mutex::new(quota::Accounts::default()),
            reclaim_progress: Mutex::new(reclaim::ReclaimProgress::default()),
        };
        for rec in store.containers()? {
            if rec.deleted_at.is_none() {
                let chain = Arc::new(store.chain(rec.head));
                store.heads.write().insert(rec.id, chain);
            }
        }
        Ok(store)
    }

    pub fn kv(&self) -> &dyn Kv {
        &*self.kv
    }

    pub fn kv_arc(&self) -> Arc<dyn Kv> {
        self.kv.clone()
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The cached resolution of `base` in view `epoch`, and the cache generation to pass to
    /// [`Store::cache_insert`] after a miss.
    pub fn cache_get(&self, epoch: Epoch, base: &[u8]) -> Result<Option<Vec<u8>>, u64> {
        let mut c = self.cache.lock();
        match c.map.get(&(epoch, base.to_vec())) {
            Some(v) => {
                let v = v.clone();
                c.hits += 1;
                Ok(v)
            }
            None => {
                c.misses += 1;
                Err(c.generation)
            }
        }
    }

    /// Metadata cache lookups so far: (hits, misses).
    pub fn cache_stats(&self) -> (u64, u64) {
        let c = self.cache.lock();
        (c.hits, c.misses)
    }

    /// Remembers a resolution read from the kv, unless a commit happened since `generation`.
    pub fn cache_insert(&self, generation: u64, epoch: Epoch, base: &[u8], value: Option<Vec<u8>>) {
        let mut c = self.cache.lock();
        if c.generation != generation || value.as_ref().is_some_and(|v| v.len() > CACHED_VALUE_MAX)
        {
            return;
        }
        if c.map.len() >= CACHE_MAX {
            c.map.clear();
        }
        c.map.insert((epoch, base.to_vec()), value);
    }

    /// After a committed batch written by view `epoch`: its own versions of cached keys are
    /// what that view now resolves; dropped ones are forgotten.
    pub fn cache_commit(&self, epoch: Epoch, ops: &[crate::kv::BatchOp]) {
        let mut c = self.cache.lock();
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

    /// Accounts a written batch's physical deletions of versions (`bytes` of them).
    pub fn note_drops(&self, ops: &[crate::kv::BatchOp], bytes: u64) {
        self.account_drops(bytes, dropped_span(ops));
    }

    /// Adds `bytes` of dropped versions, and the span of data ids that lost blocks.
    pub fn account_drops(&self, bytes: u64, span: Option<(DataId, DataId)>) {
        let mut dr = self.dropped.lock();
        dr.bytes = dr.bytes.saturating_add(bytes);
        if let Some((lo, hi)) = span {
            dr.data_ids = Some(
                dr.data_ids
                    .map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))),
            );
        }
    }

    /// What was dropped since the last [`Store::take_dropped`].
    /// How many epochs are retired (deleted snapshots and replaced trees not yet reclaimed,
    /// or kept as shared bases).
    pub fn retired_count(&self) -> usize {
        self.epochs.read().retired_count()
    }

    pub fn dropped(&self) -> Dropped {
        self.dropped.lock().clone()
    }

    /// Takes (and resets) the account of dropped versions.
    pub fn take_dropped(&self) -> Dropped {
        std::mem::take(&mut *self.dropped.lock())
    }

    /// Filesystem commits since the store opened (reclaim's own batches excluded).
    pub fn commit_count(&self) -> u64 {
        self.cache.lock().generation
    }

    /// Change-index entries view `epoch` committed since the store opened.
    pub fn writes_of(&self, epoch: Epoch) -> u64 {
        self.cache.lock().writes.get(&epoch).copied().unwrap_or(0)
    }

    /// Forgets nothing but makes in-flight readers' results stale (after a failed write).
    pub fn cache_bump(&self) {
        self.cache.lock().generation += 1;
    }

    /// Free bytes on the store's device (None for memory stores).
    pub fn free_bytes(&self) -> Option<u64> {
        let path = self.kv.maintenance()?.path()?;
        let s = nix::sys::statvfs::statvfs(path).ok()?;
        Some(
            s.blocks_available()
                .saturating_mul(s.fragment_size().max(1)),
        )
    }

    /// Refuses `incoming` new bytes of file data (ENOSPC) when they would eat into the space
    /// the kv backend needs to flush and to apply deletions: a full disk must stay
    /// recoverable by deleting files and snapshots.
    pub fn check_space(&self, incoming: u64) -> FsResult<()> {
        let reserve = self.kv.maintenance().map_or(0, |m| m.reserve_bytes());
        if reserve == 0 {
            return Ok(());
        }
        match self.free_bytes() {
            Some(free) if free < reserve.saturating_add(incoming) => Err(FsError::NoSpace),
            _ => Ok(()),
        }
    }

    /// Held across every read-modify-write batch.
    pub fn write_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.write_lock.lock()
    }

    /// Allocates a fresh inode / data id; the new counter goes into `batch`.
    /// Call with the write lock held.
    pub fn alloc_id(&self, batch: &mut Batch) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        batch.put(
            Space::Meta,
            keys::setting("next_id"),
            (id + 1).to_be_bytes().to_vec(),
        );
        id
    }

    fn alloc_epoch(&self, batch: &mut Batch) -> Epoch {
        let e = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        batch.put(
            Space::Meta,
            keys::setting("next_epoch"),
            (e + 1).to_be_bytes().to_vec(),
        );
        Epoch::new(e)
    }

    /// A copy of the whole epoch tree (for checks).
    pub fn epochs_snapshot(&self) -> HashMap<Epoch, EpochRecord> {
        self.epochs.read().to_map()
    }

    pub fn epoch(&self, e: Epoch) -> Option<EpochRecord> {
        self.epochs.read().get(e).cloned()
    }

    /// The chain of epochs visible from `e`: `e` and its ancestors. O(depth).
    pub fn chain(&self, e: Epoch) -> Chain {
        let members = self.epochs.read().chain_members(e);
        Chain { epoch: e, members }
    }

    /// The chain of `e`, cut from `hint` when `e` is in it (a restore or copy from one of the
    /// container's own snapshots: a copy of a slice instead of a walk up the tree).
    pub fn chain_via(&self, e: Epoch, hint: Option<&Chain>) -> Chain {
        if let Some(h) = hint {
            if let Ok(pos) = h.members.binary_search(&e) {
                return Chain {
                    epoch: e,
                    members: h.members[..=pos].to_vec(),
                };
            }
        }
        self.chain(e)
    }

    /// The current head chain of `container`.
    pub fn head(&self, container: &ContainerId) -> FsResult<Arc<Chain>> {
        self.heads
            .read()
            .get(container)
            .cloned()
            .ok_or(FsError::Stale)
    }

    /// Records `head`, a new child of the frozen epoch whose chain is `parent`, as the head of
    /// `container`: its chain is the parent's plus itself (ids grow down the tree), O(1)
    /// lookups instead of a walk up the tree.
    fn set_head_below(&self, container: &ContainerId, head: Epoch, parent: &Chain) {
        let mut members = Vec::with_capacity(parent.members.len() + 1);
        members.extend_from_slice(&parent.members);
        members.push(head);
        let chain = Arc::new(Chain {
            epoch: head,
            members,
        });
        self.heads.write().insert(container.clone(), chain);
    }

    /// Records a new head for `container` (after its batch is written).
    fn set_head(&self, container: &ContainerId, head: Epoch) {
        let chain = Arc::new(self.chain(head));
        self.heads.write().insert(container.clone(), chain);
    }
}

/// The lowest and highest data id whose blocks `ops` delete, if any.
pub fn dropped_span(ops: &[crate::kv::BatchOp]) -> Option<(DataId, DataId)> {
    let mut span: Option<(DataId, DataId)> = None;
    for op in ops {
        if let crate::kv::BatchOp::Delete(Space::Data, k) = op {
            if let Some((d, _)) = keys::split_block(k) {
                span = Some(span.map_or((d, d), |(lo, hi)| (lo.min(d), hi.max(d))));
            }
        }
    }
    span
}

/// Puts one version of `base` written by `epoch`, with its change-index entry, into `batch`.
/// Every versioned write goes through here so the change index always matches the versions.
pub fn put_version(batch: &mut Batch, space: Space, base: &[u8], epoch: Epoch, value: Vec<u8>) {
    let size = value.len() as u64;
    batch.put(space, keys::versioned(base, epoch), value);
    batch.put(
        Space::Meta,
        keys::change(epoch, space, base),
        size.to_be_bytes().to_vec(),
    );
}

/// Physically removes `epoch`'s own version of `base` and its change-index entry. Only valid
/// when no view other than `epoch` itself can resolve to that version (a head's own versions).
pub fn drop_version(batch: &mut Batch, space: Space, base: &[u8], epoch: Epoch) {
    batch.delete(space, keys::versioned(base, epoch));
    batch.delete(Space::Meta, keys::change(epoch, space, base));
}
