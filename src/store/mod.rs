//! The store: settings, the epoch tree and containers, over any [`Kv`].
//!
//! Invariant: epoch ids come from one monotonic counter, so a child's id is always greater
//! than its parent's; the whole tree is cached in memory (it is small).

mod catalog;
mod container;
mod dropped;
mod epochs;
mod gauge;
mod linkindex;
mod quota;
mod receive;
mod reclaim;
mod runtime;
mod snapindex;
mod snapshot;
mod space;
mod transfer;
mod versions;

pub use container::{check_container_name, ContainerRecord};
pub use dropped::{dropped_span, Dropped};
pub use epochs::EpochTree;
pub use quota::{Own, OwnDelta, Quota};
pub use receive::{ReceiveRecord, Received};
pub use reclaim::{ReclaimControl, ReclaimProgress, ReclaimStats};
pub use runtime::{RuntimeKind, RuntimeSnapshot};
pub use snapshot::{check_alias, SnapshotInfo, SnapshotRecord};
pub use space::{SnapshotSpace, StoreSpace};
pub use transfer::{ResumeToken, Sent};
pub use versions::{cacheable, MetaCache};

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{FsError, FsResult};
use crate::ids::{ContainerId, Epoch, Ino};
use crate::keys;
use crate::kv::{Batch, Dir, Kv, KvRead, Space};

/// On-disk format version of a store written by this build: 3, file blocks of a store on
/// object storage may be references into segment objects too; 2, blocks of an embedded
/// store may be references into segment files (`kv::segments`); 1, every block is in the
/// kv. A build reads older formats and moves a store it opens for writing to its own.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build opens (a writable open moves it to [`FORMAT_VERSION`]).
pub const MIN_FORMAT_VERSION: u32 = 1;
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
    #[error("store has format version {found}; this snapfs reads versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION}")]
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
    #[error("bad snapshot stream: {0}")]
    BadStream(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no receive into container {0:?} waits to be resumed")]
    NoReceive(String),
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

/// The epochs in exactly one of two chains: where their trees can differ.
pub fn only_one(a: &Chain, b: &Chain) -> Vec<Epoch> {
    let (ma, mb) = (a.members(), b.members());
    ma.iter()
        .filter(|e| mb.binary_search(e).is_err())
        .chain(mb.iter().filter(|e| ma.binary_search(e).is_err()))
        .copied()
        .collect()
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

/// The store: one [`Kv`] and the in-memory state over it, in four lock groups, each
/// guarding one concern: `Catalog` (epoch tree, head chains, snapshot indexes),
/// `Versions` (write lock, id counters, metadata cache), `accounts` (quotas, usage,
/// sizes; see `quota.rs`) and `Reclaim` (reclaim's run, state, progress and the account
/// of dropped versions).
///
/// Lock order (a lock may be taken only while holding locks listed before it):
/// 1. `reclaim.run` (a reclaim run, or a reader pausing reclaim: diffs, history);
/// 2. `versions.write_lock` (every read-modify-write batch);
/// 3. `reclaim.state`;
/// 4. the leaves, never two at once: `catalog.epochs`, `catalog.heads`,
///    `catalog.last_names`, `catalog.snapshot_summaries`, `versions.cache`, `accounts`,
///    `reclaim.progress`, `reclaim.dropped`, `gauge`, `receiving`.
///
/// `reclaim.state` is held while reading `versions.cache` (a head's write count) and then
/// while changing `catalog.epochs` (`requeue_pruned_heads`). Every leaf is held only for a
/// map update or a copy, except `catalog.last_names` and `catalog.snapshot_summaries`,
/// held across kv reads (under the write lock). The service's mounts lock is taken before
/// any of these (see ARCHITECTURE.md).
pub struct Store {
    kv: Arc<dyn Kv>,
    block_size: u32,
    catalog: catalog::Catalog,
    versions: versions::Versions,
    /// Quotas, usage and epoch sizes (see `quota.rs`): a leaf lock.
    accounts: Mutex<quota::Accounts>,
    reclaim: reclaim::Reclaim,
    /// Free space on the store's device, as last measured (a leaf lock; see `gauge.rs`).
    gauge: Mutex<gauge::SpaceGauge>,
    /// Names of the containers a receive is running into (a leaf lock; see `receive.rs`).
    receiving: Mutex<std::collections::HashSet<String>>,
}

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
        if !(MIN_FORMAT_VERSION as u64..=FORMAT_VERSION as u64).contains(&format) {
            return Err(StoreError::Format {
                found: format.min(u32::MAX as u64) as u32,
            });
        }
        if format < FORMAT_VERSION as u64 && !kv.status().is_some_and(|s| s.read_only()) {
            // From now on blocks may be written as segment references, which an older
            // snapfs cannot read: it must refuse the store by its format, not fail later.
            let mut b = Batch::new();
            b.put(
                Space::Meta,
                keys::setting("format"),
                (FORMAT_VERSION as u64).to_be_bytes().to_vec(),
            );
            kv.write(b, true)?;
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
            catalog: catalog::Catalog::new(epochs),
            versions: versions::Versions::new(next_id, next_epoch),
            accounts: Mutex::new(quota::Accounts::default()),
            reclaim: reclaim::Reclaim::default(),
            gauge: Mutex::new(gauge::SpaceGauge::default()),
            receiving: Mutex::new(std::collections::HashSet::new()),
        };
        for rec in store.containers()? {
            if rec.deleted_at.is_none() {
                store.set_head(&rec.id, rec.head);
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
