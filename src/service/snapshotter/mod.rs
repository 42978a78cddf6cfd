//! A container runtime's snapshotter (containerd's snapshots API) over the store's
//! containers and snapshots. Transport-neutral: the gRPC adapter (`containerd/`) calls these
//! operations and maps [`SnapshotterError`] to status codes.
//!
//! The mapping (also in ARCHITECTURE.md):
//! - a *committed* snapshot (an image layer) is a snapfs snapshot, frozen; its record names
//!   the container it was taken in (deleted by the commit: its tree lives on in the snapshot);
//! - an *active* snapshot is a live container whose head starts from its parent's epoch (a
//!   copy of the parent snapshot, O(1) whatever the image size), or an empty one; a *view*
//!   is the same, mounted read-only;
//! - Prepare and View mount the container (FUSE) under the mount root and answer with a bind
//!   mount of it; Commit and Remove unmount it;
//! - Usage is what the snapshot's own epochs hold (bytes and inodes they wrote), never a walk
//!   of its tree.
//!
//! Every operation that changes something runs under one lock, so a record and the objects
//! it names change together. Unmounting and deleting the container of a removed or committed
//! snapshot happens on a background thread (`Reaper`): containerd calls Remove from its
//! garbage collector, which holds its metadata lock and spaces its runs by how long the last
//! one took, so a busy mount's unmount grace must not be spent inside the call. Records are written after their objects exist and deleted
//! before their objects go: a crash in between leaves only objects no record names, which
//! [`Snapshotter::cleanup`] removes (containers of project [`PROJECT`], snapshots with alias
//! [`COMMIT_ALIAS`]).

mod filter;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Service, ServiceError};
use crate::codec::Ts;
use crate::error::FsError;
use crate::fs::{Container, VolumeOptions};
use crate::ids::ContainerId;
use crate::store::{Quota, RuntimeKind, RuntimeSnapshot, StoreError};

pub use filter::{Fields, Filters};

/// The project of every container the snapshotter creates.
pub const PROJECT: &str = "containerd";
/// The alias of the snapfs snapshot a Commit takes.
pub const COMMIT_ALIAS: &str = "containerd-commit";
/// The label that sets an active snapshot's quota (bytes, or with a K/M/G/T suffix).
pub const QUOTA_LABEL: &str = "containerd.io/snapshot/disk_quota";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

pub type SnapshotterResult<T> = Result<T, SnapshotterError>;

impl From<ServiceError> for SnapshotterError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NoContainer(_)
            | ServiceError::NoSnapshot(_)
            | ServiceError::NotFound(_) => {
                SnapshotterError::Internal(format!("the store lost what a record names: {e}"))
            }
            ServiceError::Conflict(m) => SnapshotterError::FailedPrecondition(m),
            ServiceError::Running => SnapshotterError::FailedPrecondition(e.to_string()),
            ServiceError::Invalid(m) => SnapshotterError::Invalid(m),
            ServiceError::ShuttingDown => SnapshotterError::Unavailable(e.to_string()),
            ServiceError::Internal(m) => SnapshotterError::Internal(m),
        }
    }
}

impl From<StoreError> for SnapshotterError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<FsError> for SnapshotterError {
    fn from(e: FsError) -> Self {
        ServiceError::from(e).into()
    }
}

/// A runtime snapshot as the API shows it (containerd's `Info`).
#[derive(Debug, Clone)]
pub struct Info {
    pub key: String,
    pub kind: RuntimeKind,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

impl Info {
    fn new(key: &str, rec: &RuntimeSnapshot) -> Info {
        Info {
            key: key.to_string(),
            kind: rec.kind,
            parent: rec.parent.clone(),
            labels: rec.labels.clone(),
            created_at: rec.created_at,
            updated_at: rec.updated_at,
        }
    }
}

pub fn kind_name(k: RuntimeKind) -> &'static str {
    match k {
        RuntimeKind::View => "view",
        RuntimeKind::Active => "active",
        RuntimeKind::Committed => "committed",
    }
}

impl Fields for Info {
    fn field(&self, name: &str) -> Option<&str> {
        match name {
            "name" => Some(&self.key),
            "parent" => self.parent.as_deref(),
            "kind" => Some(kind_name(self.kind)),
            _ => None,
        }
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A mount the runtime performs (containerd's `Mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: String,
    pub source: PathBuf,
    pub options: Vec<String>,
}

/// What `Update` changes: every label, or some.
#[derive(Debug, Clone)]
pub enum LabelUpdate {
    /// Replace all labels.
    All,
    /// Set (or remove, when absent from the new labels) these keys only.
    Keys(Vec<String>),
}

/// The snapshotter of one daemon.
pub struct Snapshotter {
    svc: Arc<Service>,
    /// Where active snapshots and views are mounted (one directory per container).
    mount_root: PathBuf,
    /// Held by every operation that changes records or their objects.
    lock: Mutex<()>,
    reaper: Reaper,
}

/// Unmounts and deletes containers no record names any more, one at a time, in the
/// background.
struct Reaper {
    tx: crossbeam_channel::Sender<ContainerId>,
    /// Containers queued or being deleted (cleanup leaves them alone).
    pending: Arc<Mutex<HashSet<ContainerId>>>,
}

impl Reaper {
    fn start(svc: Arc<Service>) -> std::io::Result<Reaper> {
        let (tx, rx) = crossbeam_channel::unbounded::<ContainerId>();
        let pending: Arc<Mutex<HashSet<ContainerId>>> = Arc::default();
        let p = pending.clone();
        std::thread::Builder::new()
            .name("containerd-reap".into())
            .spawn(move || {
                for id in rx {
                    if let Err(e) = svc.delete_container(id.as_str(), true) {
                        // Its record is gone: cleanup drops it.
                        log::warn!("containerd: container {id} stays until cleanup: {e}");
                    }
                    p.lock().remove(&id);
                }
            })?;
        Ok(Reaper { tx, pending })
    }

    fn delete(&self, id: &ContainerId) {
        self.pending.lock().insert(id.clone());
        if self.tx.send(id.clone()).is_err() {
            self.pending.lock().remove(id);
            log::warn!("containerd: container {id} stays until cleanup (no reaper)");
        }
    }

    fn is_pending(&self, id: &ContainerId) -> bool {
        self.pending.lock().contains(id)
    }
}

impl Snapshotter {
    /// A snapshotter over `svc`'s store, mounting under `mount_root` (created, owner-only).
    pub fn new(svc: Arc<Service>, mount_root: &Path) -> std::io::Result<Snapshotter> {
        std::fs::create_dir_all(mount_root)?;
        Ok(Snapshotter {
            reaper: Reaper::start(svc.clone())?,
            svc,
            mount_root: std::fs::canonicalize(mount_root)?,
            lock: Mutex::new(()),
        })
    }

    pub fn mount_root(&self) -> &Path {
        &self.mount_root
    }

    fn record(&self, key: &str) -> SnapshotterResult<RuntimeSnapshot> {
        self.svc
            .store()
            .runtime_snapshot(key)?
            .ok_or_else(|| SnapshotterError::NotFound(key.to_string()))
    }

    /// A new active snapshot (`read_only`: a view) on committed snapshot `parent` (or empty),
    /// mounted; returns the mounts that show it.
    pub fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        read_only: bool,
    ) -> SnapshotterResult<Vec<MountSpec>> {
        if key.is_empty() {
            return Err(SnapshotterError::Invalid("empty snapshot key".into()));
        }
        let quota = match labels.get(QUOTA_LABEL) {
            Some(v) => Some(parse_quota(v).ok_or_else(|| {
                SnapshotterError::Invalid(format!(
                    "label {QUOTA_LABEL}={v:?}: not a size (bytes, or a number with K, M, G \
                     or T)"
                ))
            })?),
            None => None,
        };
        let _g = self.lock.lock();
        let store = self.svc.store();
        if store.runtime_snapshot(key)?.is_some() {
            return Err(SnapshotterError::AlreadyExists(key.to_string()));
        }
        let base = match parent {
            Some(p) => {
                let prec = self.record(p)?;
                if prec.kind != RuntimeKind::Committed {
                    return Err(SnapshotterError::FailedPrecondition(format!(
                        "parent {p:?} is not a committed snapshot"
                    )));
                }
                Some(prec)
            }
            None => None,
        };
        let name = self.container_name(key)?;
        let crec = match &base {
            Some(b) => {
                let snap = b.snapshot.as_deref().ok_or_else(|| {
                    SnapshotterError::Internal("a committed record names no snapshot".into())
                })?;
                Container::new(store.clone(), &b.container).copy(
                    Some(snap),
                    &name,
                    Some(PROJECT),
                )?
            }
            None => self
                .svc
                .create_container(&name, Some(PROJECT), Quota::default())?,
        };
        let undo = |e: SnapshotterError| {
            if let Err(e2) = self.svc.delete_container(crec.id.as_str(), true) {
                log::error!(
                    "containerd: cannot drop container {} after {e}: {e2}",
                    crec.id
                );
            }
            e
        };
        if let Some(q) = quota {
            self.svc
                .set_quota(crec.id.as_str(), Some(Some(q)), None)
                .map_err(|e| undo(e.into()))?;
        }
        let now = Ts::now();
        let rec = RuntimeSnapshot {
            kind: if read_only {
                RuntimeKind::View
            } else {
                RuntimeKind::Active
            },
            parent: parent.map(str::to_string),
            labels,
            created_at: now,
            updated_at: now,
            container: crec.id.clone(),
            snapshot: None,
        };
        store
            .write_runtime_snapshots(&[(key, &rec)], &[])
            .map_err(|e| undo(e.into()))?;
        match self.mount(&rec) {
            Ok(m) => Ok(m),
            Err(e) => {
                if let Err(e2) = store.write_runtime_snapshots(&[], &[(key, &rec)]) {
                    log::error!("containerd: cannot drop record {key:?} after {e}: {e2}");
                }
                Err(undo(e))
            }
        }
    }

    /// The mounts of an active snapshot or view, mounting it again if needed (after a restart
    /// of the daemon).
    pub fn mounts(&self, key: &str) -> SnapshotterResult<Vec<MountSpec>> {
        let _g = self.lock.lock();
        let rec = self.record(key)?;
        if rec.kind == RuntimeKind::Committed {
            return Err(SnapshotterError::FailedPrecondition(format!(
                "snapshot {key:?} is committed: only active snapshots and views have mounts"
            )));
        }
        self.mount(&rec)
    }

    /// Makes active snapshot `key` the committed snapshot `name`: a snapfs snapshot of its
    /// container, which then goes (its tree lives on in the snapshot: nothing is copied).
    pub fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> SnapshotterResult<()> {
        if name.is_empty() {
            return Err(SnapshotterError::Invalid("empty snapshot name".into()));
        }
        let _g = self.lock.lock();
        let store = self.svc.store();
        let rec = self.record(key)?;
        if rec.kind != RuntimeKind::Active {
            return Err(SnapshotterError::FailedPrecondition(format!(
                "snapshot {key:?} is {}: only an active snapshot can be committed",
                kind_name(rec.kind)
            )));
        }
        if store.runtime_snapshot(name)?.is_some() {
            return Err(SnapshotterError::AlreadyExists(name.to_string()));
        }
        // Through the mount's lifecycle: every write the kernel holds goes in first. The
        // runtime is done with the mount (it unmounted its own); it goes in the background.
        let (_, snap) =
            self.svc
                .create_snapshot(rec.container.as_str(), Some(COMMIT_ALIAS), None)?;
        let now = Ts::now();
        let committed = RuntimeSnapshot {
            kind: RuntimeKind::Committed,
            parent: rec.parent.clone(),
            labels,
            created_at: now,
            updated_at: now,
            container: rec.container.clone(),
            snapshot: Some(snap.name.clone()),
        };
        store.write_runtime_snapshots(&[(name, &committed)], &[(key, &rec)])?;
        self.reaper.delete(&rec.container);
        Ok(())
    }

    /// Removes a snapshot: an active snapshot or view is unmounted and its container deleted
    /// (in the background: the record is gone on return); a committed one's snapfs snapshot
    /// is deleted (reclaimed in the background). A snapshot other snapshots start from is
    /// refused.
    pub fn remove(&self, key: &str) -> SnapshotterResult<()> {
        let _g = self.lock.lock();
        let store = self.svc.store();
        let rec = self.record(key)?;
        if store.runtime_has_children(key)? {
            return Err(SnapshotterError::FailedPrecondition(format!(
                "snapshot {key:?} has children: remove them first"
            )));
        }
        store.write_runtime_snapshots(&[], &[(key, &rec)])?;
        match rec.kind {
            RuntimeKind::Active | RuntimeKind::View => self.reaper.delete(&rec.container),
            RuntimeKind::Committed => {
                if let Some(snap) = &rec.snapshot {
                    let c = Container::new(store.clone(), &rec.container);
                    if let Err(e) = c.delete_snapshot(snap, false) {
                        log::warn!(
                            "containerd: snapshot {snap} of {} stays until cleanup: {e}",
                            rec.container
                        );
                    }
                }
            }
        }
        Ok(())
    }

    pub fn stat(&self, key: &str) -> SnapshotterResult<Info> {
        Ok(Info::new(key, &self.record(key)?))
    }

    /// Changes the labels of snapshot `key` (the only mutable field).
    pub fn update(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        what: LabelUpdate,
    ) -> SnapshotterResult<Info> {
        let _g = self.lock.lock();
        let mut rec = self.record(key)?;
        match what {
            LabelUpdate::All => rec.labels = labels,
            LabelUpdate::Keys(keys) => {
                for k in keys {
                    match labels.get(&k) {
                        Some(v) => rec.labels.insert(k, v.clone()),
                        None => rec.labels.remove(&k),
                    };
                }
            }
        }
        rec.updated_at = Ts::now();
        self.svc
            .store()
            .write_runtime_snapshots(&[(key, &rec)], &[])?;
        Ok(Info::new(key, &rec))
    }

    /// Bytes and inodes snapshot `key` holds on its own (not its parent's): what its epochs
    /// wrote. No walk of its tree.
    pub fn usage(&self, key: &str) -> SnapshotterResult<(u64, u64)> {
        let rec = self.record(key)?;
        let top = self.tree_epoch(&rec)?;
        let base = match &rec.parent {
            Some(p) => Some(self.tree_epoch(&self.record(p)?)?),
            None => None,
        };
        Ok(self.svc.store().own_usage(top, base)?)
    }

    /// The epoch holding a snapshot's tree: its snapfs snapshot's (committed), or its
    /// container's head.
    fn tree_epoch(&self, rec: &RuntimeSnapshot) -> SnapshotterResult<crate::ids::Epoch> {
        let store = self.svc.store();
        let gone = |what: String| SnapshotterError::Internal(format!("{what} is gone"));
        match (&rec.kind, &rec.snapshot) {
            (RuntimeKind::Committed, Some(name)) => Ok(store
                .find_snapshot(&rec.container, name)?
                .ok_or_else(|| gone(format!("snapshot {name}")))?
                .record
                .epoch),
            (RuntimeKind::Committed, None) => Err(SnapshotterError::Internal(
                "a committed record names no snapshot".into(),
            )),
            _ => Ok(store
                .container(&rec.container)?
                .ok_or_else(|| gone(format!("container {}", rec.container)))?
                .head),
        }
    }

    /// Every snapshot that matches `filters` (see [`Filters`]).
    pub fn list(&self, filters: &[String]) -> SnapshotterResult<Vec<Info>> {
        let f = Filters::parse(filters)?;
        Ok(self
            .svc
            .store()
            .runtime_snapshots()?
            .iter()
            .map(|(k, r)| Info::new(k, r))
            .filter(|i| f.matches(i))
            .collect())
    }

    /// Drops what no record names (left by a crash between a record and its objects):
    /// containers of project [`PROJECT`], snapshots with alias [`COMMIT_ALIAS`], and mount
    /// directories. Returns how many objects went.
    pub fn cleanup(&self) -> SnapshotterResult<usize> {
        let _g = self.lock.lock();
        let store = self.svc.store();
        let records = store.runtime_snapshots()?;
        let live: HashSet<&ContainerId> = records
            .iter()
            .filter(|(_, r)| r.kind != RuntimeKind::Committed)
            .map(|(_, r)| &r.container)
            .collect();
        let layers: HashSet<(&ContainerId, &str)> = records
            .iter()
            .filter_map(|(_, r)| Some((&r.container, r.snapshot.as_deref()?)))
            .collect();
        let mut dropped = 0;
        for c in store.containers()? {
            if c.project_id.as_deref() != Some(PROJECT) {
                continue;
            }
            if c.deleted_at.is_none() && !live.contains(&c.id) && !self.reaper.is_pending(&c.id) {
                log::info!("containerd cleanup: container {} ({})", c.name, c.id);
                self.svc.delete_container(c.id.as_str(), true)?;
                dropped += 1;
            }
            for s in store.snapshots(&c.id)? {
                if s.record.alias.as_deref() == Some(COMMIT_ALIAS)
                    && !layers.contains(&(&c.id, s.name.as_str()))
                {
                    log::info!("containerd cleanup: snapshot {} of {}", s.name, c.id);
                    Container::new(store.clone(), &c.id).delete_snapshot(&s.name, false)?;
                    dropped += 1;
                }
            }
        }
        if let Ok(dirs) = std::fs::read_dir(&self.mount_root) {
            for d in dirs.flatten() {
                let id = ContainerId::new(d.file_name().to_string_lossy().into_owned());
                if !live.contains(&id)
                    && !self.reaper.is_pending(&id)
                    && self.svc.mounted_at(&d.path()).is_none()
                {
                    let _ = std::fs::remove_dir(d.path());
                }
            }
        }
        Ok(dropped)
    }

    /// Mounts the container of an active snapshot or view (if it is not mounted yet) and
    /// answers with a bind mount of it.
    fn mount(&self, rec: &RuntimeSnapshot) -> SnapshotterResult<Vec<MountSpec>> {
        let dir = self.mount_root.join(rec.container.as_str());
        let read_only = rec.kind == RuntimeKind::View;
        if self.svc.mounted_at(&dir).is_none() {
            // A mount left by a daemon that died (its connection is gone) goes first; where
            // nothing is mounted this fails (EINVAL, ENOENT) and changes nothing.
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
            std::fs::create_dir_all(&dir).map_err(|e| {
                SnapshotterError::Internal(format!("cannot create {}: {e}", dir.display()))
            })?;
            let opts = VolumeOptions {
                read_only,
                ..Default::default()
            };
            self.svc.start(rec.container.as_str(), &dir, opts)?;
        }
        Ok(vec![MountSpec {
            kind: "bind".into(),
            source: dir,
            options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
        }])
    }

    /// A container name for key `key`: the key with `/` as `.` and control characters as
    /// `_` (at most 200 bytes), made unique with a `.N` suffix.
    fn container_name(&self, key: &str) -> SnapshotterResult<String> {
        let mut base: String = key
            .chars()
            .map(|c| match c {
                '/' => '.',
                c if c.is_control() => '_',
                c => c,
            })
            .collect();
        if base.len() > 200 {
            let mut cut = 200;
            while !base.is_char_boundary(cut) {
                cut -= 1;
            }
            base.truncate(cut);
        }
        if base == "." || base == ".." {
            base = format!("ctrd{base}");
        }
        let store = self.svc.store();
        let mut name = base.clone();
        let mut n = 1u64;
        while store.container_by_name(&name)?.is_some() {
            n += 1;
            name = format!("{base}.{n}");
        }
        Ok(name)
    }
}

/// A quota label's value: bytes, or a number with K, M, G or T (powers of 1024, optionally
/// followed by `i`, `B` or `iB`, any case).
pub fn parse_quota(v: &str) -> Option<u64> {
    let t = v.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = t[..digits].parse().ok()?;
    let unit = t[digits..].trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_values() {
        assert_eq!(parse_quota("1048576"), Some(1 << 20));
        assert_eq!(parse_quota("10G"), Some(10 << 30));
        assert_eq!(parse_quota("10gi"), Some(10 << 30));
        assert_eq!(parse_quota("512MiB"), Some(512 << 20));
        assert_eq!(parse_quota("2kb"), Some(2048));
        for bad in ["", "G", "-1", "1.5G", "10X", "99999999999999999999", "1T1"] {
            assert_eq!(parse_quota(bad), None, "{bad}");
        }
    }
}
