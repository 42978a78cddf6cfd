//! The OpenAPI 3 description of the REST API, generated (utoipa) from the handlers'
//! `#[utoipa::path]` annotations and the schemas below. Served at `GET /api/v1/openapi.json`,
//! printed by `snapfs openapi`, committed as `docs/openapi.json` (a test keeps them equal).
//!
//! The handlers build their JSON answers directly; these types only describe them (they are
//! never built), so each mirrors one answer's shape exactly.

#![allow(dead_code, non_snake_case)]

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every answer's envelope, errors included (`data` is null on errors).
#[derive(Serialize, ToSchema)]
pub struct Error {
    /// The HTTP status, repeated.
    statusCode: u16,
    message: String,
    /// Always null on errors.
    data: Option<serde_json::Value>,
}

macro_rules! envelope {
    ($name:ident, $data:ty) => {
        #[derive(Serialize, ToSchema)]
        pub struct $name {
            /// The HTTP status, repeated.
            statusCode: u16,
            message: String,
            data: $data,
        }
    };
}

#[derive(Serialize, ToSchema)]
pub struct Fuse {
    /// `dev_fuse` or `io_uring`.
    transport: String,
    /// Requests served through the io_uring queues.
    ring_requests: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Container {
    id: String,
    name: String,
    project_id: Option<String>,
    /// `running` (mounted), `stopped` or `deleted`.
    status: String,
    mountpoint: Option<String>,
    fuse: Option<Fuse>,
    created_at: String,
    deleted_at: Option<String>,
    /// Everything the live tree and the snapshots hold (every version they wrote).
    bytes_used: u64,
    /// File data the live tree references (null for a deleted container).
    live_bytes: Option<u64>,
    /// What the snapshots wrote (the sum of their sizes).
    snapshots_bytes: u64,
    /// Room left under the tighter quota (null without quotas).
    available_bytes: Option<u64>,
    quota_bytes: Option<u64>,
    quota_including_snapshots_bytes: Option<u64>,
    snapshot_count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ContainerList {
    containers: Vec<Container>,
}

#[derive(Serialize, ToSchema)]
pub struct Snapshot {
    name: String,
    alias: Option<String>,
    created_at: String,
    last_used_at: Option<String>,
    expires_at: Option<String>,
    stateful: bool,
    /// Bytes its epoch wrote.
    size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotData {
    container_id: String,
    project_id: Option<String>,
    snapshot: Snapshot,
    /// Path restores only: the paths asked for (strings, or `{path_base64}` objects).
    restored_paths: Option<Vec<serde_json::Value>>,
    /// Path restores only: inodes written from the snapshot.
    restored_inodes: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotList {
    container_id: String,
    project_id: Option<String>,
    /// Newest first.
    snapshots: Vec<Snapshot>,
}

#[derive(Serialize, ToSchema)]
pub struct DeletedSnapshot {
    container_id: String,
    project_id: Option<String>,
    name: String,
}

/// What one side of a change shows.
#[derive(Serialize, ToSchema)]
pub struct Side {
    r#type: String,
    size: u64,
    mtime: String,
}

#[derive(Serialize, ToSchema)]
pub struct Change {
    /// Lossy UTF-8; exact bytes in `path_base64` when not UTF-8.
    path: String,
    path_base64: Option<String>,
    /// `added`, `deleted`, `modified` or `renamed`.
    change: String,
    r#type: String,
    old_path: Option<String>,
    old_path_base64: Option<String>,
    content_changed: bool,
    metadata_changed: bool,
    before: Option<Side>,
    after: Option<Side>,
}

#[derive(Serialize, ToSchema)]
pub struct Diff {
    container_id: String,
    from: String,
    /// Null: the live tree.
    to: Option<String>,
    total: u64,
    changes: Vec<Change>,
    /// Null on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryEntry {
    /// Null: the live tree.
    snapshot: Option<String>,
    alias: Option<String>,
    created_at: Option<String>,
    change: String,
    r#type: Option<String>,
    size: Option<u64>,
    mtime: Option<String>,
    content_changed: bool,
    metadata_changed: bool,
    before: Option<Side>,
    after: Option<Side>,
}

#[derive(Serialize, ToSchema)]
pub struct History {
    container_id: String,
    path: String,
    path_base64: Option<String>,
    /// Newest first.
    history: Vec<HistoryEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct StoreSpace {
    disk_bytes: u64,
    data_bytes: u64,
    awaiting_reclaim_bytes: u64,
    awaiting_compaction_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotSpace {
    name: String,
    alias: Option<String>,
    created_at: String,
    size: u64,
    /// What deleting it alone would give back once reclaimed.
    freed_if_deleted: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ContainerSpace {
    #[serde(flatten)]
    container: Container,
    snapshots: Vec<SnapshotSpace>,
}

#[derive(Serialize, ToSchema)]
pub struct Space {
    store: StoreSpace,
    containers: Vec<ContainerSpace>,
}

#[derive(Serialize, ToSchema)]
pub struct ReclaimRun {
    epochs_removed: u64,
    versions_dropped: u64,
    versions_moved: u64,
    versions_scanned: u64,
    bytes_dropped: u64,
    batches: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Reclaim {
    running: bool,
    queued_epochs: u64,
    retired_epochs: u64,
    current_run: ReclaimRun,
    since_start: ReclaimRun,
}

/// A store on object storage (null for an embedded store).
#[derive(Serialize, ToSchema)]
pub struct ObjectStoreStatus {
    /// Where the data lives (s3://BUCKET/PREFIX).
    url: String,
    /// This daemon opened the store as a reader.
    read_only: bool,
    /// Another host took the store over: writes fail here.
    fenced: bool,
    /// Bytes written but not yet in object storage.
    backlog_bytes: u64,
    /// The backlog beyond which writes wait.
    backlog_limit_bytes: u64,
    /// The local cache's size on disk.
    cache_bytes: u64,
    cache_limit_bytes: u64,
    /// How often writes not yet synced are pushed out, in milliseconds.
    push_interval_ms: u64,
    /// Since the daemon opened the store: bytes of keys and values written.
    written_bytes: u64,
    /// Requests and bytes sent to the object store since then (put_bytes / written_bytes is
    /// the write amplification), GET and LIST requests.
    put_requests: u64,
    put_bytes: u64,
    get_requests: u64,
    list_requests: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    version: String,
    mounts: u64,
    reclaim: Reclaim,
    object_store: Option<ObjectStoreStatus>,
}

envelope!(ContainerAnswer, Container);
envelope!(ContainerListAnswer, ContainerList);
envelope!(SnapshotAnswer, SnapshotData);
envelope!(SnapshotListAnswer, SnapshotList);
envelope!(DeletedSnapshotAnswer, DeletedSnapshot);
envelope!(DiffAnswer, Diff);
envelope!(HistoryAnswer, History);
envelope!(SpaceAnswer, Space);
envelope!(StatusAnswer, Status);

/// Error answers every operation may give, added to each (their meaning is the same
/// everywhere; the message says what went wrong).
const ERRORS: [(&str, &str); 7] = [
    (
        "400",
        "bad input: malformed JSON, unknown fields, bad values",
    ),
    ("401", "missing or wrong bearer token (TCP only)"),
    ("404", "unknown container, snapshot or endpoint"),
    ("405", "method not allowed on this endpoint"),
    ("409", "conflict: name or alias taken, mounted, over quota"),
    ("413", "request body over 64 KiB"),
    ("503", "the daemon is shutting down"),
];

struct Common;

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for item in api.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (code, what) in ERRORS {
                    let r: RefOr<Response> = ResponseBuilder::new()
                        .description(what)
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new()
                                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                    "Error",
                                ))))
                                .build(),
                        )
                        .build()
                        .into();
                    op.responses.responses.entry(code.to_string()).or_insert(r);
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "snapfs",
        description = "Containers, snapshots, restores, copies, history, quotas and space of one snapfs store. Over the daemon's Unix socket no token is needed; over TCP every request carries `Authorization: Bearer TOKEN`."
    ),
    paths(
        super::containers::list_containers,
        super::containers::create_container,
        super::containers::get_container,
        super::containers::update_container,
        super::containers::delete_container,
        super::containers::start_container,
        super::containers::stop_container,
        super::containers::copy_container,
        super::snapshots::list_snapshots,
        super::snapshots::create_snapshot,
        super::snapshots::restore_snapshot,
        super::snapshots::delete_snapshot,
        super::snapshots::set_alias,
        super::history::diff_snapshot,
        super::history::path_history,
        super::ops::space,
        super::ops::status,
        super::ops::metrics,
        openapi_json,
    ),
    components(schemas(Error)),
    modifiers(&Common),
    security((), ("bearer" = [])),
    tags(
        (name = "containers", description = "Containers: create, mount, copy, quotas"),
        (name = "snapshots", description = "Snapshots: take, restore (whole or some paths), delete, alias"),
        (name = "history", description = "What changed between snapshots, and the versions of one path"),
        (name = "operations", description = "Space, status, metrics, this description"),
    )
)]
pub struct ApiDoc;

/// The description, as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`: this description (not in the envelope).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 description of this API", body = Object))
)]
pub(super) async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(openapi()).into_response()
}
