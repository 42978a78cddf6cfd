//! The epoch tree in memory, indexed so that no common operation scans it: records by id,
//! children by parent, the retired set, and reclaim's work queue (the retired epochs whose
//! situation changed since reclaim last looked at them).
//!
//! Invariant: the indexes always agree with the records; every change goes through
//! [`EpochTree::insert`] or [`EpochTree::remove`], which also queue the retired epochs the
//! change concerns (the epoch itself and its old and new parent).

use std::collections::{BTreeSet, HashMap};

use super::{EpochKind, EpochRecord};

#[derive(Default)]
pub struct EpochTree {
    recs: HashMap<u64, EpochRecord>,
    children: HashMap<u64, BTreeSet<u64>>,
    retired: BTreeSet<u64>,
    /// Retired epochs reclaim should look at again.
    dirty: BTreeSet<u64>,
}

impl EpochTree {
    /// Builds the indexes over `recs`; every retired epoch starts queued for reclaim.
    pub fn new(recs: HashMap<u64, EpochRecord>) -> EpochTree {
        let mut t = EpochTree::default();
        for (e, rec) in recs {
            t.insert(e, rec);
        }
        t
    }

    /// How many epochs are retired (waiting for reclaim, or kept as a shared base).
    pub fn retired_count(&self) -> usize {
        self.retired.len()
    }

    pub fn get(&self, e: u64) -> Option<&EpochRecord> {
        self.recs.get(&e)
    }

    /// A copy of every record (for checks).
    pub fn to_map(&self) -> HashMap<u64, EpochRecord> {
        self.recs.clone()
    }

    /// The children of `e`, ascending.
    pub fn children(&self, e: u64) -> Vec<u64> {
        self.children
            .get(&e)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Queues `e` for reclaim if it is retired.
    pub fn mark_dirty(&mut self, e: u64) {
        if self.retired.contains(&e) {
            self.dirty.insert(e);
        }
    }

    /// Adds or replaces the record of `e`.
    pub fn insert(&mut self, e: u64, rec: EpochRecord) {
        let new_parent = rec.parent;
        let retired = rec.kind == EpochKind::Retired;
        if let Some(old) = self.recs.insert(e, rec) {
            if old.parent != new_parent {
                self.unlink_child(old.parent, e);
                self.mark_dirty(old.parent);
            }
        }
        self.children.entry(new_parent).or_default().insert(e);
        if retired {
            self.retired.insert(e);
        } else {
            self.retired.remove(&e);
            self.dirty.remove(&e);
        }
        self.mark_dirty(e);
        self.mark_dirty(new_parent);
    }

    /// Takes `e` out of the tree (its children must have been moved first).
    pub fn remove(&mut self, e: u64) -> Option<EpochRecord> {
        let old = self.recs.remove(&e)?;
        self.unlink_child(old.parent, e);
        self.retired.remove(&e);
        self.dirty.remove(&e);
        if self.children.get(&e).is_some_and(BTreeSet::is_empty) {
            self.children.remove(&e);
        }
        self.mark_dirty(old.parent);
        Some(old)
    }

    fn unlink_child(&mut self, parent: u64, e: u64) {
        if let Some(set) = self.children.get_mut(&parent) {
            set.remove(&e);
            if set.is_empty() {
                self.children.remove(&parent);
            }
        }
    }

    /// The oldest queued retired epoch, taken off the queue.
    pub fn pop_dirty(&mut self) -> Option<u64> {
        while let Some(e) = self.dirty.pop_first() {
            if self.retired.contains(&e) {
                return Some(e);
            }
        }
        None
    }

    pub fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// `e` and its ancestors, ascending (a child's id is always greater than its parent's).
    pub fn chain_members(&self, e: u64) -> Vec<u64> {
        let mut members = vec![e];
        let mut cur = e;
        while let Some(rec) = self.recs.get(&cur) {
            if rec.parent == 0 || members.len() > self.recs.len() {
                break;
            }
            members.push(rec.parent);
            cur = rec.parent;
        }
        members.reverse();
        if !members.is_sorted() {
            members.sort_unstable();
        }
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(parent: u64, kind: EpochKind) -> EpochRecord {
        EpochRecord { parent, kind }
    }

    #[test]
    fn indexes_follow_inserts_and_removes() {
        let mut t = EpochTree::new(HashMap::from([
            (1, rec(0, EpochKind::Frozen)),
            (2, rec(1, EpochKind::Frozen)),
            (
                3,
                rec(
                    2,
                    EpochKind::Head {
                        container: b"c".to_vec(),
                    },
                ),
            ),
        ]));
        assert_eq!(t.children(1), vec![2]);
        assert!(!t.has_dirty());
        // Deleting snapshot 2 queues it.
        t.insert(2, rec(1, EpochKind::Retired));
        assert_eq!(t.get(2).map(|r| &r.kind), Some(&EpochKind::Retired));
        assert_eq!(t.pop_dirty(), Some(2));
        assert_eq!(t.pop_dirty(), None);
        // A change to its child (head frozen, new head) queues it again.
        t.insert(3, rec(2, EpochKind::Frozen));
        t.insert(
            4,
            rec(
                3,
                EpochKind::Head {
                    container: b"c".to_vec(),
                },
            ),
        );
        assert_eq!(t.pop_dirty(), Some(2));
        // Merging 2 away: its child takes its parent.
        t.insert(3, rec(1, EpochKind::Frozen));
        t.remove(2);
        assert_eq!(t.children(1), vec![3]);
        assert!(t.children(2).is_empty());
        assert_eq!(t.chain_members(4), vec![1, 3, 4]);
        assert!(t.retired.is_empty());
        assert_eq!(t.pop_dirty(), None);
    }
}
