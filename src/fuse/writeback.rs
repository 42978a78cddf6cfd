//! Writing back what the kernel's writeback cache holds for a mount's open files, before a
//! snapshot: the daemon has no descriptor of its own for them, so it finds the processes
//! that hold them open for writing (`/proc/PID/fdinfo`: the open flags and inode number of
//! each descriptor) and fdatasync(2)s each file through one of them (`/proc/PID/fd/N`,
//! reopened). The kernel writes back the pages that were dirty when the sync started (it
//! tags them first), so a writer that keeps dirtying pages cannot hold a snapshot up;
//! dropping the file's pages instead (what invalidation does) launders them one by one and
//! does not finish while a writer is at work. syncfs(2) on a FUSE mount writes nothing back.
//!
//! Runs on the notifier's thread, never in a request handler: the kernel writes the pages
//! back through requests the serving workers answer.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// Makes the kernel write back the dirty pages of the files with kernel inode numbers
/// `inos` on FUSE connection `minor`. True when every one of them was found open for writing
/// and synced; false if one was not (the caller then drops their pages instead).
pub(super) fn sync_open_files(minor: u64, inos: &[u64]) -> bool {
    let mut left: HashSet<u64> = inos.iter().copied().collect();
    let me = std::process::id().to_string();
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.flatten() {
        if left.is_empty() {
            break;
        }
        let pid = p.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue; // gone, or a kernel thread
        };
        for fd in fds.flatten() {
            let fd = fd.file_name();
            let Some(fd) = fd.to_str() else { continue };
            let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
                continue;
            };
            let Some((flags, ino)) = parse_fdinfo(&info) else {
                continue;
            };
            if flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32 || !left.contains(&ino) {
                continue;
            }
            if sync_through(&format!("/proc/{pid}/fd/{fd}"), minor, ino) {
                left.remove(&ino);
            }
        }
    }
    if !left.is_empty() {
        log::info!(
            "{} files open for writing were not found in any process; their pages are dropped",
            left.len()
        );
    }
    left.is_empty()
}

/// The open flags and inode number of a `/proc/PID/fdinfo/N` text.
fn parse_fdinfo(info: &str) -> Option<(u32, u64)> {
    let mut flags = None;
    let mut ino = None;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("flags:") {
            flags = u32::from_str_radix(v.trim(), 8).ok();
        } else if let Some(v) = line.strip_prefix("ino:") {
            ino = v.trim().parse().ok();
        }
    }
    Some((flags?, ino?))
}

/// Reopens the file behind `link` if it is inode `ino` of FUSE connection `minor` (the
/// number alone could be another file system's), and fdatasyncs it.
fn sync_through(link: &str, minor: u64, ino: u64) -> bool {
    let Ok(meta) = fs::metadata(link) else {
        return false;
    };
    if meta.ino() != ino || meta.dev() != libc::makedev(0, minor as u32) {
        return false;
    }
    let file = match fs::File::open(link) {
        Ok(f) => f,
        Err(e) => {
            log::info!("cannot reopen {link} to write its cached pages back: {e}");
            return false;
        }
    };
    match file.sync_data() {
        Ok(()) => true,
        Err(e) => {
            log::warn!("writing back the cached pages of {link}: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_gives_flags_and_inode() {
        let info = "pos:\t0\nflags:\t0100002\nmnt_id:\t24\nino:\t281474976710661\n";
        assert_eq!(parse_fdinfo(info), Some((0o100002, 281474976710661)));
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t02\n"), None);
        assert_eq!(parse_fdinfo("flags:\tnot octal\nino:\t1\n"), None);
    }
}
