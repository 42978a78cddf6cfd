//! A store's segment files on local disk: `DIR/<id as 16 hex digits>.seg`, created with
//! their header, appended to by one writer, read at any offset, deleted whole.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::format;

/// Open read handles kept at most (a store of a few TiB has tens of thousands of segments).
const MAX_HANDLES: usize = 256;

pub struct SegmentDir {
    dir: PathBuf,
    handles: Mutex<HashMap<u64, Arc<File>>>,
}

/// A segment file as listed: id, length, last modification.
pub struct Listed {
    pub seg: u64,
    pub len: u64,
    pub modified: SystemTime,
}

impl SegmentDir {
    pub fn open(dir: &Path) -> io::Result<SegmentDir> {
        std::fs::create_dir_all(dir)?;
        Ok(SegmentDir {
            dir: dir.to_path_buf(),
            handles: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn file_of(&self, seg: u64) -> PathBuf {
        self.dir.join(format!("{seg:016x}.seg"))
    }

    /// Creates segment `seg` with its header and makes its name durable; returns the file,
    /// open for reading and writing.
    pub fn create(&self, seg: u64) -> io::Result<Arc<File>> {
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
    pub fn handle(&self, seg: u64) -> io::Result<Arc<File>> {
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

    /// `len` bytes of segment `seg` at `off`; a short file is an `UnexpectedEof` error.
    pub fn read_at(&self, seg: u64, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.handle(seg)?.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    /// The current length of segment `seg`'s file.
    pub fn len_of(&self, seg: u64) -> io::Result<u64> {
        Ok(self.handle(seg)?.metadata()?.len())
    }

    /// Deletes segment `seg` (already gone: fine).
    pub fn remove(&self, seg: u64) -> io::Result<()> {
        self.handles.lock().remove(&seg);
        match std::fs::remove_file(self.file_of(seg)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every segment file in the directory (other names are ignored).
    pub fn list(&self) -> io::Result<Vec<Listed>> {
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
