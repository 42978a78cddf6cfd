//! The one owner of a container's snapshot lifecycle: snapshot, restore (whole or some
//! paths), copy, delete, alias and expiry.
//!
//! Every caller goes through a [`Container`]: the REST API and the CLI (through the service),
//! the `.snapshots` gestures of a mount (`mkdir`, `rmdir`, `ln -s`, `mv`, `setfattr`), the
//! background expiry, and the containerd snapshotter (`service/snapshotter`). Each operation
//! keeps one order,
//! written once here:
//! 1. the kernel's cached writes of a mounted container go into the head first
//!    ([`MountHooks::flush_writes`]): a snapshot, copy or restore contains every write that
//!    returned before it was asked for;
//! 2. the store changes in one batch (`Store::snapshot`, `restore`, `copy_container`, ...);
//! 3. the mount drops what the kernel caches of what changed: after a restore, the files that
//!    differ between the two trees (found in the change index) get new kernel inode numbers
//!    (handed out under the renumbering lock held across the store's switch; descriptors on
//!    them go stale) while directories keep theirs, so what is mounted on them inside a
//!    container (/proc, bind-mounted /etc/hosts) stays; changed entries and attributes are
//!    dropped; a deleted snapshot's open files lose their pages.
//!
//! A container is either mounted — its [`Container`] then holds the mount's [`MountHooks`]
//! (the volume registers itself when it is mounted) — or not, and then steps 1 and 3 have
//! nothing to do. The service keeps one `Container` per mounted container and makes a fresh
//! one for any other.

use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use crate::codec::Ts;
use crate::error::FsResult;
use crate::ids::{ContainerId, Epoch};
use crate::store::{ContainerRecord, SnapshotInfo, Store, StoreError};

use super::{Fs, PathRestore};

/// What a mount of a container does around lifecycle operations. Implemented by the volume
/// (`fs/volume/kernel.rs`), which carries the requests to the kernel through the mount
/// adapter's [`KernelLink`](super::KernelLink).
pub trait MountHooks: Send + Sync {
    /// Makes every write the kernel has accepted for the mount part of the head (with the
    /// writeback cache, returned writes may still sit in the kernel's page cache). Fails
    /// rather than let a snapshot miss them.
    fn flush_writes(&self) -> FsResult<()>;

    /// Replaces the mounted tree with snapshot `snap`'s: flushes, runs `switch` (the store's
    /// restore), then makes the kernel forget what differs between the two trees, and only
    /// that: changed files get new kernel numbers (descriptors open on them go stale), changed
    /// directories keep theirs (what is mounted on them, such as a container's /proc or
    /// bind-mounted /etc/hosts, stays), changed entries and attributes are dropped.
    fn switch_tree(
        &self,
        snap: &SnapshotInfo,
        switch: &mut dyn FnMut() -> Result<SnapshotInfo, StoreError>,
    ) -> Result<SnapshotInfo, StoreError>;

    /// Restores `paths` of the head from `snap` (flushing first): the inodes it replaces get
    /// new kernel numbers, and the kernel drops what it cached of them and of their names.
    fn restore_paths(&self, snap: &SnapshotInfo, paths: &[Vec<u8>]) -> FsResult<PathRestore>;

    /// One of the container's snapshots is gone: the kernel drops what it caches of the
    /// snapshot's open files. With `wait`, returns once it has (a deletion through the API);
    /// a deletion by `rmdir` in the mount cannot wait (the kernel holds the snapshot's inode
    /// during the call).
    fn snapshot_gone(&self, epoch: Epoch, wait: bool);
}

/// One container of the store, as the lifecycle sees it (see the module documentation).
pub struct Container {
    store: Arc<Store>,
    id: ContainerId,
    /// The mount's hooks while mounted (weak: the mount owns the volume, not the other way).
    mount: RwLock<Option<Weak<dyn MountHooks>>>,
}

impl Container {
    /// The container with id `id` (not checked here: every store call checks it).
    pub fn new(store: Arc<Store>, id: &ContainerId) -> Arc<Container> {
        Arc::new(Container {
            store,
            id: id.clone(),
            mount: RwLock::new(None),
        })
    }

    pub fn id(&self) -> &ContainerId {
        &self.id
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The head as a view of its own (for a volume, or a path restore of an unmounted
    /// container).
    pub fn head(&self) -> FsResult<Fs> {
        Fs::new(self.store.clone(), &self.id)
    }

    /// Registers the mount's hooks; called once by the volume it mounts.
    pub fn attach(&self, hooks: Weak<dyn MountHooks>) {
        *self.mount.write() = Some(hooks);
    }

    fn mounted(&self) -> Option<Arc<dyn MountHooks>> {
        self.mount.read().as_ref().and_then(Weak::upgrade)
    }

    /// Step 1 alone: what the kernel holds for a mounted container goes into the head (before
    /// a diff or history reads the live tree).
    pub fn flush_writes(&self) -> FsResult<()> {
        match self.mounted() {
            Some(m) => m.flush_writes(),
            None => Ok(()),
        }
    }

    /// Takes a snapshot of the live tree. O(1).
    pub fn snapshot(
        &self,
        alias: Option<&str>,
        expires_at: Option<Ts>,
    ) -> Result<SnapshotInfo, StoreError> {
        self.flush_writes()?;
        self.store.snapshot(&self.id, alias, expires_at)
    }

    /// Restores the whole tree to snapshot `key` (name or alias); later snapshots stay. A
    /// mounted container switches trees in place: descriptors on the old tree go stale.
    pub fn restore(&self, key: &str) -> Result<SnapshotInfo, StoreError> {
        // Unknown snapshots are refused before anything changes (a mount's head generation
        // included).
        let Some(snap) = self.store.find_snapshot(&self.id, key)? else {
            return Err(StoreError::NoSnapshot(key.to_string()));
        };
        let cid = &self.id;
        match self.mounted() {
            Some(m) => m.switch_tree(&snap, &mut || self.store.restore(cid, key)),
            None => self.store.restore(cid, key),
        }
    }

    /// Restores only `paths` (absolute, raw bytes) to their state in `snap`, in one batch;
    /// everything else stays (see `Fs::restore_paths`).
    pub fn restore_paths(&self, snap: &SnapshotInfo, paths: &[Vec<u8>]) -> FsResult<PathRestore> {
        match self.mounted() {
            Some(m) => m.restore_paths(snap, paths),
            None => self.head()?.restore_paths(snap, paths),
        }
    }

    /// A new container `name` from snapshot `key`, or from the live tree when `key` is None.
    /// O(1).
    pub fn copy(
        &self,
        key: Option<&str>,
        name: &str,
        project_id: Option<&str>,
    ) -> Result<ContainerRecord, StoreError> {
        if key.is_none() {
            self.flush_writes()?;
        }
        self.store.copy_container(&self.id, key, name, project_id)
    }

    /// Deletes snapshot `key` (name or alias): hidden at once, reclaimed in the background.
    /// `wait`: see [`MountHooks::snapshot_gone`].
    pub fn delete_snapshot(&self, key: &str, wait: bool) -> Result<SnapshotInfo, StoreError> {
        let gone = self.store.delete_snapshot(&self.id, key)?;
        if let Some(m) = self.mounted() {
            m.snapshot_gone(gone.record.epoch, wait);
        }
        Ok(gone)
    }

    /// Sets (or with None, drops) the alias of snapshot `key`.
    pub fn set_alias(&self, key: &str, alias: Option<&str>) -> Result<SnapshotInfo, StoreError> {
        self.store.set_alias(&self.id, key, alias)
    }

    /// Sets (or with None, drops) the expiry time of snapshot `key`.
    pub fn set_expiry(&self, key: &str, at: Option<Ts>) -> Result<SnapshotInfo, StoreError> {
        self.store.set_expiry(&self.id, key, at)
    }
}
