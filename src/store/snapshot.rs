//! Snapshot lifecycle on the epoch tree: snapshot, restore, copy, delete, alias, expiry.
//! Each operation is one small batch whatever the size of the data: O(1).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Chain, ContainerRecord, EpochKind, EpochRecord, Store, StoreError};
use crate::codec::{self, Ts};
use crate::error::{FsError, FsResult};
use crate::ids::{ContainerId, Epoch};
use crate::keys;
use crate::kv::{Batch, Dir, Space};
use crate::timefmt;

/// Longest alias, in characters.
pub const ALIAS_MAX: usize = 100;

/// Stored metadata of one snapshot (keyed by container and name).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The frozen epoch holding the snapshot's tree.
    pub epoch: Epoch,
    pub alias: Option<String>,
    pub created_at: Ts,
    pub expires_at: Option<Ts>,
    pub last_used_at: Option<Ts>,
}

/// A snapshot as the service layers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub container: ContainerId,
    pub name: String,
    pub record: SnapshotRecord,
}

/// Is `s` shaped like a snapshot name (`snap-…`)? Such aliases are refused to keep names and
/// aliases apart.
pub fn looks_like_name(s: &str) -> bool {
    s.starts_with("snap-")
}

/// Checks an alias: 1–100 characters, no `/` or NUL, not `.`/`..`, not shaped like a name.
pub fn check_alias(alias: &str) -> Result<(), StoreError> {
    let bad = |why| Err(StoreError::BadAlias(alias.to_string(), why));
    if alias.is_empty() {
        return bad("empty");
    }
    if alias.chars().count() > ALIAS_MAX {
        return bad("longer than 100 characters");
    }
    if alias.contains('/') || alias.contains('\0') {
        return bad("contains '/' or NUL");
    }
    if alias == "." || alias == ".." {
        return bad("reserved");
    }
    if looks_like_name(alias) {
        return bad("shaped like a snapshot name (snap-...)");
    }
    Ok(())
}

impl Store {
    /// Every snapshot of `container`, oldest first.
    pub fn snapshots(&self, container: &ContainerId) -> FsResult<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        self.scan_snapshot_records(container, Dir::Forward, &mut |name, record| {
            out.push(SnapshotInfo {
                container: container.clone(),
                name: String::from_utf8_lossy(name).into_owned(),
                record,
            });
            true
        })?;
        out.sort_by_key(|s| s.record.epoch);
        Ok(out)
    }

    /// Visits the snapshot records of `container` in name order (`dir`), decoded, until `f`
    /// returns false; a record that does not decode is an error.
    pub(super) fn scan_snapshot_records(
        &self,
        container: &ContainerId,
        dir: Dir,
        f: &mut dyn FnMut(&[u8], SnapshotRecord) -> bool,
    ) -> FsResult<()> {
        let prefix = keys::snapshot_prefix(container);
        let end = crate::kv::prefix_end(&prefix);
        let mut bad = None;
        self.kv.scan(
            Space::Meta,
            &prefix,
            &end,
            dir,
            &mut |k, v| match codec::decode_plain::<SnapshotRecord>(v) {
                Ok(record) => f(&k[prefix.len()..], record),
                Err(e) => {
                    bad = Some(e);
                    false
                }
            },
        )?;
        match bad {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The snapshot called `key` (its name, or else its alias). O(1): aliases are indexed.
    pub fn find_snapshot(
        &self,
        container: &ContainerId,
        key: &str,
    ) -> FsResult<Option<SnapshotInfo>> {
        if let Some(s) = self.snapshot_by_name(container, key)? {
            return Ok(Some(s));
        }
        self.snapshot_by_alias(container, key)
    }

    pub fn snapshot_by_name(
        &self,
        container: &ContainerId,
        name: &str,
    ) -> FsResult<Option<SnapshotInfo>> {
        match self.kv.get(Space::Meta, &keys::snapshot(container, name))? {
            Some(v) => Ok(Some(SnapshotInfo {
                container: container.clone(),
                name: name.to_string(),
                record: codec::decode_plain(&v)?,
            })),
            None => Ok(None),
        }
    }

    pub(super) fn require_snapshot(
        &self,
        container: &ContainerId,
        key: &str,
    ) -> Result<SnapshotInfo, StoreError> {
        self.find_snapshot(container, key)?
            .ok_or_else(|| StoreError::NoSnapshot(key.to_string()))
    }

    fn put_epoch(&self, b: &mut Batch, e: Epoch, rec: &EpochRecord) {
        b.put(Space::Meta, keys::epoch(e), codec::encode_plain(rec));
    }

    /// Freezes the head of `container` and starts a new head on top of it, in `b`.
    /// Returns (frozen epoch, new head, updated container record).
    fn freeze_head(
        &self,
        b: &mut Batch,
        container: &ContainerId,
    ) -> Result<(Epoch, Epoch, ContainerRecord), StoreError> {
        let mut crec = self.require_live(container)?;
        let frozen = crec.head;
        let old = self
            .epoch(frozen)
            .ok_or_else(|| FsError::Corrupt(format!("head epoch {frozen} missing")))?;
        let head = self.alloc_epoch(b);
        self.put_epoch(
            b,
            frozen,
            &EpochRecord {
                parent: old.parent,
                kind: EpochKind::Frozen,
            },
        );
        self.put_epoch(
            b,
            head,
            &EpochRecord {
                parent: Some(frozen),
                kind: EpochKind::Head {
                    container: container.clone(),
                },
            },
        );
        crec.head = head;
        self.put_container(b, &crec);
        self.inherit_usage(b, head, frozen)?;
        Ok((frozen, head, crec))
    }

    /// Reloads the in-memory epoch records touched by a written batch.
    pub(super) fn reload_epochs(&self, epochs: &[Epoch]) -> FsResult<()> {
        self.forget_snapshot_epochs();
        for &e in epochs {
            match self.kv.get(Space::Meta, &keys::epoch(e))? {
                Some(v) => {
                    let rec: EpochRecord = codec::decode_plain(&v)?;
                    self.catalog.edit_tree(|t| t.insert(e, rec));
                }
                None => {
                    self.catalog.edit_tree(|t| t.remove(e));
                }
            }
        }
        Ok(())
    }

    /// A free name for a snapshot taken `now`: `snap-YYYYMMDD-HHMMSS`, then `-2`, `-3`, ...
    /// within the same second. The last suffix handed out per container is remembered, so
    /// the thousandth snapshot of one second costs one lookup, not a thousand. Call with the
    /// write lock held.
    fn unique_name(&self, container: &ContainerId, now: Ts) -> FsResult<String> {
        let base = timefmt::snapshot_name(now);
        let mut last = self.catalog.last_names.lock();
        let mut n = match last.get(container) {
            Some((b, n)) if *b == base => n + 1,
            _ => 1,
        };
        loop {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            if self
                .kv
                .get(Space::Meta, &keys::snapshot(container, &name))?
                .is_none()
            {
                last.insert(container.clone(), (base, n));
                return Ok(name);
            }
            n += 1;
        }
    }

    /// Takes a snapshot of `container`: its head freezes, a new head starts on top. O(1).
    pub fn snapshot(
        &self,
        container: &ContainerId,
        alias: Option<&str>,
        expires_at: Option<Ts>,
    ) -> Result<SnapshotInfo, StoreError> {
        crate::metrics::timed("snapshot", || {
            self.snapshot_inner(container, alias, expires_at)
        })
    }

    fn snapshot_inner(
        &self,
        container: &ContainerId,
        alias: Option<&str>,
        expires_at: Option<Ts>,
    ) -> Result<SnapshotInfo, StoreError> {
        if let Some(a) = alias {
            check_alias(a)?;
        }
        let _g = self.write_lock();
        self.require_live(container)?;
        if let Some(a) = alias {
            self.alias_free(container, a, "")?;
        }
        let mut b = Batch::new();
        let (frozen, head, _) = self.freeze_head(&mut b, container)?;
        let now = Ts::now();
        let info = SnapshotInfo {
            container: container.clone(),
            name: self.unique_name(container, now)?,
            record: SnapshotRecord {
                epoch: frozen,
                alias: alias.map(str::to_string),
                created_at: now,
                expires_at,
                last_used_at: None,
            },
        };
        let old_chain = self.head(container)?;
        self.put_snapshot(&mut b, &info, None);
        self.kv.write(b, true)?;
        self.count_snapshots(container, true, info.record.created_at);
        self.reload_epochs(&[frozen, head])?;
        if old_chain.epoch == frozen {
            self.set_head_below(container, head, &old_chain);
        } else {
            self.set_head(container, head);
        }
        Ok(info)
    }

    /// Points `container` at a new head on top of snapshot `key`; the old head is retired.
    /// Later snapshots are kept. O(1).
    pub fn restore(&self, container: &ContainerId, key: &str) -> Result<SnapshotInfo, StoreError> {
        crate::metrics::timed("restore", || self.restore_inner(container, key))
    }

    fn restore_inner(
        &self,
        container: &ContainerId,
        key: &str,
    ) -> Result<SnapshotInfo, StoreError> {
        let _g = self.write_lock();
        let mut snap = self.require_snapshot(container, key)?;
        let mut crec = self.require_live(container)?;
        let base = self.chain_via(snap.record.epoch, self.head(container).ok().as_deref());
        if let Some(limit) = self.quota(container)?.bytes {
            let usage = self.usage(snap.record.epoch)?;
            if usage > limit {
                return Err(StoreError::OverQuota { usage, limit });
            }
        }
        let mut b = Batch::new();
        let old = crec.head;
        let head = self.alloc_epoch(&mut b);
        self.inherit_usage(&mut b, head, snap.record.epoch)?;
        self.put_epoch(
            &mut b,
            head,
            &EpochRecord {
                parent: Some(snap.record.epoch),
                kind: EpochKind::Head {
                    container: container.clone(),
                },
            },
        );
        self.retire(&mut b, old)?;
        crec.head = head;
        self.put_container(&mut b, &crec);
        snap.record.last_used_at = Some(Ts::now());
        self.put_snapshot(&mut b, &snap, None);
        self.kv.write(b, true)?;
        self.reload_epochs(&[old, head])?;
        self.set_head_below(container, head, &base);
        Ok(snap)
    }

    /// Records in `b` that snapshot `snap` was just used (a path restore from it).
    pub fn touch_snapshot(&self, b: &mut Batch, snap: &mut SnapshotInfo) {
        snap.record.last_used_at = Some(Ts::now());
        self.put_snapshot(b, snap, None);
    }

    pub(super) fn retire(&self, b: &mut Batch, e: Epoch) -> Result<(), StoreError> {
        let rec = self
            .epoch(e)
            .ok_or_else(|| FsError::Corrupt(format!("epoch {e} missing")))?;
        self.put_epoch(
            b,
            e,
            &EpochRecord {
                parent: rec.parent,
                kind: EpochKind::Retired,
            },
        );
        Ok(())
    }

    /// Deletes snapshot `key` at once; its space is reclaimed in the background.
    pub fn delete_snapshot(
        &self,
        container: &ContainerId,
        key: &str,
    ) -> Result<SnapshotInfo, StoreError> {
        crate::metrics::timed("delete", || self.delete_snapshot_inner(container, key))
    }

    fn delete_snapshot_inner(
        &self,
        container: &ContainerId,
        key: &str,
    ) -> Result<SnapshotInfo, StoreError> {
        let _g = self.write_lock();
        let snap = self.require_snapshot(container, key)?;
        let mut b = Batch::new();
        self.delete_snapshot_record(&mut b, &snap);
        self.retire(&mut b, snap.record.epoch)?;
        self.kv.write(b, true)?;
        self.count_snapshots(container, false, snap.record.created_at);
        self.reload_epochs(&[snap.record.epoch])?;
        Ok(snap)
    }

    /// Retires epoch `e` (for `fsck --repair`: an epoch nothing references); reclaim then
    /// drops its versions.
    pub fn retire_epoch(&self, e: Epoch) -> Result<(), StoreError> {
        let _g = self.write_lock();
        let mut b = Batch::new();
        self.retire(&mut b, e)?;
        self.kv.write(b, true)?;
        self.reload_epochs(&[e])?;
        Ok(())
    }

    /// Sets (or with `None` clears) the alias of snapshot `key`.
    pub fn set_alias(
        &self,
        container: &ContainerId,
        key: &str,
        alias: Option<&str>,
    ) -> Result<SnapshotInfo, StoreError> {
        if let Some(a) = alias {
            check_alias(a)?;
        }
        let _g = self.write_lock();
        let mut snap = self.require_snapshot(container, key)?;
        if let Some(a) = alias {
            self.alias_free(container, a, &snap.name)?;
        }
        let old = snap.record.clone();
        snap.record.alias = alias.map(str::to_string);
        let mut b = Batch::new();
        self.put_snapshot(&mut b, &snap, Some(&old));
        self.kv.write(b, true)?;
        Ok(snap)
    }

    /// Sets (or clears) the expiry of snapshot `key`.
    pub fn set_expiry(
        &self,
        container: &ContainerId,
        key: &str,
        expires_at: Option<Ts>,
    ) -> Result<SnapshotInfo, StoreError> {
        let _g = self.write_lock();
        let mut snap = self.require_snapshot(container, key)?;
        let old = snap.record.clone();
        snap.record.expires_at = expires_at;
        let mut b = Batch::new();
        self.put_snapshot(&mut b, &snap, Some(&old));
        self.kv.write(b, true)?;
        Ok(snap)
    }

    /// Creates container `target` (in project `project_id`) whose head starts from snapshot
    /// `key` of `source`, or from the current tree of `source` when `key` is `None`. O(1).
    /// A deleted source can still be copied from its snapshots.
    pub fn copy_container(
        &self,
        source: &ContainerId,
        key: Option<&str>,
        target: &str,
        project_id: Option<&str>,
    ) -> Result<ContainerRecord, StoreError> {
        crate::metrics::timed("copy", || {
            self.copy_container_inner(source, key, target, project_id)
        })
    }

    fn copy_container_inner(
        &self,
        source: &ContainerId,
        key: Option<&str>,
        target: &str,
        project_id: Option<&str>,
    ) -> Result<ContainerRecord, StoreError> {
        super::check_container_name(target)?;
        let _g = self.write_lock();
        self.require_container(source)?;
        let mut b = Batch::new();
        let mut touched = Vec::new();
        let source_chain = self.head(source).ok();
        let base = match key {
            Some(k) => {
                let mut snap = self.require_snapshot(source, k)?;
                snap.record.last_used_at = Some(Ts::now());
                self.put_snapshot(&mut b, &snap, None);
                snap.record.epoch
            }
            None => {
                // Freeze the source's current tree (an unnamed frozen epoch) and branch from it.
                let (frozen, head, _) = self.freeze_head(&mut b, source)?;
                touched.extend([frozen, head]);
                frozen
            }
        };
        let head = self.alloc_epoch(&mut b);
        self.inherit_usage(&mut b, head, base)?;
        let crec = self.new_container_record(&mut b, target, project_id, head)?;
        self.put_epoch(
            &mut b,
            head,
            &EpochRecord {
                parent: Some(base),
                kind: EpochKind::Head {
                    container: crec.id.clone(),
                },
            },
        );
        touched.push(head);
        let base_chain = self.chain_via(base, source_chain.as_deref());
        self.kv.write(b, true)?;
        self.reload_epochs(&touched)?;
        if key.is_none() {
            if let Some(h) = touched.get(1) {
                self.set_head_below(source, *h, &base_chain);
            }
        }
        self.set_head_below(&crec.id, head, &base_chain);
        Ok(crec)
    }

    /// Bytes written in `epoch` (its versions' stored sizes), from the change index.
    pub fn epoch_size(&self, epoch: Epoch) -> FsResult<u64> {
        Ok(self.epoch_own(epoch)?.bytes)
    }

    /// What `epoch` holds on its own (bytes of its versions, how many are inodes), from its
    /// change index: O(versions it wrote).
    pub fn epoch_own(&self, epoch: Epoch) -> FsResult<super::Own> {
        let start = keys::epoch_changes(epoch);
        let end = crate::kv::prefix_end(&start);
        let mut own = super::Own::default();
        self.kv
            .scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, v| {
                if let Ok(b) = <[u8; 8]>::try_from(v) {
                    own.bytes += u64::from_be_bytes(b);
                }
                if super::quota::is_inode_change(k) {
                    own.inodes += 1;
                }
                true
            })?;
        Ok(own)
    }

    /// Bytes of every version the store holds (the change index covers them all).
    pub fn live_bytes(&self) -> FsResult<u64> {
        let mut total = 0u64;
        self.kv.scan(
            Space::Meta,
            &[keys::TAG_CHANGE],
            &[keys::TAG_CHANGE + 1],
            Dir::Forward,
            &mut |_, v| {
                if let Ok(b) = <[u8; 8]>::try_from(v) {
                    total += u64::from_be_bytes(b);
                }
                true
            },
        )?;
        Ok(total)
    }

    /// The chain a snapshot view reads.
    pub fn snapshot_chain(&self, snap: &SnapshotInfo) -> Arc<Chain> {
        Arc::new(self.chain(snap.record.epoch))
    }
}
