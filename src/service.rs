//! The service layer: one per store (the daemon). It owns the store, mounts and unmounts
//! containers, runs snapshot operations (restoring a mounted container in place), expires
//! snapshots and reclaims space in the background. The CLI and the REST API call only this.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::codec::Ts;
use crate::error::FsError;
use crate::fs::{Fs, PathRestore, Volume, VolumeOptions, ROOT_INO};
use crate::fuse::MountHandle;
use crate::store::{ContainerRecord, SnapshotInfo, Store, StoreError};

/// How long a busy mount may take to let go after being detached on stop.
const UNMOUNT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("container {0:?} not found")]
    NoContainer(String),
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
            StoreError::ContainerExists(_)
            | StoreError::AliasTaken(_)
            | StoreError::OverQuota { .. } => ServiceError::Conflict(e.to_string()),
            StoreError::BadAlias(..) | StoreError::BadContainerName(_) => {
                ServiceError::Invalid(e.to_string())
            }
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
    /// Live mounts by container id.
    mounts: Mutex<HashMap<String, MountHandle>>,
    /// Has anything ever been mounted (a daemon started for mounts exits when idle after).
    mounted_once: std::sync::atomic::AtomicBool,
    /// Set once the daemon decided to exit: no new mounts from then on.
    closing: std::sync::atomic::AtomicBool,
}

impl Service {
    pub fn new(store: Arc<Store>, path: &Path) -> Service {
        Service {
            store,
            path: path.to_path_buf(),
            mounts: Mutex::new(HashMap::new()),
            mounted_once: std::sync::atomic::AtomicBool::new(false),
            closing: std::sync::atomic::AtomicBool::new(false),
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
        let cid = c.id.as_bytes();
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
                Some(m.mountpoint().to_path_buf()),
                Some((m.transport().as_str(), m.ring_requests())),
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
            .map(|m| m.volume().open_handles() as u64)
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
            let snaps = self.store.snapshot_space(c.id.as_bytes())?;
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
            self.store.set_quota(c.id.as_bytes(), quota)?;
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
        let mut q = self.store.quota(c.id.as_bytes())?;
        if let Some(b) = bytes {
            q.bytes = b;
        }
        if let Some(b) = including_snapshots {
            q.including_snapshots = b;
        }
        self.store.set_quota(c.id.as_bytes(), q)?;
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
        Self::reap_locked(&mut mounts);
        if mounts.contains_key(&c.id) {
            return Err(ServiceError::Running);
        }
        Ok(self.store.delete_container(c.id.as_bytes())?)
    }

    /// Mounts a container at `mountpoint`.
    pub fn start(
        &self,
        id_or_name: &str,
        mountpoint: &Path,
        opts: VolumeOptions,
    ) -> ServiceResult<ContainerRecord> {
        let c = self.live(id_or_name)?;
        // One spelling per directory: `/m/../m` and symlinks are the same place.
        let mountpoint = &std::fs::canonicalize(mountpoint).map_err(|e| {
            ServiceError::Invalid(format!("mountpoint {}: {e}", mountpoint.display()))
        })?;
        let mut mounts = self.mounts.lock();
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ServiceError::ShuttingDown);
        }
        Self::reap_locked(&mut mounts);
        // A delete may have run since `live` above (it deletes under this lock).
        let c = self.live(&c.id)?;
        if let Some(m) = mounts.get(&c.id) {
            return Err(ServiceError::Conflict(format!(
                "container {} is already mounted at {}",
                c.name,
                m.mountpoint().display()
            )));
        }
        if mounts.values().any(|m| m.mountpoint() == mountpoint) {
            return Err(ServiceError::Conflict(format!(
                "{} is already in use by another container",
                mountpoint.display()
            )));
        }
        match std::fs::metadata(mountpoint) {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(ServiceError::Invalid(format!(
                    "mountpoint {} is not a directory",
                    mountpoint.display()
                )))
            }
        }
        if self.store.kv().status().is_some_and(|s| s.read_only()) && !opts.read_only {
            return Err(ServiceError::Conflict(format!(
                "the daemon of {} opened the store read-only: mount with --read-only",
                self.path.display()
            )));
        }
        let fs = Fs::new(self.store.clone(), c.id.as_bytes())?;
        let volume = Arc::new(Volume::new(fs, opts));
        let fsname = format!("{}:{}", self.path.display(), c.name);
        let handle = crate::fuse::mount(volume, mountpoint, &fsname).map_err(|e| {
            ServiceError::Internal(format!("cannot mount {}: {e}", mountpoint.display()))
        })?;
        mounts.insert(c.id.clone(), handle);
        self.mounted_once
            .store(true, std::sync::atomic::Ordering::SeqCst);
        log::info!("mounted {} ({}) at {}", c.name, c.id, mountpoint.display());
        Ok(c)
    }

    /// Unmounts a container (no-op when not mounted); everything is flushed on return.
    pub fn stop(&self, id_or_name: &str) -> ServiceResult<ContainerRecord> {
        let c = match self.container(id_or_name) {
            Ok(c) => c,
            Err(e) => {
                // The store cannot answer (another host took it over, an I/O error): a
                // mount of that container must still go.
                let id = self.mounts.lock().iter().find_map(|(id, m)| {
                    let name = m.fsname().rsplit_once(':').map_or("", |(_, n)| n);
                    (id == id_or_name || name == id_or_name).then(|| id.clone())
                });
                if let Some(id) = id {
                    self.stop_id(&id)?;
                }
                return Err(e);
            }
        };
        self.stop_id(&c.id)?;
        Ok(c)
    }

    fn stop_id(&self, id: &str) -> ServiceResult<()> {
        let handle = self.mounts.lock().remove(id);
        if let Some(h) = handle {
            let mnt = h.mountpoint().to_path_buf();
            h.unmount(UNMOUNT_GRACE).map_err(|e| {
                ServiceError::Internal(format!("cannot unmount {}: {e}", mnt.display()))
            })?;
            log::info!("unmounted {}", mnt.display());
        }
        // Unmounted either way; a failing sync (e.g. a full disk) is reported, not fatal.
        if let Err(e) = self.store.kv().sync() {
            log::error!("sync after unmount: {e}");
        }
        Ok(())
    }

    /// Unmounts everything (daemon shutdown).
    pub fn stop_all(&self) {
        let ids: Vec<String> = self.mounts.lock().keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.stop_id(&id) {
                log::error!("stopping {id}: {e}");
            }
        }
        let _ = self.store.kv().sync();
    }

    /// The container mounted at `mountpoint`, if any.
    pub fn mounted_at(&self, mountpoint: &Path) -> Option<String> {
        self.mounts
            .lock()
            .iter()
            .find(|(_, m)| m.mountpoint() == mountpoint)
            .map(|(id, _)| id.clone())
    }

    /// Was anything ever mounted by this service?
    pub fn mounted_once(&self) -> bool {
        self.mounted_once.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn mount_count(&self) -> usize {
        self.mounts.lock().len()
    }

    /// Forgets mounts whose session ended from outside (a plain `umount`). Returns how many
    /// mounts remain.
    pub fn reap(&self) -> usize {
        let mut mounts = self.mounts.lock();
        Self::reap_locked(&mut mounts);
        mounts.len()
    }

    /// With `idle_exit`: if nothing is mounted (after reaping) and something was once, or
    /// `never_used_for_long`, refuses further mounts and returns true (the daemon exits).
    pub fn close_if_idle(&self, never_used_for_long: bool) -> bool {
        let mut mounts = self.mounts.lock();
        Self::reap_locked(&mut mounts);
        if mounts.is_empty() && (self.mounted_once() || never_used_for_long) {
            self.closing
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return true;
        }
        false
    }

    fn reap_locked(mounts: &mut HashMap<String, MountHandle>) {
        let dead: Vec<String> = mounts
            .iter()
            .filter(|(_, m)| !m.is_alive())
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            if let Some(m) = mounts.remove(&id) {
                log::info!("{} was unmounted from outside", m.mountpoint().display());
                let _ = m.unmount(Duration::from_secs(1));
            }
        }
    }

    pub fn snapshots(
        &self,
        id_or_name: &str,
    ) -> ServiceResult<(ContainerRecord, Vec<SnapshotInfo>)> {
        let c = self.container(id_or_name)?;
        let snaps = self.store.snapshots(c.id.as_bytes())?;
        Ok((c, snaps))
    }

    pub fn snapshot_size(&self, s: &SnapshotInfo) -> ServiceResult<u64> {
        Ok(self.store.epoch_size(s.record.epoch)?)
    }

    pub fn create_snapshot(
        &self,
        id_or_name: &str,
        alias: Option<&str>,
        expires_at: Option<Ts>,
    ) -> ServiceResult<(ContainerRecord, SnapshotInfo)> {
        let c = self.live(id_or_name)?;
        self.flush_writes(&c.id)?;
        let s = self.store.snapshot(c.id.as_bytes(), alias, expires_at)?;
        Ok((c, s))
    }

    /// Restores a container to a snapshot. A mounted container switches trees in place: the
    /// kernel's caches are dropped and descriptors on the old tree go stale.
    pub fn restore(
        &self,
        id_or_name: &str,
        key: &str,
    ) -> ServiceResult<(ContainerRecord, SnapshotInfo)> {
        let c = self.live(id_or_name)?;
        // Unknown snapshots are refused before anything changes.
        if self.store.find_snapshot(c.id.as_bytes(), key)?.is_none() {
            return Err(StoreError::NoSnapshot(key.to_string()).into());
        }
        let mounts = self.mounts.lock();
        let mounted = mounts.get(&c.id);
        // Root names the kernel may hold in its cache: those of the tree being replaced.
        let old_names = match mounted {
            Some(m) => root_names(m.volume().head()),
            None => Vec::new(),
        };
        let open = mounted
            .map(|m| m.volume().open_head_inodes())
            .unwrap_or_default();
        if let Some(m) = mounted {
            // Cached writes of the old tree go into the old tree now; from here on its inode
            // numbers are stale, so nothing written back later can land in the restored one.
            m.volume().flush_writes()?;
            m.volume().new_head_generation()?;
        }
        let s = self.store.restore(c.id.as_bytes(), key)?;
        if let Some(m) = mounted {
            // Names of both trees: the old ones may be cached as present, the restored ones
            // as absent (negative entries).
            let mut names = old_names;
            names.extend(root_names(m.volume().head()));
            names.sort_unstable();
            names.dedup();
            m.invalidate_root(&names);
            // Open files of the old tree: drop their cached pages so reads reach us (ESTALE).
            m.invalidate_inodes(&open);
        }
        Ok((c, s))
    }

    /// Restores only `paths` (absolute, raw bytes) of a container to their state in
    /// snapshot `key`, online and in place, as one batch; everything else stays. A mounted
    /// container's kernel caches of what changed are dropped and descriptors open on the
    /// replaced files go stale, as after a full restore.
    pub fn restore_paths(
        &self,
        id_or_name: &str,
        key: &str,
        paths: &[Vec<u8>],
    ) -> ServiceResult<(ContainerRecord, SnapshotInfo, PathRestore)> {
        let c = self.live(id_or_name)?;
        let cid = c.id.as_bytes();
        let snap = self
            .store
            .find_snapshot(cid, key)?
            .ok_or_else(|| ServiceError::NoSnapshot(key.to_string()))?;
        let refused = |e: FsError| match e {
            FsError::Invalid(_) | FsError::NameTooLong => ServiceError::Invalid(e.to_string()),
            FsError::NotDir => ServiceError::Conflict(
                "a parent of a path is not a directory in the live tree".into(),
            ),
            FsError::NotFound => ServiceError::NoSnapshot(key.to_string()),
            FsError::Quota => ServiceError::Conflict(
                "restoring these paths would take the container past its quota".into(),
            ),
            e => e.into(),
        };
        let mounts = self.mounts.lock();
        let r = match mounts.get(&c.id) {
            Some(m) => {
                let (r, drops) = m.volume().restore_paths(&snap, paths).map_err(refused)?;
                m.invalidate_entries(&drops.entries);
                m.invalidate_inodes(&drops.inodes);
                r
            }
            None => Fs::new(self.store.clone(), cid)?
                .restore_paths(&snap, paths)
                .map_err(refused)?,
        };
        drop(mounts);
        let snap = self.store.find_snapshot(cid, &snap.name)?.unwrap_or(snap);
        Ok((c, snap, r))
    }

    /// What changed from snapshot `from` to snapshot `to`, or to the container's current
    /// tree when `to` is None; sorted by path. Reclaim waits meanwhile (it moves versions
    /// between the epochs the diff reads).
    pub fn diff(&self, id_or_name: &str, from: &str, to: Option<&str>) -> ServiceResult<Diff> {
        let c = self.container(id_or_name)?;
        let cid = c.id.as_bytes();
        let find = |key: &str| -> ServiceResult<SnapshotInfo> {
            self.store
                .find_snapshot(cid, key)?
                .ok_or_else(|| ServiceError::NoSnapshot(key.to_string()))
        };
        let from = find(from)?;
        let to = to.map(find).transpose()?;
        if to.is_none() {
            // The live tree: what the kernel still holds for open files goes in first.
            self.live(id_or_name)?;
            self.flush_writes(&c.id)?;
        }
        let _paused = self.store.pause_reclaim();
        let from_chain = self.store.snapshot_chain(&from);
        let to_chain = match &to {
            Some(s) => self.store.snapshot_chain(s),
            None => self.store.head(cid)?,
        };
        let reader = Fs::frozen(self.store.clone(), cid, from_chain.clone());
        let changes = reader.diff(&from_chain, &to_chain)?;
        Ok(Diff {
            container: c,
            from,
            to,
            changes,
        })
    }

    /// The history of `path` (absolute, raw bytes): the current tree (for a live container)
    /// and every snapshot, newest first, each listed where the path differs from the next
    /// older one (the oldest: where the path exists). Cost: trees times path depth.
    pub fn history(&self, id_or_name: &str, path: &[u8]) -> ServiceResult<History> {
        let c = self.container(id_or_name)?;
        crate::fs::components(path).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let cid = c.id.as_bytes();
        let mut snaps = self.store.snapshots(cid)?;
        snaps.sort_by(|a, b| {
            let key = |s: &SnapshotInfo| (s.record.created_at.secs, s.record.created_at.nsecs);
            key(b).cmp(&key(a)).then(b.name.cmp(&a.name))
        });
        let live = c.deleted_at.is_none();
        if live {
            self.flush_writes(&c.id)?;
        }
        let _paused = self.store.pause_reclaim();
        let mut trees: Vec<(Option<SnapshotInfo>, Arc<crate::store::Chain>)> = Vec::new();
        if live {
            trees.push((None, self.store.head(cid)?));
        }
        for s in snaps {
            let chain = self.store.snapshot_chain(&s);
            trees.push((Some(s), chain));
        }
        let Some((_, first)) = trees.first() else {
            return Ok(History {
                container: c,
                entries: Vec::new(),
            });
        };
        let reader = Fs::frozen(self.store.clone(), cid, first.clone());
        let mut entries = Vec::new();
        for i in 0..trees.len() {
            let (snap, newer) = &trees[i];
            let older = trees.get(i + 1).map(|(_, c)| &**c);
            if let Some(change) = reader.compare_path(older, newer, path)? {
                entries.push(HistoryEntry {
                    snapshot: snap.clone(),
                    change,
                });
            }
        }
        Ok(History {
            container: c,
            entries,
        })
    }

    pub fn delete_snapshot(&self, id_or_name: &str, key: &str) -> ServiceResult<SnapshotInfo> {
        let c = self.container(id_or_name)?;
        let s = self.store.delete_snapshot(c.id.as_bytes(), key)?;
        self.snapshot_gone(&c.id, s.record.epoch);
        Ok(s)
    }

    /// Hands the kernel's cached writes of a mounted container to its head.
    fn flush_writes(&self, container_id: &str) -> ServiceResult<()> {
        if let Some(m) = self.mounts.lock().get(container_id) {
            m.volume().flush_writes()?;
        }
        Ok(())
    }

    /// Tells a mounted container's volume that one of its snapshots is gone.
    fn snapshot_gone(&self, container_id: &str, epoch: u64) {
        // Waits for the kernel: not under the mounts lock.
        let volume = self
            .mounts
            .lock()
            .get(container_id)
            .map(|m| m.volume().clone());
        if let Some(v) = volume {
            v.snapshot_gone(epoch, true);
        }
    }

    pub fn set_alias(
        &self,
        id_or_name: &str,
        key: &str,
        alias: Option<&str>,
    ) -> ServiceResult<(ContainerRecord, SnapshotInfo)> {
        let c = self.container(id_or_name)?;
        let s = self.store.set_alias(c.id.as_bytes(), key, alias)?;
        Ok((c, s))
    }

    /// Copies a container (from a snapshot, or its current tree) into a new container.
    pub fn copy(
        &self,
        id_or_name: &str,
        snapshot: Option<&str>,
        name: &str,
        project_id: Option<&str>,
    ) -> ServiceResult<ContainerRecord> {
        let c = self.container(id_or_name)?;
        if snapshot.is_none() && c.deleted_at.is_some() {
            return Err(ServiceError::Invalid(
                "a deleted container can only be copied from one of its snapshots".into(),
            ));
        }
        // Without a target project the copy stays in the source's project.
        let project = project_id.or(c.project_id.as_deref());
        if snapshot.is_none() {
            self.flush_writes(&c.id)?;
        }
        Ok(self
            .store
            .copy_container(c.id.as_bytes(), snapshot, name, project)?)
    }

    /// Deletes every snapshot whose expiry has passed (read from the expiry index: the cost
    /// is what is due, not the number of snapshots). Returns how many.
    pub fn expire(&self) -> ServiceResult<usize> {
        let mut n = 0;
        for (container, name) in self.store.expired(Ts::now())? {
            let id = String::from_utf8_lossy(&container).into_owned();
            match self.store.delete_snapshot(&container, &name) {
                Ok(s) => {
                    self.snapshot_gone(&id, s.record.epoch);
                    log::info!("expired snapshot {name} of {id}");
                    n += 1;
                }
                Err(StoreError::NoSnapshot(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }
}

/// Names in the root directory of a head view.
fn root_names(fs: &Fs) -> Vec<Vec<u8>> {
    let Ok(fh) = fs.opendir(ROOT_INO) else {
        return Vec::new();
    };
    let names = fs
        .readdir(ROOT_INO, fh, 0)
        .map(|v| v.iter().skip(2).map(|e| e.name.clone()).collect())
        .unwrap_or_default();
    fs.releasedir(fh);
    names
}
