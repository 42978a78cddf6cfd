//! A store on object storage: [`Kv`] over SlateDB (an LSM tree whose files live in an object
//! store). The second backend of the same trait: the epoch tree, snapshots and reclaim above
//! it are unchanged. With `kv/rocks*` for RocksDB, `kv/slate*` is the only code that names
//! SlateDB.
//!
//! This file is compiled in every build; the backend itself only with the `slatedb` cargo
//! feature (on by default). Without it, [`open`] and [`exists`] answer one clear error, so a
//! snapfs built without object-store support says so when pointed at such a store.
//!
//! - Both key spaces live in one SlateDB database, each key prefixed by its space's tag.
//! - SlateDB is async; this backend owns a small tokio runtime and blocks on it, so callers
//!   (FUSE threads, the service's blocking tasks) keep the synchronous trait.
//! - A batch goes into the write-behind buffer (`slate/overlay.rs`) and returns: no thread
//!   hand-off on the caller's path. A drain thread moves the buffer into SlateDB, one
//!   `WriteBatch` (atomic) per drain; reads look in the buffer first. `durable` (and
//!   [`Kv::sync`]) waits until the buffer is drained and SlateDB has pushed everything to
//!   the object store (`Db::flush`).
//! - Reverse scans are bounded descending scans (SlateDB cannot seek a descending iterator).
//! - Read views are SlateDB snapshots, read by the same reader (`slate/read.rs`) as the live
//!   database.
//! - `slate/traffic.rs` counts the requests and bytes sent to the object store; `slate/open.rs`
//!   makes the object-store client a [`Location`] names.

use std::path::PathBuf;
use std::time::Duration;

use super::{KvError, Space};

#[cfg(feature = "slatedb")]
mod db;
#[cfg(feature = "slatedb")]
mod open;
#[cfg(feature = "slatedb")]
mod overlay;
#[cfg(feature = "slatedb")]
mod ranges;
#[cfg(feature = "slatedb")]
mod segments;
#[cfg(all(test, feature = "slatedb"))]
mod test_store;
#[cfg(feature = "slatedb")]
mod traffic;

#[cfg(feature = "slatedb")]
pub use db::SlateKv;
#[cfg(feature = "slatedb")]
pub use open::{exists, open, s3_client};
#[cfg(feature = "slatedb")]
pub use segments::{segment_options, segmented, ObjectSegments};

/// The key schema's rule for versioned keys, handed in by whoever opens the database (the
/// backend knows nothing of the schema): SlateDB's bloom filters also hash each versioned
/// key's *base*, so that reading a key's versions skips the tables that never had it.
#[derive(Clone, Copy, Debug)]
pub struct VersionRule {
    /// Names the rule in the tables' filters: a rule that answers differently needs a new
    /// name (tables written under another name are read without their base filters).
    pub name: &'static str,
    /// The length of the base of `key` (in `space`) when it is a versioned key read by
    /// versions; `None` for every other key and for prefixes shorter than a base. Must
    /// give the same answer for a stored key and for a scan prefix that contains its base.
    pub base_len: fn(Space, &[u8]) -> Option<usize>,
}

/// Where a database's objects live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An S3 (or S3-compatible) bucket; endpoint, region and credentials come from the
    /// `AWS_*` environment of the process.
    S3 { bucket: String },
    /// Object storage emulated by files in a local directory.
    Dir(PathBuf),
}

/// How a store on object storage is opened.
#[derive(Debug, Clone)]
pub struct SlateOptions {
    /// How often SlateDB pushes unsynced writes to the object store.
    pub push_interval: Duration,
    /// Unsynced bytes beyond which writes wait.
    pub backlog_bytes: u64,
    /// The local disk cache of the object store's files (none: no cache).
    pub cache_dir: Option<PathBuf>,
    pub cache_bytes: u64,
    /// How long a sync waits before it fails (none: for ever).
    pub fsync_timeout: Option<Duration>,
    /// A reader: follows the database's writer, never writes.
    pub read_only: bool,
    /// A local file locked for as long as the database is open (one process per store
    /// directory).
    pub lock_file: Option<PathBuf>,
    /// Where the database is, for status reports.
    pub location: String,
    /// The key schema's version rule (none: filters on whole keys only).
    pub version_rule: Option<VersionRule>,
    /// Keep file data in segment objects beside the database, cached in this local
    /// directory (`slate/segments.rs`); none: every value lives in SlateDB.
    pub segment_cache: Option<PathBuf>,
}

impl Default for SlateOptions {
    fn default() -> Self {
        SlateOptions {
            push_interval: Duration::from_millis(100),
            backlog_bytes: 256 << 20,
            cache_dir: None,
            cache_bytes: 1 << 30,
            fsync_timeout: None,
            read_only: false,
            lock_file: None,
            location: String::new(),
            version_rule: None,
            segment_cache: None,
        }
    }
}

/// Why a database on object storage could not be reached or opened.
#[derive(Debug)]
pub enum OpenError {
    /// The object-store client could not be set up (or this build has none); the message
    /// is complete.
    Setup(String),
    /// The object store or the database failed.
    Kv(KvError),
}

/// The object store client's errors nest every layer's message ("Generic S3 error: Error
/// performing list request: Error performing GET ... HTTP error: ... Connection refused");
/// one line keeps the innermost cause and the retries made.
pub fn brief(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    let cause = s.rsplit(": ").next().unwrap_or(&s).trim();
    let retries = s
        .find("after ")
        .and_then(|i| s[i..].split(',').next())
        .filter(|r| r.ends_with("retries"));
    match retries {
        Some(r) if cause.len() >= 8 => format!("{cause} ({r})"),
        None if cause.len() >= 8 => cause.to_string(),
        _ => s,
    }
}

#[cfg(not(feature = "slatedb"))]
const NOT_BUILT: &str = "this snapfs was built without object-store support (cargo feature \
     `slatedb`): build it with `cargo build --release --features slatedb`, as \
     `scripts/run.sh --object-store` does";

/// Without the `slatedb` feature: every store on object storage is refused with one line.
#[cfg(not(feature = "slatedb"))]
pub fn exists(_at: &Location, _prefix: &str) -> Result<bool, OpenError> {
    Err(OpenError::Setup(NOT_BUILT.into()))
}

/// Without the `slatedb` feature: every store on object storage is refused with one line.
#[cfg(not(feature = "slatedb"))]
pub fn open(
    _at: &Location,
    _prefix: &str,
    _opts: &SlateOptions,
) -> Result<std::sync::Arc<dyn super::Kv>, OpenError> {
    Err(OpenError::Setup(NOT_BUILT.into()))
}
