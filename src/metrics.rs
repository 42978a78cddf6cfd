//! Prometheus metrics of the daemon, served as text at `GET /metrics` (on the Unix socket,
//! and on TCP behind the same bearer token as the API), encoded by `prometheus-client`.
//!
//! Request-path metrics (FUSE requests by operation with latency histograms, errors by
//! errno, bytes read and written, snapshot lifecycle operations) are recorded where they
//! happen, into one process-wide set. Store-wide figures (reclaim backlog, disk usage,
//! garbage, metadata cache hits, RocksDB write stalls, open files, mounts) are read when
//! scraped, so they cost nothing in between.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrnoLabel {
    pub errno: String,
}

/// Latency buckets: 10 us to ~42 s, x4 each.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 4.0, 12))
}

/// The metrics recorded as things happen.
pub struct Metrics {
    pub fuse_requests: Family<OpLabel, Histogram, fn() -> Histogram>,
    pub fuse_errors: Family<ErrnoLabel, Counter>,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub snapshot_ops: Family<OpLabel, Histogram, fn() -> Histogram>,
    pub snapshot_op_errors: Family<OpLabel, Counter>,
    /// Threads serving `/dev/fuse` for every mount (the FUSE adapter's pool keeps it).
    pub fuse_workers: Gauge,
    /// Helper threads of the io_uring rings (slow requests), likewise.
    pub fuse_ring_helpers: Gauge,
}

/// The figures read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Scraped {
    pub reclaim_epochs: u64,
    pub disk_bytes: u64,
    pub garbage_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub write_stopped: bool,
    pub delayed_write_rate: u64,
    pub open_files: u64,
    pub mounts: u64,
    /// The daemon's resident memory and threads.
    pub process: crate::process::Usage,
    /// A store on object storage: its state and traffic.
    pub object_store: Option<crate::kv::RemoteStatus>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        fuse_requests: Family::new_with_constructor(latency),
        fuse_errors: Family::default(),
        read_bytes: Counter::default(),
        written_bytes: Counter::default(),
        snapshot_ops: Family::new_with_constructor(latency),
        snapshot_op_errors: Family::default(),
        fuse_workers: Gauge::default(),
        fuse_ring_helpers: Gauge::default(),
    })
}

/// Times one FUSE request (both transports): recorded when dropped.
pub struct FuseTimer {
    op: &'static str,
    start: Instant,
}

impl FuseTimer {
    pub fn new(op: &'static str) -> FuseTimer {
        FuseTimer {
            op,
            start: Instant::now(),
        }
    }
}

impl Drop for FuseTimer {
    fn drop(&mut self) {
        get()
            .fuse_requests
            .get_or_create(&OpLabel { op: self.op })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// A FUSE request failed with `errno`.
pub fn fuse_error(errno: i32) {
    let name = nix::errno::Errno::from_raw(errno);
    get()
        .fuse_errors
        .get_or_create(&ErrnoLabel {
            errno: format!("{name:?}"),
        })
        .inc();
}

/// Records a snapshot lifecycle operation (`snapshot`, `restore`, `restore_paths`, `copy`,
/// `delete`) that took `took` and succeeded or not.
pub fn snapshot_op(op: &'static str, took: Duration, ok: bool) {
    let m = get();
    m.snapshot_ops
        .get_or_create(&OpLabel { op })
        .observe(took.as_secs_f64());
    if !ok {
        m.snapshot_op_errors.get_or_create(&OpLabel { op }).inc();
    }
}

/// Runs `f`, recording it as snapshot operation `op`.
pub fn timed<T, E>(op: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let t = Instant::now();
    let r = f();
    snapshot_op(op, t.elapsed(), r.is_ok());
    r
}

/// The text exposition of every metric, with the scraped figures.
pub fn encode(s: &Scraped) -> Result<String, std::fmt::Error> {
    let m = get();
    let mut r = Registry::with_prefix("snapfs");
    r.register(
        "fuse_request_duration_seconds",
        "FUSE requests served, by operation, and how long each took",
        m.fuse_requests.clone(),
    );
    r.register(
        "fuse_errors",
        "FUSE requests answered with an error, by errno",
        m.fuse_errors.clone(),
    );
    r.register(
        "read_bytes",
        "Bytes read by FUSE requests",
        m.read_bytes.clone(),
    );
    r.register(
        "written_bytes",
        "Bytes written by FUSE requests",
        m.written_bytes.clone(),
    );
    r.register(
        "snapshot_operation_duration_seconds",
        "Snapshot, restore, path restore, copy and delete operations, and how long each took",
        m.snapshot_ops.clone(),
    );
    r.register(
        "snapshot_operation_errors",
        "Snapshot lifecycle operations that failed",
        m.snapshot_op_errors.clone(),
    );
    let gauge = |v: u64| {
        let g: Gauge<i64, std::sync::atomic::AtomicI64> = Gauge::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    r.register(
        "reclaim_backlog_epochs",
        "Deleted snapshots and replaced trees waiting for reclaim",
        gauge(s.reclaim_epochs),
    );
    r.register(
        "store_disk_bytes",
        "Bytes of the store's files on disk",
        gauge(s.disk_bytes),
    );
    r.register(
        "store_garbage_bytes",
        "Bytes dropped but not yet given back to the disk by compaction",
        gauge(s.garbage_bytes),
    );
    r.register(
        "metadata_cache_hits",
        "Metadata lookups served from the daemon's cache",
        counter(s.cache_hits),
    );
    r.register(
        "metadata_cache_misses",
        "Metadata lookups that went to the store",
        counter(s.cache_misses),
    );
    r.register(
        "rocksdb_write_stopped",
        "1 while RocksDB stops writes (a write stall)",
        gauge(u64::from(s.write_stopped)),
    );
    r.register(
        "rocksdb_delayed_write_rate_bytes",
        "The rate RocksDB slows writes to while it delays them (0: no delay)",
        gauge(s.delayed_write_rate),
    );
    r.register(
        "open_files",
        "Files open through the mounts",
        gauge(s.open_files),
    );
    r.register("mounts", "Containers mounted", gauge(s.mounts));
    r.register(
        "process_resident_memory_bytes",
        "Resident memory of the daemon (VmRSS)",
        gauge(s.process.rss_bytes),
    );
    r.register(
        "process_threads",
        "Threads of the daemon",
        gauge(s.process.threads),
    );
    r.register(
        "fuse_workers",
        "Threads reading /dev/fuse for every mount (shared, started on demand)",
        m.fuse_workers.clone(),
    );
    r.register(
        "fuse_ring_helpers",
        "Threads serving the slow requests of the io_uring rings (shared, started on demand)",
        m.fuse_ring_helpers.clone(),
    );
    if let Some(o) = &s.object_store {
        r.register(
            "object_store_fenced",
            "1 once another host took the store over (writes fail here)",
            gauge(u64::from(o.fenced)),
        );
        r.register(
            "object_store_backlog_bytes",
            "Bytes written but not yet in object storage",
            gauge(o.backlog_bytes),
        );
        r.register(
            "object_store_cache_bytes",
            "Size of the local cache of object-store data",
            gauge(o.cache_bytes),
        );
        r.register(
            "object_store_written_bytes",
            "Bytes of keys and values written to the store",
            counter(o.written_bytes),
        );
        r.register(
            "object_store_put_bytes",
            "Bytes sent to object storage",
            counter(o.put_bytes),
        );
        r.register(
            "object_store_put_requests",
            "PUT requests (and multipart parts) sent to object storage",
            counter(o.put_requests),
        );
        r.register(
            "object_store_get_requests",
            "GET requests sent to object storage",
            counter(o.get_requests),
        );
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}
