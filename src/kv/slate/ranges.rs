//! Byte ranges of a segment present in its local cache file (`segments.rs`).

use std::collections::BTreeMap;

/// Byte ranges present in a cache file: start -> end, disjoint, merged.
#[derive(Default)]
pub(super) struct Ranges(pub(super) BTreeMap<u64, u64>);

impl Ranges {
    pub(super) fn insert(&mut self, mut a: u64, mut b: u64) {
        if a >= b {
            return;
        }
        // Merge with every range touching [a, b).
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=b)
            .rev()
            .take_while(|(_, e)| **e >= a)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            a = a.min(s);
            b = b.max(e);
        }
        self.0.insert(a, b);
    }

    pub(super) fn covers(&self, a: u64, b: u64) -> bool {
        a >= b || self.0.range(..=a).next_back().is_some_and(|(_, e)| *e >= b)
    }

    /// The parts of [a, b) not present.
    pub(super) fn missing(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = a;
        let start = self.0.range(..=a).next_back().map_or(a, |(s, _)| *s);
        for (s, e) in self.0.range(start..b) {
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
}

#[cfg(test)]
mod tests {
    use super::Ranges;

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
        assert_eq!(r.0.len(), 1);
        assert!(r.missing(0, 100).is_empty());
    }
}
