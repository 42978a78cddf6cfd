//! The epoch tree in memory, indexed so that no common operation scans it: records by id,
//! children by parent, the retired set, and reclaim's work queue (the retired epochs whose
//! situation changed since reclaim last looked at them).
//!
//! Invariant: the indexes always agree with the records; every change goes through
//! [`EpochTree::insert`] or [`EpochTree::remove`], which also queue the retired epochs the
//! change concerns (the epoch itself and its old and new parent).

use std::collections::{BTreeSet, HashMap};

use super::{EpochKind, EpochRecord};
use crate::ids::Epoch;

#[derive(Default)]
pub struct EpochTree {
    recs: HashMap<Epoch, EpochRecord>,
    /// Children by parent (`None`: the root epochs).
    children: HashMap<Option<Epoch>, BTreeSet<Epoch>>,
    retired: BTreeSet<Epoch>,
    /// Retired epochs reclaim should look at again.
    dirty: BTreeSet<Epoch>,
}

impl EpochTree {
    /// Builds the indexes over `recs`; every retired epoch starts queued for reclaim.
    pub fn new(recs: HashMap<Epoch, EpochRecord>) -> EpochTree {
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

    pub fn get(&self, e: Epoch) -> Option<&EpochRecord> {
        self.recs.get(&e)
    }

    /// A copy of every record (for checks).
    pub fn to_map(&self) -> HashMap<Epoch, EpochRecord> {
        self.recs.clone()
    }

    /// The children of `e`, ascending.
    pub fn children(&self, e: Epoch) -> Vec<Epoch> {
        self.children
            .get(&Some(e))
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Queues `e` for reclaim if it is retired.
    pub fn mark_dirty(&mut self, e: Epoch) {
        if self.retired.contains(&e) {
            self.dirty.insert(e);
        }
    }

    fn mark_parent_dirty(&mut self, parent: Option<Epoch>) {
        if let Some(p) = parent {
            self.mark_dirty(p);
        }
    }

    /// Adds or replaces the record of `e`.
    pub fn insert(&mut self, e: Epoch, rec: EpochRecord) {
        let new_parent = rec.parent;
        let retired = rec.kind == EpochKind::Retired;
        if let Some(old) = self.recs.insert(e, rec) {
            if old.parent != new_parent {
                self.unlink_child(old.parent, e);
                self.mark_parent_dirty(old.parent);
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
        self.mark_parent_dirty(new_parent);
    }

    /// Takes `e` out of the tree (its children must have been moved first).
    pub fn remove(&mut self, e: Epoch) -> Option<EpochRecord> {
        let old = self.recs.remove(&e)?;
        self.unlink_child(old.parent, e);
        self.retired.remove(&e);
        self.dirty.remove(&e);
        if self.children.get(&Some(e)).is_some_and(BTreeSet::is_empty) {
            self.children.remove(&Some(e));
        }
        self.mark_parent_dirty(old.parent);
        Some(old)
    }

    fn unlink_child(&mut self, parent: Option<Epoch>, e: Epoch) {
        if let Some(set) = self.children.get_mut(&parent) {
            set.remove(&e);
            if set.is_empty() {
                self.children.remove(&parent);
            }
        }
    }

    /// The oldest queued retired epoch, taken off the queue.
    pub fn pop_dirty(&mut self) -> Option<Epoch> {
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
    pub fn chain_members(&self, e: Epoch) -> Vec<Epoch> {
        let mut members = vec![e];
        let mut cur = e;
        while let Some(parent) = self.recs.get(&cur).and_then(|r| r.parent) {
            if members.len() > self.recs.len() {
                break;
            }
            members.push(parent);
            cur = parent;
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
        EpochRecord {
            parent: (parent != 0).then_some(Epoch::new(parent)),
            kind,
        }
    }

    fn e(n: u64) -> Epoch {
        Epoch::new(n)
    }

    fn es(ns: &[u64]) -> Vec<Epoch> {
        ns.iter().copied().map(Epoch::new).collect()
    }

    #[test]
    fn indexes_follow_inserts_and_removes() {
        let mut t = EpochTree::new(HashMap::from([
            (e(1), rec(0, EpochKind::Frozen)),
            (e(2), rec(1, EpochKind::Frozen)),
            (
                e(3),
                rec(
                    2,
                    EpochKind::Head {
                        container: crate::ids::ContainerId::new("c"),
                    },
                ),
            ),
        ]));
        assert_eq!(t.children(e(1)), es(&[2]));
        assert!(!t.has_dirty());
        // Deleting snapshot 2 queues it.
        t.insert(e(2), rec(1, EpochKind::Retired));
        assert_eq!(t.get(e(2)).map(|r| &r.kind), Some(&EpochKind::Retired));
        assert_eq!(t.pop_dirty(), Some(e(2)));
        assert_eq!(t.pop_dirty(), None);
        // A change to its child (head frozen, new head) queues it again.
        t.insert(e(3), rec(2, EpochKind::Frozen));
        t.insert(
            e(4),
            rec(
                3,
                EpochKind::Head {
                    container: crate::ids::ContainerId::new("c"),
                },
            ),
        );
        assert_eq!(t.pop_dirty(), Some(e(2)));
        // Merging 2 away: its child takes its parent.
        t.insert(e(3), rec(1, EpochKind::Frozen));
        t.remove(e(2));
        assert_eq!(t.children(e(1)), es(&[3]));
        assert!(t.children(e(2)).is_empty());
        assert_eq!(t.chain_members(e(4)), es(&[1, 3, 4]));
        assert!(t.retired.is_empty());
        assert_eq!(t.pop_dirty(), None);
    }
}
