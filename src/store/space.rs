//! Where a store's space goes (`snapfs df`, `GET /api/v1/df`): per container its live data,
//! its snapshots and what deleting each would give back; for the store its disk usage, the
//! data its trees hold, and the garbage waiting for reclaim and for compaction. The anchor
//! is `zfs list -o space`.

use super::{EpochKind, SnapshotInfo, Store};
use crate::error::FsResult;
use crate::ids::{ContainerId, Epoch};

/// The space of one snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotSpace {
    pub info: SnapshotInfo,
    /// Bytes its epoch wrote (the API's `size`).
    pub size: u64,
    /// Bytes deleting it alone would give back once reclaimed: what only it holds.
    pub freed_if_deleted: u64,
}

/// The store's side.
#[derive(Debug, Clone, Default)]
pub struct StoreSpace {
    /// Bytes of the store's files on disk.
    pub disk_bytes: u64,
    /// Bytes of every version a live tree or a snapshot can see.
    pub data_bytes: u64,
    /// Bytes of versions only deleted snapshots and replaced trees hold: reclaim gives them
    /// back in the background.
    pub awaiting_reclaim_bytes: u64,
    /// Bytes dropped (by reclaim, truncations, deletions) that the backend still holds
    /// until its compaction.
    pub awaiting_compaction_bytes: u64,
}

impl Store {
    /// Bytes deleting the snapshot at frozen `epoch` alone would give back: with no child,
    /// all it wrote; with one child, the versions that child shadows (reclaim drops those
    /// and moves the rest down); with more, nothing (it stays as their shared base).
    /// O(versions the snapshot wrote).
    pub fn freed_if_deleted(&self, epoch: Epoch) -> FsResult<u64> {
        let children = self.catalog.read_tree(|t| t.children(epoch));
        match children[..] {
            [] => self.epoch_size(epoch),
            [c] => {
                let mut freed = 0u64;
                for (space, base, size) in
                    self.changes(epoch, &crate::keys::epoch_changes(epoch), usize::MAX)?
                {
                    if self.shadowed_in(c, space, &base)? {
                        freed += size;
                    }
                }
                Ok(freed)
            }
            _ => Ok(0),
        }
    }

    /// The space of each snapshot of `container`, newest first.
    pub fn snapshot_space(&self, container: &ContainerId) -> FsResult<Vec<SnapshotSpace>> {
        let mut snaps = self.snapshots(container)?;
        snaps.sort_by_key(|s| {
            std::cmp::Reverse((s.record.created_at.secs, s.record.created_at.nsecs))
        });
        snaps
            .into_iter()
            .map(|info| {
                let e = info.record.epoch;
                Ok(SnapshotSpace {
                    size: self.epoch_size(e)?,
                    freed_if_deleted: self.freed_if_deleted(e)?,
                    info,
                })
            })
            .collect()
    }

    /// The store's side of the report. Sums every epoch's size (cached after the first
    /// time; the first costs one pass over the change index).
    pub fn store_space(&self) -> FsResult<StoreSpace> {
        let epochs: Vec<(Epoch, bool)> = self.catalog.read_tree(|t| {
            t.to_map()
                .into_iter()
                .map(|(e, r)| (e, r.kind == EpochKind::Retired))
                .collect()
        });
        let mut out = StoreSpace {
            disk_bytes: self.kv.maintenance().map_or(0, |m| m.disk_usage()),
            awaiting_compaction_bytes: (self.kv.maintenance().map_or(0, |m| m.known_garbage()))
                .saturating_add(self.dropped().bytes),
            ..StoreSpace::default()
        };
        for (e, retired) in epochs {
            let size = self.cached_size(e)?;
            if retired {
                out.awaiting_reclaim_bytes += size;
            } else {
                out.data_bytes += size;
            }
        }
        Ok(out)
    }
}
