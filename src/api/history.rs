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

use super::{bad, blocking, Answer, ApiError, ApiPath, ApiQuery, ApiResult};
use crate::contract::{
    self, Diff, DiffQuery, Envelope, History, HistoryEntry, HistoryQuery, PathText, RestoreBody,
    RestoredPath,
};
use crate::fs::Change;
use crate::service::Service;

/// Changes per page unless `limit` says otherwise, and the most a page may hold.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

/// Most paths one request restores.
const MAX_RESTORE_PATHS: usize = 10_000;

/// The paths of a restore as raw bytes, or None for a full restore.
pub(super) fn restore_paths(req: &RestoreBody) -> Result<Option<Vec<Vec<u8>>>, ApiError> {
    if req.paths.is_none() && req.paths_base64.is_none() {
        return Ok(None);
    }
    let mut out: Vec<Vec<u8>> = req
        .paths
        .iter()
        .flatten()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    for p in req.paths_base64.iter().flatten() {
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

/// The paths of a restore as given, for the answer.
pub(super) fn restored_paths(req: &RestoreBody) -> Vec<RestoredPath> {
    let text = req.paths.iter().flatten().cloned().map(RestoredPath::Text);
    let raw = req
        .paths_base64
        .iter()
        .flatten()
        .map(|p| RestoredPath::Base64 {
            path_base64: p.clone(),
        });
    text.chain(raw).collect()
}

/// A page cursor: the position after the last change of the previous page (its path and
/// change), opaque to clients.
fn cursor_of(c: &Change) -> String {
    let mut raw = c.change.as_str().as_bytes().to_vec();
    raw.push(0);
    raw.extend_from_slice(&c.path);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn parse_cursor(s: &str) -> Result<(Vec<u8>, String), ApiError> {
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

#[utoipa::path(get, path = "/api/v1/containers/{id}/snapshots/{name}/diff", tag = "history", params(("id" = String, Path, description = "container id or name"), ("name" = String, Path, description = "snapshot name or alias"), DiffQuery), responses((status = 200, description = "One page of the changes, sorted by path", body = Envelope<Diff>)))]
pub(super) async fn diff_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Diff> {
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
    Ok(Answer::ok(
        "Snapshot diff retrieved successfully",
        Diff {
            container_id: d.container.id.to_string(),
            from: d.from.name.clone(),
            to: d.to.as_ref().map(|s| s.name.clone()),
            total: d.changes.len() as u64,
            changes: page.iter().map(contract::Change::from).collect(),
            next_cursor: next,
        },
    ))
}

#[utoipa::path(get, path = "/api/v1/containers/{id}/history", tag = "history", params(("id" = String, Path, description = "container id or name"), HistoryQuery), responses((status = 200, description = "The trees in which the path differs from the next older one, newest first", body = Envelope<History>)))]
pub(super) async fn path_history(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<History> {
    let path: Vec<u8> = match (q.path, q.path_base64) {
        (Some(p), None) => p.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| bad("path_base64 is not valid base64"))?,
        _ => return Err(bad("give exactly one of path and path_base64")),
    };
    let asked = path.clone();
    let h = blocking(&svc, move |s| s.history(&id, &path)).await?;
    let shown = PathText::of(&asked);
    Ok(Answer::ok(
        "Path history retrieved successfully",
        History {
            container_id: h.container.id.to_string(),
            path: shown.text,
            path_base64: shown.base64,
            history: h.entries.iter().map(HistoryEntry::from).collect(),
        },
    ))
}
