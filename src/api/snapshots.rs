//! Snapshot endpoints: list, create (alias, expiry), restore (whole or some paths), delete,
//! alias.

use super::*;

use contract::{
    CreateSnapshot, DeletedSnapshot, RestoreBody, SetAlias, SnapshotData, SnapshotList,
};
use convert::{snapshot, snapshot_data};

/// The expiry instant asked for: `expiry` in whole days from now, or an explicit
/// `expires_at` (RFC 3339); never both.
fn expiry_of(req: &CreateSnapshot) -> Result<Option<Ts>, ApiError> {
    match (&req.expiry, &req.expires_at) {
        (Some(_), Some(_)) => Err(bad("give either expiry or expires_at, not both")),
        (Some(Value::Null), None) | (None, None) => Ok(None),
        (Some(v), None) => {
            let days = v
                .as_u64()
                .filter(|d| (1..=MAX_EXPIRY_DAYS).contains(d))
                .ok_or_else(|| {
                    bad(format!(
                        "expiry must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}"
                    ))
                })?;
            let now = Ts::now();
            Ok(Some(Ts {
                secs: now.secs + days as i64 * 86_400,
                nsecs: now.nsecs / 1_000_000 * 1_000_000,
            }))
        }
        (None, Some(s)) => {
            let t = parse_rfc3339(s).ok_or_else(|| bad("expires_at must be an RFC 3339 time"))?;
            let now = Ts::now();
            if (t.secs, t.nsecs) <= (now.secs, now.nsecs) {
                return Err(bad("expires_at must be in the future"));
            }
            Ok(Some(t))
        }
    }
}

fn check_alias(alias: &Option<String>) -> Result<(), ApiError> {
    if let Some(a) = alias {
        crate::store::check_alias(a).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/containers/{id}/snapshots", tag = "snapshots", params(("id" = String, Path, description = "container id or name")), responses((status = 200, description = "The container's snapshots, newest first", body = Envelope<SnapshotList>)))]
pub(super) async fn list_snapshots(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<SnapshotList> {
    let (c, snaps) = blocking(&svc, move |s| {
        let (c, snaps) = s.snapshots(&id)?;
        let mut out = Vec::new();
        for sn in snaps {
            let size = s.snapshot_size(&sn)?;
            out.push((sn, size));
        }
        Ok((c, out))
    })
    .await?;
    Ok(Answer::ok(
        "Snapshots retrieved successfully",
        SnapshotList {
            container_id: c.id.to_string(),
            project_id: c.project_id,
            // Newest first.
            snapshots: snaps.iter().rev().map(|(s, z)| snapshot(s, *z)).collect(),
        },
    ))
}

/// Runs `f` on the blocking pool and answers with the snapshot it returns, with its size.
async fn snapshot_answer(
    svc: &Arc<Service>,
    message: &'static str,
    f: impl FnOnce(&Service) -> Result<(ContainerRecord, SnapshotInfo), ServiceError> + Send + 'static,
) -> ApiResult<SnapshotData> {
    let (c, sn, size) = blocking(svc, move |s| {
        let (c, sn) = f(s)?;
        let size = s.snapshot_size(&sn)?;
        Ok((c, sn, size))
    })
    .await?;
    Ok(Answer::ok(message, snapshot_data(&c, &sn, size)))
}

#[utoipa::path(post, path = "/api/v1/containers/{id}/snapshots", tag = "snapshots", params(("id" = String, Path, description = "container id or name")), request_body = CreateSnapshot, responses((status = 200, description = "The new snapshot (O(1))", body = Envelope<SnapshotData>)))]
pub(super) async fn create_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<SnapshotData> {
    let req: CreateSnapshot = body(raw)?;
    check_alias(&req.alias)?;
    let expires_at = expiry_of(&req)?;
    snapshot_answer(&svc, "Snapshot created successfully", move |s| {
        s.create_snapshot(&id, req.alias.as_deref(), expires_at)
    })
    .await
}

#[utoipa::path(patch, path = "/api/v1/containers/{id}/snapshots/{name}", tag = "snapshots", params(("id" = String, Path, description = "container id or name"), ("name" = String, Path, description = "snapshot name or alias")), request_body = RestoreBody, responses((status = 200, description = "Restored: the whole container (no body or {}), or only `paths`", body = Envelope<SnapshotData>)))]
pub(super) async fn restore_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<SnapshotData> {
    let req: RestoreBody = body(raw)?;
    let paths = history::restore_paths(&req)?;
    if let Some(paths) = paths {
        let shown = history::restored_paths(&req);
        let (c, s, size, r) = blocking(&svc, move |s| {
            let (c, sn, r) = s.restore_paths(&id, &name, &paths)?;
            let size = s.snapshot_size(&sn)?;
            Ok((c, sn, size, r))
        })
        .await?;
        let data = SnapshotData {
            restored_paths: Some(shown),
            restored_inodes: Some(r.restored as u64),
            ..snapshot_data(&c, &s, size)
        };
        return Ok(Answer::ok("Paths restored successfully", data));
    }
    snapshot_answer(&svc, "Snapshot restored successfully", move |s| {
        s.restore(&id, &name)
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/containers/{id}/snapshots/{name}", tag = "snapshots", params(("id" = String, Path, description = "container id or name"), ("name" = String, Path, description = "snapshot name or alias")), responses((status = 200, description = "Deleted; its space comes back in the background", body = Envelope<DeletedSnapshot>)))]
pub(super) async fn delete_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> ApiResult<DeletedSnapshot> {
    let (c, s) = blocking(&svc, move |s| {
        let c = s.container(&id)?;
        let sn = s.delete_snapshot(&id, &name)?;
        Ok((c, sn))
    })
    .await?;
    Ok(Answer::ok(
        "Snapshot deleted successfully",
        DeletedSnapshot {
            container_id: c.id.to_string(),
            project_id: c.project_id,
            name: s.name,
        },
    ))
}

#[utoipa::path(patch, path = "/api/v1/containers/{id}/snapshots/{name}/alias", tag = "snapshots", params(("id" = String, Path, description = "container id or name"), ("name" = String, Path, description = "snapshot name or alias")), request_body = SetAlias, responses((status = 200, description = "The snapshot with its new alias", body = Envelope<SnapshotData>)))]
pub(super) async fn set_alias(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<SnapshotData> {
    let req: SetAlias = body(raw)?;
    check_alias(&req.alias)?;
    snapshot_answer(&svc, "Snapshot alias updated successfully", move |s| {
        s.set_alias(&id, &name, req.alias.as_deref())
    })
    .await
}
