//! The SlateDB backend itself (see [`super`]): opening, the drain of the write-behind
//! buffer, syncs, and the [`Kv`] traits.

#[path = "gate.rs"]
mod gate;
#[path = "read.rs"]
mod read;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use slatedb::bytes::Bytes;
use slatedb::config::{DbReaderOptions, ObjectStoreCacheOptions, Settings};
use slatedb::object_store::ObjectStore;
use slatedb::{CloseReason, Db, DbReader, DbReaderMode, DbStatus, ErrorKind, WriteBatch};

use super::overlay::{Layer, Overlay};
use super::traffic::{Counting, Traffic};
use super::{SlateOptions, VersionRule};
use crate::kv::{
    Batch, BatchOp, Dir, Dropped, Kv, KvError, KvRead, KvResult, Maintenance, Pair, RemoteStatus,
    SegPos, Space, Status, UploadGate, Visit,
};
use read::{Failed, Reader, Source};

/// How long closing waits for the object store to take what is still buffered.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The write-behind buffer's share of the backlog: an eighth, at most 32 MiB (it only has
/// to absorb one SlateDB write's latency; SlateDB holds the rest).
fn buffer_bytes(backlog: u64) -> u64 {
    (backlog / 8).min(32 << 20)
}

/// In-memory caches of SST blocks and of their indexes and filters (moka). Without them
/// every read of a key not in the memtable reads the local disk cache or the object store.
const BLOCK_CACHE_BYTES: u64 = 128 << 20;
const META_CACHE_BYTES: u64 = 32 << 20;

fn memory_cache() -> Arc<dyn slatedb::db_cache::DbCache> {
    use slatedb::db_cache::moka::{MokaCache, MokaCacheOptions};
    let moka = |max_capacity| -> Arc<dyn slatedb::db_cache::DbCache> {
        Arc::new(MokaCache::new_with_opts(MokaCacheOptions {
            max_capacity,
            time_to_live: None,
            time_to_idle: None,
        }))
    };
    Arc::new(
        slatedb::db_cache::SplitCache::new()
            .with_block_cache(Some(moka(BLOCK_CACHE_BYTES)))
            .with_meta_cache(Some(moka(META_CACHE_BYTES)))
            .build(),
    )
}

/// SlateDB's bloom filters, per SST, hash every key and also the *base* of each versioned
/// key (the key without its trailing epoch), as the opener's [`VersionRule`] says: reading
/// a key's versions is a range scan, and without the base in the filter it reads a block of
/// every table whose key range overlaps (all of them, once random writes spread over the
/// tables). With it, a scan within one base skips the tables that never had that base.
struct VersionBase(VersionRule);

impl slatedb::PrefixExtractor for VersionBase {
    fn name(&self) -> &str {
        self.0.name
    }

    /// The same answer for a stored key and for a scan prefix: the base's length depends
    /// only on the bytes up to its end (a fixed length, or a name's 0x00 terminator).
    fn prefix_len(&self, target: &slatedb::PrefixTarget) -> Option<usize> {
        let k = match target {
            slatedb::PrefixTarget::Point(k) | slatedb::PrefixTarget::Prefix(k) => k,
        };
        base_len(&self.0, k)
    }
}

/// The length of the base of a full key (space tag first), by the rule for the key without
/// its tag.
fn base_len(rule: &VersionRule, k: &[u8]) -> Option<usize> {
    let space = match *k.first()? {
        t if t == tag(Space::Meta) => Space::Meta,
        t if t == tag(Space::Data) => Space::Data,
        t if t == tag(Space::Segments) => Space::Segments,
        _ => return None,
    };
    (rule.base_len)(space, &k[1..]).map(|n| n + 1)
}

/// Bloom filters on every key, and on versioned keys' bases when the opener gave the rule.
fn filter_policies(rule: Option<VersionRule>) -> Vec<Arc<dyn slatedb::FilterPolicy>> {
    let bloom = slatedb::BloomFilterPolicy::new(10);
    vec![match rule {
        Some(rule) => Arc::new(bloom.with_prefix_extractor(Arc::new(VersionBase(rule)))),
        None => Arc::new(bloom),
    }]
}

/// The longest common prefix of a scan's bounds: every key of the range starts with it,
/// and SlateDB probes the filters with it.
fn common_prefix(lo: &[u8], hi: &[u8]) -> usize {
    lo.iter().zip(hi).take_while(|(a, b)| a == b).count()
}

/// Bytes fetched per read while scanning (SlateDB's default of one block makes scans ~50x
/// slower).
const READ_AHEAD: usize = 1 << 20;

fn tag(space: Space) -> u8 {
    match space {
        Space::Meta => 0,
        Space::Data => 1,
        Space::Segments => 2,
    }
}

fn full_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(tag(space));
    k.extend_from_slice(key);
    k
}

fn err(e: impl std::fmt::Display) -> KvError {
    KvError::Io(format!("slatedb: {e}"))
}

/// SlateDB's errors: a fenced writer (another process opened the database as its writer)
/// is [`KvError::Fenced`].
fn slate_err(e: slatedb::Error) -> KvError {
    match e.kind() {
        ErrorKind::Closed(CloseReason::Fenced) => KvError::Fenced,
        _ => err(e),
    }
}

/// The open database: its writer, or a reader.
enum Handle {
    Writer(Db),
    Reader(Box<DbReader>),
}

/// One SlateDB database as a [`Kv`].
pub struct SlateKv {
    rt: tokio::runtime::Runtime,
    handle: Handle,
    opts: SlateOptions,
    /// Requests and bytes sent to the object store.
    traffic: Arc<Traffic>,
    /// The object store, counting into `traffic`, and the database's path in it.
    store: Arc<dyn ObjectStore>,
    path: String,
    /// Bytes of keys and values written (what the object-store traffic amplifies).
    written: std::sync::atomic::AtomicU64,
    /// What the caller and the drain thread share.
    shared: Arc<Shared>,
    /// The drain thread (a writer's), and the channel on which it says it stopped.
    drain: Mutex<Option<(std::thread::JoinHandle<()>, mpsc::Receiver<()>)>>,
    /// Held (flock) while the database is open.
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// The state the drain thread shares with the callers.
struct Shared {
    /// Batches written, not yet handed to SlateDB.
    overlay: Overlay,
    /// Writes handed to SlateDB, not yet durable: (sequence number, bytes), oldest first.
    backlog: Mutex<VecDeque<(u64, u64)>>,
    /// The writer's status (durable sequence number, close reason).
    status: Option<tokio::sync::watch::Receiver<DbStatus>>,
    fenced: AtomicBool,
    /// The segments this database's references point into (set once, by the segment
    /// layer on top): the drain hands SlateDB no batch before the bytes it needs are up.
    gate: std::sync::OnceLock<Arc<dyn UploadGate>>,
}

/// Takes an exclusive lock on `path` (created if missing), or fails with [`KvError::Busy`].
fn lock(path: &Path) -> KvResult<nix::fcntl::Flock<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| KvError::Busy)
}

fn cache_options(opts: &SlateOptions) -> ObjectStoreCacheOptions {
    ObjectStoreCacheOptions {
        root_folder: opts.cache_dir.clone(),
        max_cache_size_bytes: Some(usize::try_from(opts.cache_bytes).unwrap_or(usize::MAX)),
        // What this host writes is what it reads next: keep new tables local too.
        cache_on_flush: true,
        cache_on_compaction: true,
        ..Default::default()
    }
}

impl SlateKv {
    /// Opens (or creates) the database at `path` in `store`. A second open of the same
    /// database elsewhere fences this one: its next durable write fails.
    pub fn open(store: Arc<dyn ObjectStore>, path: &str) -> KvResult<SlateKv> {
        Self::open_with(store, path, &SlateOptions::default())
    }

    /// Opens the database at `path` in `store` as its writer (creating it when missing;
    /// fencing any previous writer), or, with `read_only`, as a reader of an existing one.
    pub fn open_with(
        store: Arc<dyn ObjectStore>,
        path: &str,
        opts: &SlateOptions,
    ) -> KvResult<SlateKv> {
        let lock = match &opts.lock_file {
            Some(p) => Some(lock(p)?),
            None => None,
        };
        if let Some(d) = &opts.cache_dir {
            std::fs::create_dir_all(d).map_err(err)?;
        }
        let traffic = Arc::new(Traffic::default());
        let store: Arc<dyn ObjectStore> = Arc::new(Counting::new(store, traffic.clone()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("slatedb")
            .enable_all()
            .build()
            .map_err(err)?;
        let (handle, status) = if opts.read_only {
            let ro = DbReaderOptions {
                object_store_cache_options: cache_options(opts),
                manifest_poll_interval: Duration::from_secs(1),
                ..Default::default()
            };
            let reader = rt
                .block_on(
                    DbReader::builder(path.to_string(), store.clone())
                        .with_db_cache(memory_cache(), 0)
                        .with_filter_policies(filter_policies(opts.version_rule))
                        .with_options(ro)
                        .with_reader_mode(DbReaderMode::ManagedCheckpoint)
                        .build(),
                )
                .map_err(slate_err)?;
            (Handle::Reader(Box::new(reader)), None)
        } else {
            let backlog = opts.backlog_bytes - buffer_bytes(opts.backlog_bytes);
            let backlog = usize::try_from(backlog).unwrap_or(usize::MAX);
            let settings = Settings {
                flush_interval: Some(opts.push_interval),
                max_unflushed_bytes: backlog,
                // SlateDB wants the backlog above one L0 table (64 MiB by default).
                l0_sst_size_bytes: (backlog / 4).min(64 << 20),
                // Every table gets its bloom filter (SlateDB skips it below 1,000 keys):
                // a small table (what closing a database leaves) without one is read by
                // every lookup and every scan that its key range covers.
                min_filter_keys: 1,
                object_store_cache_options: cache_options(opts),
                ..Default::default()
            };
            let db = rt
                .block_on(
                    Db::builder(path.to_string(), store.clone())
                        .with_db_cache(memory_cache(), 0)
                        .with_filter_policies(filter_policies(opts.version_rule))
                        .with_settings(settings)
                        .build(),
                )
                .map_err(slate_err)?;
            let status = db.subscribe();
            (Handle::Writer(db), Some(status))
        };
        let shared = Arc::new(Shared {
            overlay: Overlay::new(buffer_bytes(opts.backlog_bytes)),
            backlog: Mutex::new(VecDeque::new()),
            status,
            fenced: AtomicBool::new(false),
            gate: std::sync::OnceLock::new(),
        });
        let drain = match &handle {
            Handle::Writer(db) => {
                let (db, rt, sh) = (db.clone(), rt.handle().clone(), shared.clone());
                let (done, stopped) = mpsc::channel();
                let thread = std::thread::Builder::new()
                    .name("slatedb-drain".into())
                    .spawn(move || {
                        drain(&db, &rt, &sh);
                        let _ = done.send(());
                    })
                    .map_err(err)?;
                Some((thread, stopped))
            }
            Handle::Reader(_) => None,
        };
        Ok(SlateKv {
            rt,
            handle,
            opts: opts.clone(),
            traffic,
            store,
            path: path.to_string(),
            written: std::sync::atomic::AtomicU64::new(0),
            shared,
            drain: Mutex::new(drain),
            _lock: lock,
        })
    }

    /// A database in memory (tests).
    pub fn in_memory() -> KvResult<SlateKv> {
        Self::open(
            Arc::new(slatedb::object_store::memory::InMemory::new()),
            "snapfs",
        )
    }

    /// A database in a local directory (object storage emulated by files).
    pub fn local(dir: &Path) -> KvResult<SlateKv> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let store =
            slatedb::object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(err)?;
        Self::open(Arc::new(store), "snapfs")
    }

    /// Hands the drain the segments this database's references point into (once).
    pub fn set_gate(&self, gate: Arc<dyn UploadGate>) {
        let _ = self.shared.gate.set(gate);
    }

    /// The object store (counting its traffic with the database's).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// How long a sync waits for the object store to take a write before it fails.
    pub fn fsync_timeout(&self) -> Option<Duration> {
        self.opts.fsync_timeout
    }

    /// The database's path in the object store.
    pub fn prefix(&self) -> &str {
        &self.path
    }

    fn db(&self) -> KvResult<&Db> {
        match &self.handle {
            Handle::Writer(db) => Ok(db),
            Handle::Reader(_) => Err(KvError::ReadOnly),
        }
    }
}

/// Moves the write-behind buffer into SlateDB until it is closed (or a write fails).
fn drain(db: &Db, rt: &tokio::runtime::Handle, shared: &Shared) {
    // How far the layers already handed over make segment bytes durable themselves.
    let mut handed: Option<SegPos> = None;
    while let Some(layer) = shared.overlay.next_layer() {
        if let Err(e) = shared.await_segments(&layer, handed) {
            // Only when closing: otherwise the drain waits for the object store.
            shared.overlay.fail(e);
            return;
        }
        handed = handed.max(layer.covers);
        match rt.block_on(db.write(batch_of(&layer))) {
            Ok(h) => {
                let mut q = shared.backlog.lock();
                q.push_back((h.seqnum(), layer.bytes));
                let prune = q.len().is_multiple_of(1024);
                drop(q);
                if prune {
                    shared.backlog_bytes();
                }
                shared.overlay.retire(&layer);
            }
            Err(e) => {
                let e = shared.fail(e);
                shared.overlay.fail(e);
                return;
            }
        }
    }
}

/// How often a waiting sync checks that the object store still takes writes.
const SYNC_SLICE: Duration = Duration::from_millis(250);

/// What a waiting sync watches: the writes the object store took and the batches the
/// buffer handed to SlateDB. It fails when neither moved for the fsync timeout: the object
/// store is down, not merely busy (under a heavy backlog a sync may wait long, and an
/// fsync's EIO is fatal to many programs).
struct Progress<'a> {
    kv: &'a SlateKv,
    since: Instant,
    stored: u64,
    drained: u64,
}

impl<'a> Progress<'a> {
    fn new(kv: &'a SlateKv) -> Self {
        Progress {
            kv,
            since: Instant::now(),
            stored: kv.traffic.stored.load(Ordering::Relaxed),
            drained: kv.shared.overlay.drained(),
        }
    }

    /// An error once nothing moved for the fsync timeout.
    fn check(&mut self) -> KvResult<()> {
        let stored = self.kv.traffic.stored.load(Ordering::Relaxed);
        let drained = self.kv.shared.overlay.drained();
        if (stored, drained) != (self.stored, self.drained) {
            (self.stored, self.drained, self.since) = (stored, drained, Instant::now());
            return Ok(());
        }
        match self.kv.opts.fsync_timeout {
            Some(t) if self.since.elapsed() >= t => Err(self.kv.sync_timeout(t)),
            _ => Ok(()),
        }
    }
}

/// One frozen layer as a SlateDB batch (its keys are distinct: order does not matter).
fn batch_of(layer: &Layer) -> WriteBatch {
    let mut wb = WriteBatch::new();
    for (k, v) in layer.map.iter() {
        match v {
            Some(v) => wb.put_bytes(Bytes::copy_from_slice(k), v.clone()),
            None => wb.delete(k),
        }
    }
    wb
}

impl Shared {
    /// Whether another writer fenced this one (SlateDB closed the database for it).
    fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
            || self
                .status
                .as_ref()
                .is_some_and(|s| s.borrow().close_reason == Some(CloseReason::Fenced))
    }

    /// Notes a failure; a fenced writer stays fenced (a database closed because it was
    /// fenced answers "closed" afterwards: that is still [`KvError::Fenced`]).
    fn fail(&self, e: slatedb::Error) -> KvError {
        let mut e = slate_err(e);
        if !matches!(e, KvError::Fenced) && self.is_fenced() {
            e = KvError::Fenced;
        }
        if matches!(e, KvError::Fenced) && !self.fenced.swap(true, Ordering::SeqCst) {
            log::error!(
                "this store was taken over by another host (its writer fenced this one): \
                 every write fails from now on; restart the daemon to open it again"
            );
        }
        e
    }

    /// Drops backlog entries that became durable; returns the bytes still waiting.
    fn backlog_bytes(&self) -> u64 {
        let durable = match &self.status {
            Some(s) => s.borrow().durable_seq,
            None => return 0,
        };
        let mut q = self.backlog.lock();
        while q.front().is_some_and(|(seq, _)| *seq <= durable) {
            q.pop_front();
        }
        q.iter().map(|(_, b)| b).sum()
    }
}

impl Drop for SlateKv {
    /// Closing drains the write-behind buffer and writes what SlateDB still buffers to the
    /// object store (as dropping the RocksDB backend leaves its log complete).
    /// With the object store unreachable, closing would retry for ever: it gives up after
    /// [`CLOSE_TIMEOUT`] (what was not synced by then is lost, as after a crash; nothing
    /// synced is).
    fn drop(&mut self) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let backlog = self.shared.backlog_bytes() + self.shared.overlay.bytes();
        if let Some((thread, stopped)) = self.drain.get_mut().take() {
            self.shared.overlay.close();
            match stopped.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => {
                    let _ = thread.join();
                }
                // Closing the database below ends the drain's pending write.
                Err(_) => log::error!(
                    "closing: the object store did not take the buffered writes within \
                     {CLOSE_TIMEOUT:?}"
                ),
            }
        }
        if self.shared.is_fenced() {
            return;
        }
        let close = async {
            match &self.handle {
                Handle::Writer(db) => db.close().await,
                Handle::Reader(r) => r.close().await,
            }
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let closed = self
            .rt
            .block_on(async { tokio::time::timeout(left, close).await });
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let e = slate_err(e);
                if !matches!(e, KvError::Fenced) {
                    log::warn!("closing slatedb: {e}");
                }
            }
            Err(_) => log::error!(
                "closing: the object store did not answer within {CLOSE_TIMEOUT:?}; \
                 {backlog} bytes written but never synced were not pushed"
            ),
        }
    }
}

impl SlateKv {
    fn reader(&self) -> Reader<'_> {
        match &self.handle {
            Handle::Writer(db) => Reader {
                rt: &self.rt,
                src: Source::Db(db),
                overlay: Some(&self.shared.overlay),
            },
            Handle::Reader(r) => Reader {
                rt: &self.rt,
                src: Source::Reader(r),
                overlay: None,
            },
        }
    }

    /// Waits until the write-behind buffer has handed every batch accepted so far to
    /// SlateDB; fails once the object store took nothing for the fsync timeout.
    fn drain_buffer(&self, progress: &mut Progress) -> KvResult<()> {
        let last = self.shared.overlay.accepted();
        while !self
            .shared
            .overlay
            .wait(last, Some(Instant::now() + SYNC_SLICE))?
        {
            progress.check()?;
        }
        Ok(())
    }

    /// The error of a sync that ran out of time.
    fn sync_timeout(&self, t: Duration) -> KvError {
        log::error!(
            "sync: the object store took no write for {t:?}; \
             the writes stay queued and are retried"
        );
        KvError::Io(format!("the object store took no write for {t:?}"))
    }
}

impl KvRead for SlateKv {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.reader().get(space, key)
    }

    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        self.reader().seek_for_prev(space, lower, key)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        self.reader().scan(space, start, end, dir, f)
    }
}

impl Kv for SlateKv {
    fn writes_outlive_the_process(&self) -> bool {
        // A batch waits in the write-behind buffer, then in SlateDB's memory, until a
        // drain and flush put it on the object store.
        false
    }

    fn write(&self, batch: Batch, durable: bool) -> KvResult<()> {
        if batch.is_empty() {
            return if durable { self.sync() } else { Ok(()) };
        }
        self.db()?;
        if self.shared.is_fenced() {
            return Err(KvError::Fenced);
        }
        let segs = (batch.needs(), batch.covers());
        let mut ops = Vec::with_capacity(batch.len());
        let mut bytes = 0u64;
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(space, k, v) => {
                    bytes += (k.len() + v.len() + 1) as u64;
                    ops.push((full_key(space, &k), Some(Bytes::from(v))));
                }
                BatchOp::Delete(space, k) => {
                    bytes += (k.len() + 1) as u64;
                    ops.push((full_key(space, &k), None));
                }
            }
        }
        self.shared.overlay.put(ops, bytes, segs)?;
        self.written.fetch_add(bytes, Ordering::Relaxed);
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// Waits until everything written is in the object store. A slow object store is
    /// waited for; one that took nothing for the configured timeout fails the sync (EIO; the
    /// push goes on, and a later sync may succeed).
    fn sync(&self) -> KvResult<()> {
        let db = self.db()?;
        let mut progress = Progress::new(self);
        // The buffer into SlateDB...
        self.drain_buffer(&mut progress)?;
        // ...and SlateDB's log into the object store.
        let mut flush = std::pin::pin!(db.flush());
        loop {
            let slice = self
                .rt
                .block_on(async { tokio::time::timeout(SYNC_SLICE, &mut flush).await });
            match slice {
                Ok(flushed) => {
                    flushed.map_err(|e| self.shared.fail(e))?;
                    break;
                }
                Err(_) => progress.check()?,
            }
        }
        self.shared.backlog_bytes();
        Ok(())
    }

    fn read_view(&self) -> Box<dyn KvRead + '_> {
        match &self.handle {
            Handle::Writer(db) => {
                // A SlateDB snapshot sees what the buffer handed over: drain it first.
                if let Err(e) = self.drain_buffer(&mut Progress::new(self)) {
                    return Box::new(Failed(format!("slatedb snapshot: {e}")));
                }
                match db.snapshot() {
                    Ok(snap) => Box::new(Reader {
                        rt: &self.rt,
                        src: Source::Snapshot(snap),
                        overlay: None,
                    }),
                    Err(e) => Box::new(Failed(format!("slatedb snapshot: {e}"))),
                }
            }
            // A reader follows the writer: its view is the latest state it has.
            Handle::Reader(r) => Box::new(Reader {
                rt: &self.rt,
                src: Source::Reader(r),
                overlay: None,
            }),
        }
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        Some(self)
    }

    fn status(&self) -> Option<&dyn Status> {
        Some(self)
    }

    fn segments(&self) -> Option<&dyn crate::kv::segments::SegmentCheck> {
        None
    }
}

/// SlateDB compacts and collects garbage in the background on its own: there is nothing to
/// ask for; what is on local disk is its cache (the data itself is in the object store).
impl Maintenance for SlateKv {
    fn disk_usage(&self) -> u64 {
        self.opts.cache_dir.as_deref().map(dir_size).unwrap_or(0)
    }

    fn known_garbage(&self) -> u64 {
        0
    }

    fn reserve_bytes(&self) -> u64 {
        0
    }

    /// The data is not on a local disk.
    fn path(&self) -> Option<&Path> {
        None
    }

    fn compact(&self, _space: Space) -> KvResult<()> {
        Ok(())
    }

    fn flush_buffers(&self) -> KvResult<()> {
        Ok(())
    }

    fn cancel_background_work(&self) {}

    /// SlateDB's compactor releases deleted values by itself: nothing to ask for. The
    /// caller's account of them is cleared once it reaches 64 MiB (or 1/16 of the cache),
    /// where a backend that needs asking would compact, so `df` reads as it always did.
    fn tidy(&self, _idle: bool, dropped: &dyn Dropped) {
        if dropped.bytes() >= (64u64 << 20).max(self.disk_usage() / 16) {
            dropped.take();
        }
    }
}

impl Status for SlateKv {
    fn read_only(&self) -> bool {
        matches!(self.handle, Handle::Reader(_))
    }

    fn fenced(&self) -> bool {
        self.shared.is_fenced()
    }

    fn write_stopped(&self) -> bool {
        false
    }

    fn delayed_write_rate(&self) -> u64 {
        0
    }

    fn remote_status(&self) -> Option<RemoteStatus> {
        Some(RemoteStatus {
            url: self.opts.location.clone(),
            read_only: self.read_only(),
            fenced: self.shared.is_fenced(),
            backlog_bytes: self.shared.backlog_bytes() + self.shared.overlay.bytes(),
            backlog_limit_bytes: self.opts.backlog_bytes,
            cache_bytes: self.disk_usage(),
            cache_limit_bytes: self.opts.cache_bytes,
            push_interval_ms: self.opts.push_interval.as_millis() as u64,
            written_bytes: self.written.load(Ordering::Relaxed),
            put_requests: self.traffic.puts.load(Ordering::Relaxed),
            put_bytes: self.traffic.put_bytes.load(Ordering::Relaxed),
            get_requests: self.traffic.gets.load(Ordering::Relaxed),
            list_requests: self.traffic.lists.load(Ordering::Relaxed),
            segment_bytes: 0,
            segment_live_bytes: 0,
            segments_deleted: 0,
        })
    }
}

/// Bytes of the files below `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
