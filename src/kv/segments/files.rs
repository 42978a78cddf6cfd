//! Where segments are kept: [`SegmentStore`], the operations the segment layer needs
//! (create, append, make durable, read any range, list, delete whole), and its first
//! implementation, [`SegmentDir`]: files on local disk, `DIR/<id as 16 hex digits>.seg`.
//! The second, segments as objects on object storage, is `kv/slate/segments.rs`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::format;
use super::stream::DropBehind;

/// What the segment layer asks of the place its segments live. One writer appends to one
/// open segment at a time; any thread reads; a segment is deleted whole.
pub trait SegmentStore: Send + Sync {
    /// Creates segment `seg` holding its file header (`format::file_header`).
    fn create(&self, seg: u64) -> io::Result<()>;
    /// Writes `parts`, back to back, at `off` of segment `seg` (past its current end:
    /// appends only).
    fn append_parts(&self, seg: u64, off: u64, parts: &[&[u8]]) -> io::Result<()>;
    /// [`SegmentStore::append_parts`] of one slice.
    fn append(&self, seg: u64, off: u64, bytes: &[u8]) -> io::Result<()> {
        self.append_parts(seg, off, &[bytes])
    }
    /// Makes the first `upto` bytes of segment `seg` durable.
    fn sync(&self, seg: u64, upto: u64) -> io::Result<()>;
    /// How far segment `seg` was made durable by the store on its own (an object store
    /// uploads when the write-behind buffer needs it), if it knows.
    fn synced(&self, _seg: u64) -> Option<u64> {
        None
    }
    /// Closes segment `seg`, which an earlier process was appending to (this one opened
    /// after it stopped, or took the store over): nothing it still had in flight may land
    /// in the segment afterwards. Files: nothing to do (one process holds the directory).
    fn close_foreign(&self, _seg: u64) -> io::Result<()> {
        Ok(())
    }
    /// Bytes appended but not yet where a crash cannot take them (an object store's upload
    /// backlog); 0 for files, whose unsynced bytes the segment records count.
    fn pending_bytes(&self) -> u64 {
        0
    }
    /// Bytes of a local cache of the segments (an object store's), 0 when none.
    fn cached_bytes(&self) -> u64 {
        0
    }
    /// `len` bytes of segment `seg` at `off`; missing bytes are an `UnexpectedEof` error.
    fn read_at(&self, seg: u64, off: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The length of segment `seg` as stored (its durable part for an object store).
    fn len_of(&self, seg: u64) -> io::Result<u64>;
    /// Deletes segment `seg` (already gone: fine).
    fn remove(&self, seg: u64) -> io::Result<()>;
    /// Every segment stored.
    fn list(&self) -> io::Result<Vec<Listed>>;
    /// The local directory of the segments (or of their cache).
    fn path(&self) -> &Path;
}

/// Open read handles kept at most (a store of a few TiB has tens of thousands of segments).
const MAX_HANDLES: usize = 256;

pub struct SegmentDir {
    dir: PathBuf,
    handles: Mutex<HashMap<u64, Arc<File>>>,
    /// With drop-behind, appends let go of their pages once written back (`stream.rs`).
    stream: Option<DropBehind>,
}

/// The file of segment `seg` in directory `dir`.
fn segment_file(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:016x}.seg"))
}

/// A segment file as listed: id, length, last modification.
pub struct Listed {
    pub seg: u64,
    pub len: u64,
    pub modified: SystemTime,
}

impl SegmentDir {
    /// The segment directory `dir` (created if missing); `drop_behind`: appended pages are
    /// dropped from the page cache once written back.
    pub fn open(dir: &Path, drop_behind: bool) -> io::Result<SegmentDir> {
        std::fs::create_dir_all(dir)?;
        let stream = if drop_behind {
            let owned = dir.to_path_buf();
            DropBehind::start(super::stream::default_lag(), move |seg| {
                segment_file(&owned, seg)
            })
        } else {
            None
        };
        Ok(SegmentDir {
            dir: dir.to_path_buf(),
            handles: Mutex::new(HashMap::new()),
            stream,
        })
    }

    pub fn file_of(&self, seg: u64) -> PathBuf {
        segment_file(&self.dir, seg)
    }

    /// Creates segment `seg` with its header and makes its name durable; returns the file,
    /// open for reading and writing.
    fn create_file(&self, seg: u64) -> io::Result<Arc<File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.file_of(seg))?;
        file.write_all_at(&format::file_header(seg), 0)?;
        file.sync_data()?;
        File::open(&self.dir)?.sync_all()?;
        let file = Arc::new(file);
        self.handles.lock().insert(seg, file.clone());
        Ok(file)
    }

    /// A handle of segment `seg` for reading (and, for the open segment, appending).
    fn handle(&self, seg: u64) -> io::Result<Arc<File>> {
        if let Some(f) = self.handles.lock().get(&seg) {
            return Ok(f.clone());
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.file_of(seg))?,
        );
        let mut handles = self.handles.lock();
        if handles.len() >= MAX_HANDLES {
            handles.clear();
        }
        handles.insert(seg, file.clone());
        Ok(file)
    }
}

impl SegmentStore for SegmentDir {
    fn create(&self, seg: u64) -> io::Result<()> {
        self.create_file(seg).map(|_| ())
    }

    fn append_parts(&self, seg: u64, off: u64, parts: &[&[u8]]) -> io::Result<()> {
        super::appends::write_all_vectored_at(&*self.handle(seg)?, parts, off)?;
        if let Some(stream) = &self.stream {
            let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
            stream.appended(seg, off, off + len);
        }
        Ok(())
    }

    fn sync(&self, seg: u64, _upto: u64) -> io::Result<()> {
        self.handle(seg)?.sync_data()
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// `len` bytes of segment `seg` at `off`; a short file is an `UnexpectedEof` error.
    fn read_at(&self, seg: u64, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.handle(seg)?.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    /// The current length of segment `seg`'s file.
    fn len_of(&self, seg: u64) -> io::Result<u64> {
        Ok(self.handle(seg)?.metadata()?.len())
    }

    /// Deletes segment `seg` (already gone: fine).
    fn remove(&self, seg: u64) -> io::Result<()> {
        self.handles.lock().remove(&seg);
        if let Some(stream) = &self.stream {
            stream.forget(seg);
        }
        match std::fs::remove_file(self.file_of(seg)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every segment file in the directory (other names are ignored).
    fn list(&self) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seg) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .filter(|h| h.len() == 16)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            let meta = entry.metadata()?;
            out.push(Listed {
                seg,
                len: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by_key(|l| l.seg);
        Ok(out)
    }
}
