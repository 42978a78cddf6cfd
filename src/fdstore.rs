//! The daemon's side of systemd's notification protocol (`sd_notify`), including its
//! file-descriptor store: a daemon hands descriptors to whoever started it (`FDSTORE=1`,
//! `FDNAME=`, the descriptors attached) and gets them back when it is started again
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`). systemd speaks it for a unit with
//! `FileDescriptorStoreMax=`; `snapfs serve`'s own supervisor (`supervisor.rs`) speaks the
//! same, so the daemon has one code path for both.
//!
//! What the daemon keeps there: each mount's `/dev/fuse` descriptor and its state file
//! (`fuse/state.rs`): a FUSE connection lives as long as one descriptor to it does, so the
//! mounts outlive the daemon and a new daemon resumes them.
//!
//! Handing back: systemd passes descriptors at 3, 4, ... (`LISTEN_FDS` of them, `LISTEN_PID`
//! naming the process they are for). The supervisor passes them where they already are
//! and names their numbers in `SNAPFS_LISTEN_FDNUMS` (comma-separated): it never has to move
//! descriptors between `fork` and `exec`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use nix::sys::socket::{
    sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// Where the supervisor says its descriptors are.
pub const FDNUMS_ENV: &str = "SNAPFS_LISTEN_FDNUMS";

/// The notification socket of the process that started us (`$NOTIFY_SOCKET`).
#[derive(Debug, Clone)]
pub struct NotifySocket {
    addr: UnixAddr,
    /// How many descriptors it stores for us (`$FDSTORE`; 0: none).
    fdstore_max: usize,
}

fn target() -> Option<&'static NotifySocket> {
    static TARGET: OnceLock<Option<NotifySocket>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let bytes = path.as_bytes();
            let addr = match bytes.strip_prefix(b"@") {
                Some(name) => UnixAddr::new_abstract(name),
                None => UnixAddr::new(bytes),
            };
            let addr = match addr {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET={path:?} is not usable: {e}");
                    return None;
                }
            };
            let fdstore_max = std::env::var("FDSTORE")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Some(NotifySocket { addr, fdstore_max })
        })
        .as_ref()
}

/// Reads `$NOTIFY_SOCKET` and `$FDSTORE` now (before anything changes the environment).
pub fn init() {
    let _ = target();
}

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to the process that started us, if it
/// listens; nothing otherwise.
pub fn notify(state: &str) {
    if let Some(t) = target() {
        if let Err(e) = send(t, state, &[]) {
            log::warn!("cannot send {state:?} to the notification socket: {e}");
        }
    }
}

/// The descriptor store, when the process that started us keeps descriptors for us.
pub fn store() -> Option<FdStore> {
    target()
        .filter(|t| t.fdstore_max > 0)
        .map(|t| FdStore { target: t.clone() })
}

/// Where a daemon keeps descriptors that must outlive it.
#[derive(Debug, Clone)]
pub struct FdStore {
    target: NotifySocket,
}

impl FdStore {
    /// Keeps `fds` under `name` (printable ASCII, no `:`, at most 255 bytes).
    pub fn keep(&self, name: &str, fds: &[BorrowedFd]) -> io::Result<()> {
        if !valid_name(name) {
            return Err(io::Error::other(format!("bad descriptor name {name:?}")));
        }
        send(&self.target, &format!("FDSTORE=1\nFDNAME={name}"), fds)
    }

    /// Lets go of every descriptor kept under `name`.
    pub fn drop_name(&self, name: &str) -> io::Result<()> {
        send(
            &self.target,
            &format!("FDSTOREREMOVE=1\nFDNAME={name}"),
            &[],
        )
    }
}

/// Is `fd` a character device (a mount's `/dev/fuse` descriptor, beside its state file)?
pub fn is_char_device(fd: &impl AsRawFd) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFCHR)
}

/// A descriptor name as systemd accepts it.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b':')
}

fn send(t: &NotifySocket, state: &str, fds: &[BorrowedFd]) -> io::Result<()> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let iov = [io::IoSlice::new(state.as_bytes())];
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsgs };
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::empty(),
        Some(&t.addr),
    )?;
    Ok(())
}

/// The descriptors handed to us at start, with their names (`LISTEN_FDNAMES`; `unknown` when
/// unnamed). Taken once: the variables are removed, so nothing we start inherits them.
pub fn take_inherited() -> io::Result<Vec<(String, OwnedFd)>> {
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let pid = std::env::var("LISTEN_PID").ok();
    let nums = std::env::var(FDNUMS_ENV).ok();
    for v in ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", FDNUMS_ENV] {
        // SAFETY (of the environment): called by `main` before any thread is started.
        std::env::remove_var(v);
    }
    let Some(count) = count else {
        return Ok(Vec::new());
    };
    if pid.is_some_and(|p| p.trim() != std::process::id().to_string()) {
        return Ok(Vec::new()); // meant for another process
    }
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("LISTEN_FDS={count:?} is not a number")))?;
    let numbers: Vec<RawFd> = match nums {
        Some(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse::<RawFd>())
            .collect::<Result<_, _>>()
            .map_err(|_| io::Error::other(format!("{FDNUMS_ENV}={list:?} is not a list")))?,
        None => (0..count as RawFd).map(|i| LISTEN_FDS_START + i).collect(),
    };
    if numbers.len() != count {
        return Err(io::Error::other(format!(
            "LISTEN_FDS={count} but {} descriptor numbers",
            numbers.len()
        )));
    }
    let names: Vec<&str> = names.split(':').collect();
    let mut out = Vec::with_capacity(count);
    for (i, raw) in numbers.into_iter().enumerate() {
        let fd = adopt(raw)?;
        let name = names.get(i).copied().unwrap_or("unknown").to_string();
        out.push((name, fd));
    }
    Ok(out)
}

/// Takes ownership of inherited descriptor `raw` (close-on-exec from now on).
#[allow(unsafe_code)]
fn adopt(raw: RawFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // Fails with EBADF when nothing is open there.
    fcntl(raw, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| io::Error::other(format!("inherited descriptor {raw}: {e}")))?;
    // SAFETY: `raw` is open (checked above) and was handed to this process by the one that
    // started it, for us to own (`LISTEN_FDS`); nothing else in the process knows the number:
    // this runs once, first thing in `main`, and each number is listed once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The environment entries that hand `fds` (name, number) to a process we start.
pub fn handing_env(fds: &[(String, RawFd)]) -> Vec<(&'static str, OsString)> {
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    let nums: Vec<String> = fds.iter().map(|(_, f)| f.to_string()).collect();
    vec![
        ("LISTEN_FDS", fds.len().to_string().into()),
        ("LISTEN_FDNAMES", names.join(":").into()),
        (FDNUMS_ENV, nums.join(",").into()),
    ]
}

/// Is systemd restarting our unit (`systemctl restart`), as opposed to stopping it? Asked
/// when SIGTERM comes to a daemon whose descriptors systemd keeps: a restart hands the
/// mounts over to the next daemon (as `snapfs restart` does), a stop unmounts them. A
/// restart job runs as type `restart` while it stops the unit; the unit is ours from
/// `/proc/self/cgroup`. Any doubt (no systemd, `systemctl` missing or slow) means a stop.
pub fn systemd_restart_pending() -> bool {
    if store().is_none() || std::env::var_os(crate::supervisor::SUPERVISOR_ENV).is_some() {
        return false;
    }
    let Some(unit) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| own_unit(&c))
    else {
        return false;
    };
    let jobs = match crate::process::output_within(
        std::process::Command::new("systemctl").args(["list-jobs", "--no-legend", "--no-pager"]),
        std::time::Duration::from_secs(2),
    ) {
        Ok(out) => out,
        Err(e) => {
            log::warn!("cannot ask systemd whether {unit} is restarting ({e}); stopping");
            return false;
        }
    };
    restart_job_for(&jobs, &unit)
}

/// The service unit a process runs in, from its `/proc/PID/cgroup` (cgroup v2: `0::/PATH`).
fn own_unit(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|path| {
            path.split('/')
                .rev()
                .find(|c| c.ends_with(".service"))
                .map(str::to_string)
        })
}

/// Does `systemctl list-jobs` output (`JOB UNIT TYPE STATE` lines) hold a restart of `unit`?
fn restart_job_for(jobs: &str, unit: &str) -> bool {
    jobs.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() >= 3 && cols[1] == unit && cols[2].contains("restart")
    })
}

#[cfg(test)]
mod systemd_tests {
    use super::*;

    #[test]
    fn the_unit_comes_from_the_cgroup_path() {
        assert_eq!(
            own_unit("0::/system.slice/snapfs-srv.service\n").as_deref(),
            Some("snapfs-srv.service")
        );
        // A delegated subtree below the unit.
        assert_eq!(
            own_unit("0::/system.slice/snapfs.service/payload\n").as_deref(),
            Some("snapfs.service")
        );
        assert_eq!(own_unit("0::/user.slice/session-3.scope\n"), None);
        assert_eq!(own_unit("12:pids:/x.service\n"), None);
    }

    #[test]
    fn only_a_restart_of_our_unit_counts() {
        let jobs = "1234 snapfs-srv.service restart running\n1240 other.service restart waiting\n";
        assert!(restart_job_for(jobs, "snapfs-srv.service"));
        assert!(!restart_job_for(jobs, "snapfs-x.service"));
        let stop = "1234 snapfs-srv.service stop running\n";
        assert!(!restart_job_for(stop, "snapfs-srv.service"));
        assert!(restart_job_for(
            "7 snapfs-srv.service try-restart running\n",
            "snapfs-srv.service"
        ));
        assert!(!restart_job_for("", "snapfs-srv.service"));
    }
}
