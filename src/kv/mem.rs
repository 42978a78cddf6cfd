//! Temporary in-memory backend (replaced by the full one).
use super::*;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

type Map = Arc<BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
pub struct MemKv {
    maps: RwLock<[Map; 2]>,
}

impl MemKv {
    pub fn new() -> Self {
        Self::default()
    }
}

fn idx(s: Space) -> usize {
    match s {
        Space::Meta => 0,
        Space::Data => 1,
    }
}

struct View([Map; 2]);

fn scan_map(
    m: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: &[u8],
    dir: Dir,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) {
    if start >= end {
        return;
    }
    let r = m.range::<[u8], _>((
        std::ops::Bound::Included(start),
        std::ops::Bound::Excluded(end),
    ));
    match dir {
        Dir::Forward => {
            for (k, v) in r {
                if !f(k, v) {
                    break;
                }
            }
        }
        Dir::Reverse => {
            for (k, v) in r.rev() {
                if !f(k, v) {
                    break;
                }
            }
        }
    }
}

impl KvRead for View {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Ok(self.0[idx(space)].get(key).cloned())
    }
    fn seek_for_prev(
        &self,
        space: Space,
        lower: &[u8],
        key: &[u8],
    ) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        let m = &self.0[idx(space)];
        Ok(m.range::<[u8], _>((
            std::ops::Bound::Included(lower),
            std::ops::Bound::Included(key),
        ))
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone())))
    }
    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        dir: Dir,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> KvResult<()> {
        scan_map(&self.0[idx(space)], start, end, dir, f);
        Ok(())
    }
}

impl MemKv {
    fn view(&self) -> View {
        View(self.maps.read().clone())
    }
}

impl KvRead for MemKv {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.view().get(space, key)
    }
    fn seek_for_prev(
        &self,
        space: Space,
        lower: &[u8],
        key: &[u8],
    ) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        self.view().seek_for_prev(space, lower, key)
    }
    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        dir: Dir,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> KvResult<()> {
        self.view().scan(space, start, end, dir, f)
    }
}

impl Kv for MemKv {
    fn write(&self, batch: Batch, _durable: bool) -> KvResult<()> {
        let mut maps = self.maps.write();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(s, k, v) => {
                    Arc::make_mut(&mut maps[idx(s)]).insert(k, v);
                }
                BatchOp::Delete(s, k) => {
                    Arc::make_mut(&mut maps[idx(s)]).remove(&k);
                }
            }
        }
        Ok(())
    }
    fn sync(&self) -> KvResult<()> {
        Ok(())
    }
    fn read_view(&self) -> Box<dyn KvRead + '_> {
        Box::new(self.view())
    }
    fn compact(&self, _space: Space) -> KvResult<()> {
        Ok(())
    }
    fn disk_usage(&self) -> u64 {
        0
    }
    fn path(&self) -> Option<&Path> {
        None
    }
}
