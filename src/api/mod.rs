//! The REST API (`/api/v1`): decode HTTP/JSON, call the service, encode. The only module that
//! knows HTTP. Every answer, errors included, is the envelope
//! `{"statusCode": u16, "message": string, "data": value|null}`
//! ([`crate::contract::Envelope`]); requests and answers are the contract's types, so what a
//! handler builds is what `doc.rs` describes.

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
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::Ts;
use crate::contract::{self, Envelope, ErrorAnswer, NoData};
use crate::fs::VolumeOptions;
use crate::service::{Service, ServiceError};
use crate::store::{ContainerRecord, SnapshotInfo};
use crate::timefmt::parse_rfc3339;

mod containers;
mod convert;
pub mod doc;
mod history;
mod ops;
mod snapshots;
mod sync;
mod transfer;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest expiry accepted, in days (100 years).
const MAX_EXPIRY_DAYS: u64 = 36_500;

/// A successful answer: `data` in the envelope, status 200.
pub struct Answer<T> {
    message: &'static str,
    data: T,
}

impl<T> Answer<T> {
    fn ok(message: &'static str, data: T) -> Answer<T> {
        Answer { message, data }
    }
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        envelope_response(
            StatusCode::OK,
            Envelope {
                status_code: StatusCode::OK.as_u16(),
                message: self.message.to_string(),
                data: self.data,
            },
        )
    }
}

/// A failed request: its status and what went wrong, in the envelope with `data: null`.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let answer: ErrorAnswer = Envelope {
            status_code: self.status.as_u16(),
            message: self.message,
            data: NoData::default(),
        };
        envelope_response(self.status, answer)
    }
}

/// The envelope as the body. Encoded through a `serde_json::Value`, whose maps keep their keys
/// sorted: the bytes stay those the API sent when it built its answers as untyped maps.
fn envelope_response<T: Serialize>(status: StatusCode, answer: Envelope<T>) -> Response {
    match serde_json::to_value(&answer) {
        Ok(body) => (status, Json(body)).into_response(),
        Err(e) => {
            log::error!("api: cannot encode an answer: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            )
            .into_response()
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e {
            ServiceError::NoContainer(_)
            | ServiceError::NoSnapshot(_)
            | ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Conflict(_) | ServiceError::Running => StatusCode::CONFLICT,
            ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServiceError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            log::error!("api: {e}");
        }
        ApiError::new(status, e.to_string())
    }
}

type ApiResult<T> = Result<Answer<T>, ApiError>;

/// Path parameters whose rejection (e.g. invalid UTF-8) is a 400 in the envelope.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

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
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(bad(e.body_text())),
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

/// Runs blocking service work off the async threads.
async fn blocking<T: Send + 'static>(
    svc: &Arc<Service>,
    f: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let svc = svc.clone();
    match tokio::task::spawn_blocking(move || f(&svc)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )),
    }
}

/// Parses a JSON object body (an empty body counts as `{}`) into `T`; unknown fields and
/// wrong types are 400, an oversized body 413.
fn body<T: for<'de> Deserialize<'de>>(raw: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = raw.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, format!("request body larger than {MAX_BODY} bytes"))
        } else {
            ApiError::new(status, r.body_text())
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

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
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
        .route("/transfers", get(transfer::list_transfers))
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
        .route("/containers/{id}/history", get(history::path_history))
        .route("/containers/{id}/send", get(transfer::send_snapshot))
        .route("/containers/{id}/sync", post(sync::sync_container))
        .route(
            "/containers/{id}/receive",
            post(transfer::receive_snapshot)
                .layer(DefaultBodyLimit::disable())
                .get(transfer::get_receive)
                .delete(transfer::abort_receive),
        );
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
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
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
