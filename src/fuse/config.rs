//! Switches of the FUSE adapter read from the environment, for measuring and for turning
//! off a kernel feature that misbehaves: read by the mount session, the request operations
//! and INIT, so they live below all three.

/// Whether mounts use the kernel's writeback cache (`SNAPFS_WRITEBACK=1`; off by default).
/// Writes return once they are in the page cache and reach the daemon later, in batches and
/// in parallel (untar 1.6x, random 4 KiB writes 1.6x; README "Benchmarks"); close and fsync
/// write them back first, and so do snapshots, copies and restores for files open for
/// writing ([`Volume::flush_writes`]), bounded by the kernel's dirty limit for a FUSE device.
/// Off by default because with it the suite once saw a snapshot hold a written file's mtime
/// as the daemon set it, not the one `stat` had shown just before (the kernel owns times
/// under this cache and sends them later): see the README.
pub fn writeback_cache() -> bool {
    matches!(
        std::env::var("SNAPFS_WRITEBACK").as_deref().map(str::trim),
        Ok("1") | Ok("on") | Ok("true") | Ok("yes")
    )
}

/// Whether the kernel keeps the page cache of files and the listings of directories across
/// opens (`FOPEN_KEEP_CACHE`, `FOPEN_CACHE_DIR`): on unless `SNAPFS_KERNEL_CACHE=0`. Safe
/// because every change to a head goes through its one mount (the kernel updates or drops
/// its pages itself), snapshot views never change, and the two changes made behind the
/// kernel's back drop what it cached: an online restore moves the head to new inode numbers
/// and invalidates the open files and the root, a deleted snapshot invalidates its open
/// files (later opens answer ESTALE).
pub fn kernel_cache() -> bool {
    !matches!(
        std::env::var("SNAPFS_KERNEL_CACHE")
            .as_deref()
            .map(str::trim),
        Ok("0") | Ok("off") | Ok("false") | Ok("no")
    )
}

/// Whether directory listings carry attributes (READDIRPLUS, adaptive): on unless
/// `SNAPFS_READDIRPLUS=0`.
pub fn readdirplus() -> bool {
    !matches!(
        std::env::var("SNAPFS_READDIRPLUS")
            .as_deref()
            .map(str::trim),
        Ok("0") | Ok("off") | Ok("false") | Ok("no")
    )
}
