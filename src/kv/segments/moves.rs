//! Moves without copies. The store moves a version between epochs (reclaim merging an epoch
//! into its neighbour) by deleting it under one key and putting the same bytes under another
//! key of the same *base* (the key without its epoch): read through the layer, that would
//! append the bytes again. With the base rule the opener hands over (`SegmentOptions::
//! base_len`), a batch's put of a value equal to the bytes of a reference the same batch
//! deletes, under a key of the same base, takes that reference instead: no bytes written,
//! the live counters unchanged. An entry in a segment then may be referenced from another key
//! of its base than the one it was written for, so a repack looks for its holders among every
//! version of that base (`holders`).

use std::collections::HashMap;

use super::format::{self, Ref, Stored};
use super::SegmentedKv;
use crate::kv::{prefix_end, read_keys, BatchOp, Dir, KvResult, Space};

/// Freed references by (length, CRC): the base each was under, and the reference.
type Free = HashMap<(u32, u32), Vec<(Vec<u8>, Ref)>>;

/// The references a batch frees that a put of the same bytes may take.
#[derive(Default)]
pub(super) struct Pool {
    free: Free,
    /// References read while building the pool (the write path asks for them again).
    pub(super) prefetched: HashMap<Vec<u8>, Option<Ref>>,
}

impl SegmentedKv {
    fn base_of<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        let rule = self.opts.base_len?;
        key.get(..rule(Space::Data, key)?)
    }

    /// The pool of `ops`: every data key's stored reference (each put or delete takes the
    /// one it replaces off its segment's live bytes, `current_ref`), and, when the batch puts
    /// data, the references of the keys whose only operation in it is a delete.
    pub(super) fn move_pool(&self, ops: &[BatchOp]) -> KvResult<Pool> {
        let mut pool = Pool::default();
        self.prefetch(ops, &mut pool)?;
        if self.opts.base_len.is_none() {
            return Ok(pool);
        }
        let mut count: HashMap<&[u8], (u32, bool)> = HashMap::new();
        let mut puts = false;
        for op in ops {
            match op {
                BatchOp::Put(Space::Data, k, _) => {
                    count.entry(k).or_default().0 += 1;
                    puts = true;
                }
                BatchOp::Delete(Space::Data, k) => {
                    let c = count.entry(k).or_default();
                    c.0 += 1;
                    c.1 = true;
                }
                _ => {}
            }
        }
        if !puts {
            // Nothing to take the freed references (an unlink of a large file frees a
            // reference per block).
            return Ok(pool);
        }
        for (key, (n, deleted)) in count {
            if n != 1 || !deleted {
                continue;
            }
            let Some(base) = self.base_of(key) else {
                continue;
            };
            if let Some(Some(r)) = pool.prefetched.get(key) {
                pool.free
                    .entry((r.len, r.crc))
                    .or_default()
                    .push((base.to_vec(), *r));
            }
        }
        Ok(pool)
    }

    /// Reads into `pool.prefetched` the references stored under the data keys `ops` puts or
    /// deletes: a write's blocks, or a deleted file's, are neighbouring keys, read in one
    /// scan instead of one point read each (~5% of the serving thread in a 1 MiB write;
    /// most of an unlink of a large file), see [`read_keys`].
    fn prefetch(&self, ops: &[BatchOp], pool: &mut Pool) -> KvResult<()> {
        let mut keys: Vec<&[u8]> = ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put(Space::Data, k, _) | BatchOp::Delete(Space::Data, k) => {
                    Some(k.as_slice())
                }
                _ => None,
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let run = self.opts.data_run.unwrap_or(|_| &[]);
        read_keys(&*self.inner, Space::Data, &keys, run, |k, raw| {
            let r = match raw.map(format::parse) {
                Some(Stored::Ref(r)) => Some(r),
                _ => None,
            };
            pool.prefetched.insert(k.to_vec(), r);
        })
    }

    /// A reference from `pool` holding exactly `value`, for a put under `key` of the same
    /// base, taken out of the pool.
    pub(super) fn take_moved(
        &self,
        pool: &mut Pool,
        key: &[u8],
        value: &[u8],
    ) -> KvResult<Option<Ref>> {
        if pool.free.is_empty() {
            return Ok(None);
        }
        let Some(base) = self.base_of(key) else {
            return Ok(None);
        };
        let Ok(len) = u32::try_from(value.len()) else {
            return Ok(None);
        };
        let Some(cands) = pool.free.get_mut(&(len, crc32fast::hash(value))) else {
            return Ok(None);
        };
        let Some(i) = cands.iter().position(|(b, _)| b == base) else {
            return Ok(None);
        };
        let r = cands[i].1;
        // Same length and CRC: compare the bytes themselves before sharing them.
        if self.read_ref(&r)? != value {
            return Ok(None);
        }
        cands.swap_remove(i);
        Ok(Some(r))
    }

    /// The keys that reference the value at `off` of segment `seg`, written for `key`: `key`
    /// itself, or with the base rule any version of its base.
    pub(super) fn holders(&self, key: &[u8], seg: u64, off: u64) -> KvResult<Vec<Vec<u8>>> {
        let is_it = |raw: &[u8]| matches!(format::parse(raw), Stored::Ref(r) if r.seg == seg && r.off == off);
        let Some(base) = self.base_of(key) else {
            return Ok(match self.stored_ref(key)? {
                Some(r) if r.seg == seg && r.off == off => vec![key.to_vec()],
                _ => Vec::new(),
            });
        };
        let mut out = Vec::new();
        self.inner.scan(
            Space::Data,
            base,
            &prefix_end(base),
            Dir::Forward,
            &mut |k, raw| {
                if is_it(raw) {
                    out.push(k.to_vec());
                }
                true
            },
        )?;
        Ok(out)
    }
}
