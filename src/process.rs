//! The daemon process as the operator sees it: when it started, its resident memory and its
//! threads (from `/proc/self/status`), for `snapfs status` and `GET /metrics`.

use std::sync::OnceLock;
use std::time::SystemTime;

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Records the daemon's start (the first call wins).
pub fn mark_started() {
    STARTED.get_or_init(SystemTime::now);
}

/// Raises this process's soft limit of open descriptors to its hard limit: every mount holds
/// a `/dev/fuse` descriptor and a state file in the daemon and in its keeper, so a thousand
/// mounts need more than the usual soft limit of 1,024. Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                log::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// When the daemon started (or, if it never said, when this was first asked).
pub fn started_at() -> SystemTime {
    *STARTED.get_or_init(SystemTime::now)
}

/// Resident memory and thread count of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub threads: u64,
}

/// Reads this process's resident memory and threads (zeros where /proc says nothing).
pub fn usage() -> Usage {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| parse_status(&s))
        .unwrap_or_default()
}

fn parse_status(status: &str) -> Usage {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Usage {
        rss_bytes: field("VmRSS:").saturating_mul(1024),
        threads: field("Threads:"),
    }
}

static RESUMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a mount taken over from the daemon before this one.
pub fn count_resumed_mount() {
    RESUMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Mounts taken over from the daemon before this one.
pub fn resumed_mounts() -> u64 {
    RESUMED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The state letter of process `pid` (`R`, `S`, `D`, `Z`, ...) from `/proc/PID/stat`, where it
/// follows the parenthesised command name; `None` when there is no such process.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// Runs `cmd` (stdin and stderr closed) and returns its standard output, if it succeeds
/// within `limit` (killed otherwise).
pub fn output_within(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::io::Result<String> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    if !status.success() {
        return Err(std::io::Error::other(format!("exited with {status}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_goes_up_to_the_hard_limit() {
        use nix::sys::resource::{getrlimit, Resource};
        let now = raise_fd_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!((now, soft), (hard, hard));
    }

    #[test]
    fn a_command_answers_or_is_cut_off() {
        use std::process::Command;
        use std::time::Duration;
        let out = output_within(Command::new("echo").arg("hi"), Duration::from_secs(10));
        assert_eq!(out.ok().as_deref(), Some("hi\n"));
        let slow = output_within(Command::new("sleep").arg("5"), Duration::from_millis(100));
        assert!(slow.is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut));
        assert!(output_within(&mut Command::new("false"), Duration::from_secs(10)).is_err());
    }

    #[test]
    fn status_fields_are_read() {
        let s = "Name:\tsnapfs\nVmRSS:\t  25548 kB\nThreads:\t12\n";
        assert_eq!(
            parse_status(s),
            Usage {
                rss_bytes: 25548 * 1024,
                threads: 12
            }
        );
        assert_eq!(parse_status("garbage"), Usage::default());
        let live = usage();
        assert!(live.rss_bytes > 0 && live.threads >= 1, "{live:?}");
    }
}
