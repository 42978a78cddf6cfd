//! Free space on the store's device, and the check that keeps writes from eating into the
//! space the kv backend needs to flush and to apply deletions.
//!
//! Measuring costs a statvfs(2) (about a tenth of a small write's service time), so a
//! measure serves the writes that follow for up to [`GAUGE_TTL`], counting the bytes they
//! bring, as long as those stay under a quarter of the room left above the reserve (the
//! backend writes each byte more than once: log, then tables). Near the reserve the room
//! is small, so every write measures again: the check is as strict as measuring each time
//! where it matters.

use std::time::{Duration, Instant};

use super::Store;
use crate::error::{FsError, FsResult};

/// How long a measure of the free space serves.
const GAUGE_TTL: Duration = Duration::from_millis(100);

/// The last measure and what was admitted since.
#[derive(Default)]
pub(super) struct SpaceGauge {
    /// When, and the free bytes then.
    measured: Option<(Instant, u64)>,
    /// Bytes of file data admitted since.
    admitted: u64,
}

impl SpaceGauge {
    /// The free bytes the last measure vouches for with `incoming` more, if it still does.
    fn vouches(&self, reserve: u64, incoming: u64) -> Option<u64> {
        let (at, free) = self.measured?;
        let spent = self.admitted.saturating_add(incoming);
        let room = free.saturating_sub(reserve);
        (at.elapsed() < GAUGE_TTL && spent.saturating_mul(4) < room)
            .then(|| free.saturating_sub(self.admitted))
    }
}

impl Store {
    /// Refuses `incoming` new bytes of file data (ENOSPC) when they would eat into the space
    /// the kv backend needs to flush and to apply deletions: a full disk must stay
    /// recoverable by deleting files and snapshots.
    pub fn check_space(&self, incoming: u64) -> FsResult<()> {
        let Some(m) = self.kv.maintenance() else {
            return Ok(());
        };
        let reserve = m.reserve_bytes();
        if reserve == 0 {
            return Ok(());
        }
        let mut g = self.gauge.lock();
        let free = match g.vouches(reserve, incoming) {
            Some(free) => free,
            None => {
                let Some(free) = m.free_bytes() else {
                    return Ok(());
                };
                *g = SpaceGauge {
                    measured: Some((Instant::now(), free)),
                    admitted: 0,
                };
                free
            }
        };
        if free < reserve.saturating_add(incoming) {
            return Err(FsError::NoSpace);
        }
        g.admitted = g.admitted.saturating_add(incoming);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn measured(free: u64, ago: Duration) -> SpaceGauge {
        SpaceGauge {
            measured: Some((Instant::now() - ago, free)),
            admitted: 0,
        }
    }

    #[test]
    fn a_recent_measure_serves_small_writes() {
        let mut g = measured(1000 * MIB, Duration::ZERO);
        assert_eq!(g.vouches(100 * MIB, MIB), Some(1000 * MIB));
        g.admitted = 10 * MIB;
        assert_eq!(g.vouches(100 * MIB, MIB), Some(990 * MIB));
    }

    #[test]
    fn an_old_measure_or_little_room_measures_again() {
        assert_eq!(
            measured(1000 * MIB, GAUGE_TTL).vouches(100 * MIB, MIB),
            None
        );
        assert_eq!(SpaceGauge::default().vouches(0, 1), None);
        // A quarter of the room above the reserve is the most a measure serves.
        let mut g = measured(500 * MIB, Duration::ZERO);
        assert_eq!(g.vouches(100 * MIB, 99 * MIB), Some(500 * MIB));
        assert_eq!(g.vouches(100 * MIB, 100 * MIB), None);
        g.admitted = 90 * MIB;
        assert_eq!(g.vouches(100 * MIB, 10 * MIB), None);
        // At the reserve: never served from the last measure.
        assert_eq!(
            measured(100 * MIB, Duration::ZERO).vouches(100 * MIB, 1),
            None
        );
    }
}
