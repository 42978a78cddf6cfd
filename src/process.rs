//! The daemon process as the operator sees it: when it started, its resident memory and its
//! threads (from `/proc/self/status`), for `snapfs status` and `GET /metrics`.

use std::sync::OnceLock;
use std::time::SystemTime;

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Records the daemon's start (the first call wins).
pub fn mark_started() {
    STARTED.get_or_init(SystemTime::now);
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

#[cfg(test)]
mod tests {
    use super::*;

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
