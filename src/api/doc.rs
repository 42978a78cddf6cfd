//! The OpenAPI 3 description of the REST API, generated (utoipa) from the handlers'
//! `#[utoipa::path]` annotations, whose bodies, queries and answers are the contract's types
//! (`crate::contract`): the same types the handlers read and build, so the description cannot
//! drift from the answers. Served at `GET /api/v1/openapi.json`, printed by `snapfs openapi`,
//! committed as `docs/openapi.json` (`tests/api_openapi.rs` keeps them equal, and rewrites it
//! with `SNAPFS_WRITE_OPENAPI=1`).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::contract::{ErrorAnswer, NoData};

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

/// The name under which `Common` registers the error envelope.
const ERROR_SCHEMA: &str = "Error";

struct Common;

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        // Every error is this envelope (`data: null`): one schema, referenced below.
        components
            .schemas
            .insert(ERROR_SCHEMA.to_string(), ErrorAnswer::schema());
        components
            .schemas
            .insert(NoData::name().into_owned(), NoData::schema());
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
                                    ERROR_SCHEMA,
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
        super::transfer::send_snapshot,
        super::transfer::receive_snapshot,
        super::transfer::get_receive,
        super::transfer::abort_receive,
        super::transfer::list_transfers,
        super::sync::sync_container,
        super::ops::space,
        super::ops::status,
        super::ops::metrics,
        openapi_json,
    ),
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
