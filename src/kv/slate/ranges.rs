//! Byte ranges of a segment: those present in its local cache file, and the gaps between a
//! segment's parts in the object store (`segments.rs`).

use std::collections::BTreeMap;

/// Byte ranges present in a cache file: start -> end, disjoint, merged; with their total.
#[derive(Default)]
pub(super) struct Ranges {
    map: BTreeMap<u64, u64>,
    len: u64,
}

impl Ranges {
    /// Adds [a, b); returns how many bytes were not present before.
    pub(super) fn insert(&mut self, mut a: u64, mut b: u64) -> u64 {
        if a >= b {
            return 0;
        }
        let before = self.len;
        // Merge with every range touching [a, b).
        let touching: Vec<(u64, u64)> = self
            .map
            .range(..=b)
            .rev()
            .take_while(|(_, e)| **e >= a)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.map.remove(&s);
            self.len -= e - s;
            a = a.min(s);
            b = b.max(e);
        }
        self.map.insert(a, b);
        self.len += b - a;
        self.len - before
    }

    /// Bytes present.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn covers(&self, a: u64, b: u64) -> bool {
        a >= b
            || self
                .map
                .range(..=a)
                .next_back()
                .is_some_and(|(_, e)| *e >= b)
    }

    /// The parts of [a, b) not present.
    pub(super) fn missing(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        gaps(&self.map, a, b)
    }
}

/// The parts of [a, b) that no range of `map` holds, in order (start -> end; the non-empty
/// ranges disjoint, empty ones anywhere, even inside another).
pub(super) fn gaps(map: &BTreeMap<u64, u64>, a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a;
    // The last non-empty range starting at or before `a` is the only one that can hold it.
    let start = map
        .range(..=a)
        .rev()
        .find(|(s, e)| e > s)
        .map_or(a, |(s, _)| *s);
    for (s, e) in map.range(start..b) {
        if *e <= at {
            continue;
        }
        if *s > at {
            out.push((at, (*s).min(b)));
        }
        at = at.max(*e);
        if at >= b {
            break;
        }
    }
    if at < b {
        out.push((at, b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{gaps, Ranges};

    #[test]
    fn ranges_merge_and_report_gaps() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert!(r.covers(12, 18));
        assert!(!r.covers(15, 35));
        assert_eq!(r.missing(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
        r.insert(20, 30);
        assert!(r.covers(10, 40));
        assert_eq!(r.missing(5, 45), vec![(5, 10), (40, 45)]);
        r.insert(0, 100);
        assert_eq!(r.map.len(), 1);
        assert!(r.missing(0, 100).is_empty());
    }

    /// The total follows every insert: what it adds is what was missing.
    #[test]
    fn inserts_count_the_bytes_they_add() {
        let mut r = Ranges::default();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(15, 25), 5);
        assert_eq!(r.insert(0, 5), 5);
        assert_eq!(r.insert(12, 18), 0);
        assert_eq!(r.insert(0, 100), 80);
        assert_eq!(r.len(), 100);
    }

    /// Gaps between a segment's parts: unmerged neighbours, and an empty part (where a
    /// takeover closed the segment).
    #[test]
    fn gaps_between_parts() {
        let parts = [(0, 16), (16, 100), (200, 300), (250, 250), (300, 300)]
            .into_iter()
            .collect();
        assert!(gaps(&parts, 0, 100).is_empty());
        assert!(gaps(&parts, 260, 280).is_empty());
        assert_eq!(gaps(&parts, 50, 250), vec![(100, 200)]);
        assert_eq!(gaps(&parts, 0, u64::MAX), vec![(100, 200), (300, u64::MAX)]);
    }
}
