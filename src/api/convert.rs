//! The service's values as the API's contract types (`crate::contract`): the one place that
//! decides how a record, a time, a path or a file type looks on the wire.

use crate::codec::{Kind, Ts};
use crate::contract;
use crate::service::ContainerInfo;
use crate::store::{ContainerRecord, SnapshotInfo};
use crate::timefmt::rfc3339;

/// An optional time: RFC 3339, or null.
pub(super) fn time(t: Option<Ts>) -> Option<String> {
    t.map(rfc3339)
}

pub(super) fn file_type(k: Kind) -> contract::FileType {
    use contract::FileType as F;
    match k {
        Kind::File => F::File,
        Kind::Dir => F::Dir,
        Kind::Symlink => F::Symlink,
        Kind::Fifo => F::Fifo,
        Kind::CharDev => F::CharDevice,
        Kind::BlockDev => F::BlockDevice,
        Kind::Socket => F::Socket,
    }
}

pub(super) fn change_kind(c: crate::fs::ChangeKind) -> contract::ChangeKind {
    use crate::fs::ChangeKind as K;
    match c {
        K::Added => contract::ChangeKind::Added,
        K::Deleted => contract::ChangeKind::Deleted,
        K::Modified => contract::ChangeKind::Modified,
        K::Renamed => contract::ChangeKind::Renamed,
    }
}

impl From<&ContainerInfo> for contract::Container {
    fn from(c: &ContainerInfo) -> Self {
        let status = match c.status() {
            "deleted" => contract::ContainerStatus::Deleted,
            "running" => contract::ContainerStatus::Running,
            _ => contract::ContainerStatus::Stopped,
        };
        contract::Container {
            id: c.record.id.to_string(),
            name: c.record.name.clone(),
            project_id: c.record.project_id.clone(),
            status,
            mountpoint: c.mountpoint.as_ref().map(|p| p.display().to_string()),
            fuse: c.fuse.map(|(transport, ring_requests)| contract::Fuse {
                transport: transport.to_string(),
                ring_requests,
            }),
            created_at: rfc3339(c.record.created),
            deleted_at: time(c.record.deleted_at),
            bytes_used: c.bytes_used,
            live_bytes: c.live_bytes,
            snapshots_bytes: c.snapshots_bytes,
            available_bytes: c.available_bytes,
            quota_bytes: c.quota.bytes,
            quota_including_snapshots_bytes: c.quota.including_snapshots,
            snapshot_count: c.snapshot_count as u64,
        }
    }
}

/// A snapshot with its size (bytes its epoch wrote).
pub(super) fn snapshot(s: &SnapshotInfo, size: u64) -> contract::Snapshot {
    contract::Snapshot {
        name: s.name.clone(),
        alias: s.record.alias.clone(),
        created_at: rfc3339(s.record.created_at),
        last_used_at: time(s.record.last_used_at),
        expires_at: time(s.record.expires_at),
        stateful: false,
        size,
    }
}

/// One snapshot of container `c`, as create, restore and alias answer it.
pub(super) fn snapshot_data(
    c: &ContainerRecord,
    s: &SnapshotInfo,
    size: u64,
) -> contract::SnapshotData {
    contract::SnapshotData {
        container_id: c.id.to_string(),
        project_id: c.project_id.clone(),
        snapshot: snapshot(s, size),
        restored_paths: None,
        restored_inodes: None,
    }
}

pub(super) fn side(s: &crate::fs::Side) -> contract::Side {
    contract::Side {
        r#type: file_type(s.kind),
        size: s.size,
        mtime: rfc3339(s.mtime),
    }
}

impl From<&crate::fs::Change> for contract::Change {
    fn from(c: &crate::fs::Change) -> Self {
        let path = contract::PathText::of(&c.path);
        let old = c.old_path.as_deref().map(contract::PathText::of);
        contract::Change {
            path: path.text,
            path_base64: path.base64,
            change: change_kind(c.change),
            r#type: file_type(c.kind()),
            old_path_base64: old.as_ref().and_then(|o| o.base64.clone()),
            old_path: old.map(|o| o.text),
            content_changed: c.content,
            metadata_changed: c.metadata,
            before: c.before.as_ref().map(side),
            after: c.after.as_ref().map(side),
        }
    }
}

impl From<&crate::service::HistoryEntry> for contract::HistoryEntry {
    fn from(e: &crate::service::HistoryEntry) -> Self {
        let c = &e.change;
        let now = c.after.as_ref().or(c.before.as_ref());
        contract::HistoryEntry {
            snapshot: e.snapshot.as_ref().map(|s| s.name.clone()),
            alias: e.snapshot.as_ref().and_then(|s| s.record.alias.clone()),
            created_at: e.snapshot.as_ref().map(|s| rfc3339(s.record.created_at)),
            change: change_kind(c.change),
            r#type: now.map(|s| file_type(s.kind)),
            size: c.after.as_ref().map(|s| s.size),
            mtime: c.after.as_ref().map(|s| rfc3339(s.mtime)),
            content_changed: c.content,
            metadata_changed: c.metadata,
            before: c.before.as_ref().map(side),
            after: c.after.as_ref().map(side),
        }
    }
}

impl From<&crate::store::StoreSpace> for contract::StoreSpace {
    fn from(s: &crate::store::StoreSpace) -> Self {
        contract::StoreSpace {
            disk_bytes: s.disk_bytes,
            data_bytes: s.data_bytes,
            awaiting_reclaim_bytes: s.awaiting_reclaim_bytes,
            awaiting_compaction_bytes: s.awaiting_compaction_bytes,
        }
    }
}

impl From<&crate::store::SnapshotSpace> for contract::SnapshotSpace {
    fn from(s: &crate::store::SnapshotSpace) -> Self {
        contract::SnapshotSpace {
            name: s.info.name.clone(),
            alias: s.info.record.alias.clone(),
            created_at: rfc3339(s.info.record.created_at),
            size: s.size,
            freed_if_deleted: s.freed_if_deleted,
        }
    }
}

impl From<&crate::store::ReclaimStats> for contract::ReclaimRun {
    fn from(s: &crate::store::ReclaimStats) -> Self {
        contract::ReclaimRun {
            epochs_removed: s.epochs_removed,
            versions_dropped: s.versions_dropped,
            versions_moved: s.versions_moved,
            versions_scanned: s.versions_scanned,
            bytes_dropped: s.bytes_dropped,
            batches: s.batches,
        }
    }
}

impl From<&crate::store::ReclaimProgress> for contract::Reclaim {
    fn from(p: &crate::store::ReclaimProgress) -> Self {
        contract::Reclaim {
            running: p.running,
            queued_epochs: p.queued_epochs as u64,
            retired_epochs: p.retired_epochs as u64,
            current_run: (&p.current).into(),
            since_start: (&p.total).into(),
        }
    }
}

impl From<crate::kv::RemoteStatus> for contract::ObjectStoreStatus {
    fn from(r: crate::kv::RemoteStatus) -> Self {
        contract::ObjectStoreStatus {
            url: r.url,
            read_only: r.read_only,
            fenced: r.fenced,
            backlog_bytes: r.backlog_bytes,
            backlog_limit_bytes: r.backlog_limit_bytes,
            cache_bytes: r.cache_bytes,
            cache_limit_bytes: r.cache_limit_bytes,
            push_interval_ms: r.push_interval_ms,
            written_bytes: r.written_bytes,
            put_requests: r.put_requests,
            put_bytes: r.put_bytes,
            get_requests: r.get_requests,
            list_requests: r.list_requests,
            segment_bytes: r.segment_bytes,
            segment_live_bytes: r.segment_live_bytes,
            segments_deleted: r.segments_deleted,
        }
    }
}
