//! Switches of the FUSE adapter read from the environment, for measuring and for turning
//! off a kernel feature that misbehaves: read by the mount session, the request operations
//! and INIT, so they live below all three.

/// Whether mounts use the kernel's writeback cache (`SNAPFS_WRITEBACK=1`; off by default).
/// With it, writes return once they are in the page cache and reach the daemon later in
/// batches; snapshots, copies and restores first write back what the kernel holds for open
/// files ([`Volume::flush_writes`]). Off by default because it measured no better overall
/// (random 4 KiB writes +60 %, sequential 1 MiB writes −20 %) and because written data that
/// was not yet fsync'd then dies with a killed daemon, where without it such data is already
/// in the store's write-ahead log and survives the daemon (not a power loss).
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
