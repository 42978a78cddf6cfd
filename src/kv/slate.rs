//! A store on object storage: [`Kv`] over SlateDB (an LSM tree whose files live in an object
//! store), behind the `slatedb` cargo feature. The second backend of the same trait: the
//! epoch tree, snapshots and reclaim above it are unchanged.
//!
//! - Both key spaces live in one SlateDB database, each key prefixed by its space's tag.
//! - SlateDB is async; this backend owns a small tokio runtime and blocks on it, so callers
//!   (FUSE threads, the service's blocking tasks) keep the synchronous trait.
//! - A batch is one SlateDB `WriteBatch` (atomic). A write returns once SlateDB buffered it;
//!   `durable` (and [`Kv::sync`]) waits until it is in the object store (`Db::flush`).
//! - Reverse scans are bounded descending scans (SlateDB cannot seek a descending iterator).
//! - Read views are SlateDB snapshots, read by the same [`Reader`] as the live database.

use std::path::Path;
use std::sync::Arc;

use slatedb::config::ScanOptions;
use slatedb::object_store::ObjectStore;
use slatedb::{Db, DbSnapshot, IterationOrder, WriteBatch};

use super::{Batch, BatchOp, Dir, Kv, KvError, KvRead, KvResult, Space};

/// Bytes fetched per read while scanning (SlateDB's default of one block makes scans ~50x
/// slower).
const READ_AHEAD: usize = 1 << 20;

fn tag(space: Space) -> u8 {
    match space {
        Space::Meta => 0,
        Space::Data => 1,
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

/// One SlateDB database as a [`Kv`].
pub struct SlateKv {
    rt: tokio::runtime::Runtime,
    db: Db,
}

impl SlateKv {
    /// Opens (or creates) the database at `path` in `store`. A second open of the same
    /// database elsewhere fences this one: its next durable write fails.
    pub fn open(store: Arc<dyn ObjectStore>, path: &str) -> KvResult<SlateKv> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("slatedb")
            .enable_all()
            .build()
            .map_err(err)?;
        let db = rt
            .block_on(Db::open(path.to_string(), store))
            .map_err(err)?;
        Ok(SlateKv { rt, db })
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

    /// Closes the database (its buffered writes go to the object store first).
    pub fn close(&self) -> KvResult<()> {
        self.rt.block_on(self.db.close()).map_err(err)
    }
}

impl Drop for SlateKv {
    /// Closing writes what SlateDB still buffers to the object store (as dropping the
    /// RocksDB backend leaves its log complete).
    fn drop(&mut self) {
        if let Err(e) = self.rt.block_on(self.db.close()) {
            log::warn!("closing slatedb: {e}");
        }
    }
}

/// What reads go through: the live database or one of its snapshots.
enum Source<'a> {
    Db(&'a Db),
    Snapshot(Arc<DbSnapshot>),
}

/// Reads of one source, blocking on the backend's runtime.
struct Reader<'a> {
    rt: &'a tokio::runtime::Runtime,
    src: Source<'a>,
}

impl KvRead for Reader<'_> {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        let key = full_key(space, key);
        let v = self
            .rt
            .block_on(async {
                match &self.src {
                    Source::Db(db) => db.get(&key).await,
                    Source::Snapshot(s) => s.get(&key).await,
                }
            })
            .map_err(err)?;
        Ok(v.map(|b| b.to_vec()))
    }

    /// The greatest key in `[lower, key]`: a bounded descending scan's first item.
    fn seek_for_prev(
        &self,
        space: Space,
        lower: &[u8],
        key: &[u8],
    ) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        let end = super::successor(key); // the range includes `key`
        let mut out = None;
        self.scan(space, lower, &end, Dir::Reverse, &mut |k, v| {
            out = Some((k.to_vec(), v.to_vec()));
            false
        })?;
        Ok(out)
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        dir: Dir,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> KvResult<()> {
        if start >= end {
            return Ok(());
        }
        let (lo, hi) = (full_key(space, start), full_key(space, end));
        let order = match dir {
            Dir::Forward => IterationOrder::Ascending,
            Dir::Reverse => IterationOrder::Descending,
        };
        let opts = ScanOptions::new()
            .with_order(order)
            .with_read_ahead_bytes(READ_AHEAD);
        let mut it = self
            .rt
            .block_on(async {
                match &self.src {
                    Source::Db(db) => db.scan_with_options(lo..hi, &opts).await,
                    Source::Snapshot(s) => s.scan_with_options(lo..hi, &opts).await,
                }
            })
            .map_err(err)?;
        // `f` runs outside the runtime: it may read and write this store itself.
        while let Some(kv) = self.rt.block_on(it.next()).map_err(err)? {
            if !f(&kv.key[1..], &kv.value) {
                break;
            }
        }
        Ok(())
    }
}

impl SlateKv {
    fn reader(&self) -> Reader<'_> {
        Reader {
            rt: &self.rt,
            src: Source::Db(&self.db),
        }
    }
}

impl KvRead for SlateKv {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.reader().get(space, key)
    }

    fn seek_for_prev(
        &self,
        space: Space,
        lower: &[u8],
        key: &[u8],
    ) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        self.reader().seek_for_prev(space, lower, key)
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        dir: Dir,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> KvResult<()> {
        self.reader().scan(space, start, end, dir, f)
    }
}

/// A view that fails every read (a snapshot could not be taken).
struct Failed(String);

impl KvRead for Failed {
    fn get(&self, _: Space, _: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Err(KvError::Io(self.0.clone()))
    }
    fn seek_for_prev(&self, _: Space, _: &[u8], _: &[u8]) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        Err(KvError::Io(self.0.clone()))
    }
    fn scan(
        &self,
        _: Space,
        _: &[u8],
        _: &[u8],
        _: Dir,
        _: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> KvResult<()> {
        Err(KvError::Io(self.0.clone()))
    }
}

impl Kv for SlateKv {
    fn write(&self, batch: Batch, durable: bool) -> KvResult<()> {
        if batch.is_empty() {
            return if durable { self.sync() } else { Ok(()) };
        }
        let mut wb = WriteBatch::new();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(space, k, v) => wb.put(full_key(space, &k), v),
                BatchOp::Delete(space, k) => wb.delete(full_key(space, &k)),
            }
        }
        self.rt.block_on(self.db.write(wb)).map_err(err)?;
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&self) -> KvResult<()> {
        self.rt.block_on(self.db.flush()).map_err(err)
    }

    fn read_view(&self) -> Box<dyn KvRead + '_> {
        match self.db.snapshot() {
            Ok(snap) => Box::new(Reader {
                rt: &self.rt,
                src: Source::Snapshot(snap),
            }),
            Err(e) => Box::new(Failed(format!("slatedb snapshot: {e}"))),
        }
    }

    fn compact(&self, _space: Space) -> KvResult<()> {
        // SlateDB compacts in the background on its own; nothing to ask for.
        Ok(())
    }

    fn disk_usage(&self) -> u64 {
        0
    }

    fn path(&self) -> Option<&Path> {
        None
    }
}
