//! The per-store daemon (`snapfs serve`): owns the store, serves the REST API on the store's
//! Unix socket (mode 0600) and optionally on TCP (bearer token), runs every mount of the
//! store's containers, expires snapshots and reclaims space in the background.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::fs::VolumeOptions;
use crate::kv::Space;
use crate::service::Service;
use crate::storedir::{open_log, open_store_with, socket_path, PidFile};

/// A daemon started on demand that never got a mount exits after this long.
const IDLE_UNUSED: Duration = Duration::from_secs(30);
/// How often the background worker expires snapshots and reclaims retired epochs.
const WORK_PERIOD: Duration = Duration::from_secs(1);
/// How often a sleeping background worker looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// While containers write, reclaim sleeps this many times as long as each batch took.
const BUSY_PAUSE: u32 = 4;
/// At shutdown, how long the background worker may take to finish its batch before the
/// kv's own background work (a long compaction) is cancelled.
const WORKER_STOP_GRACE: Duration = Duration::from_millis(1500);
/// Background ticks between two calls of the kv's periodic upkeep (cheap: no scan).
const GARBAGE_CHECK_EVERY: u64 = 5;

pub struct DaemonOptions {
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
    /// TCP over TLS: certificate and key files (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Exit once the last mount is gone (daemons started on demand by `snapfs mount`).
    pub exit_when_idle: bool,
    /// Mount this container first (`snapfs mount --foreground`).
    pub initial: Option<(String, PathBuf, VolumeOptions)>,
    /// Print "ready" on stdout once serving (for the process that started us).
    pub notify_ready: bool,
    /// Open a store on object storage as a reader (`snapfs serve --read-only`).
    pub read_only: bool,
    /// Serve containerd's snapshots API on this socket, mounting its snapshots under the
    /// directory (`snapfs serve --containerd-socket`).
    pub containerd: Option<ContainerdOptions>,
}

/// Where the containerd snapshotter listens and mounts.
pub struct ContainerdOptions {
    pub socket: PathBuf,
    pub mount_root: PathBuf,
}

impl ContainerdOptions {
    /// The default mount directory of a store's snapshotter: under /run (gone at boot, as the
    /// mounts are), named after the store's path.
    pub fn default_mount_root(store: &Path) -> PathBuf {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
        for b in store.as_os_str().as_encoded_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        PathBuf::from(format!("/run/snapfs/containerd-{h:016x}"))
    }
}

pub(crate) fn setup_logging(store: &Path) {
    let file = open_log(store);
    let mut b = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,fuser::mnt=error"),
    );
    if let Ok(f) = file {
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let _ = b.try_init();
}

/// Panics go to the log as well as to stderr: a daemon's stderr is often a pipe whose
/// reader (the command that started it) is gone.
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        log::error!(
            "panic in thread {}: {info}",
            thread.name().unwrap_or("unnamed")
        );
        default(info);
    }));
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

/// Sleeps `d`, waking early (false) if `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(STOP_POLL));
    }
}

/// Paces the daemon's reclaim: stops between batches at shutdown, and while the containers
/// are writing (their commits moved since the last batch) sleeps `BUSY_PAUSE` times as long
/// as each batch took, so reclaim takes at most a fifth of a CPU and of the write lock.
struct Pacer<'a> {
    store: &'a crate::store::Store,
    stop: &'a AtomicBool,
    last_commits: std::sync::atomic::AtomicU64,
}

impl crate::store::ReclaimControl for Pacer<'_> {
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn after_batch(&self, took: Duration) {
        let now = self.store.commit_count();
        if self.last_commits.swap(now, Ordering::Relaxed) != now {
            sleep_unless(self.stop, took.saturating_mul(BUSY_PAUSE));
        }
    }
}

/// Expires snapshots and reclaims space until `stop` is set.
fn background_work(svc: Arc<Service>, stop: Arc<AtomicBool>) {
    let mut ticks = 0u64;
    let mut commits_seen = 0u64;
    while sleep_unless(&stop, WORK_PERIOD) {
        let kv = svc.store().kv();
        if kv.status().is_some_and(|s| s.read_only() || s.fenced()) {
            // A reader, or a store another host took over: nothing is written here, so no
            // expiry, reclaim or garbage collection.
            continue;
        }
        ticks += 1;
        if let Some(m) = kv.maintenance() {
            m.keep_warm();
        }
        if let Err(e) = svc.expire() {
            log::error!("expiry: {e}");
        }
        let pacer = Pacer {
            store: svc.store(),
            stop: &stop,
            last_commits: svc.store().commit_count().into(),
        };
        let t0 = Instant::now();
        match svc.store().reclaim_with(&pacer) {
            Ok(stats) if stats.work() > 0 => {
                log::info!("reclaimed in {:?}: {stats:?}", t0.elapsed())
            }
            Ok(_) => {}
            Err(e) => log::error!("reclaim: {e}"),
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if ticks.is_multiple_of(GARBAGE_CHECK_EVERY) {
            // Idle: the containers wrote nothing since the last look.
            let commits = svc.store().commit_count();
            let idle = std::mem::replace(&mut commits_seen, commits) == commits;
            if let Some(m) = kv.maintenance() {
                m.tidy(idle, &DroppedVersions(svc.store()));
            }
        }
    }
}

/// The store's account of the versions reclaim and truncations dropped, as the kv's upkeep
/// weighs it: compacting the metadata and the blocks of the data ids that lost versions
/// releases them (no scan of the store to find them).
struct DroppedVersions<'a>(&'a crate::store::Store);

impl crate::kv::Dropped for DroppedVersions<'_> {
    fn bytes(&self) -> u64 {
        self.0.dropped().bytes
    }

    fn take(&self) -> Vec<(Space, Vec<u8>, Vec<u8>)> {
        let pending = self.0.take_dropped();
        let mut ranges = vec![(Space::Meta, vec![0u8], vec![0xffu8])];
        if let Some((lo, hi)) = pending.data_ids {
            let start = crate::keys::block_prefix(lo);
            let end =
                crate::keys::block_prefix(crate::ids::DataId::new(hi.get().saturating_add(1)));
            ranges.push((Space::Data, start, end));
        }
        ranges
    }
}

/// Runs the daemon until a signal, or (with `exit_when_idle`) until its last mount is gone.
pub fn serve(store_path: &Path, opts: DaemonOptions) -> Result<()> {
    // First: the descriptors a former daemon left (before any thread starts).
    crate::fdstore::init();
    let inherited = crate::fdstore::take_inherited().context("descriptors handed to the daemon")?;
    // A supervisor blocks the signals it reads from a signalfd, and a child inherits the
    // mask: unblock them here, before any thread starts.
    let mut mask = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    let _ = mask.thread_unblock();
    crate::process::mark_started();
    crate::process::raise_fd_limit();
    limit_malloc_arenas();
    crate::perms::set_private_umask();
    let store = open_store_with(store_path, opts.read_only)?;
    setup_logging(store_path);
    log_panics();
    crate::perms::tighten_on_open(store_path)
        .with_context(|| format!("cannot make store {} owner-only", store_path.display()))?;
    store
        .index_snapshots()
        .context("cannot index snapshot aliases and expiry times")?;
    store
        .index_links()
        .context("cannot build the back links of directory entries")?;
    if !opts.read_only {
        store
            .abandon_stale_receives()
            .context("cannot retire the epochs of receives cut short")?;
    }
    if let Some(n) = reclaim_chunk_from_env()? {
        store.set_reclaim_chunk(n);
        log::info!("reclaim handles {n} versions per batch ({RECLAIM_CHUNK_ENV})");
    }
    let _pid = PidFile::create(store_path, opts.exit_when_idle)?;
    let svc = Arc::new(Service::new(
        store,
        store_path,
        Arc::new(crate::fuse::FuseMounter),
    ));

    resume_mounts(&svc, inherited);

    if let Some((container, mnt, vopts)) = &opts.initial {
        let c = match svc.store().find_container(container)? {
            Some(c) if c.deleted_at.is_none() => c,
            Some(c) => anyhow::bail!("container {} ({}) was deleted", c.name, c.id),
            None => svc.create_container(container, None, Default::default())?,
        };
        svc.start(c.id.as_str(), mnt, vopts.clone())?;
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
    // Background work stops between two batches; what is left resumes at the next start.
    stop.store(true, Ordering::SeqCst);
    let handover = matches!(result, Ok(Exit::Handover));
    if handover {
        // The mounts stay: the next daemon takes them over from the fd store. What is
        // being served is answered first; what is unread stays for it.
        svc.stop_unkept();
        let volatile = !svc.store().kv().writes_outlive_the_process();
        let wait = if volatile {
            HANDOVER_QUIESCE_VOLATILE
        } else {
            HANDOVER_QUIESCE
        };
        let quiet = crate::fuse::quiesce(wait);
        if !quiet {
            log::warn!(
                "requests still being served {wait:?} into the handover; the kernel sends \
                 them again{}",
                if volatile {
                    " (the next daemon ends the mounts of this store on object storage)"
                } else {
                    ""
                }
            );
        }
        match svc.store().kv().sync() {
            Ok(()) if quiet => svc.mark_handed_over(),
            Ok(()) => {}
            Err(e) => log::error!("sync at handover: {e}"),
        }
    } else {
        svc.stop_all();
    }
    let deadline = Instant::now() + WORKER_STOP_GRACE;
    while !worker.is_finished() && Instant::now() < deadline {
        std::thread::sleep(STOP_POLL);
    }
    if worker.is_finished() {
        // Leave a compact store behind: the next start replays no log, and the store's size
        // on disk is its data's.
        let kv = svc.store().kv().maintenance();
        if let Some(Err(e)) = kv.map(|m| m.flush_buffers()) {
            log::error!("flushing memtables at exit: {e}");
        }
    } else if let Some(m) = svc.store().kv().maintenance() {
        log::info!("cancelling the store's background compaction to exit");
        m.cancel_background_work();
    }
    let _ = worker.join();
    let _ = std::fs::remove_file(socket_path(store_path));
    if handover {
        log::info!("handing the mounts over to the next daemon");
    }
    result.map(drop)
}

/// How a daemon's run ended.
enum Exit {
    /// Stopped: every mount unmounted.
    Stop,
    /// Restarting (`snapfs restart`, SIGUSR2): the mounts stay for the next daemon.
    Handover,
}

/// How long a handover waits for the requests being served (those that take longer, such
/// as a snapshot waiting for cached writes, the kernel sends again to the next daemon).
const HANDOVER_QUIESCE: Duration = Duration::from_millis(100);

/// The same for a store whose writes die with the process (object storage): the next
/// daemon resumes its mounts only after a handover that answered everything it had read
/// and made it durable, else it must end them; so wait for slow requests (an fsync is a
/// round of PUTs) rather than end the mounts.
const HANDOVER_QUIESCE_VOLATILE: Duration = Duration::from_secs(30);

async fn run(svc: Arc<Service>, store_path: &Path, opts: &DaemonOptions) -> Result<Exit> {
    // The snapshotter's socket first: once the API answers, containerd can dial it too.
    let containerd_listener = match &opts.containerd {
        Some(c) => {
            let l = crate::containerd::listen(&c.socket)?;
            log::info!("containerd snapshotter on {}", c.socket.display());
            Some(l)
        }
        None => None,
    };
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
    if let (Some(c), Some(listener)) = (&opts.containerd, containerd_listener) {
        let snapshotter = Arc::new(
            crate::service::snapshotter::Snapshotter::new(svc.clone(), &c.mount_root)
                .with_context(|| format!("cannot create {}", c.mount_root.display()))?,
        );
        let mut rx = shutdown_tx.subscribe();
        servers.push(tokio::spawn(async move {
            crate::containerd::serve(snapshotter, listener, async move {
                let _ = rx.recv().await;
            })
            .await
            .map_err(|e| {
                log::error!("containerd snapshotter: {e}");
                std::io::Error::other(e)
            })
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
        let stop = async move {
            let _ = rx.recv().await;
        };
        match &opts.tls {
            Some((cert, key)) => {
                let config = crate::tls::server_config(cert, key)?;
                let tls = crate::tls::TlsListener::new(tcp, config)?;
                log::info!("serving the API over TLS on {addr}");
                servers.push(tokio::spawn(async move {
                    axum::serve(tls, app).with_graceful_shutdown(stop).await
                }));
            }
            None => servers.push(tokio::spawn(async move {
                axum::serve(tcp, app).with_graceful_shutdown(stop).await
            })),
        }
    }

    crate::fdstore::notify("READY=1");
    if opts.notify_ready {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    log::info!("serving {} on {}", store_path.display(), sock.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let mut exit = Exit::Stop;
    loop {
        tokio::select! {
            _ = term.recv() => {
                // `systemctl restart` of the unit: the mounts go to the next daemon.
                let restart = tokio::task::spawn_blocking(crate::fdstore::systemd_restart_pending)
                    .await
                    .unwrap_or(false);
                if restart {
                    log::info!("systemd restarts the unit: the mounts are handed over");
                    exit = Exit::Handover;
                }
                break;
            }
            _ = int.recv() => break,
            _ = hup.recv() => break,
            _ = usr2.recv() => {
                if crate::fdstore::store().is_some() {
                    exit = Exit::Handover;
                    break;
                }
                log::warn!("restart refused: nothing keeps the mounts' descriptors (no supervisor, no systemd fd store)");
            }
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
    if matches!(exit, Exit::Stop) {
        log::info!("shutting down");
        crate::fdstore::notify("STOPPING=1");
    } else {
        log::info!("restarting: the mounts stay");
    }
    let _ = shutdown_tx.send(());
    for s in servers {
        let _ = s.await;
    }
    Ok(exit)
}

/// Serves again the mounts a former daemon of this store left in the fd store; a mount that
/// cannot be resumed is aborted (its users get ENOTCONN instead of waiting forever).
fn resume_mounts(svc: &Service, fds: Vec<(String, std::os::fd::OwnedFd)>) {
    if fds.is_empty() {
        return;
    }
    let n = fds.len();
    let mounts = crate::fuse::inherited(fds);
    log::info!(
        "{n} descriptors handed over: {} mounts to resume",
        mounts.len()
    );
    // A store whose accepted writes die with the process (object storage) cannot serve a
    // mount on after a crash: the writes the old daemon had answered but not yet sent may
    // be gone, and a later fsync would say they are safe. Such mounts end (their users get
    // ENOTCONN, as without a keeper); after a planned restart nothing was lost.
    let keeps_writes = svc.store().kv().writes_outlive_the_process();
    for m in mounts {
        if !keeps_writes && !m.handed_over() {
            m.abandon(
                "its daemon died, and writes it had accepted but not yet put on object \
                 storage may have died with it",
            );
            continue;
        }
        let container = m.container().to_string();
        let mnt = m.mountpoint();
        let minor = m.minor();
        let opts = m.options();
        let journal = m.journal();
        let resumed = m.resumed().clone();
        let slot = std::cell::RefCell::new(Some(m));
        let r = svc.adopt(&container, &mnt, opts, journal, &resumed, |volume| {
            let m = slot
                .borrow_mut()
                .take()
                .ok_or_else(|| std::io::Error::other("mount taken twice"))?;
            crate::fuse::resume(volume, m).map(|h| Box::new(h) as Box<dyn crate::service::Mounted>)
        });
        if r.is_ok() {
            crate::process::count_resumed_mount();
        }
        if let Err(e) = r {
            match slot.into_inner() {
                Some(m) => m.abandon(&e.to_string()),
                None => crate::fuse::abandon(minor, &mnt, &e.to_string()),
            }
        }
    }
}
