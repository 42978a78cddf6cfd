//! The REST API (`/api/v1`): decode HTTP/JSON, call the service, encode. The only module that
//! knows HTTP. Every answer, errors included, is the envelope
//! `{"statusCode": u16, "message": string, "data": value|null}`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::codec::Ts;
use crate::fs::VolumeOptions;
use crate::service::{ContainerInfo, Service, ServiceError};
use crate::store::{ContainerRecord, SnapshotInfo};
use crate::timefmt::{parse_rfc3339, rfc3339};

mod history;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest expiry accepted, in days (100 years).
const MAX_EXPIRY_DAYS: u64 = 36_500;

/// An API answer: status, message and data, always in the envelope.
pub struct ApiResponse {
    status: StatusCode,
    message: String,
    data: Value,
}

impl ApiResponse {
    fn ok(message: &str, data: Value) -> ApiResponse {
        ApiResponse {
            status: StatusCode::OK,
            message: message.to_string(),
            data,
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> ApiResponse {
        ApiResponse {
            status,
            message: message.into(),
            data: Value::Null,
        }
    }
}

impl IntoResponse for ApiResponse {
    fn into_response(self) -> Response {
        let body = json!({
            "statusCode": self.status.as_u16(),
            "message": self.message,
            "data": self.data,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiResponse {
    fn from(e: ServiceError) -> Self {
        let status = match e {
            ServiceError::NoContainer(_) | ServiceError::NoSnapshot(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) | ServiceError::Running => StatusCode::CONFLICT,
            ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            log::error!("api: {e}");
        }
        ApiResponse::error(status, e.to_string())
    }
}

type ApiResult = Result<ApiResponse, ApiResponse>;

/// Path parameters whose rejection (e.g. invalid UTF-8) is a 400 in the envelope.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(bad(e.body_text())),
        }
    }
}

/// Query parameters whose rejection (unknown or badly typed) is a 400 in the envelope.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(bad(e.body_text())),
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiResponse {
    ApiResponse::error(StatusCode::BAD_REQUEST, msg)
}

fn time(t: Option<Ts>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn snapshot_json(s: &SnapshotInfo, size: u64) -> Value {
    json!({
        "name": s.name,
        "alias": s.record.alias,
        "created_at": rfc3339(s.record.created_at),
        "last_used_at": time(s.record.last_used_at),
        "expires_at": time(s.record.expires_at),
        "stateful": false,
        "size": size,
    })
}

fn container_json(c: &ContainerInfo) -> Value {
    json!({
        "id": c.record.id,
        "name": c.record.name,
        "project_id": c.record.project_id,
        "status": c.status(),
        "mountpoint": c.mountpoint.as_ref().map(|p| p.display().to_string()),
        "fuse": c.fuse.map(|(transport, ring_requests)| json!({
            "transport": transport,
            "ring_requests": ring_requests,
        })),
        "created_at": rfc3339(c.record.created),
        "deleted_at": time(c.record.deleted_at),
        "bytes_used": c.bytes_used,
        "live_bytes": c.live_bytes,
        "snapshots_bytes": c.snapshots_bytes,
        "available_bytes": c.available_bytes,
        "quota_bytes": c.quota.bytes,
        "quota_including_snapshots_bytes": c.quota.including_snapshots,
        "snapshot_count": c.snapshot_count,
    })
}

/// Runs blocking service work off the async threads.
async fn blocking<T: Send + 'static>(
    svc: &Arc<Service>,
    f: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiResponse> {
    let svc = svc.clone();
    match tokio::task::spawn_blocking(move || f(&svc)).await {
        Ok(r) => r.map_err(ApiResponse::from),
        Err(e) => Err(ApiResponse::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )),
    }
}

/// Parses a JSON object body (an empty body counts as `{}`) into `T`; unknown fields and
/// wrong types are 400, an oversized body 413.
fn body<T: for<'de> Deserialize<'de>>(
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, ApiResponse> {
    let bytes = raw.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiResponse::error(status, format!("request body larger than {MAX_BODY} bytes"))
        } else {
            ApiResponse::error(status, r.body_text())
        }
    })?;
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    let value: Value =
        serde_json::from_slice(text).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(bad("the JSON body must be an object"));
    }
    serde_json::from_value(value).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSnapshot {
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    expiry: Option<Value>,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAlias {
    alias: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateContainer {
    name: String,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    quota_bytes: Option<u64>,
    #[serde(default)]
    quota_including_snapshots_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    mountpoint: String,
    #[serde(default)]
    snapdir: Option<String>,
    #[serde(default)]
    admin_uid: Option<u32>,
}

/// `DELETE /containers/{id}?force=true`: stop a running container first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteContainer {
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Copy {
    #[serde(default)]
    target_project_id: Option<String>,
    name: String,
    #[serde(default)]
    source_snapshot: Option<String>,
}

/// The expiry instant asked for: `expiry` in whole days from now, or an explicit
/// `expires_at` (RFC 3339); never both.
fn expiry_of(req: &CreateSnapshot) -> Result<Option<Ts>, ApiResponse> {
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

fn check_alias(alias: &Option<String>) -> Result<(), ApiResponse> {
    if let Some(a) = alias {
        crate::store::check_alias(a).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

async fn list_snapshots(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
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
    // Newest first.
    let list: Vec<Value> = snaps
        .iter()
        .rev()
        .map(|(s, z)| snapshot_json(s, *z))
        .collect();
    Ok(ApiResponse::ok(
        "Snapshots retrieved successfully",
        json!({"container_id": c.id, "project_id": c.project_id, "snapshots": list}),
    ))
}

fn snapshot_envelope(c: &ContainerRecord, s: &SnapshotInfo, size: u64) -> Value {
    json!({"container_id": c.id, "project_id": c.project_id, "snapshot": snapshot_json(s, size)})
}

async fn create_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: CreateSnapshot = body(raw)?;
    check_alias(&req.alias)?;
    let expires_at = expiry_of(&req)?;
    let (c, s, size) = blocking(&svc, move |s| {
        let (c, sn) = s.create_snapshot(&id, req.alias.as_deref(), expires_at)?;
        let size = s.snapshot_size(&sn)?;
        Ok((c, sn, size))
    })
    .await?;
    Ok(ApiResponse::ok(
        "Snapshot created successfully",
        snapshot_envelope(&c, &s, size),
    ))
}

async fn restore_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: history::RestoreBody = body(raw)?;
    let paths = req.paths()?;
    if let Some(paths) = paths {
        let shown = req.shown();
        let (c, s, size, r) = blocking(&svc, move |s| {
            let (c, sn, r) = s.restore_paths(&id, &name, &paths)?;
            let size = s.snapshot_size(&sn)?;
            Ok((c, sn, size, r))
        })
        .await?;
        let mut data = snapshot_envelope(&c, &s, size);
        data["restored_paths"] = shown;
        data["restored_inodes"] = json!(r.restored);
        return Ok(ApiResponse::ok("Paths restored successfully", data));
    }
    let (c, s, size) = blocking(&svc, move |s| {
        let (c, sn) = s.restore(&id, &name)?;
        let size = s.snapshot_size(&sn)?;
        Ok((c, sn, size))
    })
    .await?;
    Ok(ApiResponse::ok(
        "Snapshot restored successfully",
        snapshot_envelope(&c, &s, size),
    ))
}

async fn delete_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> ApiResult {
    let (c, s) = blocking(&svc, move |s| {
        let c = s.container(&id)?;
        let sn = s.delete_snapshot(&id, &name)?;
        Ok((c, sn))
    })
    .await?;
    Ok(ApiResponse::ok(
        "Snapshot deleted successfully",
        json!({"container_id": c.id, "project_id": c.project_id, "name": s.name}),
    ))
}

async fn set_alias(
    State(svc): State<Arc<Service>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: SetAlias = body(raw)?;
    check_alias(&req.alias)?;
    let (c, s, size) = blocking(&svc, move |s| {
        let (c, sn) = s.set_alias(&id, &name, req.alias.as_deref())?;
        let size = s.snapshot_size(&sn)?;
        Ok((c, sn, size))
    })
    .await?;
    Ok(ApiResponse::ok(
        "Snapshot alias updated successfully",
        snapshot_envelope(&c, &s, size),
    ))
}

async fn list_containers(State(svc): State<Arc<Service>>) -> ApiResult {
    let all = blocking(&svc, |s| s.containers()).await?;
    let list: Vec<Value> = all.iter().map(container_json).collect();
    Ok(ApiResponse::ok(
        "Containers retrieved successfully",
        json!({"containers": list}),
    ))
}

async fn create_container(
    State(svc): State<Arc<Service>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: CreateContainer = body(raw)?;
    let quota = crate::store::Quota {
        bytes: req.quota_bytes,
        including_snapshots: req.quota_including_snapshots_bytes,
    };
    let info = blocking(&svc, move |s| {
        let c = s.create_container(&req.name, req.project_id.as_deref(), quota)?;
        s.info(c)
    })
    .await?;
    Ok(ApiResponse::ok(
        "Container created successfully",
        container_json(&info),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DfQuery {
    #[serde(default)]
    container: Option<String>,
}

/// `GET /df[?container=]`: where the space goes (see `store/space.rs`).
async fn space(State(svc): State<Arc<Service>>, ApiQuery(q): ApiQuery<DfQuery>) -> ApiResult {
    let report = blocking(&svc, move |s| s.space(q.container.as_deref())).await?;
    let st = &report.store;
    let containers: Vec<Value> = report
        .containers
        .iter()
        .map(|(c, snaps)| {
            let mut v = container_json(c);
            v["snapshots"] = snaps
                .iter()
                .map(|s| {
                    json!({
                        "name": s.info.name,
                        "alias": s.info.record.alias,
                        "created_at": rfc3339(s.info.record.created_at),
                        "size": s.size,
                        "freed_if_deleted": s.freed_if_deleted,
                    })
                })
                .collect();
            v
        })
        .collect();
    Ok(ApiResponse::ok(
        "Space report",
        json!({
            "store": {
                "disk_bytes": st.disk_bytes,
                "data_bytes": st.data_bytes,
                "awaiting_reclaim_bytes": st.awaiting_reclaim_bytes,
                "awaiting_compaction_bytes": st.awaiting_compaction_bytes,
            },
            "containers": containers,
        }),
    ))
}

fn reclaim_stats_json(s: &crate::store::ReclaimStats) -> Value {
    json!({
        "epochs_removed": s.epochs_removed,
        "versions_dropped": s.versions_dropped,
        "versions_moved": s.versions_moved,
        "versions_scanned": s.versions_scanned,
        "bytes_dropped": s.bytes_dropped,
        "batches": s.batches,
    })
}

/// `GET /status`: the daemon's version, its mounts and what reclaim is doing.
async fn status(State(svc): State<Arc<Service>>) -> ApiResult {
    let (p, mounts) = blocking(&svc, |s| {
        Ok((s.store().reclaim_progress(), s.mount_count()))
    })
    .await?;
    Ok(ApiResponse::ok(
        "Status",
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mounts": mounts,
            "reclaim": {
                "running": p.running,
                "queued_epochs": p.queued_epochs,
                "retired_epochs": p.retired_epochs,
                "current_run": reclaim_stats_json(&p.current),
                "since_start": reclaim_stats_json(&p.total),
            },
        }),
    ))
}

/// `PATCH /containers/{id}`: quotas. An absent field stays as it is; `null` removes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateContainer {
    #[serde(default, deserialize_with = "present")]
    quota_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    quota_including_snapshots_bytes: Option<Option<u64>>,
}

/// Tells an absent field (None) from a `null` one (Some(None)).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

async fn update_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: UpdateContainer = body(raw)?;
    if req.quota_bytes.is_none() && req.quota_including_snapshots_bytes.is_none() {
        return Err(bad(
            "nothing to change: give quota_bytes and/or quota_including_snapshots_bytes",
        ));
    }
    let info = blocking(&svc, move |s| {
        let c = s.set_quota(&id, req.quota_bytes, req.quota_including_snapshots_bytes)?;
        s.info(c)
    })
    .await?;
    Ok(ApiResponse::ok(
        "Container updated successfully",
        container_json(&info),
    ))
}

async fn get_container(State(svc): State<Arc<Service>>, ApiPath(id): ApiPath<String>) -> ApiResult {
    let info = blocking(&svc, move |s| {
        let c = s.container(&id)?;
        s.info(c)
    })
    .await?;
    Ok(ApiResponse::ok(
        "Container retrieved successfully",
        container_json(&info),
    ))
}

async fn delete_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteContainer>,
) -> ApiResult {
    let info = blocking(&svc, move |s| {
        let c = s.delete_container(&id, q.force)?;
        s.info(c)
    })
    .await?;
    Ok(ApiResponse::ok(
        "Container deleted successfully",
        container_json(&info),
    ))
}

async fn start_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: Start = body(raw)?;
    let snapdir_visible = match req.snapdir.as_deref() {
        None | Some("hidden") => false,
        Some("visible") => true,
        Some(other) => {
            return Err(bad(format!(
                "snapdir must be hidden or visible, not {other:?}"
            )))
        }
    };
    let mnt = PathBuf::from(&req.mountpoint);
    if !mnt.is_absolute() {
        return Err(bad("mountpoint must be an absolute path"));
    }
    let opts = VolumeOptions {
        snapdir_visible,
        admin_uid: req.admin_uid,
    };
    let info = blocking(&svc, move |s| {
        let c = s.start(&id, &mnt, opts)?;
        s.info(c)
    })
    .await?;
    Ok(ApiResponse::ok(
        "Container started successfully",
        container_json(&info),
    ))
}

async fn stop_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let _: serde_json::Map<String, Value> = body(raw)?;
    let info = blocking(&svc, move |s| {
        let c = s.stop(&id)?;
        s.info(c)
    })
    .await?;
    Ok(ApiResponse::ok(
        "Container stopped successfully",
        container_json(&info),
    ))
}

async fn copy_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: Copy = body(raw)?;
    let info = blocking(&svc, move |s| {
        let c = s.copy(
            &id,
            req.source_snapshot.as_deref(),
            &req.name,
            req.target_project_id.as_deref(),
        )?;
        s.info(c)
    })
    .await?;
    Ok(ApiResponse::ok(
        "Container copied successfully",
        container_json(&info),
    ))
}

async fn not_found() -> ApiResponse {
    ApiResponse::error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiResponse {
    ApiResponse::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// `GET /metrics`: Prometheus text format (see `metrics.rs`).
async fn metrics(State(svc): State<Arc<Service>>) -> axum::response::Response {
    let text = blocking(&svc, |s| {
        crate::metrics::encode(&s.scrape())
            .map_err(|e| ServiceError::Internal(format!("encoding metrics: {e}")))
    })
    .await;
    match text {
        Ok(t) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            t,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The API routes, without authentication (the Unix socket is protected by its mode).
pub fn router(svc: Arc<Service>) -> Router {
    let v1 = Router::new()
        .route("/containers", get(list_containers).post(create_container))
        .route("/df", get(space))
        .route("/status", get(status))
        .route(
            "/containers/{id}",
            get(get_container)
                .patch(update_container)
                .delete(delete_container),
        )
        .route("/containers/{id}/start", post(start_container))
        .route("/containers/{id}/stop", post(stop_container))
        .route("/containers/{id}/copy", post(copy_container))
        .route(
            "/containers/{id}/snapshots",
            get(list_snapshots).post(create_snapshot),
        )
        .route(
            "/containers/{id}/snapshots/{name}",
            patch(restore_snapshot).delete(delete_snapshot),
        )
        .route("/containers/{id}/snapshots/{name}/alias", patch(set_alias))
        .route(
            "/containers/{id}/snapshots/{name}/diff",
            get(history::diff_snapshot),
        )
        .route("/containers/{id}/history", get(history::path_history));
    Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(svc)
}

/// The same routes behind `Authorization: Bearer TOKEN` (compared in constant time).
pub fn router_with_token(svc: Arc<Service>, token: String) -> Router {
    let token = Arc::new(token);
    router(svc).layer(middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            if authorized(req.headers(), &token) {
                next.run(req).await
            } else {
                ApiResponse::error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
                    .into_response()
            }
        }
    }))
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
