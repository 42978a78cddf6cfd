//! The service layer: one per store (the daemon). It owns the store, mounts and unmounts
//! containers (`mounts.rs`), runs snapshot operations through each container's lifecycle
//! (`snapshots.rs`, [`Container`]), and expires snapshots. The CLI and the REST API call
//! only this. It never names the FUSE adapter: the daemon hands it a [`Mounter`].

mod mounts;
mod snapshots;
pub mod snapshotter;
mod transfer;
pub mod transfers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::FsError;
use crate::fs::Container;
use crate::ids::ContainerId;
use crate::store::{ContainerRecord, SnapshotInfo, Store, StoreError};

use mounts::Mount;
pub use mounts::{Mounted, Mounter};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("container {0:?} not found")]
    NoContainer(String),
    /// Something else that does not exist (the message says what).
    #[error("{0}")]
    NotFound(String),
    #[error("snapshot {0:?} not found")]
    NoSnapshot(String),
    #[error("{0}")]
    Conflict(String),
    /// The container is mounted and the operation would pull the mount away from under
    /// whatever runs in it.
    #[error("container is running; stop it first, or pass force")]
    Running,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
    /// The daemon is shutting down; try again (a new daemon will start).
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoContainer(c) => ServiceError::NoContainer(c),
            StoreError::NoSnapshot(s) => ServiceError::NoSnapshot(s),
            StoreError::NoReceive(_) => ServiceError::NotFound(e.to_string()),
            StoreError::ContainerExists(_)
            | StoreError::AliasTaken(_)
            | StoreError::OverQuota { .. } => ServiceError::Conflict(e.to_string()),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::BadAlias(..)
            | StoreError::BadContainerName(_)
            | StoreError::BadStream(_)
            | StoreError::Invalid(_) => ServiceError::Invalid(e.to_string()),
            StoreError::Fs(fs) => fs.into(),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<crate::kv::KvError> for ServiceError {
    fn from(e: crate::kv::KvError) -> Self {
        FsError::from(e).into()
    }
}

impl From<FsError> for ServiceError {
    /// A store this daemon may not write (a reader, or taken over by another host) is a
    /// conflict with the request, not a server failure.
    fn from(e: FsError) -> Self {
        match e {
            FsError::ReadOnly => ServiceError::Conflict(
                "this daemon opened the store read-only (a reader): mount a container \
                 read-write on this host to write"
                    .to_string(),
            ),
            FsError::TakenOver => ServiceError::Conflict(e.to_string()),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

/// The changes between a snapshot and another snapshot or the live tree (`to: None`).
#[derive(Debug)]
pub struct Diff {
    pub container: ContainerRecord,
    pub from: SnapshotInfo,
    pub to: Option<SnapshotInfo>,
    pub changes: Vec<crate::fs::Change>,
}

/// Where a path changed, newest first.
#[derive(Debug)]
pub struct History {
    pub container: ContainerRecord,
    pub entries: Vec<HistoryEntry>,
}

/// One tree in which a path differs from the next older tree.
#[derive(Debug)]
pub struct HistoryEntry {
    /// None: the container's current tree.
    pub snapshot: Option<SnapshotInfo>,
    pub change: crate::fs::PathChange,
}

/// What the API shows of a container.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub record: ContainerRecord,
    pub mountpoint: Option<PathBuf>,
    /// How the mount's FUSE requests travel (`dev_fuse`, `io_uring`) and how many went
    /// through the io_uring queues, while mounted.
    pub fuse: Option<(&'static str, u64)>,
    pub snapshot_count: usize,
    /// Bytes written by the container's own epochs (its head and its snapshots).
    pub bytes_used: u64,
    /// File data bytes the live tree references (what `quota_bytes` limits); None for a
    /// deleted container.
    pub live_bytes: Option<u64>,
    /// Bytes its snapshots wrote (the sum of their sizes).
    pub snapshots_bytes: u64,
    pub quota: crate::store::Quota,
    /// Room left under the tighter quota, if any.
    pub available_bytes: Option<u64>,
}

/// `snapfs df`: the store's space, and each container's with its snapshots'.
#[derive(Debug)]
pub struct SpaceReport {
    pub store: crate::store::StoreSpace,
    pub containers: Vec<(ContainerInfo, Vec<crate::store::SnapshotSpace>)>,
}

impl ContainerInfo {
    pub fn status(&self) -> &'static str {
        if self.record.deleted_at.is_some() {
            "deleted"
        } else if self.mountpoint.is_some() {
            "running"
        } else {
            "stopped"
        }
    }
}

pub struct Service {
    store: Arc<Store>,
    path: PathBuf,
    /// Mounts containers (the FUSE adapter in the daemon).
    mounter: Arc<dyn Mounter>,
    /// Live mounts by container id. Lock order: taken before any lock of the store.
    mounts: Mutex<HashMap<ContainerId, Mount>>,
    /// Has anything ever been mounted (a daemon started for mounts exits when idle after).
    mounted_once: std::sync::atomic::AtomicBool,
    /// Set once the daemon decided to exit: no new mounts from then on.
    closing: std::sync::atomic::AtomicBool,
    /// Snapshot streams being sent or received.
    transfers: transfers::Transfers,
}

impl Service {
    pub fn new(store: Arc<Store>, path: &Path, mounter: Arc<dyn Mounter>) -> Service {
        Service {
            store,
            path: path.to_path_buf(),
            mounter,
            mounts: Mutex::new(HashMap::new()),
            mounted_once: std::sync::atomic::AtomicBool::new(false),
            closing: std::sync::atomic::AtomicBool::new(false),
            transfers: transfers::Transfers::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A container by id (live or deleted) or live name.
    pub fn container(&self, id_or_name: &str) -> ServiceResult<ContainerRecord> {
        self.store
            .find_container(id_or_name)?
            .ok_or_else(|| ServiceError::NoContainer(id_or_name.to_string()))
    }

    fn live(&self, id_or_name: &str) -> ServiceResult<ContainerRecord> {
        let c = self.container(id_or_name)?;
        if c.deleted_at.is_some() {
            return Err(ServiceError::NoContainer(id_or_name.to_string()));
        }
        Ok(c)
    }

    pub fn info(&self, c: ContainerRecord) -> ServiceResult<ContainerInfo> {
        let cid = &c.id;
        let snapshot_count = self.store.snapshots(cid)?.len();
        // Everything the container references: its tree's history and its snapshots.
        let bytes_used = self.store.bytes_used(cid)?;
        let live_bytes = match c.deleted_at {
            None => Some(self.store.usage(c.head)?),
            Some(_) => None,
        };
        let quota = self.store.quota(cid)?;
        let snapshots_bytes = self.store.snapshots_bytes(cid)?;
        let available_bytes = match c.deleted_at {
            None => self
                .store
                .quota_room(cid, c.head)?
                .map(|(used, limit)| limit.saturating_sub(used)),
            Some(_) => None,
        };
        let (mountpoint, fuse) = match self.mounts.lock().get(&c.id) {
            Some(m) => (
                Some(m.handle.mountpoint().to_path_buf()),
                Some(m.handle.transport()),
            ),
            None => (None, None),
        };
        Ok(ContainerInfo {
            mountpoint,
            fuse,
            snapshot_count,
            bytes_used,
            live_bytes,
            snapshots_bytes,
            quota,
            available_bytes,
            record: c,
        })
    }

    pub fn containers(&self) -> ServiceResult<Vec<ContainerInfo>> {
        self.store
            .containers()?
            .into_iter()
            .map(|c| self.info(c))
            .collect()
    }

    /// The store-wide figures of `GET /metrics`, read now.
    pub fn scrape(&self) -> crate::metrics::Scraped {
        let kv = self.store.kv();
        let (cache_hits, cache_misses) = self.store.cache_stats();
        let mounts = self.mounts.lock();
        let open_files = mounts
            .values()
            .map(|m| m.volume.open_handles() as u64)
            .sum();
        crate::metrics::Scraped {
            reclaim_epochs: self.store.retired_count() as u64,
            disk_bytes: kv.maintenance().map_or(0, |m| m.disk_usage()),
            garbage_bytes: (kv.maintenance().map_or(0, |m| m.known_garbage()))
                .saturating_add(self.store.dropped().bytes),
            cache_hits,
            cache_misses,
            write_stopped: kv.status().is_some_and(|s| s.write_stopped()),
            delayed_write_rate: kv.status().map_or(0, |s| s.delayed_write_rate()),
            open_files,
            mounts: mounts.len() as u64,
            process: crate::process::usage(),
            object_store: kv.status().and_then(|s| s.remote_status()),
        }
    }

    /// Where the space goes: the store, and every container (or just `only`) with the
    /// space of each of its snapshots. Costs what the snapshots wrote.
    pub fn space(&self, only: Option<&str>) -> ServiceResult<SpaceReport> {
        let store = self.store.store_space()?;
        let records = match only {
            Some(id) => vec![self.container(id)?],
            None => self.store.containers()?,
        };
        let mut containers = Vec::new();
        for c in records {
            let snaps = self.store.snapshot_space(&c.id)?;
            containers.push((self.info(c)?, snaps));
        }
        Ok(SpaceReport { store, containers })
    }

    pub fn create_container(
        &self,
        name: &str,
        project_id: Option<&str>,
        quota: crate::store::Quota,
    ) -> ServiceResult<ContainerRecord> {
        let c = self.store.create_container(name, project_id)?;
        if !quota.is_none() {
            self.store.set_quota(&c.id, quota)?;
        }
        Ok(c)
    }

    /// Changes a live container's quotas (`None` leaves one as it is).
    pub fn set_quota(
        &self,
        id_or_name: &str,
        bytes: Option<Option<u64>>,
        including_snapshots: Option<Option<u64>>,
    ) -> ServiceResult<ContainerRecord> {
        let c = self.live(id_or_name)?;
        let mut q = self.store.quota(&c.id)?;
        if let Some(b) = bytes {
            q.bytes = b;
        }
        if let Some(b) = including_snapshots {
            q.including_snapshots = b;
        }
        self.store.set_quota(&c.id, q)?;
        Ok(c)
    }

    /// Deletes a container; its snapshots stay. A mounted container is refused
    /// ([`ServiceError::Running`]) unless `force`, which unmounts it first as `stop` does.
    pub fn delete_container(
        &self,
        id_or_name: &str,
        force: bool,
    ) -> ServiceResult<ContainerRecord> {
        let c = self.live(id_or_name)?;
        if force {
            self.stop_id(&c.id)?;
        }
        // Checked and deleted under the mounts lock, which `start` holds while it mounts.
        let mut mounts = self.mounts.lock();
        mounts::reap_locked(&mut mounts);
        if mounts.contains_key(&c.id) {
            return Err(ServiceError::Running);
        }
        Ok(self.store.delete_container(&c.id)?)
    }
    /// The lifecycle of container `id`: the mounted one's (which flushes and invalidates
    /// through its mount) or, when not mounted, a fresh one. Callers that must not race a
    /// mount or unmount hold `mounts` (see `restore`).
    fn lifecycle_in(
        &self,
        mounts: &HashMap<ContainerId, Mount>,
        id: &ContainerId,
    ) -> Arc<Container> {
        match mounts.get(id) {
            Some(m) => m.container.clone(),
            None => Container::new(self.store.clone(), id),
        }
    }

    fn lifecycle(&self, id: &ContainerId) -> Arc<Container> {
        self.lifecycle_in(&self.mounts.lock(), id)
    }
}
