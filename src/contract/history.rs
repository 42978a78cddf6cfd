//! History: what changed between two trees (`GET .../snapshots/{name}/diff`) and the
//! versions of one path (`GET .../history`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{FileType, PathText};

/// `GET .../snapshots/{name}/diff`: one page of the changes from the snapshot to `to`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The newer snapshot (name or alias); absent: the live tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Changes per page, 1 to 10000 (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `GET .../history`: exactly one of `path` and `path_base64`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Absolute, without `..` (or give `path_base64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^/")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
}

impl HistoryQuery {
    /// The query for `path` (raw bytes): as a string when UTF-8, else as base64.
    pub fn of_path(path: &[u8]) -> HistoryQuery {
        let shown = PathText::of(path);
        match shown.base64 {
            None => HistoryQuery {
                path: Some(shown.text),
                path_base64: None,
            },
            b64 => HistoryQuery {
                path: None,
                path_base64: b64,
            },
        }
    }
}

/// What changed at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Deleted,
    Modified,
    Renamed,
}

impl ChangeKind {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Modified => "modified",
            ChangeKind::Renamed => "renamed",
        }
    }
}

/// What one side of a change shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Side {
    pub r#type: FileType,
    pub size: u64,
    pub mtime: String,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// Lossy UTF-8; exact bytes in `path_base64` when not UTF-8.
    pub path: String,
    /// Only when `path` is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// `added`, `deleted`, `modified` or `renamed`.
    pub change: ChangeKind,
    pub r#type: FileType,
    /// Renames only: the path in the older tree.
    pub old_path: Option<String>,
    /// Only when `old_path` is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path_base64: Option<String>,
    pub content_changed: bool,
    pub metadata_changed: bool,
    pub before: Option<Side>,
    pub after: Option<Side>,
}

impl Change {
    /// The exact bytes of `path`.
    pub fn path_bytes(&self) -> Vec<u8> {
        PathText::bytes(&self.path, self.path_base64.as_deref())
    }

    /// The exact bytes of `old_path`, if any.
    pub fn old_path_bytes(&self) -> Option<Vec<u8>> {
        let old = self.old_path.as_deref()?;
        Some(PathText::bytes(old, self.old_path_base64.as_deref()))
    }
}

/// `GET .../snapshots/{name}/diff`: one page, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Diff {
    pub container_id: String,
    pub from: String,
    /// Null: the live tree.
    pub to: Option<String>,
    /// Changes on every page.
    pub total: u64,
    pub changes: Vec<Change>,
    /// Null on the last page.
    pub next_cursor: Option<String>,
}

/// One tree in which the path differs from the next older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// Null: the live tree.
    pub snapshot: Option<String>,
    pub alias: Option<String>,
    pub created_at: Option<String>,
    pub change: ChangeKind,
    pub r#type: Option<FileType>,
    /// In this tree (null when deleted here).
    pub size: Option<u64>,
    pub mtime: Option<String>,
    pub content_changed: bool,
    pub metadata_changed: bool,
    pub before: Option<Side>,
    pub after: Option<Side>,
}

/// `GET .../history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub container_id: String,
    pub path: String,
    /// Only when `path` is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// Newest first.
    pub history: Vec<HistoryEntry>,
}
