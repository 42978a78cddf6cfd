//! Shared harness of the core tests: a filesystem on either kv backend, with real reopen.
#![allow(dead_code)]

use std::ops::Deref;
use std::sync::Arc;

use snapfs::error::FsError;
use snapfs::fs::{Caller, Fh, Fs, ROOT_INO};
#[allow(unused_imports)]
pub use snapfs::ids::{ContainerId, DataId, Epoch, Ino};
use snapfs::kv::mem::MemKv;
use snapfs::kv::rocks::{RocksKv, RocksOptions};
use snapfs::kv::segments::{SegmentOptions, SegmentedKv};
use snapfs::kv::Kv;
use snapfs::store::Store;

pub const ME: Caller = Caller { uid: 0, gid: 0 };

pub enum Backend {
    Mem(Arc<MemKv>),
    /// An embedded store as a store directory opens it: RocksDB (in `db/`) under the segment
    /// layer (files in `segments/`, 1 MiB each so that tests seal and repack some).
    Rocks(tempfile::TempDir),
    /// SlateDB on a local directory standing in for object storage, file data in segment
    /// objects (as a store directory opens it).
    #[cfg(feature = "slatedb")]
    Slate(tempfile::TempDir),
}

impl Backend {
    pub fn kv(&self) -> Arc<dyn Kv> {
        match self {
            Backend::Mem(m) => m.clone(),
            Backend::Rocks(dir) => Arc::new(segmented(dir.path())),
            #[cfg(feature = "slatedb")]
            Backend::Slate(dir) => {
                // As a store directory opens it: with the key schema's version rule.
                use snapfs::kv::slate::{open, Location, SlateOptions};
                // With file data in segment objects, cached beside the "bucket".
                let opts = SlateOptions {
                    version_rule: Some(snapfs::remote::VERSION_RULE),
                    segment_cache: Some(dir.path().join("segcache")),
                    ..SlateOptions::default()
                };
                let bucket = dir.path().join("bucket");
                open(&Location::Dir(bucket), "snapfs", &opts).expect("open slatedb")
            }
        }
    }
}

/// The embedded store's kv in `dir`, as `storedir` opens it (smaller segments).
pub fn segmented(dir: &std::path::Path) -> SegmentedKv {
    let rocks = RocksKv::open(&dir.join("db"), &RocksOptions::default()).expect("open rocks");
    let opts = SegmentOptions {
        segment_bytes: 1 << 20,
        base_len: Some(snapfs::keys::version_base_len),
        data_run: Some(snapfs::keys::block_run),
        ..SegmentOptions::default()
    };
    SegmentedKv::open(Box::new(rocks), &dir.join("segments"), opts).expect("open segments")
}

/// A filesystem plus the backend it lives on (dropped after it).
pub struct T {
    pub fs: Option<Fs>,
    pub backend: Backend,
}

impl Deref for T {
    type Target = Fs;
    fn deref(&self) -> &Fs {
        self.fs.as_ref().expect("fs present")
    }
}

pub fn make(backend: Backend) -> T {
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let fs = open_default(store);
    T {
        fs: Some(fs),
        backend,
    }
}

/// The id of the `default` container every new store has.
pub fn default_id(store: &Store) -> snapfs::ids::ContainerId {
    store
        .container_by_name("default")
        .expect("lookup")
        .expect("default container")
        .id
}

/// The head view of the `default` container.
pub fn open_default(store: Arc<Store>) -> Fs {
    let id = default_id(&store);
    Fs::new(store, &id).expect("open")
}

/// Closes everything and opens the store again from its backend (a real reopen for RocksDB).
pub fn reopen(mut t: T) -> T {
    t.fs = None;
    let store = Arc::new(Store::open(t.backend.kv()).expect("reopen"));
    t.fs = Some(open_default(store));
    t
}

pub fn file(fs: &Fs, name: &str) -> (Ino, Fh) {
    let (ino, _, fh) = fs
        .create(ROOT_INO, name.as_bytes(), 0o644, libc::O_RDWR, ME)
        .expect("create");
    (ino, fh)
}

pub fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.expect_err("expected an error").errno()
}

pub fn mem_backend() -> Backend {
    Backend::Mem(Arc::new(MemKv::new()))
}

#[cfg(feature = "slatedb")]
pub fn slate_backend() -> Backend {
    Backend::Slate(tempfile::tempdir().expect("tempdir"))
}

pub fn rocks_backend() -> Backend {
    Backend::Rocks(tempfile::tempdir().expect("tempdir"))
}
