//! Snapshot streams: `GET /containers/{id}/send` and `POST /containers/{id}/receive`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Container, Snapshot};

/// `GET /containers/{id}/send?snapshot=B[&from=A]`: the stream of snapshot B, full or
/// incremental from A (which must be older); or `?resume=TOKEN`: the rest of a cut stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SendQuery {
    /// The snapshot to send (name or alias); not with `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The snapshot the receiver already holds (name or alias): an incremental stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A cut receive's resume token: send the rest of that stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// `POST /containers/{id}/receive[?rollback=true]`: the body is a stream from `send`. A
/// full stream creates container `{id}` (a name); an incremental one goes on top of its
/// latest snapshot, which must be the stream's base (`rollback`: later snapshots are
/// deleted and writes since the base dropped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReceiveQuery {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// What a receive brought.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Received {
    pub container: Container,
    /// The received snapshot, with the sender's name and times.
    pub snapshot: Snapshot,
    /// Keys the stream carried.
    pub records: u64,
    /// Bytes of records the stream carried.
    pub bytes: u64,
    /// Snapshots a rollback deleted.
    pub rolled_back: Vec<String>,
}

/// Another snapfs daemon: its TCP API (`snapfs serve --listen`) and bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetServer {
    /// `https://HOST:PORT` (the other daemon serves TLS: `snapfs serve --tls-cert`), or
    /// `http://HOST:PORT` to a loopback address only (token and data in clear).
    pub url: String,
    pub token: String,
    /// For https: a PEM file, on this daemon's host, of the certificate that signed the
    /// target's (or the target's own self-signed one) [default: the system's roots].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// `POST /containers/{id}/sync`: send the target every snapshot of this container it lacks,
/// incrementally, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    pub target_server: TargetServer,
    /// The container's name on the target [default: its name here].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// If the target's copy has snapshots this one lacks after the last common one, or was
    /// written since, delete them and drop the writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// What a sync sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Synced {
    /// The container's name on the target.
    pub container: String,
    /// The newest snapshot both sides held before (the base of the first stream).
    pub base: Option<String>,
    /// The snapshots sent, oldest first (empty: the target was current).
    pub sent: Vec<String>,
    /// Keys and bytes of records sent, over all streams.
    pub records: u64,
    pub bytes: u64,
}

/// `GET /containers/{id}/receive`: a receive into `{id}` that was cut and waits to be
/// resumed (`DELETE` aborts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiveState {
    pub snapshot: String,
    /// When the snapshot was taken (on the sender).
    pub created_at: String,
    /// The base snapshot of an incremental stream.
    pub base: Option<String>,
    /// Keys and bytes of records received so far.
    pub records: u64,
    pub bytes: u64,
    pub started: String,
    /// For `send?resume=` (`snapfs send --resume`): null until the first chunk is in.
    pub token: Option<String>,
}

/// `GET /transfers`: the snapshot streams this daemon sends and receives now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransferList {
    pub transfers: Vec<Transfer>,
}

/// One running send or receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub id: u64,
    /// `send` or `receive`.
    pub direction: String,
    pub container: String,
    /// The snapshot sent (null for a receive: it is named by its stream).
    pub snapshot: Option<String>,
    pub started: String,
    /// Bytes of records (keys and values) done, and the total the stream announced (an
    /// estimate made before sending).
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// `done_bytes` over `total_bytes`, in percent (0-100).
    pub percent: f64,
}
