//! The store directory, below both the daemon and the CLI: its layout, creating it (`init`),
//! opening its database, and the daemon's pid file. Layout: `STORE/db` (RocksDB) or
//! `STORE/store.json` + `STORE/cache` (a store on object storage, `remote`),
//! `STORE/snapfs.sock` (API), `STORE/snapfs.log`, `STORE/snapfs.pid`; all of it owner-only
//! (`perms`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::kv::rocks::{RocksKv, RocksOptions};
use crate::kv::segments::{SegmentOptions, SegmentedKv};
use crate::kv::{Kv, KvError};
use crate::remote::{self, RemoteConfig};
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

/// The daemon's log, opened for appending (created if missing): the daemon's logger and the
/// stderr of daemons its supervisor starts again write to it.
pub fn open_log(store: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(store))
}

/// Where a new store keeps its data.
pub enum InitTarget {
    /// An embedded RocksDB in `STORE/db`.
    Local,
    /// A new store on object storage.
    Create(RemoteConfig),
    /// An existing store on object storage (created by another host).
    Attach(RemoteConfig),
}

/// Creates a new store directory at `path`, owner-only (0700, its files 0600).
pub fn init(path: &Path, block_size: u64, target: InitTarget) -> Result<()> {
    crate::perms::set_private_umask();
    if !store::valid_block_size(block_size) {
        return Err(store::StoreError::BlockSize(block_size).into());
    }
    if is_store(path) {
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
    if let InitTarget::Create(cfg) | InitTarget::Attach(cfg) = &target {
        let attach = matches!(target, InitTarget::Attach(_));
        match (remote::exists(cfg)?, attach) {
            (true, false) => bail!(
                "{} already holds data: attach to it with --attach, or pick another prefix",
                cfg.object_store
            ),
            (false, true) => bail!(
                "{} holds no snapfs store (nothing under that prefix)",
                cfg.object_store
            ),
            _ => {}
        }
    }
    let existed = path.exists();
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    let made = init_in(path, block_size, &target);
    if made.is_err() {
        // Leave the directory as it was: absent or empty.
        let _ = std::fs::remove_dir_all(path);
        if existed {
            let _ = std::fs::create_dir(path);
        }
    }
    made
}

fn init_in(path: &Path, block_size: u64, target: &InitTarget) -> Result<()> {
    // An existing empty directory keeps its mode through create_dir_all.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    match target {
        InitTarget::Local => {
            let kv: Arc<dyn Kv> = Arc::new(open_rocks(path)?);
            Store::init(kv, block_size)?;
        }
        InitTarget::Create(cfg) => {
            cfg.write(path)?;
            let kv = remote::open_kv(path, cfg, false)?;
            Store::init(kv, block_size)?;
        }
        InitTarget::Attach(cfg) => {
            cfg.write(path)?;
            // A reader: checks it is a snapfs store without fencing its writer.
            let kv = remote::open_kv(path, cfg, true)?;
            Store::open(kv)
                .with_context(|| format!("{} is not a snapfs store", cfg.object_store))?;
        }
    }
    Ok(())
}

/// The directory of an embedded store's segment files (file data written once).
pub fn segments_dir(store: &Path) -> PathBuf {
    store.join("segments")
}

/// Whether appended segment pages leave the page cache once written back
/// (`kv/segments/stream.rs`): on unless `SNAPFS_DROP_BEHIND=0` (for measuring).
fn drop_behind() -> bool {
    !crate::envswitch::switched_off("SNAPFS_DROP_BEHIND")
}

/// An embedded store's database: RocksDB for keys, segment files for file data.
fn open_rocks(path: &Path) -> Result<SegmentedKv> {
    let cannot = |e: KvError| match e {
        KvError::Busy => anyhow!("store {} is in use by another process", path.display()),
        other => anyhow!("cannot open store {}: {other}", path.display()),
    };
    let rocks = RocksKv::open(&db_dir(path), &RocksOptions::for_disk(path)).map_err(cannot)?;
    SegmentedKv::open(
        Box::new(rocks),
        &segments_dir(path),
        SegmentOptions {
            base_len: Some(crate::keys::version_base_len),
            data_run: Some(crate::keys::block_run),
            drop_behind: drop_behind(),
            ..SegmentOptions::default()
        },
    )
    .map_err(cannot)
}

/// Opens the database of the store at `path`: its embedded RocksDB, or its database on
/// object storage (as its writer, which fences any other host's; or, with `read_only`, as
/// a reader).
fn open_kv(path: &Path, read_only: bool) -> Result<Arc<dyn Kv>> {
    match RemoteConfig::read(path)? {
        Some(cfg) => remote::open_kv(path, &cfg, read_only),
        None if read_only => bail!(
            "store {} is an embedded store: only a store on object storage opens read-only",
            path.display()
        ),
        None => Ok(Arc::new(open_rocks(path)?)),
    }
}

/// Opens an existing store. Sets the process umask to owner-only first (`perms`): RocksDB
/// creates files on every open (log, manifest, options), whichever process opens it.
pub fn open_store(path: &Path) -> Result<Arc<Store>> {
    open_store_with(path, false)
}

/// [`open_store`], or a read-only view of a store on object storage.
pub fn open_store_with(path: &Path, read_only: bool) -> Result<Arc<Store>> {
    crate::perms::set_private_umask();
    check_store(path)?;
    let kv = open_kv(path, read_only)?;
    Ok(Arc::new(Store::open(kv)?))
}

/// `store` holds a snapfs store: an embedded database or a store on object storage.
pub fn is_store(store: &Path) -> bool {
    db_dir(store).join("CURRENT").exists() || remote::config_path(store).exists()
}

/// Whether the store at `store` lives on object storage.
pub fn is_remote(store: &Path) -> bool {
    remote::config_path(store).exists()
}

/// `store` is a directory holding a snapfs database.
pub fn check_store(store: &Path) -> Result<()> {
    if !store.is_dir() {
        bail!("store {} does not exist", store.display());
    }
    if !is_store(store) {
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
        if let Ok(sup) = std::env::var(crate::supervisor::SUPERVISOR_ENV) {
            writeln!(f, "supervisor {}", sup.trim())?;
        }
        if crate::fdstore::store().is_some() {
            // Its mounts outlive it: `snapfs restart` may replace it.
            writeln!(f, "fdstore")?;
        }
        Ok(PidFile(p))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pid of the supervisor that restarts the daemon, from `STORE/snapfs.pid`.
pub fn read_supervisor_pid(store: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_path(store)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("supervisor "))
        .and_then(|p| p.trim().parse().ok())
}

/// Does the store's daemon keep its mounts' descriptors outside itself (`STORE/snapfs.pid`)?
pub fn daemon_keeps_mounts(store: &Path) -> bool {
    std::fs::read_to_string(pid_path(store)).is_ok_and(|t| t.lines().any(|l| l == "fdstore"))
}

/// (pid, exits when idle) from `STORE/snapfs.pid`.
pub fn read_pid(store: &Path) -> Option<(i32, bool)> {
    let text = std::fs::read_to_string(pid_path(store)).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    Some((pid, lines.next().map(str::trim) == Some("idle-exit")))
}
