//! Mounts from the command line: `mount` and `umount` talk to the store's daemon, starting
//! it on demand (or, with `--foreground`, becoming it). The store directory itself (layout,
//! `init`, opening it, the pid file) is `storedir`.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::client;
use crate::contract;
use crate::fs::VolumeOptions;
use crate::storedir::{check_store, is_store, read_pid, socket_path};

/// The container `snapfs mount` mounts, and the snapshot and history commands use, when none
/// is named: the one every new store has.
pub const DEFAULT_CONTAINER: &str = "default";

pub struct MountArgs {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub container: String,
    pub foreground: bool,
    pub volume: VolumeOptions,
}

/// `mnt` must be a directory; a dead mount left by a killed daemon is detached first.
pub fn check_mountpoint(mnt: &Path) -> Result<()> {
    detach_if_dead(mnt)?;
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

/// `snapfs mount`: asks the store's daemon (started on demand) to mount the container;
/// returns once the mount is live. With `foreground`, this process is the daemon.
pub fn mount(args: MountArgs) -> Result<()> {
    let store = std::path::absolute(&args.store)
        .with_context(|| format!("bad store path {}", args.store.display()))?;
    let mnt = std::path::absolute(&args.mountpoint)
        .with_context(|| format!("bad mountpoint {}", args.mountpoint.display()))?;
    check_store(&store)?;
    check_mountpoint(&mnt)?;
    // A read-only mount of a store on object storage opens it as a reader (never taking it
    // over from the host that writes it).
    let reader = args.volume.read_only && crate::storedir::is_remote(&store);
    if args.foreground {
        return crate::daemon::serve(
            &store,
            crate::daemon::DaemonOptions {
                listen: None,
                token: None,
                tls: None,
                exit_when_idle: true,
                read_only: reader,
                initial: Some((args.container, mnt, args.volume)),
                notify_ready: false,
                containerd: None,
            },
        );
    }
    let path = format!("/api/v1/containers/{}", url_segment(&args.container));
    let body = contract::Start {
        mountpoint: mnt.display().to_string(),
        snapdir: Some(snapdir_name(args.volume.snapdir_visible).to_string()),
        admin_uid: args.volume.admin_uid,
        read_only: args.volume.read_only,
    };
    // A read-write mount replaces an idle reader (one a command like `snapshots list`
    // started on this host).
    if !args.volume.read_only && crate::storedir::is_remote(&store) {
        stop_idle_reader(&store);
    }
    let start = format!("{path}/start");
    let reply = call_daemon_as(&store, reader, "POST", &start, Some(&body))?;
    if reply.status != 404 {
        return reply.data::<contract::Container>().map(drop);
    }
    if reader {
        bail!(
            "no container {:?} in store {} (a read-only mount cannot create one)",
            args.container,
            store.display()
        );
    }
    // Containers are created on first mount.
    let create = contract::CreateContainer {
        name: args.container,
        ..Default::default()
    };
    call_daemon_as(&store, false, "POST", "/api/v1/containers", Some(&create))?
        .data::<contract::Container>()?;
    call_daemon_as(&store, false, "POST", &start, Some(&body))?.data::<contract::Container>()?;
    Ok(())
}

/// The `snapdir` value of `POST .../start`.
pub fn snapdir_name(visible: bool) -> &'static str {
    if visible {
        "visible"
    } else {
        "hidden"
    }
}

/// Stops the store's daemon if it is a reader with nothing mounted, and waits for it to go.
fn stop_idle_reader(store: &Path) {
    let socket = socket_path(store);
    let Ok(reply) = client::call(&socket, "GET", "/api/v1/status", client::NO_BODY) else {
        return;
    };
    let Ok(d) = reply.data::<contract::Status>() else {
        return;
    };
    let idle_reader = d.object_store.is_some_and(|o| o.read_only) && d.mounts == 0;
    if let (true, Some((pid, _))) = (idle_reader, read_pid(store)) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_exit(pid, Duration::from_secs(60));
    }
}

/// A FUSE mount whose daemon died answers ENOTCONN. `stat` may still be answered from the
/// kernel's attribute cache, `statfs` never is: ask that, and detach a dead mount.
fn detach_if_dead(mnt: &Path) -> Result<()> {
    if let Err(nix::errno::Errno::ENOTCONN) = nix::sys::statfs::statfs(mnt) {
        nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot clean stale mount {}", mnt.display()))?;
    }
    Ok(())
}

/// Sends one request to the store's daemon, starting it when needed. A daemon that is on its
/// way out (connection refused or 503) is waited for and replaced, up to three times.
pub fn call_daemon<B: Serialize + ?Sized>(
    store: &Path,
    method: &str,
    path: &str,
    body: Option<&B>,
) -> Result<client::Reply> {
    call_daemon_as(store, crate::storedir::is_remote(store), method, path, body)
}

/// [`call_daemon`]; a daemon it starts opens the store as a reader when `reader` is set.
fn call_daemon_as<B: Serialize + ?Sized>(
    store: &Path,
    reader: bool,
    method: &str,
    path: &str,
    body: Option<&B>,
) -> Result<client::Reply> {
    let mut attempt = 0;
    loop {
        let socket = ensure_daemon_as(store, reader)?;
        match client::call(&socket, method, path, body) {
            Ok(reply) if reply.status != 503 => return Ok(reply),
            Ok(reply) if attempt >= 3 => return Ok(reply),
            Err(e) if attempt >= 3 => return Err(e),
            // The daemon may have acted on it before it went away: never send it twice.
            Err(e) if !client::not_sent(&e) => {
                return Err(e.context(format!(
                    "the daemon of {} stopped before answering {method} {path}; \
                     the request may or may not have been applied",
                    store.display()
                )))
            }
            _ => {
                attempt += 1;
                if let Some((pid, _)) = read_pid(store) {
                    wait_exit(pid, Duration::from_secs(30));
                }
            }
        }
    }
}

/// Percent-encodes a path segment.
pub fn url_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The daemon's socket, starting the daemon first when none answers. For a store on object
/// storage that daemon is a reader: only a mount (or `snapfs serve`) takes a store over from
/// another host, never a command that lists or shows something.
pub fn ensure_daemon(store: &Path) -> Result<PathBuf> {
    ensure_daemon_as(store, crate::storedir::is_remote(store))
}

fn ensure_daemon_as(store: &Path, reader: bool) -> Result<PathBuf> {
    let socket = socket_path(store);
    for _ in 0..100 {
        // A question whose answer costs the same with a thousand containers as with one.
        if client::call(&socket, "GET", "/api/v1/status", client::NO_BODY).is_ok() {
            return Ok(socket);
        }
        // A daemon that is exiting still holds the store: wait for it to go. A supervisor
        // whose daemon died is starting the next one: wait for that.
        if let Some((pid, _)) = read_pid(store) {
            let supervised = crate::storedir::read_supervisor_pid(store).is_some_and(process_alive);
            if supervised && !process_alive(pid) {
                // A supervisor that gave up says why.
                let why = std::fs::read_to_string(crate::supervisor::status_path(store))
                    .unwrap_or_default();
                if let Some(line) = why.lines().next().filter(|l| l.starts_with("gave up")) {
                    bail!(
                        "no daemon serves {}: its supervisor {line}",
                        store.display()
                    );
                }
            }
            if process_alive(pid) || supervised {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        spawn_daemon(store, reader)?;
        return Ok(socket);
    }
    bail!("the daemon of {} does not answer", store.display())
}

fn spawn_daemon(store: &Path, reader: bool) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the snapfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(store)
        .arg("--exit-when-idle")
        .arg("--notify-ready");
    if reader {
        cmd.arg("--read-only");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("cannot start the daemon")?;
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
        .unwrap_or("the daemon exited before it was ready");
    bail!("{msg}")
}

/// A snapfs mount, as /proc/self/mountinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapfsMount {
    /// Where it is mounted (as the kernel records it: canonical).
    pub mountpoint: PathBuf,
    pub store: PathBuf,
    pub container: String,
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

/// Every snapfs mount of this mount namespace, in mount order (a later one may cover an
/// earlier one at the same place). A snapfs mount has type `fuse.snapfs` (or `fuse`,
/// as mounts made by older releases through fuser show) and the source `STORE:CONTAINER` (the session's fsname), STORE a store.
pub fn snapfs_mounts() -> Result<Vec<SnapfsMount>> {
    mounts_of_type(true, None)
}

/// The snapfs mounts of this namespace (only those at `at`, when given); with
/// `store_present`, only those whose store is there (without, also `fuse.snapfs` mounts
/// whose store directory is gone).
fn mounts_of_type(store_present: bool, at: Option<&Path>) -> Result<Vec<SnapfsMount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read mountinfo")?;
    let mut found = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < sep + 3 || f.len() < 5 {
            continue;
        }
        let fstype = f[sep + 1];
        if fstype != "fuse" && fstype != "fuse.snapfs" {
            continue;
        }
        let mountpoint = PathBuf::from(unescape_mountinfo(f[4]));
        if at.is_some_and(|at| at != mountpoint) {
            continue;
        }
        let source = unescape_mountinfo(f[sep + 2]);
        let Some((store, container)) = source.rsplit_once(':') else {
            continue;
        };
        let known = if store_present {
            is_store(Path::new(store))
        } else {
            fstype == "fuse.snapfs"
        };
        if !known {
            continue;
        }
        found.push(SnapfsMount {
            mountpoint,
            store: PathBuf::from(store),
            container: container.to_string(),
        });
    }
    Ok(found)
}

fn find_mount(mnt: &Path) -> Result<Option<SnapfsMount>> {
    // The last one mounted there is the one visible.
    Ok(mounts_of_type(true, Some(mnt))?.pop())
}

/// Is `pid` running? A zombie (exited, not yet reaped by its parent) counts as gone.
pub fn process_alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    crate::process::state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Waits up to `timeout` for `pid` to exit; true when it did.
pub fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !process_alive(pid)
}

/// `snapfs umount`: asks the daemon to unmount (everything flushed on return) and, when that
/// daemon only lived for its mounts, waits until it has exited and freed the store.
pub fn umount(mountpoint: &Path) -> Result<()> {
    // The kernel records canonical paths; a dead mount cannot be resolved, so fall back.
    let mnt = match std::fs::canonicalize(mountpoint) {
        Ok(p) => p,
        Err(_) => std::path::absolute(mountpoint)
            .with_context(|| format!("bad mountpoint {}", mountpoint.display()))?,
    };
    let Some(SnapfsMount {
        store, container, ..
    }) = find_mount(&mnt)?
    else {
        // A snapfs mount whose store is gone (a disk lost): nothing to flush it to; detach.
        if !mounts_of_type(false, Some(&mnt))?.is_empty() {
            nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("cannot unmount {}", mnt.display()))?;
            eprintln!(
                "snapfs: warning: the store of {} is gone; detached it",
                mnt.display()
            );
            return Ok(());
        }
        bail!("{} is not a snapfs mount", mnt.display());
    };
    let socket = socket_path(&store);
    let path = format!("/api/v1/containers/{}/stop", url_segment(&container));
    match client::call(&socket, "POST", &path, client::NO_BODY) {
        Ok(reply) => {
            if let Err(e) = reply.data::<contract::Container>() {
                // Unmounted all the same (e.g. a store another host took over): say why, but
                // the unmount itself is done.
                if find_mount(&mnt)?.is_some() {
                    return Err(e);
                }
                eprintln!("snapfs: warning: {e:#}");
            }
            // A dead mount from an earlier daemon may still sit there.
            detach_if_dead(&mnt)?;
        }
        Err(_) => {
            // No daemon answers (killed): just take the dead mount away.
            nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("cannot unmount {}", mnt.display()))?;
            return Ok(());
        }
    }
    if let Some((pid, true)) = read_pid(&store) {
        let idle = client::call(&socket, "GET", "/api/v1/status", client::NO_BODY)
            .ok()
            .and_then(|r| r.data::<contract::Status>().ok())
            .is_none_or(|d| d.mounts == 0);
        // The daemon stops its background work within 2 s of its last unmount; the
        // unmount itself is done either way, so a slow exit is only worth a warning.
        if idle && !wait_exit(pid, Duration::from_secs(30)) {
            eprintln!(
                "warning: unmounted {}, but the store's daemon (pid {pid}) is still running; \
                 the store stays busy until it exits",
                mnt.display()
            );
        }
    }
    Ok(())
}

/// Device id of a path (to tell whether something is mounted on it).
pub fn dev_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.dev())
}

/// `snapfs restart`: the daemon hands its mounts over (SIGUSR2) and exits; whoever keeps its
/// descriptors starts the binary on disk, which takes the mounts over. Returns once the new
/// daemon answers.
pub fn restart(store: &Path) -> Result<()> {
    let store = std::path::absolute(store)
        .with_context(|| format!("bad store path {}", store.display()))?;
    check_store(&store)?;
    let Some((pid, _)) = read_pid(&store).filter(|(p, _)| process_alive(*p)) else {
        bail!("no daemon runs store {}", store.display());
    };
    if !crate::storedir::daemon_keeps_mounts(&store) {
        bail!(
            "the daemon of {} (pid {pid}) keeps its mounts' descriptors only in itself: a \
             restart would end them (run it under its supervisor, SNAPFS_SUPERVISOR=1, or \
             the systemd unit)",
            store.display()
        );
    }
    let socket = socket_path(&store);
    // An upgrade across on-disk formats is refused here, while the old daemon still runs
    // (the new one would fail to open the store, and the mounts would answer EIO).
    // Read loosely: the daemon may be of another version than this command.
    let status = client::call(&socket, "GET", "/api/v1/status", client::NO_BODY)?
        .data::<serde_json::Value>()?;
    let format = status["format_version"].as_u64().unwrap_or(0);
    let readable =
        u64::from(crate::store::MIN_FORMAT_VERSION)..=u64::from(crate::store::FORMAT_VERSION);
    if format != 0 && !readable.contains(&format) {
        bail!(
            "this snapfs ({}, store formats {} to {}) cannot serve store {} (format {format}, \
             served by snapfs {}): restart refused, the daemon keeps running",
            env!("CARGO_PKG_VERSION"),
            crate::store::MIN_FORMAT_VERSION,
            crate::store::FORMAT_VERSION,
            store.display(),
            status["version"].as_str().unwrap_or("?"),
        );
    }
    let list = client::call(&socket, "GET", "/api/v1/containers", client::NO_BODY)?
        .data::<contract::ContainerList>()?;
    let uring: Vec<String> = list
        .containers
        .iter()
        .filter(|c| c.fuse.as_ref().is_some_and(|f| f.transport == "io_uring"))
        .map(|c| c.name.clone())
        .collect();
    if !uring.is_empty() {
        bail!(
            "{} mounted over io_uring ({}): its queues die with the daemon, so a restart \
             cannot keep it; unmount it first",
            if uring.len() == 1 {
                "a container is"
            } else {
                "containers are"
            },
            uring.join(", ")
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .with_context(|| format!("cannot signal the daemon (pid {pid})"))?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Some((new, _)) = read_pid(&store) {
            if new != pid
                && process_alive(new)
                && client::call(&socket, "GET", "/api/v1/status", client::NO_BODY).is_ok()
            {
                println!(
                    "restarted the daemon of {}: pid {pid} -> {new}",
                    store.display()
                );
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "the daemon of {} did not come back within 120 s; see {}",
        store.display(),
        crate::storedir::log_path(&store).display()
    )
}
