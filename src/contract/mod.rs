//! The REST API's contract: every request body, query and answer of `/api/v1` as a Rust
//! type (serde both ways, and the OpenAPI schema, `utoipa::ToSchema`).
//!
//! The one place the API's shapes are written down. The server (`api/`) builds its answers
//! only from these types and reads its requests into them, `api/doc.rs` generates the
//! OpenAPI description (`docs/openapi.json`) from them, and the clients (the CLI, `mount.rs`,
//! the tests) send and read the same types; renaming a field is a compile error everywhere
//! instead of a failure when a user runs a command.
//!
//! Why not `api::model`: the clients must not depend on the server (axum, the service). These
//! types know JSON's shapes but nothing of HTTP (no routes, no status mapping, no axum), so
//! both sides depend on this leaf module and it depends on nothing of the crate.
//!
//! Wire rules the types keep: every field is present (absent values are `null`) unless its
//! doc says "only when"; times are RFC 3339 UTC strings with milliseconds
//! (`2025-11-09T14:30:45.123Z`); sizes are bytes; paths are raw bytes on disk, given as a
//! (lossy) string plus `..._base64` only when they are not UTF-8 ([`PathText`]).

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

mod containers;
mod history;
mod ops;
mod snapshots;
mod transfer;

pub use containers::*;
pub use history::*;
pub use ops::*;
pub use snapshots::*;
pub use transfer::*;

/// The envelope of every answer: the HTTP status, a message, and the data (null on errors).
// Generic: utoipa names each instance's schema `Envelope_T` (e.g. `Envelope_Container`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Envelope<T> {
    /// The HTTP status, repeated.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    pub message: String,
    pub data: T,
}

/// The `data` of an error: always null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NoData(Option<()>);

impl utoipa::PartialSchema for NoData {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Null)
            .description(Some("Always null: an error carries no data."))
            .into()
    }
}

impl ToSchema for NoData {}

/// An error's envelope: the status, what went wrong, and `data: null`.
pub type ErrorAnswer = Envelope<NoData>;

/// The body of a request that takes none but tolerates an object (`POST .../stop`).
pub type AnyObject = serde_json::Map<String, serde_json::Value>;

/// A path as the API shows raw bytes: the (lossy) UTF-8 text, and the exact bytes in
/// standard padded base64 only when they are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathText {
    pub text: String,
    pub base64: Option<String>,
}

impl PathText {
    /// `bytes` as shown on the wire.
    pub fn of(bytes: &[u8]) -> PathText {
        use base64::Engine;
        match std::str::from_utf8(bytes) {
            Ok(s) => PathText {
                text: s.to_string(),
                base64: None,
            },
            Err(_) => PathText {
                text: String::from_utf8_lossy(bytes).into_owned(),
                base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    /// The exact bytes back: the base64 when given (and valid), else the text.
    pub fn bytes(text: &str, base64: Option<&str>) -> Vec<u8> {
        use base64::Engine;
        base64
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_else(|| text.as_bytes().to_vec())
    }
}

/// A file's type as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// Tells an absent field (None) from a `null` one (Some(None)), for `PATCH` bodies.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}
