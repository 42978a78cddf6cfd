//! The transfers a daemon runs (sends and receives of snapshot streams), with their
//! progress, for `GET /transfers`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::codec::Ts;
use crate::stream::Progress;

/// Whether a transfer sends or receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Send,
    Receive,
}

/// One running transfer.
#[derive(Debug)]
pub struct Transfer {
    pub id: u64,
    pub direction: Direction,
    pub container: String,
    /// The snapshot (for a resumed send: as its token names it).
    pub snapshot: String,
    pub started: Ts,
    pub progress: Progress,
}

impl Transfer {
    /// (done, total) bytes: the total grows to what is done when the estimate was short.
    pub fn transfer_progress(&self) -> (u64, u64) {
        let (done, total) = self.progress.get();
        (done, total.max(done))
    }
}

/// The running transfers (a leaf lock, held for a map update or a copy).
#[derive(Default)]
pub struct Transfers {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Arc<Transfer>>>,
}

/// A registered transfer; it leaves the list when this drops.
pub struct Registered<'a> {
    list: &'a Transfers,
    pub transfer: Arc<Transfer>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.list.running.lock().remove(&self.transfer.id);
    }
}

impl Transfers {
    pub fn start(&self, direction: Direction, container: &str, snapshot: &str) -> Registered<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let transfer = Arc::new(Transfer {
            id,
            direction,
            container: container.to_string(),
            snapshot: snapshot.to_string(),
            started: Ts::now(),
            progress: Progress::default(),
        });
        self.running.lock().insert(id, transfer.clone());
        Registered {
            list: self,
            transfer,
        }
    }

    /// The running transfers, oldest first.
    pub fn list(&self) -> Vec<Arc<Transfer>> {
        self.running.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_listed_while_it_runs() {
        let t = Transfers::default();
        let a = t.start(Direction::Send, "web", "s1");
        {
            let b = t.start(Direction::Receive, "db", "s2");
            b.transfer.progress.set_total(10);
            b.transfer.progress.add(4);
            let l = t.list();
            assert_eq!(l.len(), 2);
            assert_eq!(l[1].progress.get(), (4, 10));
        }
        assert_eq!(t.list().len(), 1);
        assert_eq!(t.list()[0].id, a.transfer.id);
        drop(a);
        assert!(t.list().is_empty());
    }
}
