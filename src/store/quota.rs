//! Container quotas and the space accounting they rest on.
//!
//! Two limits per container, after ZFS's `refquota` and `quota`:
//! - `bytes` (API `quota_bytes`): the file data the live tree references: the sum of its
//!   files' stored block bytes (`Inode::alloc`, what `du` counts), shared with snapshots or
//!   not. This is the container's *usage*, kept per epoch (`keys::usage`): every write batch
//!   adds what it changed (`Tx::commit`), a snapshot's new head starts at the frozen tree's
//!   usage, a restore at the snapshot's. No scan per write.
//! - `including_snapshots` (API `quota_including_snapshots_bytes`): what the container's
//!   trees hold together, its `bytes_used`: every version its live tree's epochs and its
//!   snapshots wrote (data and metadata, from the change index). Kept per epoch in memory:
//!   the head's own size moves with each write batch (one read per version the batch
//!   replaces, only for containers with this limit), frozen epochs' sizes change only when
//!   reclaim moves versions, which forgets the sizes it touched.
//!
//! A write that would take a container past a limit fails with EDQUOT before anything is
//! written; nothing that frees space (truncate, unlink, snapshot deletion) is ever refused.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{scan_visible, Store, StoreError};
use crate::codec::{self, Inode, Kind};
use crate::error::{FsError, FsResult};
use crate::ids::{ContainerId, Epoch};
use crate::keys;
use crate::kv::{Batch, BatchOp, Dir, Space};

/// A container's limits; `None` is no limit.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most bytes of file data the live tree may reference.
    pub bytes: Option<u64>,
    /// Most bytes the live tree and the snapshots may hold together (`bytes_used`).
    pub including_snapshots: Option<u64>,
}

impl Quota {
    pub fn is_none(&self) -> bool {
        self.bytes.is_none() && self.including_snapshots.is_none()
    }
}

/// What an epoch holds on its own: the bytes of the versions it wrote (data and metadata,
/// from the change index) and how many of those are inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Own {
    pub bytes: u64,
    pub inodes: u64,
}

/// How a write batch changes its head's [`Own`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnDelta {
    pub bytes: i64,
    pub inodes: i64,
}

/// Is change-index key `k` an inode's (Meta space, inode table)?
pub(super) fn is_inode_change(k: &[u8]) -> bool {
    matches!(
        keys::split_change(k),
        Some((_, Space::Meta, base)) if base.first() == Some(&keys::TAG_INODE)
    )
}

/// The in-memory side of the accounting (all under one lock, taken briefly).
#[derive(Default)]
pub(super) struct Accounts {
    quotas: HashMap<ContainerId, Quota>,
    /// Usage (file data bytes) of the tree at each epoch, once known.
    usage: HashMap<Epoch, u64>,
    /// Own size and inode count of each epoch, once computed; a head's is kept by each
    /// write batch from then on (one read per version the batch writes).
    sizes: HashMap<Epoch, Own>,
    /// Epochs of each container's snapshots, once listed (forgotten on any change of the
    /// epoch tree).
    snap_epochs: HashMap<ContainerId, Vec<Epoch>>,
}

impl Store {
    /// The limits of `container` (none when never set).
    pub fn quota(&self, container: &ContainerId) -> FsResult<Quota> {
        if let Some(q) = self.accounts.lock().quotas.get(container) {
            return Ok(*q);
        }
        let q = match self.kv.get(Space::Meta, &keys::quota(container))? {
            Some(v) => codec::decode_plain(&v)?,
            None => Quota::default(),
        };
        self.accounts.lock().quotas.insert(container.clone(), q);
        Ok(q)
    }

    /// Sets the limits of live container `container`. A limit below what the container
    /// already uses is accepted (as ZFS does): writes fail until enough is freed.
    pub fn set_quota(&self, container: &ContainerId, q: Quota) -> Result<(), StoreError> {
        let _g = self.write_lock();
        self.require_live(container)?;
        let mut b = Batch::new();
        if q.is_none() {
            b.delete(Space::Meta, keys::quota(container));
        } else {
            b.put(Space::Meta, keys::quota(container), codec::encode_plain(&q));
        }
        self.kv.write(b, true)?;
        self.accounts.lock().quotas.insert(container.clone(), q);
        Ok(())
    }

    /// Forgets a deleted container's limits.
    pub(super) fn drop_quota(&self, b: &mut Batch, container: &ContainerId) {
        b.delete(Space::Meta, keys::quota(container));
        self.accounts.lock().quotas.remove(container);
    }

    /// File data bytes the tree at `epoch` references (its files' stored blocks).
    pub fn usage(&self, epoch: Epoch) -> FsResult<u64> {
        if let Some(u) = self.accounts.lock().usage.get(&epoch) {
            return Ok(*u);
        }
        let u = match self.kv.get(Space::Meta, &keys::usage(epoch))? {
            Some(v) => <[u8; 8]>::try_from(&v[..])
                .map(u64::from_be_bytes)
                .map_err(|_| FsError::Corrupt(format!("usage of epoch {epoch}")))?,
            // A store from before the accounting: counted once, from the inodes.
            None => self.count_usage(epoch)?,
        };
        self.accounts.lock().usage.insert(epoch, u);
        Ok(u)
    }

    /// Counts the usage of the tree at `epoch` from its inodes (for stores written before
    /// the accounting, and for fsck). O(inode versions in the store).
    pub fn count_usage(&self, epoch: Epoch) -> FsResult<u64> {
        let chain = self.chain(epoch);
        let mut total = 0u64;
        let mut err = None;
        scan_visible(
            self.kv.as_ref(),
            Space::Meta,
            &[keys::TAG_INODE],
            &[keys::TAG_INODE + 1],
            &chain,
            &mut |_, v| {
                match codec::decode::<Inode>(v) {
                    Ok(codec::Version::Live(i)) if i.kind == Kind::File => total += i.alloc,
                    Ok(_) => {}
                    Err(e) => {
                        err = Some(e);
                        return false;
                    }
                }
                true
            },
        )?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(total),
        }
    }

    /// Writes the usage of `epoch` into `b`; [`Store::note_usage`] after the batch is in.
    pub(crate) fn put_usage(&self, b: &mut Batch, epoch: Epoch, usage: u64) {
        b.put(
            Space::Meta,
            keys::usage(epoch),
            usage.to_be_bytes().to_vec(),
        );
    }

    pub(crate) fn note_usage(&self, epoch: Epoch, usage: u64) {
        self.accounts.lock().usage.insert(epoch, usage);
    }

    /// A new head `head` starts with the tree of `from`: same usage (if known; else it is
    /// counted when first needed).
    pub(super) fn inherit_usage(&self, b: &mut Batch, head: Epoch, from: Epoch) -> FsResult<()> {
        let u = self.usage(from)?;
        self.put_usage(b, head, u);
        Ok(())
    }

    /// Bytes every version the container's trees hold (its live tree's epochs and its
    /// snapshots'): what `quota_including_snapshots_bytes` limits.
    pub fn bytes_used(&self, container: &ContainerId) -> FsResult<u64> {
        let mut epochs: BTreeSet<Epoch> = self.snapshot_epochs(container)?.into_iter().collect();
        // A live container's tree: its cached head chain (a deleted one has none).
        if let Ok(head) = self.head(container) {
            epochs.extend(head.members().iter().copied());
        }
        let mut total = 0u64;
        for e in epochs {
            total += self.cached_size(e)?;
        }
        Ok(total)
    }

    /// Bytes the snapshots of `container` wrote (the sum of their `size`).
    pub fn snapshots_bytes(&self, container: &ContainerId) -> FsResult<u64> {
        let mut total = 0u64;
        for e in self.snapshot_epochs(container)? {
            total += self.cached_size(e)?;
        }
        Ok(total)
    }

    fn snapshot_epochs(&self, container: &ContainerId) -> FsResult<Vec<Epoch>> {
        if let Some(v) = self.accounts.lock().snap_epochs.get(container) {
            return Ok(v.clone());
        }
        let v: Vec<Epoch> = self
            .snapshots(container)?
            .iter()
            .map(|s| s.record.epoch)
            .collect();
        self.accounts
            .lock()
            .snap_epochs
            .insert(container.clone(), v.clone());
        Ok(v)
    }

    /// The own size of epoch `e` (cached; computed from its change index once).
    pub(super) fn cached_size(&self, e: Epoch) -> FsResult<u64> {
        Ok(self.cached_own(e)?.bytes)
    }

    /// What epoch `e` holds on its own (cached; computed from its change index once). A
    /// caller that must not race a write batch of a head holds the write lock.
    pub(super) fn cached_own(&self, e: Epoch) -> FsResult<Own> {
        if let Some(s) = self.accounts.lock().sizes.get(&e) {
            return Ok(*s);
        }
        let s = self.epoch_own(e)?;
        self.accounts.lock().sizes.insert(e, s);
        Ok(s)
    }

    /// Is what head `head` holds on its own known (so each write batch must keep it)?
    pub(crate) fn own_known(&self, head: Epoch) -> bool {
        self.accounts.lock().sizes.contains_key(&head)
    }

    /// How a batch about to be written changes head epoch `head`'s [`Own`]: each version it
    /// writes or drops there, against the one it replaces. One read per version (neighbouring
    /// ones, a write's blocks, in one scan: [`crate::kv::read_keys`]), so only for containers
    /// with a limit on it or whose own usage was asked for (see [`Store::own_known`]: also
    /// once `df`, the metrics or a container's bytes used counted the head, which makes it
    /// every write of a daemon in use); none for the keys under `fresh` ids (allocated by
    /// this very batch: they replace nothing).
    pub(crate) fn size_delta(
        &self,
        head: Epoch,
        ops: &[BatchOp],
        fresh: &[u64],
    ) -> FsResult<OwnDelta> {
        let prefix = keys::epoch_changes(head);
        let changes: Vec<(&[u8], Option<u64>)> = ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put(Space::Meta, k, v) if k.starts_with(&prefix) => {
                    Some((&k[..], Some(change_bytes(v))))
                }
                BatchOp::Delete(Space::Meta, k) if k.starts_with(&prefix) => Some((&k[..], None)),
                _ => None,
            })
            .collect();
        let is_fresh = |key: &[u8]| {
            keys::split_change(key)
                .and_then(|(_, _, base)| keys::owner_id(base))
                .is_some_and(|id| fresh.contains(&id))
        };
        let mut to_read: Vec<&[u8]> = changes
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !is_fresh(k))
            .collect();
        to_read.sort_unstable();
        to_read.dedup();
        let mut stored: HashMap<&[u8], u64> = HashMap::new();
        crate::kv::read_keys(
            &*self.kv,
            Space::Meta,
            &to_read,
            keys::change_run,
            |k, v| {
                if let Some(v) = v {
                    stored.insert(k, change_bytes(v));
                }
            },
        )?;
        let mut seen: HashMap<&[u8], Option<u64>> = HashMap::new();
        let mut delta = OwnDelta::default();
        for (key, new) in changes {
            let old = match seen.get(key) {
                Some(s) => *s,
                None => stored.get(key).copied(),
            };
            delta.bytes += new.unwrap_or(0) as i64 - old.unwrap_or(0) as i64;
            if is_inode_change(key) {
                delta.inodes += i64::from(new.is_some()) - i64::from(old.is_some());
            }
            seen.insert(key, new);
        }
        Ok(delta)
    }

    /// After a write batch in head `head`: what it holds on its own moved by `delta` (when
    /// it was computed), or is unknown now.
    pub(crate) fn note_size(&self, head: Epoch, delta: Option<OwnDelta>) {
        let mut a = self.accounts.lock();
        match delta {
            Some(d) => {
                if let Some(s) = a.sizes.get_mut(&head) {
                    s.bytes = (s.bytes as i64 + d.bytes).max(0) as u64;
                    s.inodes = (s.inodes as i64 + d.inodes).max(0) as u64;
                }
            }
            None => {
                a.sizes.remove(&head);
            }
        }
    }

    /// Reclaim wrote `ops`: the epochs whose versions it moved or dropped have new sizes.
    pub(super) fn forget_sizes(&self, ops: &[BatchOp]) {
        let mut a = self.accounts.lock();
        if a.sizes.is_empty() {
            return;
        }
        for op in ops {
            let k = match op {
                BatchOp::Put(Space::Meta, k, _) | BatchOp::Delete(Space::Meta, k) => k,
                _ => continue,
            };
            if let Some((e, _, _)) = keys::split_change(k) {
                a.sizes.remove(&e);
            }
        }
    }

    /// The epoch tree changed (snapshot, restore, copy, deletion, reclaim): lists of
    /// snapshot epochs are read again when next needed.
    pub(super) fn forget_snapshot_epochs(&self) {
        self.accounts.lock().snap_epochs.clear();
    }

    /// Checks a write batch of `container`'s head `head` against its limits: `usage` is the
    /// head's usage after the batch (when the batch changes it), `size_delta` the change of
    /// the head's own size (when computed). Errors with `Quota` if a limit would be passed.
    pub(crate) fn check_quota(
        &self,
        container: &ContainerId,
        q: &Quota,
        usage: Option<(u64, u64)>,
        size_delta: Option<i64>,
    ) -> FsResult<()> {
        if let (Some(limit), Some((before, after))) = (q.bytes, usage) {
            if after > before && after > limit {
                return Err(FsError::Quota);
            }
        }
        if let (Some(limit), Some(d)) = (q.including_snapshots, size_delta) {
            if d > 0 && self.bytes_used(container)?.saturating_add(d as u64) > limit {
                return Err(FsError::Quota);
            }
        }
        Ok(())
    }

    /// (usage, limit) for `statfs`: the tighter of the two limits, if any.
    pub fn quota_room(&self, container: &ContainerId, head: Epoch) -> FsResult<Option<(u64, u64)>> {
        let q = self.quota(container)?;
        let mut best: Option<(u64, u64)> = None;
        if let Some(limit) = q.bytes {
            best = Some((self.usage(head)?, limit));
        }
        if let Some(limit) = q.including_snapshots {
            let used = self.bytes_used(container)?;
            let room = |(u, l): (u64, u64)| l.saturating_sub(u);
            if best.is_none_or(|b| room((used, limit)) < room(b)) {
                best = Some((used, limit));
            }
        }
        Ok(best)
    }

    /// The usage stored for `epoch`, if any (None: a store from before the accounting).
    pub fn stored_usage(&self, epoch: Epoch) -> FsResult<Option<u64>> {
        Ok(self
            .kv
            .get(Space::Meta, &keys::usage(epoch))?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(u64::from_be_bytes))
    }

    /// Sets the usage of `epoch` (fsck --repair, from a count of its inodes).
    pub fn set_usage(&self, epoch: Epoch, usage: u64) -> FsResult<()> {
        let _g = self.write_lock();
        let mut b = Batch::new();
        self.put_usage(&mut b, epoch, usage);
        self.kv.write(b, true)?;
        self.note_usage(epoch, usage);
        Ok(())
    }

    /// Usage counters of every epoch in the store, for fsck: (epoch, stored value).
    pub fn stored_usages(&self) -> FsResult<Vec<(Epoch, u64)>> {
        let mut out = Vec::new();
        self.kv.scan(
            Space::Meta,
            &[keys::TAG_USAGE],
            &[keys::TAG_USAGE + 1],
            Dir::Forward,
            &mut |k, v| {
                if let (Some(e), Ok(b)) = (keys::split_usage(k), <[u8; 8]>::try_from(v)) {
                    out.push((e, u64::from_be_bytes(b)));
                }
                true
            },
        )?;
        Ok(out)
    }
}

/// The bytes a change record counts (its value: 8 bytes, big-endian).
fn change_bytes(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes)
}
