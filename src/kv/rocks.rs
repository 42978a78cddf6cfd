//! RocksDB [`Kv`] backend — with `rocks/`, the only module that names RocksDB.
//!
//! Layout: one column family per [`Space`]:
//! - `meta`: plain block-based SST files with a bloom filter.
//! - `data`: BlobDB — values of at least [`RocksOptions::blob_min_bytes`] go to blob files
//!   (uncompressed; file blocks are often already compressed); background blob garbage
//!   collection only while [`RocksKv::set_background_gc`] has it on (the policy in
//!   `rocks/gc.rs` decides), [`Maintenance::compact`] always.
//!
//! Both share one bounded LRU cache for data blocks, index/filter blocks and blobs, so memory
//! stays bounded by [`RocksOptions::block_cache_bytes`] plus the memtables.
//!
//! All batches go through the write-ahead log, which is what makes a cross-space [`Batch`]
//! atomic after a crash. No prefix extractor is configured, so every iterator is total-order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamily, ColumnFamilyDescriptor,
    CompactOptions, DBCompressionType, DBRawIterator, Options, ReadOptions, Snapshot, WriteBatch,
    WriteOptions, DB,
};

use super::{
    Batch, BatchOp, Dir, Dropped, Kv, KvError, KvRead, KvResult, Maintenance, Pair, RemoteStatus,
    Space, Status, Visit,
};

mod gc;
mod logs;

const CF_META: &str = "meta";
const CF_DATA: &str = "data";
const CF_SEGMENTS: &str = "segments";

/// Blob GC age cutoff while background blob GC is on (RocksDB's default): compactions relocate
/// live blobs out of the oldest quarter of blob files. Background blob GC starts off and is
/// switched by [`RocksKv::set_background_gc`] (the policy turns it on only while there is garbage:
/// it relocates blobs whether or not their files hold any).
const BLOB_GC_AGE_CUTOFF: &str = "0.25";
/// Blob GC age cutoff used during [`Maintenance::compact`] of [`Space::Data`]: every blob file.
const BLOB_GC_AGE_CUTOFF_FULL: &str = "1.0";

/// Tuning for [`RocksKv::open`].
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Capacity of the LRU cache shared by both spaces (blocks, index/filter blocks, blobs).
    pub block_cache_bytes: usize,
    /// Memtable size of each space before it is flushed to disk.
    pub write_buffer_bytes: usize,
    /// Values in [`Space::Data`] of at least this many bytes are stored in blob files.
    pub blob_min_bytes: u64,
    /// Flushes and compactions write their table and blob files with direct I/O, past the
    /// page cache (opt-in: `SNAPFS_DIRECT_IO=1`, where the file system takes `O_DIRECT`).
    /// A sustained sequential write crosses the kernel twice (log, then blob file), and
    /// the copies into the page cache cost CPU the writer needs: 10 GiB written with fio
    /// bs=1M on 2 vCPUs went 214 -> 296 MiB/s over /dev/fuse, 216 -> 242 over io_uring.
    /// But blob files written past the page cache are not in it when a partial write reads
    /// its block back: random 4 KiB writes into a 1 GiB file fell 7,802 -> 3,176 IOPS
    /// (/dev/fuse), 10,742 -> 4,239 (io_uring). Off by default for that.
    pub direct_flush: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 16 << 20,
            blob_min_bytes: 4096,
            direct_flush: false,
        }
    }
}

impl RocksOptions {
    /// The defaults with write buffers sized for the file system holding `dir`: 64 MiB, but at
    /// most 1/64 of the file system and at least 16 MiB. Larger buffers mean fewer flushes and
    /// compactions, and so fewer blob relocations (4 KiB random writes on a 1 GiB file: 16 MiB
    /// ~3,400 IOPS, 64 MiB ~5,400, 128 MiB no better); the bound keeps the space reserved for
    /// flushing them after a disk-full ([`Maintenance::reserve_bytes`]) a small share of a small disk.
    pub fn for_disk(dir: &Path) -> Self {
        const MIB: u64 = 1 << 20;
        let mut opts = Self::default();
        if let Ok(s) = nix::sys::statvfs::statvfs(dir) {
            let total = s.blocks().saturating_mul(s.fragment_size());
            let bytes = (total / 64).clamp(16 * MIB, 64 * MIB) / MIB * MIB;
            opts.write_buffer_bytes = bytes as usize;
        }
        let wanted = matches!(
            std::env::var("SNAPFS_DIRECT_IO").as_deref().map(str::trim),
            Ok("1") | Ok("on") | Ok("true") | Ok("yes")
        );
        opts.direct_flush = wanted && Self::direct_io_works(dir);
        opts
    }

    /// Whether the file system holding the existing directory `dir` accepts an `O_DIRECT`
    /// write (tmpfs only since Linux 6.6): one aligned 4 KiB write to a probe file that is
    /// removed again.
    pub fn direct_io_works(dir: &Path) -> bool {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        const ALIGN: usize = 4096;
        if !dir.is_dir() {
            return false;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let probe = dir.join(format!(".direct-io-probe-{}-{nanos}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe);
        let ok = file.is_ok_and(|f| {
            // An aligned 4 KiB window inside a plain buffer: no allocator tricks needed.
            let buf = vec![0u8; 2 * ALIGN];
            let skip = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
            f.write_at(&buf[skip..skip + ALIGN], 0).is_ok()
        });
        let _ = std::fs::remove_file(&probe);
        ok
    }
}

/// A RocksDB-backed ordered key-value store living in one directory.
pub struct RocksKv {
    db: DB,
    path: PathBuf,
    /// Serializes [`Maintenance::compact`] and [`RocksKv::set_background_gc`], which change
    /// blob GC options.
    compact_lock: Mutex<()>,
    write_buffer_bytes: usize,
    /// Whether background blob GC is on (see [`BLOB_GC_AGE_CUTOFF`]); guarded by `compact_lock`.
    background_gc: AtomicBool,
    /// The garbage policy's memory between two [`Maintenance::tidy`] calls.
    gc: Mutex<gc::GcState>,
}

impl std::fmt::Debug for RocksKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKv").field("path", &self.path).finish()
    }
}

/// Maps a RocksDB error to a [`KvError`] by its message (the crate exposes no errno).
fn map_err(e: rocksdb::Error) -> KvError {
    classify(e.into_string())
}

fn classify(msg: String) -> KvError {
    if msg.contains("No space left") || msg.contains("ENOSPC") {
        KvError::NoSpace
    } else if msg.contains("While lock file")
        || msg.contains("lock hold by current process")
        || msg.contains("Resource temporarily unavailable")
        || msg.contains("/LOCK:")
    {
        KvError::Busy
    } else {
        KvError::Io(msg)
    }
}

fn map_io_err(context: &str, e: std::io::Error) -> KvError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        KvError::NoSpace
    } else {
        KvError::Io(format!("{context}: {e}"))
    }
}

fn cf_name(space: Space) -> &'static str {
    match space {
        Space::Meta => CF_META,
        Space::Data => CF_DATA,
        Space::Segments => CF_SEGMENTS,
    }
}

/// The smallest key strictly greater than `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

impl RocksKv {
    /// Opens (creating if missing) the store in directory `path`.
    ///
    /// Fails with [`KvError::Busy`] if another handle — in this or another process — has the
    /// store open.
    pub fn open(path: &Path, opts: &RocksOptions) -> KvResult<RocksKv> {
        std::fs::create_dir_all(path)
            .map_err(|e| map_io_err(&format!("creating {}", path.display()), e))?;

        let cache = Cache::new_lru_cache(opts.block_cache_bytes);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_log_file_size(16 << 20);
        // Let the kernel read ahead in table and blob files: RocksDB's default advises
        // "random" on every file it opens, which turns a cold sequential read of a file's
        // blocks (one 16 KiB blob after another) into one disk round trip per block.
        db_opts.set_advise_random_on_open(false);
        // The log is deleted only once every column family flushed what it covers; RocksDB's
        // default bound (4 × all write buffers: 1 GiB with 64 MiB buffers) kept a 1 GiB
        // log behind a rarely full metadata memtable. Four buffers' worth forces that flush.
        db_opts.set_max_total_wal_size(4 * opts.write_buffer_bytes as u64);
        db_opts.set_use_direct_io_for_flush_and_compaction(opts.direct_flush);
        log::info!(
            "flushes and compactions write {}",
            if opts.direct_flush {
                "with direct I/O"
            } else {
                "through the page cache"
            }
        );
        // Start writing the log and new files back every MiB instead of letting gigabytes
        // of dirty pages pile up for the kernel to throttle the writer on.
        db_opts.set_wal_bytes_per_sync(1 << 20);
        db_opts.set_bytes_per_sync(1 << 20);
        // Write new logs over old ones instead of appending to fresh files: an fdatasync of
        // a log then flushes data only, where an append must also journal the file's new
        // size (fio 4 KiB random writes with fsync after each, A/B 3 rounds: 2,455
        // (2,316-2,658) against 2,965 (2,794-3,019) per second, with 4 kept). Safe with the
        // default point-in-time recovery, which stops at the first record of an older log.
        // The cost is disk: the store keeps one old log for reuse (one write buffer's worth,
        // ~70 MiB after a large write); with two kept, fuse_snapshots_more's reclaim test
        // saw 343 MiB for 200 MiB of live data, with one 277 MiB.
        db_opts.set_recycle_log_file_num(1);

        let meta = Self::cf_options(&cache, opts, Space::Meta);
        let data = Self::cf_options(&cache, opts, Space::Data);
        let segments = Self::cf_options(&cache, opts, Space::Segments);

        let db = DB::open_cf_descriptors(
            &db_opts,
            path,
            [
                ColumnFamilyDescriptor::new(CF_META, meta),
                ColumnFamilyDescriptor::new(CF_DATA, data),
                ColumnFamilyDescriptor::new(CF_SEGMENTS, segments),
            ],
        )
        .map_err(map_err)?;

        let kv = RocksKv {
            db,
            path: path.to_path_buf(),
            compact_lock: Mutex::new(()),
            write_buffer_bytes: opts.write_buffer_bytes,
            background_gc: AtomicBool::new(false),
            gc: Mutex::new(gc::GcState::default()),
        };
        for space in Space::STORED {
            kv.cf(space)?;
        }
        Ok(kv)
    }

    fn cf_options(cache: &Cache, opts: &RocksOptions, space: Space) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let mut cf = Options::default();
        cf.set_block_based_table_factory(&table);
        cf.set_write_buffer_size(opts.write_buffer_bytes);
        cf.set_compression_type(DBCompressionType::Lz4);
        cf.set_level_compaction_dynamic_level_bytes(true);
        if space == Space::Data {
            cf.set_enable_blob_files(true);
            cf.set_min_blob_size(opts.blob_min_bytes);
            cf.set_blob_compression_type(DBCompressionType::None);
            cf.set_enable_blob_gc(false);
            cf.set_blob_gc_age_cutoff(0.25);
            // While GC is on, also compact the oldest blob files as soon as half of them is
            // garbage, so space comes back without foreground writes driving compactions.
            cf.set_blob_gc_force_threshold(0.5);
            cf.set_blob_cache(cache);
        }
        cf
    }

    fn cf(&self, space: Space) -> KvResult<&ColumnFamily> {
        let name = cf_name(space);
        self.db
            .cf_handle(name)
            .ok_or_else(|| KvError::Io(format!("column family {name:?} is missing")))
    }

    fn read_opts(snapshot: Option<&Snapshot<'_>>) -> ReadOptions {
        let mut ro = ReadOptions::default();
        ro.set_total_order_seek(true);
        if let Some(snap) = snapshot {
            ro.set_snapshot(snap);
        }
        ro
    }

    fn iter(
        &self,
        space: Space,
        snapshot: Option<&Snapshot<'_>>,
        lower: &[u8],
        upper: Vec<u8>,
    ) -> KvResult<DBRawIterator<'_>> {
        let cf = self.cf(space)?;
        let mut ro = Self::read_opts(snapshot);
        ro.set_iterate_lower_bound(lower);
        ro.set_iterate_upper_bound(upper);
        Ok(self.db.raw_iterator_cf_opt(cf, ro))
    }

    fn get_at(
        &self,
        snapshot: Option<&Snapshot<'_>>,
        space: Space,
        key: &[u8],
    ) -> KvResult<Option<Vec<u8>>> {
        let cf = self.cf(space)?;
        let ro = Self::read_opts(snapshot);
        let value = self.db.get_pinned_cf_opt(cf, key, &ro).map_err(map_err)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn seek_for_prev_at(
        &self,
        snapshot: Option<&Snapshot<'_>>,
        space: Space,
        lower: &[u8],
        key: &[u8],
    ) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        if lower > key {
            return Ok(None);
        }
        let mut it = self.iter(space, snapshot, lower, successor(key))?;
        it.seek_to_last();
        if it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                // The bounds already guarantee this; checked so a misbehaving engine cannot
                // leak a key from outside the requested range.
                if k >= lower && k <= key {
                    return Ok(Some((k.to_vec(), v.to_vec())));
                }
            }
        }
        it.status().map_err(map_err)?;
        Ok(None)
    }

    fn scan_at(
        &self,
        snapshot: Option<&Snapshot<'_>>,
        space: Space,
        start: &[u8],
        end: &[u8],
        dir: Dir,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> KvResult<()> {
        if start >= end {
            return Ok(());
        }
        let mut it = self.iter(space, snapshot, start, end.to_vec())?;
        match dir {
            Dir::Forward => it.seek_to_first(),
            Dir::Reverse => it.seek_to_last(),
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !f(k, v) {
                return Ok(());
            }
            match dir {
                Dir::Forward => it.next(),
                Dir::Reverse => it.prev(),
            }
        }
        it.status().map_err(map_err)
    }
}

impl KvRead for RocksKv {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.get_at(None, space, key)
    }

    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        self.seek_for_prev_at(None, space, lower, key)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        self.scan_at(None, space, start, end, dir, f)
    }
}

/// A consistent point-in-time view: a RocksDB snapshot.
struct RocksView<'a> {
    kv: &'a RocksKv,
    snapshot: Snapshot<'a>,
}

impl KvRead for RocksView<'_> {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.kv.get_at(Some(&self.snapshot), space, key)
    }

    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        self.kv
            .seek_for_prev_at(Some(&self.snapshot), space, lower, key)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        self.kv
            .scan_at(Some(&self.snapshot), space, start, end, dir, f)
    }
}

impl Kv for RocksKv {
    fn writes_outlive_the_process(&self) -> bool {
        // Every batch is in the write-ahead log file (the kernel's page cache) on return.
        true
    }

    fn write(&self, batch: Batch, durable: bool) -> KvResult<()> {
        if batch.is_empty() {
            // Nothing to write, but honour the promise that earlier batches are durable.
            return if durable { self.sync() } else { Ok(()) };
        }
        let meta = self.cf(Space::Meta)?;
        let data = self.cf(Space::Data)?;
        let segments = self.cf(Space::Segments)?;
        let cf = |space| match space {
            Space::Meta => meta,
            Space::Data => data,
            Space::Segments => segments,
        };
        let mut wb = WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put(space, key, value) => wb.put_cf(cf(*space), key, value),
                BatchOp::Delete(space, key) => wb.delete_cf(cf(*space), key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durable);
        self.db.write_opt(wb, &wo).map_err(map_err)
    }

    fn sync(&self) -> KvResult<()> {
        self.db.flush_wal(true).map_err(map_err)
    }

    fn read_view(&self) -> Box<dyn KvRead + '_> {
        Box::new(RocksView {
            kv: self,
            snapshot: self.db.snapshot(),
        })
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        Some(self)
    }

    fn status(&self) -> Option<&dyn Status> {
        Some(self)
    }

    fn segments(&self) -> Option<&dyn super::segments::SegmentCheck> {
        None
    }
}

impl RocksKv {
    /// Compacts the keys of `space` in `[start, end)` so that deletions there release their
    /// space (no forced rewrite of data already compacted; cost follows that range).
    pub fn compact_range(&self, space: Space, start: &[u8], end: &[u8]) -> KvResult<()> {
        let cf = self.cf(space)?;
        self.db.compact_range_cf(cf, Some(start), Some(end));
        Ok(())
    }

    /// Turns BlobDB's background garbage collection of deleted values on or off
    /// ([`Maintenance::compact`] always collects).
    pub fn set_background_gc(&self, on: bool) -> KvResult<()> {
        let cf = self.cf(Space::Data)?;
        let _guard = self.compact_lock.lock();
        self.db
            .set_options_cf(cf, &[("enable_blob_garbage_collection", gc_flag(on))])
            .map_err(map_err)?;
        self.background_gc.store(on, Ordering::SeqCst);
        Ok(())
    }

    /// The part of the disk usage that is transient by design: the write-ahead log.
    pub fn transient_bytes(&self) -> u64 {
        // The write-ahead log: a copy of what the memtables hold, deleted after their flush.
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Maintenance for RocksKv {
    fn disk_usage(&self) -> u64 {
        dir_size(&self.path)
    }

    fn known_garbage(&self) -> u64 {
        // Blob bytes compactions found unreferenced in live blob files (SST garbage is small
        // next to it: file data lives in blobs).
        self.cf(Space::Data)
            .ok()
            .and_then(|cf| {
                self.db
                    .property_int_value_cf(cf, "rocksdb.live-blob-file-garbage-size")
                    .ok()
                    .flatten()
            })
            .unwrap_or(0)
    }

    fn reserve_bytes(&self) -> u64 {
        // Up to two full memtables being flushed to new files, plus headroom for the WAL,
        // manifests and small compactions.
        2 * self.write_buffer_bytes as u64 + (32 << 20)
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn compact(&self, space: Space) -> KvResult<()> {
        let cf = self.cf(space)?;
        match space {
            Space::Meta | Space::Segments => {
                self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
                Ok(())
            }
            Space::Data => {
                // Rewrite every SST (even at the bottommost level) with blob GC applied to all
                // blob files, so blobs of deleted keys are actually released. This copies the
                // live blobs, so it is as expensive as the live data is large.
                let _guard = self.compact_lock.lock();
                self.db
                    .set_options_cf(
                        cf,
                        &[
                            ("enable_blob_garbage_collection", "true"),
                            (
                                "blob_garbage_collection_age_cutoff",
                                BLOB_GC_AGE_CUTOFF_FULL,
                            ),
                        ],
                    )
                    .map_err(map_err)?;
                let mut co = CompactOptions::default();
                co.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
                self.db
                    .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &co);
                let gc = gc_flag(self.background_gc.load(Ordering::SeqCst));
                self.db
                    .set_options_cf(
                        cf,
                        &[
                            ("blob_garbage_collection_age_cutoff", BLOB_GC_AGE_CUTOFF),
                            ("enable_blob_garbage_collection", gc),
                        ],
                    )
                    .map_err(map_err)
            }
        }
    }

    fn flush_buffers(&self) -> KvResult<()> {
        for space in Space::STORED {
            self.db.flush_cf(self.cf(space)?).map_err(map_err)?;
        }
        Ok(())
    }

    fn cancel_background_work(&self) {
        self.db.cancel_all_background_work(false);
    }

    fn tidy(&self, idle: bool, dropped: &dyn Dropped) {
        self.tidy_now(idle, dropped)
    }

    fn keep_warm(&self) {
        logs::keep_cached(&self.path);
    }
}

impl Status for RocksKv {
    fn read_only(&self) -> bool {
        false
    }

    fn fenced(&self) -> bool {
        false
    }

    fn write_stopped(&self) -> bool {
        self.db
            .property_int_value("rocksdb.is-write-stopped")
            .ok()
            .flatten()
            .is_some_and(|v| v != 0)
    }

    fn delayed_write_rate(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.actual-delayed-write-rate")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn remote_status(&self) -> Option<RemoteStatus> {
        None
    }
}

fn gc_flag(on: bool) -> &'static str {
    if on {
        "true"
    } else {
        "false"
    }
}

/// Total size of the regular files under `dir` (best effort: unreadable entries count as 0).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_enospc_maps_to_no_space() {
        assert!(matches!(
            classify("IO error: No space left on device: While appending to file: x".into()),
            KvError::NoSpace
        ));
    }

    #[test]
    fn classify_lock_messages_map_to_busy() {
        for msg in [
            "IO error: While lock file: /d/LOCK: Resource temporarily unavailable",
            "IO error: lock hold by current process, acquire time 1 acquiring thread 2: /d/LOCK: No locks available",
        ] {
            assert!(matches!(classify(msg.into()), KvError::Busy), "{msg}");
        }
    }

    #[test]
    fn classify_block_corruption_maps_to_io() {
        assert!(matches!(
            classify("Corruption: block checksum mismatch".into()),
            KvError::Io(_)
        ));
    }

    #[test]
    fn write_buffers_follow_the_disk_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = RocksOptions::for_disk(dir.path());
        let s = nix::sys::statvfs::statvfs(dir.path()).expect("statvfs");
        let total = s.blocks() * s.fragment_size();
        let want = (total / 64).clamp(16 << 20, 64 << 20) >> 20 << 20;
        assert_eq!(
            opts.write_buffer_bytes as u64, want,
            "disk of {total} bytes"
        );
        // An unreadable path keeps the defaults.
        let missing = RocksOptions::for_disk(Path::new("/nonexistent/snapfs/store"));
        assert_eq!(
            missing.write_buffer_bytes,
            RocksOptions::default().write_buffer_bytes
        );
        assert!(!missing.direct_flush);
        assert!(!RocksOptions::direct_io_works(Path::new(
            "/nonexistent/snapfs/store"
        )));
        assert!(
            !Path::new("/nonexistent/snapfs").exists(),
            "looking at a path must not create it"
        );
    }

    #[test]
    fn background_gc_switches_and_the_log_counts_as_transient() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = RocksKv::open(dir.path(), &RocksOptions::default()).expect("open");
        assert_eq!(kv.transient_bytes(), 0, "empty log");
        let mut batch = Batch::default();
        batch.put(Space::Data, b"k".to_vec(), vec![7u8; 10_000]);
        kv.write(batch, false).expect("write");
        assert!(kv.transient_bytes() >= 10_000, "the value is in the log");
        assert!(kv.transient_bytes() <= kv.disk_usage());
        kv.set_background_gc(true).expect("gc on");
        kv.compact(Space::Data).expect("compact");
        assert!(
            kv.background_gc.load(Ordering::SeqCst),
            "compaction keeps GC on"
        );
        kv.set_background_gc(false).expect("gc off");
        kv.compact(Space::Data).expect("compact");
        assert!(!kv.background_gc.load(Ordering::SeqCst));
        assert_eq!(
            kv.get(Space::Data, b"k").expect("get"),
            Some(vec![7u8; 10_000])
        );
    }

    #[test]
    fn successor_is_next_key() {
        assert_eq!(successor(b"ab"), b"ab\0".to_vec());
        assert!(successor(b"ab").as_slice() > b"ab".as_slice());
    }
}
