//! The ordered key-value boundary.
//!
//! The filesystem is written once against [`Kv`]; backends (in-memory, RocksDB, SlateDB)
//! must pass the same conformance suite (`tests/kv_conformance.rs`). Invariants: only
//! `kv/rocks*` names RocksDB and only `kv/slate*` SlateDB; nothing under `kv/` imports
//! anything outside it (what a backend needs to know of the key schema, e.g. SlateDB's
//! version-prefix rule, is handed to it by its opener).
//!
//! Shape: [`KvRead`] + [`Kv`] are the core (read, scan, batch, sync, read view); the
//! capability traits [`Maintenance`] and [`Status`] hold what only some backends have,
//! reached with `kv.maintenance()` / `kv.status()` (`None`: the backend has none; the
//! in-memory one has neither). No method of the core has a default body: a backend states
//! what it has.
//!
//! Semantics every backend guarantees:
//! - Keys and values are byte strings; keys are ordered bytewise (memcmp order).
//! - Two independent key spaces ([`Space`]): `Meta` for small metadata values and `Data` for
//!   file blocks (a backend may store those differently, e.g. in blob files).
//! - [`Kv::write`] applies a [`Batch`] atomically: after a crash either all of it or none of it
//!   is visible. With `durable = true` it returns only once the batch is on stable storage
//!   (and so is every batch written before it).
//! - A [`KvRead`] view from [`Kv::read_view`] sees exactly the batches written before it was taken.

pub mod mem;
pub mod rocks;
pub mod segments;
pub mod slate;

use std::path::Path;

/// Which key space a key lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Inodes, directory entries, xattrs, epochs, containers, change index.
    Meta,
    /// File block contents.
    Data,
    /// The segment layer's catalog (`segments/`): written and read by it only, never by the
    /// store above `kv/`.
    Segments,
}

impl Space {
    /// The spaces the store uses.
    pub const ALL: [Space; 2] = [Space::Meta, Space::Data];
    /// Every space a backend holds.
    pub const STORED: [Space; 3] = [Space::Meta, Space::Data, Space::Segments];
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// The underlying storage has no room left.
    #[error("no space left on the store's device")]
    NoSpace,
    /// Any other I/O or engine failure.
    #[error("storage error: {0}")]
    Io(String),
    /// The store is locked by another process.
    #[error("store is in use by another process")]
    Busy,
    /// The store is open read-only here.
    #[error("the store is open read-only")]
    ReadOnly,
    /// Another host opened this store as its writer: this one may no longer write.
    #[error("this store was taken over by another host (fenced): writes fail here from now on")]
    Fenced,
}

/// The state of a store on object storage (`Status::remote_status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteStatus {
    /// Where the data lives.
    pub url: String,
    /// Opened as a reader.
    pub read_only: bool,
    /// Another host took the store over: writes fail here.
    pub fenced: bool,
    /// Bytes written but not yet in the object store.
    pub backlog_bytes: u64,
    /// The backlog beyond which writes wait.
    pub backlog_limit_bytes: u64,
    /// The local cache's size on disk.
    pub cache_bytes: u64,
    pub cache_limit_bytes: u64,
    /// How often unsynced writes are pushed out.
    pub push_interval_ms: u64,
    /// Since the store was opened here: bytes of keys and values written...
    pub written_bytes: u64,
    /// ...and the object-store traffic they and reads caused (PUT requests and bytes, GET
    /// and LIST requests).
    pub put_requests: u64,
    pub put_bytes: u64,
    pub get_requests: u64,
    pub list_requests: u64,
    /// File data in segment objects: their bytes, the live part of them, and how many
    /// segments were deleted since the store was opened here.
    pub segment_bytes: u64,
    pub segment_live_bytes: u64,
    pub segments_deleted: u64,
}

pub type KvResult<T> = Result<T, KvError>;

/// A key and its value, as a read returns them.
pub type Pair = (Vec<u8>, Vec<u8>);

/// The visitor of [`KvRead::scan`]: called with each key and value; returns false to stop.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> bool;

/// One atomic unit of writes. Later operations on the same key win.
#[derive(Default, Debug, Clone)]
pub struct Batch {
    ops: Vec<BatchOp>,
    /// Segment bytes the batch's references point to: (segment, end) of the furthest, which
    /// a store on object storage must have uploaded before the batch may reach its log.
    needs: Option<SegPos>,
    /// How far the segment bytes are durable with this very batch (tail journal records it
    /// carries): the batches before it, and it, need nothing below this.
    covers: Option<SegPos>,
}

/// A position in the segments: (segment, offset), ordered by segment, then offset.
pub type SegPos = (u64, u64);

/// What a store on object storage asks of the segments its batches point into before a
/// batch may reach its log (`kv/slate/segments.rs` answers): segment bytes are uploaded
/// before any reference to them can be durable, so no crash leaves a dangling one.
pub trait UploadGate: Send + Sync {
    /// Whether every segment byte below `pos` is in the object store.
    fn uploaded(&self, pos: SegPos) -> bool;
    /// Uploads every segment byte below `pos` now.
    fn upload(&self, pos: SegPos) -> KvResult<()>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(space, key, value));
    }
    pub fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(space, key));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
    /// Appends every operation of `other` after this batch's own.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
        self.needs = self.needs.max(other.needs);
        self.covers = self.covers.max(other.covers);
    }
    /// Notes that the batch points to segment bytes up to `pos` (see [`Batch::needs`]).
    pub fn need(&mut self, pos: SegPos) {
        self.needs = self.needs.max(Some(pos));
    }
    /// Notes that the batch makes segment bytes below `pos` durable.
    pub fn cover(&mut self, pos: SegPos) {
        self.covers = self.covers.max(Some(pos));
    }
    /// The furthest segment bytes the batch points to.
    pub fn needs(&self) -> Option<SegPos> {
        self.needs
    }
    /// How far the batch makes segment bytes durable.
    pub fn covers(&self) -> Option<SegPos> {
        self.covers
    }
}

/// Scan direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Forward,
    Reverse,
}

/// Read operations, shared by the live store and consistent read views.
pub trait KvRead {
    /// The value stored under `key`, if any.
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>>;

    /// The greatest key `k` with `lower <= k <= key`, with its value.
    /// This is how a versioned read finds "the newest version at or below my epoch".
    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>>;

    /// Visits every key in `[start, end)` in the given direction, calling `f(key, value)`
    /// until it returns `false` or the range ends.
    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()>;

    /// Whether any key of `space` lies in `[start, end)`. No value is needed: a store whose
    /// values live elsewhere (segments) answers from its keys alone.
    fn any_key_in(&self, space: Space, start: &[u8], end: &[u8]) -> KvResult<bool> {
        let mut any = false;
        self.scan(space, start, end, Dir::Forward, &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }
}

/// An embedded ordered key-value store: the core every backend implements and the
/// conformance suite (`tests/kv_conformance.rs`) tests: reads ([`KvRead`]), atomic batches,
/// sync and consistent read views. What only some backends have is a capability trait,
/// reached through an accessor that answers `None` where the backend has none:
/// [`Kv::maintenance`] (space on disk, compaction, the daemon's periodic upkeep) and
/// [`Kv::status`] (write stalls, reader/fenced state, object-store backlog). A caller that
/// finds no capability uses the neutral value (0 bytes, no stall, writable).
pub trait Kv: KvRead + Send + Sync + 'static {
    /// Applies `batch` atomically; durable on return when `durable` is set.
    fn write(&self, batch: Batch, durable: bool) -> KvResult<()>;

    /// Makes every batch written so far durable.
    fn sync(&self) -> KvResult<()>;

    /// Does a batch written without `durable` survive the death of this process (not of the
    /// machine)? True when `write` hands it to the operating system before it returns (a
    /// write-ahead log file); false when it may sit in this process's memory for a while.
    /// A daemon that took over mounts after a crash serves them again only when true: else
    /// a later fsync could confirm writes that died with the old daemon.
    fn writes_outlive_the_process(&self) -> bool;

    /// A consistent point-in-time view of the whole store.
    fn read_view(&self) -> Box<dyn KvRead + '_>;

    /// The backend's maintenance capability, if it keeps files it can compact or measure.
    fn maintenance(&self) -> Option<&dyn Maintenance>;

    /// The backend's status capability, if it has state worth reporting.
    fn status(&self) -> Option<&dyn Status>;

    /// The segment layer's checks, if file data lives in segments (`segments/`).
    fn segments(&self) -> Option<&dyn segments::SegmentCheck>;
}

/// What the caller knows of deletions the backend may not have reclaimed yet (values it
/// dropped since the last compaction of their keys), for [`Maintenance::tidy`].
pub trait Dropped {
    /// Bytes of values deleted since the account was last taken.
    fn bytes(&self) -> u64;
    /// Takes (and resets) the account: the key ranges `[start, end)` per space whose
    /// compaction releases what was deleted.
    fn take(&self) -> Vec<(Space, Vec<u8>, Vec<u8>)>;
}

/// Space on disk and the work that gives it back.
pub trait Maintenance: Send + Sync {
    /// Bytes the backend occupies on disk (for a store on object storage: its local cache).
    fn disk_usage(&self) -> u64;

    /// Bytes the backend itself knows to be garbage in its files (released by its own
    /// garbage collection); 0 when it does not say.
    fn known_garbage(&self) -> u64;

    /// Free bytes the backend needs to keep on its device to flush what it buffers (so it can
    /// always apply deletions and recover). New file data is refused below this.
    fn reserve_bytes(&self) -> u64;

    /// The directory the store lives in, if its data is on a local disk (used for `statfs`).
    fn path(&self) -> Option<&Path>;

    /// Free bytes on the device of [`Maintenance::path`] (None without one, or when the file
    /// system does not say).
    fn free_bytes(&self) -> Option<u64> {
        let s = nix::sys::statvfs::statvfs(self.path()?).ok()?;
        Some(
            s.blocks_available()
                .saturating_mul(s.fragment_size().max(1)),
        )
    }

    /// Asks the backend to reclaim space of deleted keys in `space` now (best effort; returns
    /// once done).
    fn compact(&self, space: Space) -> KvResult<()>;

    /// Writes what the backend buffers in memory to its files, so that its write-ahead log
    /// can go (at exit: a stopped store holds its data and no log).
    fn flush_buffers(&self) -> KvResult<()>;

    /// At shutdown: stops the backend's own background work (a long manual compaction
    /// returns early). Only writes and syncs of the log are expected afterwards.
    fn cancel_background_work(&self);

    /// The backend's periodic upkeep, called every few seconds by the daemon of a writable
    /// store: the backend decides by its own policy whether to flush, compact the ranges of
    /// `dropped` (taking the account when it does) or switch its background garbage
    /// collection. `idle`: nothing was written since the previous call. Errors are logged.
    fn tidy(&self, idle: bool, dropped: &dyn Dropped);

    /// Cheap upkeep called every second by the daemon of a writable store (no scan, no
    /// write): e.g. keeping in the page cache the files the next write will need.
    fn keep_warm(&self) {}
}

/// What the backend reports of its state (metrics, `GET /status`, the daemon).
pub trait Status: Send + Sync {
    /// Opened as a reader: every write fails with [`KvError::ReadOnly`].
    fn read_only(&self) -> bool;

    /// Another host took this store over: every write fails with [`KvError::Fenced`].
    fn fenced(&self) -> bool;

    /// Whether the backend stops writes right now (a write stall), for metrics.
    fn write_stopped(&self) -> bool;

    /// The rate (bytes/s) the backend slows writes to while it delays them; 0 when not.
    fn delayed_write_rate(&self) -> u64;

    /// For a store on object storage: its backlog, cache and writer state.
    fn remote_status(&self) -> Option<RemoteStatus>;
}

/// The smallest key greater than `key`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// Fewer keys than this are read one by one (a point read skips tables by their filters,
/// where a scan positions itself in each).
const READ_KEYS_SCAN_MIN: usize = 4;
/// Keys a scan of [`read_keys`] may step over between two of the keys it looks for before
/// it seeks to the next one instead.
const READ_KEYS_GAP: usize = 4;

/// Reads the values of `keys` (sorted, no duplicates) in `space`: `f(key, value)` for each
/// (the key asked, so callers may keep it without a copy), `None` where it is absent. Keys next to each other (a write's blocks, their change
/// records) are answered by one forward scan, a run that holds nothing by one step; where
/// more than a few other keys lie between two of them, the scan seeks to the next instead.
/// So N neighbouring keys cost one positioning, not N point reads, and scattered keys about
/// what point reads cost. A handful of keys are point reads.
///
/// Only keys of one run share a scan: `run(key)` names a key's run, a prefix of it (a
/// file's blocks have one: all but their index and epoch; a key alone, itself). A scan
/// steps over deleted keys without showing them, so it cannot count them as a gap: between
/// two files' blocks can lie a deleted file's whole tombstones, which a scan from one to the
/// other would walk one by one until compactions drop them. Runs only decide how keys are
/// read: any answer the same.
pub fn read_keys<'k>(
    r: &dyn KvRead,
    space: Space,
    keys: &[&'k [u8]],
    run: impl Fn(&'k [u8]) -> &'k [u8],
    mut f: impl FnMut(&'k [u8], Option<&[u8]>),
) -> KvResult<()> {
    let mut start = 0;
    while start < keys.len() {
        let this = run(keys[start]);
        let mut end = start + 1;
        while end < keys.len() && run(keys[end]) == this {
            end += 1;
        }
        read_run(r, space, &keys[start..end], &mut f)?;
        start = end;
    }
    Ok(())
}

/// [`read_keys`] of one run.
fn read_run<'k>(
    r: &dyn KvRead,
    space: Space,
    keys: &[&'k [u8]],
    f: &mut impl FnMut(&'k [u8], Option<&[u8]>),
) -> KvResult<()> {
    let Some(last) = keys.last() else {
        return Ok(());
    };
    if keys.len() < READ_KEYS_SCAN_MIN {
        for k in keys {
            f(k, r.get(space, k)?.as_deref());
        }
        return Ok(());
    }
    let end = successor(last);
    // keys[..next] are answered.
    let mut next = 0;
    while next < keys.len() {
        let mut gap = 0;
        let mut reached_end = true;
        r.scan(space, keys[next], &end, Dir::Forward, &mut |k, v| {
            while next < keys.len() && keys[next] < k {
                f(keys[next], None);
                next += 1;
            }
            if next < keys.len() && keys[next] == k {
                f(keys[next], Some(v));
                next += 1;
                gap = 0;
            } else {
                gap += 1;
            }
            if next == keys.len() || gap > READ_KEYS_GAP {
                reached_end = false;
                return false;
            }
            true
        })?;
        if reached_end {
            // Nothing more in the span: the rest are absent.
            for k in &keys[next..] {
                f(k, None);
            }
            next = keys.len();
        }
    }
    Ok(())
}

/// The smallest key strictly greater than every key that starts with `prefix`, if one exists.
/// Used as the exclusive end of a prefix scan.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): no finite bound; the caller's scan runs to the end of the space.
    vec![0xff; prefix.len() + 9]
}
