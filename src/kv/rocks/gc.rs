//! RocksDB's garbage policy: when to flush the memtables, switch BlobDB's background garbage
//! collection, compact the ranges that lost values, or rewrite the blobs. The daemon calls
//! [`Maintenance::tidy`](super::super::Maintenance::tidy) every few seconds; the thresholds
//! below are RocksDB's business, so they live here.
//!
//! Nothing scans the store: the garbage is what RocksDB already counts (blob bytes its
//! compactions found unreferenced) plus what the caller dropped since the last compaction
//! of those keys (its [`Dropped`] account).

use std::time::{Duration, Instant};

use super::super::{Dropped, Maintenance, Space};
use super::RocksKv;

/// Bytes of dropped values worth a compaction of the keys that held them (or 1/16 of the
/// store's disk usage, if more).
const COMPACT_AFTER: u64 = 64 << 20;
/// A blob rewrite that left garbage behind is not repeated before this long.
const REWRITE_AGAIN_AFTER: Duration = Duration::from_secs(3600);
/// Write-ahead log worth flushing the memtables for once the containers are idle.
const IDLE_FLUSH_LOG: u64 = 16 << 20;
/// Background blob GC starts at this much garbage (or 1/8 of the disk usage, if more) and
/// stops below half of it (or 1/16). It relocates the live blobs of the oldest blob files
/// whenever compactions touch them, garbage or not: on during a 4 GiB sequential write into
/// a fresh store, it cost 40 % of the throughput (152 vs 259 MiB/s) and 30 % more disk.
const GC_ON_AT: u64 = 256 << 20;
const GC_OFF_BELOW: u64 = 128 << 20;

/// What the policy remembers between two calls.
#[derive(Default)]
pub(super) struct GcState {
    /// Background blob GC is on.
    blob_gc: bool,
    /// When the blobs were last rewritten, and the garbage RocksDB still counted after it.
    last_rewrite: Option<(Instant, u64)>,
}

/// Whether background blob GC should run, given the garbage and whether it runs now.
fn blob_gc_wanted(garbage: u64, used: u64, on: bool) -> bool {
    if on {
        garbage >= GC_OFF_BELOW.max(used / 16)
    } else {
        garbage >= GC_ON_AT.max(used / 8)
    }
}

impl RocksKv {
    /// Makes deleted space come back, at a cost that follows the garbage, not the store.
    /// Background blob GC is switched on and off by it (with hysteresis), and once enough
    /// was dropped, only the ranges that held it are compacted (the caller's account: the
    /// metadata and the blocks of the data ids that lost versions). Blob files left entirely
    /// garbage go away with that compaction; partly garbage ones are rewritten by RocksDB's
    /// own GC (the oldest ones first, once half garbage) while it is on.
    pub(super) fn tidy_now(&self, idle: bool, dropped: &dyn Dropped) {
        if idle {
            self.flush_when_idle();
        }
        let mut gc = self.gc.lock();
        let used = self.disk_usage();
        let pending = dropped.bytes();
        let known = self.known_garbage();
        let garbage = known.saturating_add(pending);
        // Never twice in a row for the same garbage (a rewrite that could not free it is not
        // repeated until it doubled or an hour passed).
        let fresh = gc.last_rewrite.is_none_or(|(at, left)| {
            known > left.saturating_mul(2) || at.elapsed() > REWRITE_AGAIN_AFTER
        });
        if idle && fresh && known >= COMPACT_AFTER.max(used / 4) {
            self.rewrite_garbage(used, known);
            gc.last_rewrite = Some((Instant::now(), self.known_garbage()));
            return;
        }
        let want = blob_gc_wanted(garbage, used, gc.blob_gc);
        if want != gc.blob_gc {
            match self.set_background_gc(want) {
                Ok(()) => {
                    log::info!(
                        "background blob GC {}: {garbage} B garbage of {used} B",
                        if want { "on" } else { "off" }
                    );
                    gc.blob_gc = want;
                }
                Err(e) => log::error!("switching background blob GC: {e}"),
            }
        }
        if pending < COMPACT_AFTER.max(used / 16) {
            return;
        }
        let t0 = Instant::now();
        let ranges = dropped.take();
        log::info!("compacting what {pending} B of dropped versions held ({ranges:?})");
        for (space, start, end) in ranges {
            if let Err(e) = self.compact_range(space, &start, &end) {
                log::error!("compaction: {e}");
            }
        }
        log::info!(
            "compacted in {:?}: {} B on disk before, {} B after",
            t0.elapsed(),
            used,
            self.disk_usage()
        );
    }

    /// When the write-ahead log holds more than `IDLE_FLUSH_LOG` while nothing writes,
    /// writes the memtables out so the log files go. A rarely written column (the metadata)
    /// otherwise keeps every log file since its last flush: 200 MB of logs beside 120 MB of
    /// data after a 100 MiB copy and 1,000 snapshots.
    fn flush_when_idle(&self) {
        if self.transient_bytes() < IDLE_FLUSH_LOG {
            return;
        }
        let t0 = Instant::now();
        match self.flush_buffers() {
            Ok(()) => log::info!("idle: memtables flushed in {:?}", t0.elapsed()),
            Err(e) => log::error!("flushing memtables: {e}"),
        }
    }

    /// With nothing writing and at least a quarter of the store known garbage (blobs its
    /// compactions found dead in files its own GC has not reached), rewrites the live blobs
    /// out of every blob file. That copies the live data, at most three times the garbage
    /// it frees, and only while nothing else writes; a store with less garbage waits for
    /// RocksDB's GC of its oldest files instead.
    fn rewrite_garbage(&self, used: u64, known: u64) {
        let live = used.saturating_sub(known);
        if let Some(free) = self.free_bytes() {
            if free < live.saturating_add(8 << 20) {
                log::warn!("{known} B garbage but only {free} B free: not rewriting");
                return;
            }
        }
        let t0 = Instant::now();
        if let Err(e) = self.compact(Space::Data) {
            log::error!("compaction: {e}");
        }
        log::info!(
            "idle, {known} B of {used} B garbage: blobs rewritten in {:?}, {} B on disk now",
            t0.elapsed(),
            self.disk_usage()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn blob_gc_switches_with_hysteresis() {
        // Small stores: absolute thresholds.
        assert!(!blob_gc_wanted(200 * MIB, 1024 * MIB, false));
        assert!(blob_gc_wanted(256 * MIB, 1024 * MIB, false));
        assert!(
            blob_gc_wanted(200 * MIB, 1024 * MIB, true),
            "stays on above the off mark"
        );
        assert!(!blob_gc_wanted(100 * MIB, 1024 * MIB, true));
        // Large stores: shares of the disk usage.
        let used = 64 * 1024 * MIB;
        assert!(!blob_gc_wanted(used / 10, used, false));
        assert!(blob_gc_wanted(used / 8, used, false));
        assert!(blob_gc_wanted(used / 12, used, true));
        assert!(!blob_gc_wanted(used / 20, used, true));
    }
}
