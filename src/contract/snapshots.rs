//! Snapshots: `/containers/{id}/snapshots`, `/containers/{id}/snapshots/{name}` and its
//! `alias`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /containers/{id}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Whole days from now, 1 to 36500.
    // The JSON value as sent: whatever it is, the server answers with the range it wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub expiry: Option<serde_json::Value>,
    /// An RFC 3339 time in the future (instead of `expiry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `PATCH /containers/{id}/snapshots/{name}/alias`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    /// 1-100 characters, no `/` or NUL, not `.` or `..`, not shaped like a snapshot name
    /// (`snap-...`); null: none.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^(?!snap-)(?!\\.{1,2}$)[^/\\x00]+$"
    )]
    pub alias: Option<String>,
}

/// The body of `PATCH .../snapshots/{name}`: none (or `{}`) restores the whole container;
/// `paths` (strings) and `paths_base64` (for names that are not UTF-8) restore only those.
/// Unknown fields are refused: a misspelt `paths` must never turn into a full restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// Absolute paths to restore, at least one (absent: the whole container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths_base64: Option<Vec<String>>,
}

impl RestoreBody {
    /// The body restoring `paths` (raw bytes: UTF-8 ones as strings, others as base64), or
    /// the whole container when there are none.
    pub fn of_paths<'a>(paths: impl IntoIterator<Item = &'a [u8]>) -> RestoreBody {
        use base64::Engine;
        let mut body = RestoreBody::default();
        for p in paths {
            match std::str::from_utf8(p) {
                Ok(s) => body.paths.get_or_insert_with(Vec::new).push(s.to_string()),
                Err(_) => body
                    .paths_base64
                    .get_or_insert_with(Vec::new)
                    .push(base64::engine::general_purpose::STANDARD.encode(p)),
            }
        }
        // Only non-UTF-8 paths: `paths` is still sent (empty), as the CLI always did.
        if body.paths_base64.is_some() && body.paths.is_none() {
            body.paths = Some(Vec::new());
        }
        body
    }
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// `snap-YYYYMMDD-HHMMSS`, maybe with `-N`.
    pub name: String,
    pub alias: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    /// Always false (no process state is saved).
    pub stateful: bool,
    /// Bytes its epoch wrote.
    pub size: u64,
}

/// A path a path restore was asked for, as given: a string, or `{path_base64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RestoredPath {
    Text(String),
    Base64 { path_base64: String },
}

/// One snapshot of a container (create, restore, alias).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotData {
    pub container_id: String,
    pub project_id: Option<String>,
    pub snapshot: Snapshot,
    /// Path restores only: the paths asked for (strings, or `{path_base64}` objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_paths: Option<Vec<RestoredPath>>,
    /// Path restores only: inodes written from the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_inodes: Option<u64>,
}

/// `GET /containers/{id}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    pub container_id: String,
    pub project_id: Option<String>,
    /// Newest first.
    pub snapshots: Vec<Snapshot>,
}

/// `DELETE /containers/{id}/snapshots/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeletedSnapshot {
    pub container_id: String,
    pub project_id: Option<String>,
    pub name: String,
}
