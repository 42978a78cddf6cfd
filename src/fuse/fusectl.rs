//! The FUSE control filesystem (`/sys/fs/fuse/connections`): aborting a connection, which
//! both the unmount fallback (session) and a failing io_uring queue need.

use std::path::Path;

/// Aborts FUSE connection `conn` (fusectl): every pending and future request fails, the
/// serving threads and io_uring queues end.
pub(super) fn abort_connection(conn: u64) {
    ensure_fusectl();
    let abort = format!("/sys/fs/fuse/connections/{conn}/abort");
    if let Err(e) = std::fs::write(&abort, "1") {
        log::error!("cannot abort the FUSE connection ({abort}): {e}");
    }
}

/// Mounts the FUSE control filesystem (where connections can be aborted) if it is not.
fn ensure_fusectl() {
    let dir = Path::new("/sys/fs/fuse/connections");
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(2) == Some("fusectl")))
        .unwrap_or(false);
    if !mounted && dir.is_dir() {
        let _ = nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
}
