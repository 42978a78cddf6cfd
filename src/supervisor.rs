//! The supervisor of a store's daemon (`snapfs serve` when no systemd unit keeps the daemon's
//! descriptors): a small single-threaded process that starts the daemon, keeps the
//! descriptors the daemon hands it (systemd's file-descriptor-store protocol, see
//! `fdstore.rs`: each mount's `/dev/fuse` descriptor and state file), and when the daemon
//! dies, starts it again with those descriptors, so the mounts (and the containers running
//! on them) never see the daemon go.
//!
//! - Restarts: at once after a daemon that was ready (`READY=1`) dies; after a daemon that
//!   died before it was ready, with a back-off (100 ms doubling, at most 5 s). After
//!   [`MAX_FAILURES`] failed starts in a row it gives up: it says why in the log and in
//!   `STORE/snapfs.supervisor`, answers every request of the kept mounts with EIO (their
//!   users get an error, never a hang) until they are unmounted, then exits.
//! - A daemon that exits after `STOPPING=1` (SIGTERM, idle exit) was stopped on purpose: the
//!   supervisor exits with it. SIGTERM, SIGINT and SIGHUP to the supervisor are passed on.
//! - The first daemon that fails before `READY=1` is not restarted: its error is the start's.
//!   The ones started again write their stderr to the store's log (`snapfs.log`), where a
//!   failed start's error or a panic is found later.
//! - Messages are taken only from the daemon it started (checked with the sender's
//!   credentials); the socket is an abstract one named after the supervisor's pid and a
//!   random number.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};

use crate::fdstore;

/// Failed starts in a row before the supervisor gives up.
pub const MAX_FAILURES: u32 = 5;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the supervisor looks at its daemon between messages and signals (a daemon
/// whose main thread died with another stuck sends no SIGCHLD).
const WATCH_POLL_MS: u16 = 50;
/// How many descriptors the daemon may keep here (`$FDSTORE`).
const FDSTORE_MAX: usize = 65536;
/// The variable that tells the daemon its supervisor's pid (for its pid file).
pub const SUPERVISOR_ENV: &str = "SNAPFS_SUPERVISOR_PID";

/// The supervisor's status file (`snapfs status` shows it when no daemon answers).
pub fn status_path(store: &Path) -> PathBuf {
    store.join("snapfs.supervisor")
}

fn lock_path(store: &Path) -> PathBuf {
    store.join("supervisor.lock")
}

/// Should `snapfs serve` run under a supervisor of its own? Not when the process that
/// started it keeps its descriptors already (systemd with `FileDescriptorStoreMax=`, or a
/// supervisor: the daemon is then that supervisor's child), and not when told so
/// (`SNAPFS_SUPERVISOR=0`: a daemon whose death ends its mounts, as before round 3).
pub fn wanted() -> bool {
    fdstore::init();
    fdstore::store().is_none() && !std::env::var("SNAPFS_SUPERVISOR").is_ok_and(|v| v.trim() == "0")
}

/// What one daemon did while it ran.
#[derive(Default)]
struct Run {
    ready: Option<Instant>,
    stopping: bool,
    /// SIGTERM (or INT, HUP) came to the supervisor.
    shutdown: bool,
}

struct Supervisor {
    store: PathBuf,
    exe: PathBuf,
    args: Vec<OsString>,
    sock: OwnedFd,
    sock_name: String,
    signals: SignalFd,
    /// The descriptors kept for the daemon, with their names.
    held: Vec<(String, OwnedFd)>,
    /// Daemons that were killed but whose last threads have not exited yet.
    dying: Vec<Child>,
}

/// Runs the store's daemon (`exe serve` with `args`) under supervision until it is stopped;
/// returns the exit code for the supervisor. With `notify_ready`, prints `ready` once the
/// first daemon is.
pub fn run(store: &Path, args: Vec<OsString>, notify_ready: bool) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find the snapfs executable")?;
    // The store is owner-only: so are the lock and status files.
    crate::perms::set_private_umask();
    // Two descriptors per kept mount.
    crate::process::raise_fd_limit();
    let _lock = lock(store)?;
    crate::daemon::setup_logging(store);
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    mask.thread_block().context("cannot block signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot create a signalfd")?;
    let sock_name = format!(
        "snapfs-supervisor-{}-{:016x}",
        std::process::id(),
        random_u64()
    );
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("cannot create the notification socket")?;
    bind(
        sock.as_raw_fd(),
        &UnixAddr::new_abstract(sock_name.as_bytes())?,
    )
    .context("cannot bind the notification socket")?;
    setsockopt(&sock, sockopt::PassCred, &true)?;
    let mut sup = Supervisor {
        store: store.to_path_buf(),
        exe,
        args,
        sock,
        sock_name,
        signals,
        held: Vec::new(),
        dying: Vec::new(),
    };
    sup.supervise(notify_ready)
}

/// A random number for the socket's name (not guessable by other local users).
fn random_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Takes the store's supervisor lock (one supervisor per store).
fn lock(store: &Path) -> Result<nix::fcntl::Flock<File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = lock_path(store);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A supervisor whose daemon has stopped (its last mount gone: `snapfs umount` waits for
    // the daemon, not for it) is about to exit and free the lock: wait for it a little
    // rather than refusing a mount that follows an unmount (the suite once saw that).
    let deadline = Instant::now() + STOPPING_SUPERVISOR_WAIT;
    let mut f = f;
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((back, _)) => {
                let why = std::fs::read_to_string(status_path(store)).unwrap_or_default();
                let first = why.lines().next().unwrap_or("no status").trim();
                if !holder_stopping(first) || Instant::now() >= deadline {
                    bail!(
                        "another supervisor runs the daemon of {} ({first})",
                        store.display()
                    )
                }
                f = back;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Is the supervisor that holds the lock on its way out, judging by the first line of its
/// status? It is when it said its daemon stopped, and also when it has not said so yet: its
/// daemon has exited (`snapfs umount` returned) but the supervisor has not reaped it, or it
/// has written no status yet. A supervisor whose daemon runs (or that is restarting one, or
/// gave up) is not.
fn holder_stopping(first: &str) -> bool {
    if first.starts_with("stopped") || first.is_empty() || first == "no status" {
        return true;
    }
    first
        .strip_prefix("running daemon ")
        .and_then(|pid| pid.trim().parse::<i32>().ok())
        .is_some_and(|pid| !crate::mount::process_alive(pid))
}

/// How long a new supervisor waits for one that reported its daemon stopped to exit.
const STOPPING_SUPERVISOR_WAIT: Duration = Duration::from_secs(10);

impl Supervisor {
    fn supervise(&mut self, notify_ready: bool) -> Result<i32> {
        let mut failures = 0u32;
        let mut first = true;
        loop {
            let mut child = self.spawn(first)?;
            let pid = child.id();
            self.status(&format!("running daemon {pid}"));
            let (status, run) = self.watch(&mut child, notify_ready && first)?;
            if matches!(child.try_wait(), Ok(None)) {
                self.dying.push(child);
            }
            let code = status.code().unwrap_or(1);
            if run.shutdown || run.stopping {
                self.status(&format!("stopped (daemon {pid}: {status})"));
                return Ok(code);
            }
            if first && run.ready.is_none() {
                // It never started: its own error (on our stderr) says why.
                let _ = std::fs::remove_file(status_path(&self.store));
                return Ok(if code == 0 { 1 } else { code });
            }
            first = false;
            // A daemon that got ready and then died (killed, crashed) is started again at
            // once; one that died before it was ready failed to start (the store cannot be
            // opened, ...): those are counted, with a back-off between them.
            failures = match run.ready {
                Some(_) => 0,
                None => failures + 1,
            };
            log::error!(
                "daemon {pid} died ({status}); {} descriptors kept; starting another \
                 ({failures} failed starts in a row)",
                self.held.len()
            );
            if failures >= MAX_FAILURES {
                let why = format!(
                    "gave up after {MAX_FAILURES} failed daemon starts in a row (last: {status}); \
                     the mounts answer EIO until unmounted; see {}",
                    crate::storedir::log_path(&self.store).display()
                );
                log::error!("{why}");
                self.status(&why);
                self.answer_eio()?;
                return Ok(1);
            }
            if failures > 0 {
                let wait = BACKOFF_FIRST
                    .saturating_mul(1 << (failures - 1).min(10))
                    .min(BACKOFF_MAX);
                self.status(&format!("restarting in {wait:?} (attempt {failures})"));
                if self.sleep_unless_signalled(wait)? {
                    return Ok(1);
                }
            }
        }
    }

    /// Starts a daemon with the kept descriptors (where they are: their numbers go in
    /// `SNAPFS_LISTEN_FDNUMS`). The first one writes to our stderr (its start error is the
    /// start's); the ones started again write to the store's log, where a failed start or a
    /// panic is read later (our stderr may be a pipe its reader closed long ago).
    fn spawn(&self, first: bool) -> Result<Child> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let fds: Vec<(String, RawFd)> = self
            .held
            .iter()
            .map(|(n, fd)| (n.clone(), fd.as_raw_fd()))
            .collect();
        for (_, fd) in &fds {
            fcntl(*fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .args(&self.args)
            .env("NOTIFY_SOCKET", format!("@{}", self.sock_name))
            .env("FDSTORE", FDSTORE_MAX.to_string())
            .env(SUPERVISOR_ENV, std::process::id().to_string())
            .env_remove("LISTEN_PID")
            .env_remove("SNAPFS_SUPERVISOR")
            .stdin(Stdio::null());
        if !first {
            match crate::storedir::open_log(&self.store) {
                Ok(f) => {
                    cmd.stderr(f);
                }
                Err(e) => log::warn!("the daemon's stderr stays ours: cannot open the log: {e}"),
            }
        }
        if fds.is_empty() {
            cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
        } else {
            cmd.envs(fdstore::handing_env(&fds));
        }
        let child = cmd.spawn();
        for (_, fd) in &fds {
            let _ = fcntl(*fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
        child.context("cannot start the daemon")
    }

    /// Serves the daemon's messages until it exits.
    fn watch(&mut self, child: &mut Child, notify_ready: bool) -> Result<(ExitStatus, Run)> {
        let pid = child.id();
        let mut run = Run::default();
        loop {
            {
                let mut fds = [
                    PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::from(WATCH_POLL_MS)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.reap_dying();
            self.messages(pid, &mut run, notify_ready);
            if self.stop_signalled() {
                run.shutdown = true;
                let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if let Some(status) = child.try_wait()? {
                // What it sent just before it went.
                self.messages(pid, &mut run, notify_ready);
                return Ok((status, run));
            }
            if leader_exited(pid) {
                // Killed, with a thread stuck in the kernel (an invalidation waiting for a
                // write only the next daemon will answer): it is gone as a daemon.
                self.messages(pid, &mut run, notify_ready);
                return Ok((ExitStatus::from_raw(libc::SIGKILL), run));
            }
        }
    }

    /// Takes every pending signal; true if one of them asks to stop (TERM, INT, HUP).
    fn stop_signalled(&mut self) -> bool {
        let mut stop = false;
        while let Ok(Some(sig)) = self.signals.read_signal() {
            let s = Signal::try_from(sig.ssi_signo as i32).ok();
            stop |= matches!(s, Some(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP));
        }
        stop
    }

    /// Reaps the killed daemons whose last threads have exited since.
    fn reap_dying(&mut self) {
        self.dying
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }

    /// Takes every waiting message of daemon `pid`.
    fn messages(&mut self, pid: u32, run: &mut Run, notify_ready: bool) {
        let mut buf = vec![0u8; 4096];
        loop {
            let mut cmsg = nix::cmsg_space!([RawFd; 253], nix::sys::socket::UnixCredentials);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let (n, fds, sender) = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(m) => {
                    let mut fds = Vec::new();
                    let mut sender = None;
                    if let Ok(cmsgs) = m.cmsgs() {
                        for c in cmsgs {
                            match c {
                                ControlMessageOwned::ScmRights(raw) => fds.extend(raw),
                                ControlMessageOwned::ScmCredentials(cred) => {
                                    sender = Some(cred.pid())
                                }
                                _ => {}
                            }
                        }
                    }
                    (m.bytes, fds, sender)
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("notification socket: {e}");
                    return;
                }
            };
            let fds: Vec<OwnedFd> = fds.into_iter().map(owned).collect();
            if sender != Some(pid as i32) {
                log::warn!("ignored a notification from pid {sender:?} (not the daemon)");
                continue; // its descriptors are closed here
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.message(&text, fds, run, notify_ready);
        }
    }

    fn message(&mut self, text: &str, fds: Vec<OwnedFd>, run: &mut Run, notify_ready: bool) {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                fields.insert(k.trim(), v.trim());
            }
        }
        let name = fields.get("FDNAME").copied().unwrap_or("stored");
        if fields.get("FDSTORE") == Some(&"1") {
            if !fdstore::valid_name(name) {
                log::warn!("refused descriptors with a bad name {name:?}");
                return;
            }
            for fd in fds {
                self.held.push((name.to_string(), fd));
            }
        }
        if fields.get("FDSTOREREMOVE") == Some(&"1") {
            self.held.retain(|(n, _)| n != name);
        }
        if fields.get("READY") == Some(&"1") && run.ready.is_none() {
            run.ready = Some(Instant::now());
            fdstore::notify("READY=1");
            if notify_ready {
                let mut out = std::io::stdout();
                let _ = writeln!(out, "ready");
                let _ = out.flush();
            }
        }
        if fields.get("STOPPING") == Some(&"1") {
            run.stopping = true;
            fdstore::notify("STOPPING=1");
        }
    }

    /// Sleeps `d`; true if a stop signal came meanwhile.
    fn sleep_unless_signalled(&mut self, d: Duration) -> Result<bool> {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            if self.stop_signalled() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// No daemon will serve the kept mounts: answer their requests with EIO until each is
    /// unmounted (or a stop signal comes).
    fn answer_eio(&mut self) -> Result<()> {
        let mut fuse: Vec<OwnedFd> = Vec::new();
        for (_, fd) in self.held.drain(..) {
            if fdstore::is_char_device(&fd) {
                // What the dead daemon read and never answered comes back, to be answered.
                if let Err(e) = crate::fuse::resend_unanswered(fd.as_fd()) {
                    log::warn!("cannot have unanswered requests sent again: {e}");
                }
                // Non-blocking reads: poll says when one waits.
                let _ = nix::fcntl::fcntl(
                    fd.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                fuse.push(fd);
            }
        }
        let mut buf = vec![0u8; crate::fuse::REQUEST_BUF_SIZE];
        while !fuse.is_empty() {
            let ready: Vec<usize> = {
                let mut fds: Vec<PollFd> = fuse
                    .iter()
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                    .chain(std::iter::once(PollFd::new(
                        self.signals.as_fd(),
                        PollFlags::POLLIN,
                    )))
                    .collect();
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                fds.iter()
                    .take(fuse.len())
                    .enumerate()
                    .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect()
            };
            if self.stop_signalled() {
                return Ok(());
            }
            let mut gone = Vec::new();
            for i in ready {
                match crate::fuse::answer_eio(fuse[i].as_fd(), &mut buf) {
                    Ok(true) => {}
                    Ok(false) | Err(_) => gone.push(i),
                }
            }
            for i in gone.into_iter().rev() {
                fuse.remove(i);
            }
        }
        self.status("gave up; every kept mount is gone");
        Ok(())
    }

    fn status(&self, what: &str) {
        let text = format!(
            "{what}\nsupervisor {}\nsince {}\n",
            std::process::id(),
            crate::timefmt::rfc3339(crate::codec::Ts::now())
        );
        // Written aside and renamed over: a reader (the next supervisor's `lock`) never sees
        // the file empty, as it could between `write`'s truncate and its write.
        let path = status_path(&self.store);
        let tmp = path.with_extension("supervisor.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// Has the main thread of `pid` exited (a zombie leader whose other threads are not all gone
/// yet: no SIGCHLD until they are)?
fn leader_exited(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(crate::process::state)
        .is_some_and(|c| c == 'Z' || c == 'X')
}

/// Owns a descriptor received with SCM_RIGHTS.
#[allow(unsafe_code)]
fn owned(raw: RawFd) -> OwnedFd {
    // SAFETY: the kernel just installed `raw` in this process for this message
    // (SCM_RIGHTS); nothing else knows its number.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mount right after an unmount: the old supervisor has reported its daemon stopped
    /// but still holds the lock for a moment. The new one waits for it; a running one is
    /// refused at once.
    #[test]
    fn the_lock_waits_for_a_stopping_supervisor_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path();
        let held = lock(store).expect("first lock");
        std::fs::write(status_path(store), "running daemon 1\n").expect("status");
        let err = lock(store).expect_err("a running supervisor holds it");
        assert!(format!("{err}").contains("running daemon 1"), "{err}");
        std::fs::write(status_path(store), "stopped (daemon 1: exit status: 0)\n").expect("status");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let start = Instant::now();
        lock(store).expect("taken once the stopping supervisor let go");
        assert!(start.elapsed() >= Duration::from_millis(250));
        releaser.join().expect("releaser");
    }

    /// The CI once saw a mount right after an unmount refused with "(no status)": the old
    /// supervisor was rewriting its status, or had not yet reaped its exited daemon. Both
    /// are a supervisor on its way out, to be waited for.
    #[test]
    fn a_holder_without_status_or_with_an_exited_daemon_is_stopping() {
        assert!(holder_stopping("stopped (daemon 7: exit status: 0)"));
        assert!(holder_stopping(""));
        assert!(holder_stopping("no status"));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait true");
        assert!(holder_stopping(&format!("running daemon {pid}")));
        assert!(!holder_stopping(&format!(
            "running daemon {}",
            std::process::id()
        )));
        assert!(!holder_stopping("restarting in 1s (attempt 1)"));
        assert!(!holder_stopping("gave up after 5 failed daemon starts"));
    }
}
