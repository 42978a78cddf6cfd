//! Switches of the FUSE adapter read from the environment, for measuring and for turning
//! off a kernel feature that misbehaves: read by the mount session, the request operations
//! and INIT, so they live below all three.

/// Whether mounts use the kernel's writeback cache: on unless `SNAPFS_WRITEBACK=0`. Writes
/// return once they are in the page cache and reach the daemon later, in batches and in
/// parallel (untar 1.6x, random 4 KiB writes 1.6x; README "Benchmarks"); close and fsync
/// write them back first, and so do snapshots, copies and restores for files open for
/// writing ([`Volume::flush_writes`]), bounded by the kernel's dirty limit for a FUSE device
/// (strict, ~48 MB here: a snapshot under a busy random writer waited 1.0-2.7 s). The kernel
/// owns mtime and ctime of regular files under this cache (it sends them in SETATTRs, which
/// may be served before the page writes they belong to), so written-back pages leave the
/// times alone ([`crate::fs::Fs::write_back`]). Pages in the kernel outlive a killed daemon
/// whose mounts are kept (the supervisor's default): the next daemon is sent them; without
/// a keeper they die with the mount, like any write not fsync'd.
pub fn writeback_cache() -> bool {
    !crate::envswitch::switched_off("SNAPFS_WRITEBACK")
}

/// Whether the kernel keeps the page cache of files and the listings of directories across
/// opens (`FOPEN_KEEP_CACHE`, `FOPEN_CACHE_DIR`): on unless `SNAPFS_KERNEL_CACHE=0`. Safe
/// because every change to a head goes through its one mount (the kernel updates or drops
/// its pages itself), snapshot views never change, and the two changes made behind the
/// kernel's back drop what it cached: an online restore moves the head to new inode numbers
/// and invalidates the open files and the root, a deleted snapshot invalidates its open
/// files (later opens answer ESTALE).
pub fn kernel_cache() -> bool {
    !crate::envswitch::switched_off("SNAPFS_KERNEL_CACHE")
}

/// Whether directory listings carry attributes (READDIRPLUS, adaptive): on unless
/// `SNAPFS_READDIRPLUS=0`.
pub fn readdirplus() -> bool {
    !crate::envswitch::switched_off("SNAPFS_READDIRPLUS")
}
