//! Core filesystem tests (no mount), run on both kv backends: the in-memory one and RocksDB.
//! The cases live in `core/cases.rs` and are included once per backend.

use std::ops::Deref;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use snapfs::codec::Kind;
use snapfs::error::FsError;
use snapfs::fs::{Caller, Fs, SetAttr, ROOT_INO};
use snapfs::kv::mem::MemKv;
use snapfs::kv::rocks::{RocksKv, RocksOptions};
use snapfs::kv::Kv;
use snapfs::store::Store;

const ME: Caller = Caller { uid: 0, gid: 0 };

enum Backend {
    Mem(Arc<MemKv>),
    Rocks(tempfile::TempDir),
}

impl Backend {
    fn kv(&self) -> Arc<dyn Kv> {
        match self {
            Backend::Mem(m) => m.clone(),
            Backend::Rocks(dir) => {
                Arc::new(RocksKv::open(dir.path(), &RocksOptions::default()).expect("open rocks"))
            }
        }
    }
}

/// A filesystem plus the backend it lives on (dropped after it).
struct T {
    fs: Option<Fs>,
    backend: Backend,
}

impl Deref for T {
    type Target = Fs;
    fn deref(&self) -> &Fs {
        self.fs.as_ref().expect("fs present")
    }
}

fn make(backend: Backend) -> T {
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let fs = Fs::new(store, b"default").expect("open");
    T {
        fs: Some(fs),
        backend,
    }
}

/// Closes everything and opens the store again from its backend (a real reopen for RocksDB).
fn reopen(mut t: T) -> T {
    t.fs = None;
    let store = Arc::new(Store::open(t.backend.kv()).expect("reopen"));
    t.fs = Some(Fs::new(store, b"default").expect("open"));
    t
}

fn file(fs: &Fs, name: &str) -> (u64, u64) {
    let (ino, _, fh) = fs
        .create(ROOT_INO, name.as_bytes(), 0o644, libc::O_RDWR, ME)
        .expect("create");
    (ino, fh)
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.expect_err("expected an error").errno()
}

mod mem {
    use super::*;
    fn new_fs() -> T {
        make(Backend::Mem(Arc::new(MemKv::new())))
    }
    include!("core/cases.rs");
}

mod rocks {
    use super::*;
    fn new_fs() -> T {
        make(Backend::Rocks(tempfile::tempdir().expect("tempdir")))
    }
    include!("core/cases.rs");
}
