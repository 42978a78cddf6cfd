//! Segments on object storage: the [`SegmentStore`] of a store whose database is SlateDB.
//!
//! An object is written once and never changed, so a segment is a run of *parts*: objects
//! `PREFIX/segments/<segment>/<offset>` (16 hex digits each), each holding the segment's bytes
//! from that offset to the next part's. A part is uploaded when the segment layer makes
//! bytes durable: every `sync_bytes` of the open segment and when it is sealed (a background
//! thread), at an fsync whose tail is too long for the tail journal, and when the
//! write-behind buffer of the database must hand SlateDB a batch whose references point to
//! bytes not up yet ([`UploadGate`]: after at most `GATE_DELAY`, or at once when someone
//! waits for the drain). Parts are at most 4 MiB, four in flight; "uploaded" moves in order
//! (segment, then offset) over the parts that went up with none missing before them, so
//! "uploaded below a position" is one comparison.
//!
//! Reads go through a local disk cache, `CACHE/<segment>.seg`, a sparse copy of each segment:
//! what this host appends is written there first (the upload reads it back from the page
//! cache), and what it lacks is fetched by ranged GETs of whole 1 MiB chunks; a segment
//! whose reads missed four times (random reads over a file) is fetched whole in the
//! background when it takes at most an eighth of the budget. The bytes
//! present are tracked in memory only (a cache file left by an earlier process is
//! discarded). Segments are evicted whole, least recently read first, once the cache
//! holds more than its budget; bytes not uploaded yet are never evicted.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use parking_lot::Mutex;
use slatedb::object_store::{self, ObjectStore, ObjectStoreExt};

use super::ranges::{gaps, Ranges};
use super::SlateKv;
use crate::kv::segments::{file_header, Listed, SegmentOptions, SegmentStore, SegmentedKv};
use crate::kv::{KvError, KvResult, SegPos, UploadGate};

/// Bytes fetched at least per GET (aligned): a cold 4 KiB read brings its neighbours.
const CHUNK: u64 = 1 << 20;
/// The largest part uploaded, and how many go up at once (one PUT stream does not keep an
/// object store busy).
const PART_MAX: u64 = 4 << 20;
const PARTS_IN_FLIGHT: usize = 4;
/// A segment whose reads missed the cache this many times is being read broadly (random
/// reads over a file): the rest of it is fetched in the background, in `PREFETCH_PIECE`s...
const PREFETCH_AFTER: u32 = 4;
const PREFETCH_PIECE: u64 = 8 << 20;
/// ...when it takes at most this fraction of the cache budget.
const PREFETCH_MAX_SHARE: u64 = 8;

#[derive(Default)]
struct Seg {
    /// Parts in the object store: start -> end.
    parts: BTreeMap<u64, u64>,
    /// `parts` is complete (this process created the segment, or listed it).
    listed: bool,
    /// End of the bytes appended by this process (0: none).
    appended: u64,
    /// Bytes below this are in the object store.
    uploaded: u64,
    /// What the cache file holds.
    present: Ranges,
    file: Option<Arc<File>>,
    /// Last read or write (eviction order).
    used: u64,
    /// Reads that had to fetch (see `PREFETCH_AFTER`).
    misses: u32,
}

impl Seg {
    fn stored_len(&self) -> u64 {
        self.parts.values().copied().max().unwrap_or(0)
    }

    /// The first range in [a, b) no known part holds (parts of one segment go up four at a
    /// time: a later one can be there before an earlier one).
    fn gap(&self, a: u64, b: u64) -> Option<(u64, u64)> {
        gaps(&self.parts, a, b).first().copied()
    }

    fn cached(&self) -> u64 {
        self.present.len()
    }
}

#[derive(Default)]
struct State {
    segs: HashMap<u64, Seg>,
    tick: u64,
    /// Bytes in cache files (as tracked).
    cached: u64,
}

/// Segments as objects, with a local cache (see the module doc).
pub struct ObjectSegments {
    os: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
    /// `PREFIX/segments`.
    root: String,
    cache: PathBuf,
    cache_bytes: u64,
    st: Mutex<State>,
    /// Held while uploading: parts go up one at a time, in order.
    uploading: Mutex<()>,
    /// A part the object store did not take within this fails its sync (it stays pending
    /// and goes up with the next one).
    put_timeout: Option<std::time::Duration>,
    /// Segments to fetch whole in the background (a worker thread, holding only a weak
    /// reference: it ends when this does).
    prefetch: crossbeam_channel::Sender<u64>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(super::brief(&e))
}

impl ObjectSegments {
    /// The segments of the database at `prefix` in `os`, cached in `cache` (at most
    /// `cache_bytes`, beyond what is not uploaded yet).
    pub fn open(
        os: Arc<dyn ObjectStore>,
        prefix: &str,
        cache: &Path,
        cache_bytes: u64,
        put_timeout: Option<std::time::Duration>,
    ) -> KvResult<Arc<ObjectSegments>> {
        std::fs::create_dir_all(cache)
            .map_err(|e| KvError::Io(format!("segment cache {}: {e}", cache.display())))?;
        // What an earlier process cached is not tracked: start empty.
        if let Ok(entries) = std::fs::read_dir(cache) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".seg") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("snapfs-segobj")
            .enable_all()
            .build()
            .map_err(|e| KvError::Io(format!("segment runtime: {e}")))?;
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let me = Arc::new(ObjectSegments {
            os,
            rt,
            root: format!("{}/segments", prefix.trim_end_matches('/')),
            cache: cache.to_path_buf(),
            cache_bytes,
            st: Mutex::new(State::default()),
            uploading: Mutex::new(()),
            put_timeout,
            prefetch: tx,
        });
        let weak = Arc::downgrade(&me);
        std::thread::Builder::new()
            .name("snapfs-segfetch".into())
            .spawn(move || {
                while let Ok(seg) = rx.recv() {
                    let Some(me) = weak.upgrade() else { return };
                    me.fetch_whole(seg);
                }
            })
            .map_err(|e| KvError::Io(format!("segment prefetch thread: {e}")))?;
        Ok(me)
    }

    /// Fetches what the cache lacks of `seg`, piece by piece (stops at the first error: the
    /// reads fetch what they need themselves).
    fn fetch_whole(&self, seg: u64) {
        let len = {
            let st = self.st.lock();
            match st.segs.get(&seg) {
                Some(s) if s.listed => s.stored_len(),
                _ => return,
            }
        };
        let mut at = 0;
        while at < len {
            let end = (at + PREFETCH_PIECE).min(len);
            let missing = {
                let st = self.st.lock();
                match st.segs.get(&seg) {
                    Some(s) if s.file.is_some() => s.present.missing(at, end),
                    // Evicted or deleted meanwhile: stop.
                    _ => return,
                }
            };
            for (a, b) in missing {
                if let Err(e) = self.fetch(seg, a, b) {
                    log::debug!("prefetch of segment {seg:016x} stopped: {e}");
                    return;
                }
            }
            at = end;
        }
    }

    fn part_path(&self, seg: u64, start: u64) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}/{seg:016x}/{start:016x}", self.root))
    }

    fn cache_file(&self, seg: u64) -> PathBuf {
        self.cache.join(format!("{seg:016x}.seg"))
    }

    /// The cache file of `seg` (created when missing).
    fn file(&self, seg: u64) -> io::Result<Arc<File>> {
        if let Some(f) = self.st.lock().segs.get(&seg).and_then(|s| s.file.clone()) {
            return Ok(f);
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.cache_file(seg))?,
        );
        let mut st = self.st.lock();
        let s = st.segs.entry(seg).or_default();
        Ok(s.file.get_or_insert(f).clone())
    }

    /// Every object under `prefix`.
    fn list_objects(&self, prefix: &str) -> io::Result<Vec<object_store::ObjectMeta>> {
        let prefix = object_store::path::Path::from(prefix);
        self.rt
            .block_on(self.os.list(Some(&prefix)).collect::<Vec<_>>())
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(other)
    }

    /// Lists the parts of `seg` (once per segment, and again when a read goes past them).
    fn list_parts(&self, seg: u64) -> io::Result<()> {
        let metas = self.list_objects(&format!("{}/{seg:016x}", self.root))?;
        let mut st = self.st.lock();
        let s = st.segs.entry(seg).or_default();
        for m in metas {
            if let Some(start) = m
                .location
                .filename()
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            {
                s.parts.insert(start, start + m.size);
            }
        }
        s.listed = true;
        Ok(())
    }

    /// Fetches [a, b) of `seg` (whole chunks, within the stored parts) into its cache file.
    fn fetch(&self, seg: u64, a: u64, b: u64) -> io::Result<()> {
        let known = self
            .st
            .lock()
            .segs
            .get(&seg)
            .is_some_and(|s| s.listed && s.gap(a, b).is_none());
        if !known {
            self.list_parts(seg)?;
        }
        let (parts, stored, gap) = {
            let st = self.st.lock();
            let s = st.segs.get(&seg);
            (
                s.map(|s| s.parts.clone()).unwrap_or_default(),
                s.map_or(0, |s| s.stored_len()),
                s.map_or(Some((a, b)), |s| s.gap(a, b)),
            )
        };
        if let Some((at, _)) = gap {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "segment {seg:016x} has no part holding offset {at} ({stored} bytes stored)"
                ),
            ));
        }
        let (a, b) = (a / CHUNK * CHUNK, (b.div_ceil(CHUNK) * CHUNK).min(stored));
        let file = self.file(seg)?;
        for (&ps, &pe) in parts.range(..b) {
            if pe <= a {
                continue;
            }
            let (from, to) = (a.max(ps), b.min(pe));
            let bytes = self
                .rt
                .block_on(
                    self.os
                        .get_range(&self.part_path(seg, ps), (from - ps)..(to - ps)),
                )
                .map_err(other)?;
            file.write_all_at(&bytes, from)?;
            let mut st = self.st.lock();
            let s = st.segs.entry(seg).or_default();
            // Evicted while the bytes came: they went to a file no longer in use.
            if !s.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &file)) {
                continue;
            }
            let grown = s.present.insert(from, to);
            st.cached += grown;
        }
        self.evict();
        Ok(())
    }

    /// Counts a read of `seg` that had to fetch; the `PREFETCH_AFTER`th asks for the rest.
    fn note_miss(&self, seg: u64) {
        let mut st = self.st.lock();
        let Some(s) = st.segs.get_mut(&seg) else {
            return;
        };
        s.misses += 1;
        let small = s.stored_len() <= self.cache_bytes / PREFETCH_MAX_SHARE;
        if s.misses == PREFETCH_AFTER && s.listed && small {
            let _ = self.prefetch.send(seg);
        }
    }

    /// Drops whole cache files, least recently used first, while over budget (never bytes
    /// not uploaded yet).
    fn evict(&self) {
        let mut st = self.st.lock();
        while st.cached > self.cache_bytes {
            let victim = st
                .segs
                .iter()
                .filter(|(_, s)| s.appended <= s.uploaded && s.cached() > 0)
                .min_by_key(|(_, s)| s.used)
                .map(|(seg, _)| *seg);
            let Some(seg) = victim else {
                return;
            };
            let freed = match st.segs.get_mut(&seg) {
                Some(s) => {
                    let n = s.cached();
                    s.present = Ranges::default();
                    s.file = None;
                    s.misses = 0;
                    n
                }
                None => 0,
            };
            st.cached = st.cached.saturating_sub(freed);
            let _ = std::fs::remove_file(self.cache_file(seg));
        }
    }
}

impl SegmentStore for ObjectSegments {
    fn create(&self, seg: u64) -> io::Result<()> {
        let header = file_header(seg);
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(self.cache_file(seg))?,
        );
        file.write_all_at(&header, 0)?;
        let mut st = self.st.lock();
        st.tick += 1;
        let tick = st.tick;
        let mut s = Seg {
            listed: true,
            appended: header.len() as u64,
            file: Some(file),
            used: tick,
            ..Seg::default()
        };
        s.present.insert(0, header.len() as u64);
        st.cached += header.len() as u64;
        st.segs.insert(seg, s);
        drop(st);
        // The header goes up at once: a segment whose bytes are all in tail journal records
        // still exists after a crash, for them to be restored into.
        self.upload_through(seg)
    }

    fn append_parts(&self, seg: u64, off: u64, parts: &[&[u8]]) -> io::Result<()> {
        let end = off + parts.iter().map(|p| p.len() as u64).sum::<u64>();
        let (uploaded, ours) = {
            let st = self.st.lock();
            st.segs
                .get(&seg)
                .map_or((0, false), |s| (s.uploaded, s.appended > 0))
        };
        if !ours {
            return self.restore(seg, off, &parts.concat());
        }
        if end <= uploaded {
            return Ok(());
        }
        let skip = uploaded.saturating_sub(off);
        let (off, parts) = (off + skip, crate::kv::segments::skip_bytes(parts, skip));
        let file = self.file(seg)?;
        crate::kv::segments::write_all_vectored_at(&file, &parts, off)?;
        let mut st = self.st.lock();
        st.tick += 1;
        let tick = st.tick;
        let s = st.segs.entry(seg).or_default();
        if s.appended < off && s.uploaded < off {
            return Err(other(format!(
                "segment {seg:016x}: an append at {off} would leave a gap after {}",
                s.appended.max(s.uploaded)
            )));
        }
        s.appended = s.appended.max(end);
        let grown = s.present.insert(off, end);
        s.used = tick;
        st.cached += grown;
        Ok(())
    }

    fn sync(&self, seg: u64, upto: u64) -> io::Result<()> {
        self.upload_through(seg)?;
        let st = self.st.lock();
        let up = st
            .segs
            .get(&seg)
            .map_or(0, |s| s.uploaded.max(s.stored_len()));
        if up < upto && st.segs.get(&seg).is_some_and(|s| s.appended > 0) {
            return Err(other(format!(
                "segment {seg:016x}: {upto} bytes to make durable, {up} appended"
            )));
        }
        Ok(())
    }

    fn close_foreign(&self, seg: u64) -> io::Result<()> {
        self.close_segment(seg)
    }

    fn synced(&self, seg: u64) -> Option<u64> {
        self.st.lock().segs.get(&seg).map(|s| s.uploaded)
    }

    fn pending_bytes(&self) -> u64 {
        let st = self.st.lock();
        st.segs
            .values()
            .map(|s| s.appended.saturating_sub(s.uploaded))
            .sum()
    }

    fn cached_bytes(&self) -> u64 {
        self.st.lock().cached
    }

    fn read_at(&self, seg: u64, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = off + len as u64;
        // A cache file evicted between a fetch and the read is fetched again (a handle
        // taken while the bytes were present still reads them).
        for _ in 0..3 {
            let (missing, file) = {
                let mut st = self.st.lock();
                st.tick += 1;
                let tick = st.tick;
                let s = st.segs.entry(seg).or_default();
                s.used = tick;
                if s.file.is_none() {
                    s.present = Ranges::default();
                }
                if s.present.covers(off, end) {
                    (Vec::new(), s.file.clone())
                } else {
                    (s.present.missing(off, end), None)
                }
            };
            if let Some(file) = file {
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, off)?;
                return Ok(buf);
            }
            for (a, b) in missing {
                self.fetch(seg, a, b)?;
            }
            self.note_miss(seg);
        }
        Err(other(format!(
            "segment {seg:016x}: bytes {off}..{end} left the cache as they were read"
        )))
    }

    fn len_of(&self, seg: u64) -> io::Result<u64> {
        let listed = self.st.lock().segs.get(&seg).is_some_and(|s| s.listed);
        if !listed {
            self.list_parts(seg)?;
        }
        let st = self.st.lock();
        match st.segs.get(&seg) {
            Some(s) if s.appended > 0 || !s.parts.is_empty() => Ok(s.appended.max(s.stored_len())),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("segment {seg:016x} has no objects"),
            )),
        }
    }

    fn remove(&self, seg: u64) -> io::Result<()> {
        self.list_parts(seg)?;
        let parts: Vec<u64> = self
            .st
            .lock()
            .segs
            .get(&seg)
            .map(|s| s.parts.keys().copied().collect())
            .unwrap_or_default();
        for start in parts {
            match self
                .rt
                .block_on(self.os.delete(&self.part_path(seg, start)))
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(other(e)),
            }
        }
        let mut st = self.st.lock();
        if let Some(s) = st.segs.remove(&seg) {
            st.cached = st.cached.saturating_sub(s.cached());
        }
        let _ = std::fs::remove_file(self.cache_file(seg));
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<Listed>> {
        let metas = self.list_objects(&self.root)?;
        let mut by_seg: BTreeMap<u64, (u64, SystemTime)> = BTreeMap::new();
        for m in metas {
            let mut parts = m.location.parts();
            let names: Vec<String> = parts.by_ref().map(|p| p.as_ref().to_string()).collect();
            let n = names.len();
            if n < 2 {
                continue;
            }
            let (Ok(seg), Ok(start)) = (
                u64::from_str_radix(&names[n - 2], 16),
                u64::from_str_radix(&names[n - 1], 16),
            ) else {
                continue;
            };
            let modified: SystemTime = m.last_modified.into();
            let e = by_seg.entry(seg).or_insert((0, SystemTime::UNIX_EPOCH));
            e.0 = e.0.max(start + m.size);
            e.1 = e.1.max(modified);
        }
        // Segments of this process not uploaded yet exist too (they have records).
        for (seg, s) in self.st.lock().segs.iter() {
            if s.appended > 0 {
                let e = by_seg.entry(*seg).or_insert((0, SystemTime::now()));
                e.0 = e.0.max(s.appended);
            }
        }
        Ok(by_seg
            .into_iter()
            .map(|(seg, (len, modified))| Listed { seg, len, modified })
            .collect())
    }

    fn path(&self) -> &Path {
        &self.cache
    }
}

/// How the segment layer runs on object storage: 64 MiB segments uploaded in 16 MiB parts;
/// emptied segments kept 20 s (readers on other hosts follow the writer within seconds).
pub fn segment_options() -> SegmentOptions {
    SegmentOptions {
        horizon: std::time::Duration::from_secs(20),
        base_len: Some(crate::keys::version_base_len),
        data_run: Some(crate::keys::block_run),
        upload_beside_log: true,
        ..SegmentOptions::default()
    }
}

/// The database `kv` with its file data in segment objects beside it (under its prefix),
/// cached in `cache`.
pub fn segmented(
    kv: SlateKv,
    cache: &Path,
    cache_bytes: u64,
    opts: SegmentOptions,
) -> KvResult<SegmentedKv> {
    let store = ObjectSegments::open(
        kv.object_store(),
        kv.prefix(),
        cache,
        cache_bytes,
        kv.fsync_timeout(),
    )?;
    kv.set_gate(store.clone());
    SegmentedKv::open_in(Box::new(kv), store, opts)
}

impl UploadGate for ObjectSegments {
    fn uploaded(&self, pos: SegPos) -> bool {
        let st = self.st.lock();
        !st.segs.iter().any(|(s, i)| {
            i.appended > i.uploaded && (*s < pos.0 || (*s == pos.0 && i.uploaded < pos.1))
        })
    }

    fn upload(&self, pos: SegPos) -> KvResult<()> {
        self.upload_through(pos.0)
            .map_err(|e| KvError::Io(format!("uploading segments: {e}")))
    }
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
#[path = "upload.rs"]
mod upload;
