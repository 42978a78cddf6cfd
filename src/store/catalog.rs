//! The catalog: the epoch tree, each container's head chain, and the in-memory indexes of
//! snapshot names and counts.
//!
//! [`Catalog`] is one lock group of [`Store`] (see "Lock order" there).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::snapindex::SnapSummary;
use super::{Chain, EpochRecord, EpochTree, Store};
use crate::error::{FsError, FsResult};
use crate::ids::{ContainerId, Epoch};

/// What the store knows about its epochs and containers in memory: written only under the
/// write lock (after the batch that persists the change), read by anyone.
///
/// Locks: each field is its own lock and a leaf (taken under the write lock or alone, and
/// `epochs` also under `Reclaim::state`): nothing is taken while holding one of them, and
/// no two of them are held together.
/// The tree and the head chains are private to this file: other files reach the tree
/// through [`Catalog::read_tree`] / [`Catalog::edit_tree`], whose guard cannot escape.
pub(super) struct Catalog {
    /// The whole epoch tree (it is small) with its children and dirty indexes.
    epochs: RwLock<EpochTree>,
    /// Each container's current head chain (what its mounts read and write).
    heads: RwLock<HashMap<ContainerId, Arc<Chain>>>,
    /// Per container, the last snapshot name base and suffix handed out (`unique_name`).
    pub(super) last_names: Mutex<HashMap<ContainerId, (String, u32)>>,
    /// Per container, how many snapshots it has and the newest's time (filled on first
    /// use; see `snapshot_summary`).
    pub(super) snapshot_summaries: Mutex<HashMap<ContainerId, SnapSummary>>,
}

impl Catalog {
    pub(super) fn new(epochs: HashMap<Epoch, EpochRecord>) -> Catalog {
        Catalog {
            epochs: RwLock::new(EpochTree::new(epochs)),
            heads: RwLock::new(HashMap::new()),
            last_names: Mutex::new(HashMap::new()),
            snapshot_summaries: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the epoch tree under its read lock, held for `f` only (`f` must take no
    /// other lock: the tree is a leaf).
    pub(super) fn read_tree<R>(&self, f: impl FnOnce(&EpochTree) -> R) -> R {
        f(&self.epochs.read())
    }

    /// Runs `f` on the epoch tree under its write lock, held for `f` only (`f` must take no
    /// other lock: the tree is a leaf).
    pub(super) fn edit_tree<R>(&self, f: impl FnOnce(&mut EpochTree) -> R) -> R {
        f(&mut self.epochs.write())
    }
}

impl Store {
    /// How many epochs are retired (deleted snapshots and replaced trees not yet reclaimed,
    /// or kept as shared bases).
    pub fn retired_count(&self) -> usize {
        self.catalog.epochs.read().retired_count()
    }

    /// A copy of the whole epoch tree (for checks).
    pub fn epochs_snapshot(&self) -> HashMap<Epoch, EpochRecord> {
        self.catalog.epochs.read().to_map()
    }

    pub fn epoch(&self, e: Epoch) -> Option<EpochRecord> {
        self.catalog.epochs.read().get(e).cloned()
    }

    /// The chain of epochs visible from `e`: `e` and its ancestors. O(depth).
    pub fn chain(&self, e: Epoch) -> Chain {
        let members = self.catalog.epochs.read().chain_members(e);
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
        self.catalog
            .heads
            .read()
            .get(container)
            .cloned()
            .ok_or(FsError::Stale)
    }

    /// Records `head`, a new child of the frozen epoch whose chain is `parent`, as the head of
    /// `container`: its chain is the parent's plus itself (ids grow down the tree), O(1)
    /// lookups instead of a walk up the tree.
    pub(super) fn set_head_below(&self, container: &ContainerId, head: Epoch, parent: &Chain) {
        let mut members = Vec::with_capacity(parent.members.len() + 1);
        members.extend_from_slice(&parent.members);
        members.push(head);
        let chain = Arc::new(Chain {
            epoch: head,
            members,
        });
        self.catalog.heads.write().insert(container.clone(), chain);
    }

    /// Records a new head for `container` (after its batch is written).
    pub(super) fn set_head(&self, container: &ContainerId, head: Epoch) {
        let chain = Arc::new(self.chain(head));
        self.catalog.heads.write().insert(container.clone(), chain);
    }

    /// Forgets the head chain of deleted container `id`.
    pub(super) fn remove_head(&self, id: &ContainerId) {
        self.catalog.heads.write().remove(id);
    }

    /// Takes epoch `gone`, just removed from the middle of the tree, out of every head chain
    /// that held it (the rest of each chain is unchanged: its other members are the same
    /// epochs, the one below `gone` now hanging from the one above it).
    pub(super) fn drop_from_head_chains(&self, gone: Epoch) {
        let mut heads = self.catalog.heads.write();
        for chain in heads.values_mut() {
            if chain.contains(gone) {
                let members = chain
                    .members()
                    .iter()
                    .copied()
                    .filter(|&e| e != gone)
                    .collect();
                *chain = Arc::new(Chain {
                    epoch: chain.epoch,
                    members,
                });
            }
        }
    }
}
