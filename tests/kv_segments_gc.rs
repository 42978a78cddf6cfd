//! Deleting drained segments, seen from the writer: a removal that takes long (a 64 MiB
//! file's extents freed and discarded) holds up no write, and a removal that fails leaves
//! an orphan, which the next sweep removes, losing nothing.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snapfs::kv::segments::{Listed, SegmentDir, SegmentStore, SegmentedKv};
use snapfs::kv::{Kv, Space};

#[macro_use]
mod kv_common;

use kv_common::*;

/// What a removal does while the test says so.
enum OnRemove {
    /// Removes.
    Remove,
    /// Says it has started, then waits until released.
    Wait {
        started: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    },
    /// Fails, removing nothing.
    Fail,
}

/// Segment files in a directory, with removals the test controls.
struct ControlledStore {
    files: SegmentDir,
    on_remove: Mutex<OnRemove>,
    removed: AtomicUsize,
}

impl SegmentStore for ControlledStore {
    fn create(&self, seg: u64) -> std::io::Result<()> {
        self.files.create(seg)
    }
    fn append_parts(&self, seg: u64, off: u64, parts: &[&[u8]]) -> std::io::Result<()> {
        self.files.append_parts(seg, off, parts)
    }
    fn sync(&self, seg: u64, upto: u64) -> std::io::Result<()> {
        self.files.sync(seg, upto)
    }
    fn read_at(&self, seg: u64, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.files.read_at(seg, off, len)
    }
    fn len_of(&self, seg: u64) -> std::io::Result<u64> {
        self.files.len_of(seg)
    }
    fn list(&self) -> std::io::Result<Vec<Listed>> {
        self.files.list()
    }
    fn path(&self) -> &Path {
        self.files.path()
    }
    fn remove(&self, seg: u64) -> std::io::Result<()> {
        let on = self.on_remove.lock().expect("lock");
        match &*on {
            OnRemove::Remove => {}
            OnRemove::Wait { started, release } => {
                let _ = started.send(());
                // The test releases it, or gives up (then the sender is gone).
                let _ = release.recv_timeout(Duration::from_secs(60));
            }
            OnRemove::Fail => return Err(std::io::Error::other("planted failure")),
        }
        drop(on);
        self.removed.fetch_add(1, Ordering::SeqCst);
        self.files.remove(seg)
    }
}

fn value(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// A store in `dir` over [`ControlledStore`], holding sealed segments with no live bytes
/// (keys `a*` written and deleted, then `b*` written so that every old segment is sealed).
fn store_with_drained_segments(dir: &Path) -> (Arc<SegmentedKv>, Arc<ControlledStore>) {
    let store = Arc::new(ControlledStore {
        files: SegmentDir::open(&dir.join("segments"), false).expect("segment dir"),
        on_remove: Mutex::new(OnRemove::Remove),
        removed: AtomicUsize::new(0),
    });
    let rocks = open_rocks(&dir.join("db"));
    let kv = SegmentedKv::open_in(Box::new(rocks), store.clone(), small_segment_options())
        .expect("open segments");
    for i in 0..40u8 {
        put(&kv, Space::Data, &[b'a', i], &value(i, 4000));
    }
    for i in 0..40u8 {
        del(&kv, Space::Data, &[b'a', i]);
    }
    for i in 0..20u8 {
        put(&kv, Space::Data, &[b'b', i], &value(100 + i, 4000));
    }
    assert!(segment_files(dir).len() >= 3, "160 KB in 64 KiB segments");
    (Arc::new(kv), store)
}

#[test]
fn removing_drained_segments_holds_up_no_write() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let (kv, store) = store_with_drained_segments(dir.path());
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    *store.on_remove.lock().expect("lock") = OnRemove::Wait {
        started: started_tx,
        release: release_rx,
    };
    let collector = {
        let kv = kv.clone();
        std::thread::spawn(move || kv.maintenance().expect("maintenance").compact(Space::Data))
    };
    started
        .recv_timeout(Duration::from_secs(60))
        .expect("no segment removal started");
    // A removal is under way (and stays so): a write and a read must still go through.
    let (done_tx, done) = mpsc::channel();
    let writer = {
        let kv = kv.clone();
        std::thread::spawn(move || {
            for i in 0..20u8 {
                put(&*kv, Space::Data, &[b'c', i], &value(200 + i, 4000));
            }
            let got = get(&*kv, Space::Data, &[b'b', 7]);
            let _ = done_tx.send(got);
        })
    };
    let wrote = done.recv_timeout(Duration::from_secs(30));
    // Let every removal go, whatever the writer did, so that nothing is left hanging (the
    // waiting removal holds the lock of `on_remove` until released).
    drop(release);
    *store.on_remove.lock().expect("lock") = OnRemove::Remove;
    collector
        .join()
        .expect("collector thread")
        .expect("collect");
    let got = wrote.expect("a write waited for a segment file being removed");
    writer.join().expect("writer thread");
    assert_eq!(got, Some(value(107, 4000)));
    assert!(store.removed.load(Ordering::SeqCst) >= 2);
    for i in 0..20u8 {
        assert_eq!(
            get(&*kv, Space::Data, &[b'c', i]),
            Some(value(200 + i, 4000))
        );
    }
    assert_segments_clean(&*kv);
}

#[test]
fn a_segment_whose_removal_failed_is_an_orphan_the_next_sweep_removes() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let (kv, store) = store_with_drained_segments(dir.path());
    let before = segment_files(dir.path());
    *store.on_remove.lock().expect("lock") = OnRemove::Fail;
    let m = kv.maintenance().expect("maintenance");
    // The failure is the file's alone: the round goes on, the records are gone.
    m.compact(Space::Data).expect("collect");
    let now = segment_files(dir.path());
    assert!(
        before.iter().all(|p| now.contains(p)),
        "a failed removal removed: {before:?} then {now:?}"
    );
    let check = kv.segments().expect("segments");
    let report = check.check().expect("check");
    let orphans = report.orphans.clone();
    assert!(
        orphans.len() >= 2
            && orphans.iter().all(|(seg, _)| before
                .contains(&dir.path().join("segments").join(format!("{seg:016x}.seg")))),
        "drained segments without records are orphans: {report:?}"
    );
    assert!(report.bad_refs.is_empty(), "{report:?}");
    *store.on_remove.lock().expect("lock") = OnRemove::Remove;
    m.compact(Space::Data).expect("collect");
    let after = check.check().expect("check");
    assert!(after.orphans.is_empty(), "{after:?}");
    for (seg, _) in &orphans {
        let file = dir.path().join("segments").join(format!("{seg:016x}.seg"));
        assert!(!file.exists(), "orphan {file:?} still there");
    }
    for i in 0..20u8 {
        assert_eq!(
            get(&*kv, Space::Data, &[b'b', i]),
            Some(value(100 + i, 4000))
        );
        assert_eq!(get(&*kv, Space::Data, &[b'a', i]), None);
    }
    assert_segments_clean(&*kv);
}
