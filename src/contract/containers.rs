//! Containers: `/containers`, `/containers/{id}` and its `start`, `stop`, `copy`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /containers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Unique among live containers: 1-255 bytes, no `/` or control characters.
    #[schema(min_length = 1, max_length = 255, pattern = "^[^/\\x00-\\x1f\\x7f]+$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_including_snapshots_bytes: Option<u64>,
}

/// `PATCH /containers/{id}`: quotas. An absent field stays as it is; `null` removes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UpdateContainer {
    /// Most file data the live tree may reference; null removes the limit.
    #[serde(
        default,
        deserialize_with = "super::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub quota_bytes: Option<Option<u64>>,
    /// Most bytes the live tree and its snapshots may hold; null removes the limit.
    #[serde(
        default,
        deserialize_with = "super::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub quota_including_snapshots_bytes: Option<Option<u64>>,
}

/// `POST /containers/{id}/start`: mount the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// An absolute path to an existing directory.
    pub mountpoint: String,
    /// `hidden` (default) or `visible`: whether the root directory lists `.snapshots`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_uid: Option<u32>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// `DELETE /containers/{id}?force=true`: stop a running container first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteContainer {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `POST /containers/{id}/copy`: a new container from the current tree or a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_project_id: Option<String>,
    /// The new container's name (as for creation).
    #[schema(min_length = 1, max_length = 255, pattern = "^[^/\\x00-\\x1f\\x7f]+$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_snapshot: Option<String>,
    /// Copy to another snapfs daemon instead (needs `source_snapshot`): the snapshot is
    /// streamed to it and becomes container `name` there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_server: Option<super::TargetServer>,
}

/// Whether a container is mounted, or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Mounted.
    Running,
    Stopped,
    Deleted,
}

impl ContainerStatus {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Running => "running",
            ContainerStatus::Stopped => "stopped",
            ContainerStatus::Deleted => "deleted",
        }
    }
}

/// How a mount's FUSE requests travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Fuse {
    /// `dev_fuse` or `io_uring`.
    pub transport: String,
    /// Requests served through the io_uring queues.
    pub ring_requests: u64,
}

/// A container (the answer of every container endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Container {
    /// 24 hex digits.
    pub id: String,
    pub name: String,
    pub project_id: Option<String>,
    /// `running` (mounted), `stopped` or `deleted`.
    pub status: ContainerStatus,
    pub mountpoint: Option<String>,
    /// While mounted.
    pub fuse: Option<Fuse>,
    pub created_at: String,
    pub deleted_at: Option<String>,
    /// Everything the live tree and the snapshots hold (every version they wrote).
    pub bytes_used: u64,
    /// File data the live tree references (null for a deleted container).
    pub live_bytes: Option<u64>,
    /// What the snapshots wrote (the sum of their sizes).
    pub snapshots_bytes: u64,
    /// Room left under the tighter quota (null without quotas).
    pub available_bytes: Option<u64>,
    pub quota_bytes: Option<u64>,
    pub quota_including_snapshots_bytes: Option<u64>,
    pub snapshot_count: u64,
}

/// `GET /containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerList {
    /// Every container, deleted ones too.
    pub containers: Vec<Container>,
}

impl ContainerList {
    /// Is any container mounted?
    pub fn any_running(&self) -> bool {
        self.containers
            .iter()
            .any(|c| c.status == ContainerStatus::Running)
    }
}
