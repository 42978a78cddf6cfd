//! History endpoints: what changed between a snapshot and another snapshot or the live
//! tree (`GET .../snapshots/{name}/diff`), and the versions of one path over the snapshots
//! (`GET .../history?path=`).
//!
//! Paths are raw bytes on disk. Each path is given as a string (invalid UTF-8 replaced by
//! U+FFFD) and, only when it is not valid UTF-8, also exactly as `path_base64` (standard
//! alphabet, padded), so no name is ever lost or confused with another.

use std::sync::Arc;

use axum::extract::State;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{bad, blocking, doc, ApiPath, ApiQuery, ApiResponse, ApiResult};
use crate::codec::Kind;
use crate::fs::{Change, Side};
use crate::service::Service;
use crate::timefmt::rfc3339;

/// Changes per page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DiffQuery {
    #[serde(default)]
    to: Option<String>,
    /// Changes per page, 1 to 10000 (default 1000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

/// The body of `PATCH .../snapshots/{name}`: none (or `{}`) restores the whole container;
/// `paths` (strings) and `paths_base64` (for names that are not UTF-8) restore only those.
/// Unknown fields are refused: a misspelt `paths` must never turn into a full restore.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreBody {
    /// Absolute paths to restore, at least one (absent: the whole container).
    #[serde(default)]
    #[schema(min_items = 1)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    paths_base64: Option<Vec<String>>,
}

/// Most paths one request restores.
const MAX_RESTORE_PATHS: usize = 10_000;

impl RestoreBody {
    /// The paths as raw bytes, or None for a full restore.
    pub(super) fn paths(&self) -> Result<Option<Vec<Vec<u8>>>, ApiResponse> {
        if self.paths.is_none() && self.paths_base64.is_none() {
            return Ok(None);
        }
        let mut out: Vec<Vec<u8>> = self
            .paths
            .iter()
            .flatten()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        for p in self.paths_base64.iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|_| bad(format!("paths_base64: {p:?} is not base64")))?;
            out.push(bytes);
        }
        if out.is_empty() {
            return Err(bad(
                "paths is empty: name at least one path, or send no body to restore everything",
            ));
        }
        if out.len() > MAX_RESTORE_PATHS {
            return Err(bad(format!(
                "at most {MAX_RESTORE_PATHS} paths per request"
            )));
        }
        for p in &out {
            if let Err(e) = crate::fs::components(p) {
                return Err(bad(format!("path {}: {e}", String::from_utf8_lossy(p))));
            }
        }
        Ok(Some(out))
    }

    /// The paths as given, for the answer.
    pub(super) fn shown(&self) -> Value {
        let mut all: Vec<Value> = self
            .paths
            .iter()
            .flatten()
            .map(|p| Value::String(p.clone()))
            .collect();
        all.extend(
            self.paths_base64
                .iter()
                .flatten()
                .map(|p| json!({ "path_base64": p })),
        );
        Value::Array(all)
    }
}

pub(super) fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::CharDev => "char_device",
        Kind::BlockDev => "block_device",
        Kind::Socket => "socket",
    }
}

/// `field` as a (lossy) string, plus `field_base64` when the bytes are not UTF-8.
pub(super) fn put_path(obj: &mut Map<String, Value>, field: &str, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        obj.insert(field.to_string(), Value::Null);
        return;
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            obj.insert(field.to_string(), Value::String(s.to_string()));
        }
        Err(_) => {
            obj.insert(
                field.to_string(),
                Value::String(String::from_utf8_lossy(bytes).into_owned()),
            );
            obj.insert(
                format!("{field}_base64"),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
    }
}

fn side_json(s: Option<&Side>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({"type": kind_name(s.kind), "size": s.size, "mtime": rfc3339(s.mtime)}),
    )
}

fn change_json(c: &Change) -> Value {
    let mut obj = Map::new();
    put_path(&mut obj, "path", Some(&c.path));
    obj.insert("change".into(), Value::String(c.change.as_str().into()));
    obj.insert("type".into(), Value::String(kind_name(c.kind()).into()));
    put_path(&mut obj, "old_path", c.old_path.as_deref());
    obj.insert("content_changed".into(), Value::Bool(c.content));
    obj.insert("metadata_changed".into(), Value::Bool(c.metadata));
    obj.insert("before".into(), side_json(c.before.as_ref()));
    obj.insert("after".into(), side_json(c.after.as_ref()));
    Value::Object(obj)
}

/// A page cursor: the position after the last change of the previous page (its path and
/// change), opaque to clients.
fn cursor_of(c: &Change) -> String {
    let mut raw = c.change.as_str().as_bytes().to_vec();
    raw.push(0);
    raw.extend_from_slice(&c.path);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn parse_cursor(s: &str) -> Result<(Vec<u8>, String), ApiResponse> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad("invalid cursor"))?;
    let zero = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("invalid cursor"))?;
    let change = std::str::from_utf8(&raw[..zero]).map_err(|_| bad("invalid cursor"))?;
    Ok((raw[zero + 1..].to_vec(), change.to_string()))
}

#[utoipa::path(get, path = "/api/v1/containers/{id}/snapshots/{name}/diff", tag = "history", params(("id" = String, Path, description = "container id or name"), ("name" = String, Path, description = "snapshot name or alias"), DiffQuery), responses((status = 200, description = "One page of the changes, sorted by path", body = doc::DiffAnswer)))]
pub(super) async fn diff_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("limit must be from 1 to {MAX_LIMIT}")));
    }
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let to = q.to.clone();
    let d = blocking(&svc, move |s| s.diff(&id, &name, to.as_deref())).await?;
    // Sorted by (path, change): a page starts after the cursor's position.
    let start = match &after {
        None => 0,
        Some((path, change)) => d.changes.partition_point(|c| {
            (c.path.as_slice(), c.change.as_str()) <= (path.as_slice(), change.as_str())
        }),
    };
    let page = &d.changes[start..(start + limit).min(d.changes.len())];
    let next = (start + page.len() < d.changes.len())
        .then(|| page.last().map(cursor_of))
        .flatten();
    Ok(ApiResponse::ok(
        "Snapshot diff retrieved successfully",
        json!({
            "container_id": d.container.id,
            "from": d.from.name,
            "to": d.to.as_ref().map(|s| s.name.clone()),
            "total": d.changes.len(),
            "changes": page.iter().map(change_json).collect::<Vec<_>>(),
            "next_cursor": next,
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Absolute, without `..` (or give `path_base64`).
    #[serde(default)]
    #[param(pattern = "^/")]
    path: Option<String>,
    #[serde(default)]
    path_base64: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/containers/{id}/history", tag = "history", params(("id" = String, Path, description = "container id or name"), HistoryQuery), responses((status = 200, description = "The trees in which the path differs from the next older one, newest first", body = doc::HistoryAnswer)))]
pub(super) async fn path_history(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult {
    let path: Vec<u8> = match (q.path, q.path_base64) {
        (Some(p), None) => p.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| bad("path_base64 is not valid base64"))?,
        _ => return Err(bad("give exactly one of path and path_base64")),
    };
    let asked = path.clone();
    let h = blocking(&svc, move |s| s.history(&id, &path)).await?;
    let entries: Vec<Value> = h
        .entries
        .iter()
        .map(|e| {
            let c = &e.change;
            let now = c.after.as_ref().or(c.before.as_ref());
            json!({
                "snapshot": e.snapshot.as_ref().map(|s| s.name.clone()),
                "alias": e.snapshot.as_ref().and_then(|s| s.record.alias.clone()),
                "created_at": e.snapshot.as_ref().map(|s| rfc3339(s.record.created_at)),
                "change": c.change.as_str(),
                "type": now.map(|s| kind_name(s.kind)),
                "size": c.after.as_ref().map(|s| s.size),
                "mtime": c.after.as_ref().map(|s| rfc3339(s.mtime)),
                "content_changed": c.content,
                "metadata_changed": c.metadata,
                "before": side_json(c.before.as_ref()),
                "after": side_json(c.after.as_ref()),
            })
        })
        .collect();
    let mut data = Map::new();
    data.insert(
        "container_id".into(),
        Value::String(h.container.id.to_string()),
    );
    put_path(&mut data, "path", Some(&asked));
    data.insert("history".into(), Value::Array(entries));
    Ok(ApiResponse::ok(
        "Path history retrieved successfully",
        Value::Object(data),
    ))
}
