//! Opening stores and running mounts: `init`, `mount` (foreground or as a background daemon)
//! and `umount`. Store layout: `STORE/db` (RocksDB), `STORE/snapfs.log`, `STORE/snapfs.pid`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::fs::{Fs, Volume, VolumeOptions};
use crate::fuse::FuseFs;
use crate::kv::rocks::{RocksKv, RocksOptions};
use crate::kv::{Kv, KvError};
use crate::store::{self, Store};

/// Filesystem subtype (shown as `fuse.snapfs` where the mount helper records it).
const SUBTYPE: &str = "snapfs";
/// FUSE serving threads (see ARCHITECTURE.md for the measurement behind it).
const FUSE_THREADS: usize = 4;

fn db_dir(store: &Path) -> PathBuf {
    store.join("db")
}

/// Creates a new store at `path`.
pub fn init(path: &Path, block_size: u64) -> Result<()> {
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
    let kv: Arc<dyn Kv> = Arc::new(open_kv(path)?);
    Store::init(kv, block_size)?;
    Ok(())
}

fn open_kv(path: &Path) -> Result<RocksKv> {
    RocksKv::open(&db_dir(path), &RocksOptions::default()).map_err(|e| match e {
        KvError::Busy => anyhow!("store {} is in use by another process", path.display()),
        other => anyhow!("cannot open store {}: {other}", path.display()),
    })
}

/// Opens an existing store.
pub fn open_store(path: &Path) -> Result<Arc<Store>> {
    if !path.is_dir() {
        bail!("store {} does not exist", path.display());
    }
    if !db_dir(path).join("CURRENT").exists() {
        bail!(
            "{} is not a snapfs store (run `snapfs init` first)",
            path.display()
        );
    }
    let kv: Arc<dyn Kv> = Arc::new(open_kv(path)?);
    Ok(Arc::new(Store::open(kv)?))
}

pub struct MountArgs {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub container: String,
    pub foreground: bool,
    pub volume: VolumeOptions,
    /// Internal: write "ready" on stdout once the mount is live (used by the background mode).
    pub notify_ready: bool,
}

fn check_mountpoint(mnt: &Path) -> Result<()> {
    match std::fs::metadata(mnt) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("mountpoint {} is not a directory", mnt.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A daemon killed with -9 leaves its mount behind: clean it up.
            nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("cannot clean stale mount {}", mnt.display()))?;
            check_mountpoint(mnt)
        }
        Err(_) => bail!("mountpoint {} does not exist", mnt.display()),
    }
}

/// `snapfs mount`: in the background unless `foreground`; returns once the mount is live.
pub fn mount(args: MountArgs) -> Result<()> {
    let store = std::path::absolute(&args.store)
        .with_context(|| format!("bad store path {}", args.store.display()))?;
    let mnt = std::path::absolute(&args.mountpoint)
        .with_context(|| format!("bad mountpoint {}", args.mountpoint.display()))?;
    if !store.is_dir() {
        bail!("store {} does not exist", store.display());
    }
    check_mountpoint(&mnt)?;
    if args.foreground {
        return serve(
            &store,
            &mnt,
            &args.container,
            &args.volume,
            args.notify_ready,
        );
    }
    spawn_background(&store, &mnt, &args.container, &args.volume)
}

fn spawn_background(
    store: &Path,
    mnt: &Path,
    container: &str,
    volume: &VolumeOptions,
) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the snapfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg(store)
        .arg(mnt)
        .arg("--container")
        .arg(container)
        .arg("--foreground")
        .arg("--notify-ready");
    if volume.snapdir_visible {
        cmd.args(["--snapdir", "visible"]);
    }
    if let Some(uid) = volume.admin_uid {
        cmd.arg("--admin-uid").arg(uid.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("cannot start the mount daemon")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() == "ready" {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    let msg = err
        .lines()
        .map(|l| l.trim_start_matches("snapfs: error: ").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("mount daemon exited before the mount was ready");
    bail!("{msg}")
}

fn setup_logging(store: &Path) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(store.join("snapfs.log"));
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    if let Ok(f) = file {
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let _ = b.try_init();
}

/// Runs the mount in this process until it is unmounted or signalled.
fn serve(
    store_path: &Path,
    mnt: &Path,
    container: &str,
    volume: &VolumeOptions,
    notify_ready: bool,
) -> Result<()> {
    let store = open_store(store_path)?;
    setup_logging(store_path);
    let rec = match store.find_container(container)? {
        Some(r) if r.deleted_at.is_none() => r,
        Some(r) => bail!("container {} ({}) was deleted", r.name, r.id),
        None => store.create_container(container, None)?,
    };
    let fs = Fs::new(store.clone(), rec.id.as_bytes())?;
    let _pid = PidFile::create(store_path)?;

    // Block termination signals before any thread starts, then wait for them on one thread.
    let mut sigs = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGHUP,
    ] {
        sigs.add(s);
    }
    sigs.thread_block().context("cannot block signals")?;

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("{}:{}", store_path.display(), container)),
        fuser::MountOption::Subtype(SUBTYPE.into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
        fuser::MountOption::RW,
    ];
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(FUSE_THREADS);
    config.clone_fd = true;
    let vol = Volume::new(fs, volume.clone());
    let mut session = fuser::Session::new(FuseFs::new(vol), mnt, &config)
        .with_context(|| format!("cannot mount {}", mnt.display()))?;
    let mut unmounter = session.unmount_callable();
    let mnt_owned = mnt.to_path_buf();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = sigs.wait() {
                log::warn!("{sig:?} received: unmounting {}", mnt_owned.display());
                if unmounter.unmount().is_err() {
                    let _ = nix::mount::umount2(&mnt_owned, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        })
        .context("cannot start the signal thread")?;

    let (stop_reclaim, reclaimer) = spawn_reclaimer(store.clone())?;

    if notify_ready {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    log::info!("mounted {} at {}", container, mnt.display());
    let ran = session.run().context("FUSE session failed");
    drop(stop_reclaim);
    let _ = reclaimer.join();
    ran?;
    store.kv().sync()?;
    log::info!("unmounted {}", mnt.display());
    Ok(())
}

/// How often the reclaimer looks for retired epochs.
const RECLAIM_PERIOD: Duration = Duration::from_secs(2);
/// Reclaimed bytes after which RocksDB is asked to compact (so disk usage really drops).
const COMPACT_AFTER: u64 = 64 << 20;

/// Runs reclaim in the background until the returned sender is dropped.
fn spawn_reclaimer(
    store: Arc<Store>,
) -> Result<(crossbeam_channel::Sender<()>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let handle = std::thread::Builder::new()
        .name("reclaim".into())
        .spawn(move || {
            let mut pending = 0u64;
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                rx.recv_timeout(RECLAIM_PERIOD)
            {
                match store.reclaim() {
                    Ok(stats) => {
                        if stats.epochs_removed > 0 {
                            log::info!("reclaimed {stats:?}");
                        }
                        pending += stats.bytes_dropped;
                    }
                    Err(e) => log::error!("reclaim: {e}"),
                }
                if pending >= COMPACT_AFTER {
                    pending = 0;
                    for space in crate::kv::Space::ALL {
                        if let Err(e) = store.kv().compact(space) {
                            log::error!("compaction: {e}");
                        }
                    }
                }
            }
        })
        .context("cannot start the reclaim thread")?;
    Ok((tx, handle))
}

/// `STORE/snapfs.pid`, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn create(store: &Path) -> Result<PidFile> {
        let p = store.join("snapfs.pid");
        let mut f = File::create(&p).with_context(|| format!("cannot write {}", p.display()))?;
        writeln!(f, "{}", std::process::id())?;
        Ok(PidFile(p))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A snapfs entry of /proc/self/mountinfo.
struct MountEntry {
    source: String,
    dev_minor: u32,
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find_mount(mnt: &Path) -> Result<Option<MountEntry>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read mountinfo")?;
    let want = mnt.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < sep + 3 || f.len() < 5 {
            continue;
        }
        // fuser's own mount(2) records the type as plain `fuse`; the source is STORE:CONTAINER.
        let fstype = f[sep + 1];
        if unescape_mountinfo(f[4]) != want || (fstype != "fuse" && fstype != "fuse.snapfs") {
            continue;
        }
        let source = unescape_mountinfo(f[sep + 2]);
        let is_store = source
            .rsplit_once(':')
            .is_some_and(|(store, _)| db_dir(Path::new(store)).is_dir());
        if !is_store {
            continue;
        }
        let minor = f[2]
            .split(':')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        found = Some(MountEntry {
            source,
            dev_minor: minor,
        });
    }
    Ok(found)
}

/// Is `pid` running? A zombie (exited, not yet reaped by its parent) counts as gone.
fn process_alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "pid (comm) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !process_alive(pid)
}

/// `snapfs umount`: unmounts and waits until the daemon has flushed and exited.
pub fn umount(mountpoint: &Path) -> Result<()> {
    let mnt = std::path::absolute(mountpoint)
        .with_context(|| format!("bad mountpoint {}", mountpoint.display()))?;
    let entry =
        find_mount(&mnt)?.ok_or_else(|| anyhow!("{} is not a snapfs mount", mnt.display()))?;
    let store = entry
        .source
        .rsplit_once(':')
        .map(|(s, _)| PathBuf::from(s))
        .unwrap_or_default();
    let pid: Option<i32> = std::fs::read_to_string(store.join("snapfs.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    match nix::mount::umount2(&mnt, nix::mount::MntFlags::empty()) {
        Ok(()) => {}
        Err(nix::errno::Errno::EBUSY) => {
            // Someone still uses the mount: detach it now; the daemon finishes once the last
            // user lets go, or we end the connection below.
            nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("cannot unmount {}", mnt.display()))?;
        }
        Err(e) => bail!("cannot unmount {}: {e}", mnt.display()),
    }
    let Some(pid) = pid else { return Ok(()) };
    if wait_exit(pid, Duration::from_secs(10)) {
        return Ok(());
    }
    // Still held open after a lazy unmount: end the FUSE connection so the daemon exits.
    let abort = format!("/sys/fs/fuse/connections/{}/abort", entry.dev_minor);
    let _ = std::fs::write(&abort, "1");
    if wait_exit(pid, Duration::from_secs(30)) {
        Ok(())
    } else {
        bail!(
            "daemon (pid {pid}) did not exit after unmounting {}",
            mnt.display()
        )
    }
}

/// Device id of a path (to tell whether something is mounted on it).
pub fn dev_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.dev())
}
