//! The store directory, below both the daemon and the CLI: its layout, creating it (`init`),
//! opening its database, and the daemon's pid file. Layout: `STORE/db` (RocksDB),
//! `STORE/snapfs.sock` (API), `STORE/snapfs.log`, `STORE/snapfs.pid`; all of it owner-only
//! (`perms`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::kv::rocks::{RocksKv, RocksOptions};
use crate::kv::{Kv, KvError};
use crate::store::{self, Store};

/// The RocksDB directory of a store.
pub fn db_dir(store: &Path) -> PathBuf {
    store.join("db")
}

/// The daemon's API socket.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join("snapfs.sock")
}

/// The daemon's pid file (see [`PidFile`]).
pub fn pid_path(store: &Path) -> PathBuf {
    store.join("snapfs.pid")
}

/// The daemon's log.
pub fn log_path(store: &Path) -> PathBuf {
    store.join("snapfs.log")
}

/// Creates a new store at `path`, owner-only (0700, its files 0600).
pub fn init(path: &Path, block_size: u64) -> Result<()> {
    crate::perms::set_private_umask();
    if !store::valid_block_size(block_size) {
        return Err(store::StoreError::BlockSize(block_size).into());
    }
    if db_dir(path).exists() {
        bail!("{} is already a snapfs store", path.display());
    }
    if path.exists() {
        let non_empty = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .next()
            .is_some();
        if non_empty {
            bail!("{} exists and is not empty", path.display());
        }
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    // An existing empty directory keeps its mode through create_dir_all.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    let kv: Arc<dyn Kv> = Arc::new(open_kv(path)?);
    Store::init(kv, block_size)?;
    Ok(())
}

fn open_kv(path: &Path) -> Result<RocksKv> {
    RocksKv::open(&db_dir(path), &RocksOptions::for_disk(path)).map_err(|e| match e {
        KvError::Busy => anyhow!("store {} is in use by another process", path.display()),
        other => anyhow!("cannot open store {}: {other}", path.display()),
    })
}

/// Opens an existing store. Sets the process umask to owner-only first (`perms`): RocksDB
/// creates files on every open (log, manifest, options), whichever process opens it.
pub fn open_store(path: &Path) -> Result<Arc<Store>> {
    crate::perms::set_private_umask();
    check_store(path)?;
    let kv: Arc<dyn Kv> = Arc::new(open_kv(path)?);
    Ok(Arc::new(Store::open(kv)?))
}

/// `store` is a directory holding a snapfs database.
pub fn check_store(store: &Path) -> Result<()> {
    if !store.is_dir() {
        bail!("store {} does not exist", store.display());
    }
    if !db_dir(store).join("CURRENT").exists() {
        bail!(
            "{} is not a snapfs store (run `snapfs init` first)",
            store.display()
        );
    }
    Ok(())
}

/// `STORE/snapfs.pid` of a running daemon: its pid and whether it exits when idle (a line
/// `idle-exit` or `serve`); removed when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(store: &Path, idle_exit: bool) -> Result<PidFile> {
        let p = pid_path(store);
        let mut f = File::create(&p).with_context(|| format!("cannot write {}", p.display()))?;
        writeln!(f, "{}", std::process::id())?;
        writeln!(f, "{}", if idle_exit { "idle-exit" } else { "serve" })?;
        Ok(PidFile(p))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// (pid, exits when idle) from `STORE/snapfs.pid`.
pub fn read_pid(store: &Path) -> Option<(i32, bool)> {
    let text = std::fs::read_to_string(pid_path(store)).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    Some((pid, lines.next().map(str::trim) == Some("idle-exit")))
}
