//! In-memory [`Kv`] backend.
//!
//! Each [`Space`] is one ordered map held behind an `Arc`. A read view clones the two `Arc`s
//! (cheap), and a writer uses `Arc::make_mut`, which copies a map only while some view still
//! shares it. So views are true point-in-time snapshots and never block writers.
//!
//! Nothing is persisted: `sync` is a no-op, and the backend has neither capability
//! (`maintenance()` and `status()` are `None`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Batch, BatchOp, Dir, Kv, KvRead, KvResult, Maintenance, Pair, Space, Status, Visit};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// One immutable map per space, indexed by [`space_index`].
type Maps = [Arc<Map>; 3];

fn space_index(space: Space) -> usize {
    match space {
        Space::Meta => 0,
        Space::Data => 1,
        Space::Segments => 2,
    }
}

/// An in-memory ordered key-value store (for tests and ephemeral mounts).
#[derive(Default)]
pub struct MemKv {
    maps: RwLock<Maps>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn snapshot(&self) -> MemView {
        let maps = self.maps.read();
        MemView {
            maps: [
                Arc::clone(&maps[0]),
                Arc::clone(&maps[1]),
                Arc::clone(&maps[2]),
            ],
        }
    }

    fn map(&self, space: Space) -> Arc<Map> {
        Arc::clone(&self.maps.read()[space_index(space)])
    }
}

impl std::fmt::Debug for MemKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let maps = self.maps.read();
        f.debug_struct("MemKv")
            .field("meta_keys", &maps[0].len())
            .field("data_keys", &maps[1].len())
            .finish()
    }
}

/// A point-in-time view of a [`MemKv`].
struct MemView {
    maps: Maps,
}

fn map_get(map: &Map, key: &[u8]) -> Option<Vec<u8>> {
    map.get(key).cloned()
}

fn map_seek_for_prev(map: &Map, lower: &[u8], key: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if lower > key {
        return None;
    }
    map.range::<[u8], _>((Bound::Included(lower), Bound::Included(key)))
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()))
}

fn map_scan(
    map: &Map,
    start: &[u8],
    end: &[u8],
    dir: Dir,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) {
    // `BTreeMap::range` panics on an inverted range; an empty or inverted range visits nothing.
    if start >= end {
        return;
    }
    let range = map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
    match dir {
        Dir::Forward => {
            for (k, v) in range {
                if !f(k, v) {
                    break;
                }
            }
        }
        Dir::Reverse => {
            for (k, v) in range.rev() {
                if !f(k, v) {
                    break;
                }
            }
        }
    }
}

impl KvRead for MemView {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(map_get(&self.maps[space_index(space)], key))
    }

    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        Ok(map_seek_for_prev(
            &self.maps[space_index(space)],
            lower,
            key,
        ))
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        map_scan(&self.maps[space_index(space)], start, end, dir, f);
        Ok(())
    }
}

impl KvRead for MemKv {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(map_get(&self.maps.read()[space_index(space)], key))
    }

    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        Ok(map_seek_for_prev(
            &self.maps.read()[space_index(space)],
            lower,
            key,
        ))
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        // Scan a snapshot of the map rather than holding the lock: the callback may write to
        // this store without deadlocking, and the scan stays consistent.
        let map = self.map(space);
        map_scan(&map, start, end, dir, f);
        Ok(())
    }
}

impl Kv for MemKv {
    fn writes_outlive_the_process(&self) -> bool {
        false
    }

    fn write(&self, batch: Batch, _durable: bool) -> KvResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut maps = self.maps.write();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(space, key, value) => {
                    Arc::make_mut(&mut maps[space_index(space)]).insert(key, value);
                }
                BatchOp::Delete(space, key) => {
                    let slot = &mut maps[space_index(space)];
                    // Avoid copying a shared map for a delete that changes nothing.
                    if slot.contains_key(&key) {
                        Arc::make_mut(slot).remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> KvResult<()> {
        Ok(())
    }

    fn read_view(&self) -> Box<dyn KvRead + '_> {
        Box::new(self.snapshot())
    }

    /// Nothing on disk, nothing to compact.
    fn maintenance(&self) -> Option<&dyn Maintenance> {
        None
    }

    /// Always writable, never stalls.
    fn status(&self) -> Option<&dyn Status> {
        None
    }

    fn segments(&self) -> Option<&dyn super::segments::SegmentCheck> {
        None
    }
}
