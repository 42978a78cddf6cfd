//! Operations: `/df` (where the space goes) and `/status` (the daemon, reclaim, object
//! storage).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Container;

/// `GET /df[?container=]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DfQuery {
    /// Only this container (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// The store's side of `GET /df`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreSpace {
    pub disk_bytes: u64,
    pub data_bytes: u64,
    pub awaiting_reclaim_bytes: u64,
    pub awaiting_compaction_bytes: u64,
}

/// One snapshot in `GET /df`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotSpace {
    pub name: String,
    pub alias: Option<String>,
    pub created_at: String,
    pub size: u64,
    /// What deleting it alone would give back once reclaimed.
    pub freed_if_deleted: u64,
}

/// One container in `GET /df`: the container and its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerSpace {
    #[serde(flatten)]
    pub container: Container,
    pub snapshots: Vec<SnapshotSpace>,
}

/// `GET /df`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Space {
    pub store: StoreSpace,
    pub containers: Vec<ContainerSpace>,
}

/// Counts of one reclaim run, or of every run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReclaimRun {
    pub epochs_removed: u64,
    pub versions_dropped: u64,
    pub versions_moved: u64,
    pub versions_scanned: u64,
    pub bytes_dropped: u64,
    pub batches: u64,
}

/// What reclaim is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reclaim {
    pub running: bool,
    pub queued_epochs: u64,
    pub retired_epochs: u64,
    pub current_run: ReclaimRun,
    pub since_start: ReclaimRun,
}

/// A store on object storage (null for an embedded store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObjectStoreStatus {
    /// Where the data lives (s3://BUCKET/PREFIX).
    pub url: String,
    /// This daemon opened the store as a reader.
    pub read_only: bool,
    /// Another host took the store over: writes fail here.
    pub fenced: bool,
    /// Bytes written but not yet in object storage.
    pub backlog_bytes: u64,
    /// The backlog beyond which writes wait.
    pub backlog_limit_bytes: u64,
    /// The local cache's size on disk.
    pub cache_bytes: u64,
    pub cache_limit_bytes: u64,
    /// How often writes not yet synced are pushed out, in milliseconds.
    pub push_interval_ms: u64,
    /// Since the daemon opened the store: bytes of keys and values written.
    pub written_bytes: u64,
    /// Requests and bytes sent to the object store since then (put_bytes / written_bytes is
    /// the write amplification), GET and LIST requests.
    pub put_requests: u64,
    pub put_bytes: u64,
    pub get_requests: u64,
    pub list_requests: u64,
    /// File data in segment objects: their bytes (live or not), the live part, and the
    /// segments deleted since the daemon opened the store (emptied ones after the horizon).
    pub segment_bytes: u64,
    pub segment_live_bytes: u64,
    pub segments_deleted: u64,
}

/// The daemon process, in `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonProcess {
    pub pid: u32,
    /// When this daemon process started (RFC 3339).
    pub started_at: String,
    /// Resident memory (VmRSS).
    pub rss_bytes: u64,
    pub threads: u64,
    /// Threads reading `/dev/fuse` for every mount (shared by all mounts, started on demand).
    pub fuse_workers: u64,
    /// The mounts outlive this daemon: their descriptors are kept outside it (systemd's fd
    /// store or snapfs's supervisor), so a crash or `snapfs restart` does not end them.
    #[serde(default)]
    pub mounts_kept: bool,
    /// The supervisor that restarts this daemon, when it runs under one.
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// Mounts this daemon took over from the one before it when it started.
    #[serde(default)]
    pub resumed_mounts: u64,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub version: String,
    /// The store's on-disk format version (what this daemon reads and writes).
    #[serde(default)]
    pub format_version: u32,
    pub mounts: u64,
    pub daemon: DaemonProcess,
    pub reclaim: Reclaim,
    pub object_store: Option<ObjectStoreStatus>,
}
