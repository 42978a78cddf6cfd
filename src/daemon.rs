//! The per-store daemon (`snapfs serve`): owns the store, serves the REST API on the store's
//! Unix socket (mode 0600) and optionally on TCP (bearer token), runs every mount of the
//! store's containers, expires snapshots and reclaims space in the background.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::fs::VolumeOptions;
use crate::service::Service;

/// A daemon started on demand that never got a mount exits after this long.
const IDLE_UNUSED: Duration = Duration::from_secs(30);
/// How often the background worker expires snapshots and reclaims retired epochs.
const WORK_PERIOD: Duration = Duration::from_secs(1);
/// Garbage (disk usage beyond the live versions) worth a compaction.
const COMPACT_AFTER: u64 = 64 << 20;
/// Background ticks between two garbage estimates (each scans the change index).
const GARBAGE_CHECK_EVERY: u64 = 5;
/// Background blob GC starts at this much garbage (or 1/8 of the disk usage, if more) and
/// stops below half of it (or 1/16). It relocates the live blobs of the oldest blob files
/// whenever compactions touch them, garbage or not: on during a 4 GiB sequential write into
/// a fresh store, it cost 40 % of the throughput (152 vs 259 MiB/s) and 30 % more disk.
const GC_ON_AT: u64 = 256 << 20;
const GC_OFF_BELOW: u64 = 128 << 20;

pub fn socket_path(store: &Path) -> PathBuf {
    store.join("snapfs.sock")
}

pub fn pid_path(store: &Path) -> PathBuf {
    store.join("snapfs.pid")
}

pub struct DaemonOptions {
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
    /// Exit once the last mount is gone (daemons started on demand by `snapfs mount`).
    pub exit_when_idle: bool,
    /// Mount this container first (`snapfs mount --foreground`).
    pub initial: Option<(String, PathBuf, VolumeOptions)>,
    /// Print "ready" on stdout once serving (for the process that started us).
    pub notify_ready: bool,
}

fn setup_logging(store: &Path) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(store.join("snapfs.log"));
    let mut b = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,fuser::mnt=error"),
    );
    if let Ok(f) = file {
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let _ = b.try_init();
}

/// `STORE/snapfs.pid`: our pid and whether we exit when idle; removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn create(store: &Path, idle_exit: bool) -> Result<PidFile> {
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

/// glibc gives threads that allocate their own heap arenas (up to 8 per core), and with the
/// FUSE and RocksDB threads the daemon's resident memory grew by fragmentation. Measured with
/// `MEM_WRITE_GIB=1 MEM_FILES=300000 MEM_DIRS=300 scripts/memory.sh`: peak RSS 544 MiB with
/// the default, 428 MiB with two arenas, same speed. Called before any thread starts.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Versions reclaim handles per batch (default 512); small values stretch reclaim out, which
/// the crash test uses to kill the daemon in the middle of it.
const RECLAIM_CHUNK_ENV: &str = "SNAPFS_RECLAIM_CHUNK";

fn reclaim_chunk_from_env() -> Result<Option<usize>> {
    match std::env::var(RECLAIM_CHUNK_ENV) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => anyhow::bail!("{RECLAIM_CHUNK_ENV}={v:?}: expected a positive number"),
        },
        _ => Ok(None),
    }
}

/// Expires snapshots and reclaims space until `stop` is set.
fn background_work(svc: Arc<Service>, stop: Arc<AtomicBool>) {
    let mut ticks = 0u64;
    let mut gc_on = false;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(WORK_PERIOD);
        ticks += 1;
        if let Err(e) = svc.expire() {
            log::error!("expiry: {e}");
        }
        match svc.store().reclaim() {
            Ok(stats) if stats.epochs_removed > 0 => log::info!("reclaimed {stats:?}"),
            Ok(_) => {}
            Err(e) => log::error!("reclaim: {e}"),
        }
        if ticks.is_multiple_of(GARBAGE_CHECK_EVERY) {
            collect_garbage(svc.store(), &mut gc_on);
        }
    }
}

/// Whether background blob GC should run, given the garbage and whether it runs now.
fn blob_gc_wanted(garbage: u64, used: u64, on: bool) -> bool {
    if on {
        garbage >= GC_OFF_BELOW.max(used / 16)
    } else {
        garbage >= GC_ON_AT.max(used / 8)
    }
}

/// Makes deleted space come back: estimates the garbage (disk usage beyond the live versions
/// and the write-ahead log), turns background blob GC on or off accordingly, and compacts
/// everything when garbage passes a quarter of the store and the device has room to rewrite
/// the live data.
fn collect_garbage(store: &crate::store::Store, gc_on: &mut bool) {
    let live = match store.live_bytes() {
        Ok(n) => n,
        Err(e) => {
            log::error!("live size: {e}");
            return;
        }
    };
    let used = store.kv().disk_usage();
    let garbage = used
        .saturating_sub(live)
        .saturating_sub(store.kv().transient_bytes());
    let want = blob_gc_wanted(garbage, used, *gc_on);
    if want != *gc_on {
        match store.kv().set_background_gc(want) {
            Ok(()) => {
                log::info!(
                    "background blob GC {}: {garbage} B garbage of {used} B",
                    if want { "on" } else { "off" }
                );
                *gc_on = want;
            }
            Err(e) => log::error!("switching background blob GC: {e}"),
        }
    }
    if garbage < COMPACT_AFTER.max(used / 4) {
        return;
    }
    if let Some(free) = store.free_bytes() {
        if free < live.saturating_add(8 << 20) {
            log::warn!("{garbage} B reclaimable but only {free} B free: not compacting");
            return;
        }
    }
    log::info!("compacting: {used} B on disk, {live} B live");
    for space in crate::kv::Space::ALL {
        if let Err(e) = store.kv().compact(space) {
            log::error!("compaction: {e}");
        }
    }
}

/// Runs the daemon until a signal, or (with `exit_when_idle`) until its last mount is gone.
pub fn serve(store_path: &Path, opts: DaemonOptions) -> Result<()> {
    limit_malloc_arenas();
    let store = crate::mount::open_store(store_path)?;
    setup_logging(store_path);
    if let Some(n) = reclaim_chunk_from_env()? {
        store.set_reclaim_chunk(n);
        log::info!("reclaim handles {n} versions per batch ({RECLAIM_CHUNK_ENV})");
    }
    let _pid = PidFile::create(store_path, opts.exit_when_idle)?;
    let svc = Arc::new(Service::new(store, store_path));

    if let Some((container, mnt, vopts)) = &opts.initial {
        let c = match svc.store().find_container(container)? {
            Some(c) if c.deleted_at.is_none() => c,
            Some(c) => anyhow::bail!("container {} ({}) was deleted", c.name, c.id),
            None => svc.create_container(container, None)?,
        };
        svc.start(&c.id, mnt, vopts.clone())?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (svc, stop) = (svc.clone(), stop.clone());
        std::thread::Builder::new()
            .name("background".into())
            .spawn(move || background_work(svc, stop))
            .context("cannot start the background worker")?
    };
    let result = rt.block_on(run(svc.clone(), store_path, &opts));
    stop.store(true, Ordering::SeqCst);
    let _ = worker.join();
    svc.stop_all();
    let _ = std::fs::remove_file(socket_path(store_path));
    result
}

async fn run(svc: Arc<Service>, store_path: &Path, opts: &DaemonOptions) -> Result<()> {
    let sock = socket_path(store_path);
    let _ = std::fs::remove_file(&sock); // a leftover of a killed daemon (we hold the store lock)
    let unix = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("cannot listen on {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", sock.display()))?;
    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);

    let mut servers = Vec::new();
    {
        let app = crate::api::router(svc.clone());
        let mut rx = shutdown_tx.subscribe();
        servers.push(tokio::spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.recv().await;
                })
                .await
        }));
    }
    if let Some(addr) = opts.listen {
        let token = opts
            .token
            .clone()
            .context("--listen needs --token-file: TCP requests must carry a bearer token")?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let app = crate::api::router_with_token(svc.clone(), token);
        let mut rx = shutdown_tx.subscribe();
        servers.push(tokio::spawn(async move {
            axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.recv().await;
                })
                .await
        }));
    }

    if opts.notify_ready {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    log::info!("serving {} on {}", store_path.display(), sock.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => break,
            _ = tick.tick() => {
                if !opts.exit_when_idle {
                    let svc2 = svc.clone();
                    let _ = tokio::task::spawn_blocking(move || svc2.reap()).await;
                    continue;
                }
                // Mounts ended from outside (plain `umount`) are reaped first.
                let svc2 = svc.clone();
                let unused = started.elapsed() > IDLE_UNUSED;
                let idle = tokio::task::spawn_blocking(move || svc2.close_if_idle(unused))
                    .await
                    .unwrap_or(false);
                if idle {
                    break;
                }
            }
        }
    }
    log::info!("shutting down");
    let _ = shutdown_tx.send(());
    for s in servers {
        let _ = s.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn blob_gc_switches_with_hysteresis() {
        // Small stores: absolute thresholds.
        assert!(!blob_gc_wanted(200 * MIB, 1024 * MIB, false));
        assert!(blob_gc_wanted(256 * MIB, 1024 * MIB, false));
        assert!(
            blob_gc_wanted(200 * MIB, 1024 * MIB, true),
            "stays on above the off mark"
        );
        assert!(!blob_gc_wanted(100 * MIB, 1024 * MIB, true));
        // Large stores: shares of the disk usage.
        let used = 64 * 1024 * MIB;
        assert!(!blob_gc_wanted(used / 10, used, false));
        assert!(blob_gc_wanted(used / 8, used, false));
        assert!(blob_gc_wanted(used / 12, used, true));
        assert!(!blob_gc_wanted(used / 20, used, true));
    }
}
