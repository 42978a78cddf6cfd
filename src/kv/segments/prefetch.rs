//! The references a batch's puts replace, read ahead in one scan. Every put of a data key
//! takes the reference stored under it off its segment's live bytes (`current_ref`): one
//! point read per key. A write of N blocks puts N keys next to each other (one base per
//! block, the same epoch), so one forward scan of their span answers for all of them; when
//! the span holds nothing (a write into new space, the common case of a sustained write)
//! that is one iterator step where there were N point reads (~5% of the serving thread in
//! a 1 MiB write). Versions of other epochs interleave with the keys, so the scan gives up
//! after a budget of steps and leaves the keys past that point to point reads.

use super::format::{self, Stored};
use super::moves::Pool;
use super::SegmentedKv;
use crate::kv::{successor, BatchOp, Dir, KvResult, Space};

/// Steps of the scan per key looked for (and a few more): past them, point reads.
const STEPS_PER_KEY: usize = 2;
const STEPS_EXTRA: usize = 8;

impl SegmentedKv {
    /// Reads into `pool.prefetched` the references stored under the data keys `ops` puts
    /// (when there are several), as far as one bounded scan of their span tells.
    pub(super) fn prefetch_puts(&self, ops: &[BatchOp], pool: &mut Pool) -> KvResult<()> {
        let mut keys: Vec<&[u8]> = ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put(Space::Data, k, _) if !pool.prefetched.contains_key(k) => {
                    Some(k.as_slice())
                }
                _ => None,
            })
            .collect();
        if keys.len() < 2 {
            return Ok(());
        }
        keys.sort_unstable();
        keys.dedup();
        let (Some(first), Some(last)) = (keys.first().copied(), keys.last().copied()) else {
            return Ok(());
        };
        let budget = keys.len() * STEPS_PER_KEY + STEPS_EXTRA;
        let mut steps = 0usize;
        // keys[..next] are answered: every key the scan passed is either found or absent.
        let mut next = 0usize;
        let mut stopped = false;
        self.inner.scan(
            Space::Data,
            first,
            &successor(last),
            Dir::Forward,
            &mut |k, raw| {
                while next < keys.len() && keys[next] < k {
                    pool.prefetched.insert(keys[next].to_vec(), None);
                    next += 1;
                }
                if next < keys.len() && keys[next] == k {
                    let r = match format::parse(raw) {
                        Stored::Ref(r) => Some(r),
                        _ => None,
                    };
                    pool.prefetched.insert(k.to_vec(), r);
                    next += 1;
                }
                steps += 1;
                if steps >= budget && next < keys.len() {
                    stopped = true;
                    return false;
                }
                next < keys.len()
            },
        )?;
        if !stopped {
            // The scan reached the end of the span (or answered every key): the rest hold
            // nothing.
            for k in &keys[next..] {
                pool.prefetched.insert(k.to_vec(), None);
            }
        }
        Ok(())
    }
}
