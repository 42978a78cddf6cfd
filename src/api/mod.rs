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

mod containers;
pub mod doc;
mod history;
mod ops;
mod snapshots;

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

async fn not_found() -> ApiResponse {
    ApiResponse::error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiResponse {
    ApiResponse::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// The API routes, without authentication (the Unix socket is protected by its mode).
pub fn router(svc: Arc<Service>) -> Router {
    let v1 = Router::new()
        .route(
            "/containers",
            get(containers::list_containers).post(containers::create_container),
        )
        .route("/df", get(ops::space))
        .route("/status", get(ops::status))
        .route("/openapi.json", get(doc::openapi_json))
        .route(
            "/containers/{id}",
            get(containers::get_container)
                .patch(containers::update_container)
                .delete(containers::delete_container),
        )
        .route("/containers/{id}/start", post(containers::start_container))
        .route("/containers/{id}/stop", post(containers::stop_container))
        .route("/containers/{id}/copy", post(containers::copy_container))
        .route(
            "/containers/{id}/snapshots",
            get(snapshots::list_snapshots).post(snapshots::create_snapshot),
        )
        .route(
            "/containers/{id}/snapshots/{name}",
            patch(snapshots::restore_snapshot).delete(snapshots::delete_snapshot),
        )
        .route(
            "/containers/{id}/snapshots/{name}/alias",
            patch(snapshots::set_alias),
        )
        .route(
            "/containers/{id}/snapshots/{name}/diff",
            get(history::diff_snapshot),
        )
        .route("/containers/{id}/history", get(history::path_history));
    Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(ops::metrics))
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
