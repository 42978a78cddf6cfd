//! Snapshot operations of the service: each finds the container and hands the operation to
//! its lifecycle ([`Container`](crate::fs::Container)), which flushes, writes the batch and
//! invalidates; plus the read-only diff and history.

use std::sync::Arc;

use super::{Diff, History, HistoryEntry, Service, ServiceError, ServiceResult};
use crate::codec::Ts;
use crate::error::FsError;
use crate::fs::{Fs, PathRestore};
use crate::store::{ContainerRecord, SnapshotInfo, StoreError};

impl Service {
    pub fn snapshots(
        &self,
        id_or_name: &str,
    ) -> ServiceResult<(ContainerRecord, Vec<SnapshotInfo>)> {
        let c = self.container(id_or_name)?;
        let snaps = self.store.snapshots(&c.id)?;
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
        let s = self.lifecycle(&c.id).snapshot(alias, expires_at)?;
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
        // Under the mounts lock: the container is not mounted or unmounted meanwhile.
        let mounts = self.mounts.lock();
        let s = self.lifecycle_in(&mounts, &c.id).restore(key)?;
        drop(mounts);
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
        let cid = &c.id;
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
        let r = self
            .lifecycle_in(&mounts, &c.id)
            .restore_paths(&snap, paths)
            .map_err(refused)?;
        drop(mounts);
        let snap = self.store.find_snapshot(cid, &snap.name)?.unwrap_or(snap);
        Ok((c, snap, r))
    }

    /// What changed from snapshot `from` to snapshot `to`, or to the container's current
    /// tree when `to` is None; sorted by path. Reclaim waits meanwhile (it moves versions
    /// between the epochs the diff reads).
    pub fn diff(&self, id_or_name: &str, from: &str, to: Option<&str>) -> ServiceResult<Diff> {
        let c = self.container(id_or_name)?;
        let cid = &c.id;
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
            self.lifecycle(&c.id).flush_writes()?;
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
        let cid = &c.id;
        let mut snaps = self.store.snapshots(cid)?;
        snaps.sort_by(|a, b| {
            let key = |s: &SnapshotInfo| (s.record.created_at.secs, s.record.created_at.nsecs);
            key(b).cmp(&key(a)).then(b.name.cmp(&a.name))
        });
        let live = c.deleted_at.is_none();
        if live {
            self.lifecycle(&c.id).flush_writes()?;
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
        Ok(self.lifecycle(&c.id).delete_snapshot(key, true)?)
    }

    pub fn set_alias(
        &self,
        id_or_name: &str,
        key: &str,
        alias: Option<&str>,
    ) -> ServiceResult<(ContainerRecord, SnapshotInfo)> {
        let c = self.container(id_or_name)?;
        let s = self.lifecycle(&c.id).set_alias(key, alias)?;
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
        Ok(self.lifecycle(&c.id).copy(snapshot, name, project)?)
    }

    /// Deletes every snapshot whose expiry has passed (read from the expiry index: the cost
    /// is what is due, not the number of snapshots). Returns how many.
    pub fn expire(&self) -> ServiceResult<usize> {
        let mut n = 0;
        for (container, name) in self.store.expired(Ts::now())? {
            let id = container;
            match self.lifecycle(&id).delete_snapshot(&name, true) {
                Ok(_) => {
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
