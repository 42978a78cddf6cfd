//! A restore that commits as its daemon dies (issue 25): the volume journals what the
//! kernel must learn before the restore's batch commits, and the daemon that takes the mount
//! over finishes it. A recording journal and kernel link stand in for the state file and the
//! FUSE connection; the in-memory kv for the store.

#[path = "core/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{default_id, mem_backend};
use parking_lot::Mutex;
use snapfs::fs::{
    Container, HandleRecord, KernelDrops, KernelLink, MountJournal, RestoreIntent, Resumed, Volume,
    VolumeOptions, ROOT_INO, ROOT_KERNEL_INO,
};
use snapfs::ids::{Epoch, Fh, Ino};
use snapfs::store::Store;

const ME: snapfs::fs::Caller = harness::ME;

/// Records what a volume journals.
#[derive(Default)]
struct Journal {
    next_fh: Mutex<u64>,
    begun: Mutex<Vec<RestoreIntent>>,
    done: Mutex<u32>,
    renumbered: Mutex<Vec<(u64, Vec<Ino>)>>,
}

impl MountJournal for Journal {
    fn open(&self, _rec: HandleRecord) -> Fh {
        let mut n = self.next_fh.lock();
        *n += 1;
        Fh::new(*n)
    }
    fn close(&self, _fh: Fh) {}
    fn view(&self, _slot: u64, _epoch: Epoch, _name: &str) {}
    fn generation(&self, _floor: u64) {}
    fn renumbered(&self, slot: u64, inos: &[Ino]) {
        self.renumbered.lock().push((slot, inos.to_vec()));
    }
    fn restore_begun(&self, intent: &RestoreIntent) {
        self.begun.lock().push(intent.clone());
    }
    fn restore_done(&self) {
        *self.done.lock() += 1;
    }
}

/// Records what the volume asks the kernel to drop.
#[derive(Default)]
struct Link {
    drops: Mutex<Vec<KernelDrops>>,
}

impl KernelLink for Link {
    fn invalidate(&self, drops: KernelDrops, _wait: Option<Duration>) -> bool {
        self.drops.lock().push(drops);
        true
    }

    /// Nothing is cached in a kernel here: written back at once.
    fn write_back(&self, _inos: &[snapfs::ids::KernelIno], _wait: Duration) -> bool {
        true
    }
}

fn write(fs: &snapfs::fs::Fs, name: &[u8], text: &str) {
    let (ino, _, fh) = fs.create(ROOT_INO, name, 0o644, 0, ME).expect("create");
    fs.write(ino, Some(fh), 0, text.as_bytes(), false)
        .expect("write");
    fs.release(fh).expect("release");
}

/// A mounted volume with `a` in a snapshot and `b` created after it; then a restore to the
/// snapshot. Returns the store, the container id and what the journal got.
fn restored() -> (Arc<Store>, snapfs::ids::ContainerId, Arc<Journal>) {
    let store = Arc::new(Store::init(mem_backend().kv(), 4096).expect("init"));
    let id = default_id(&store);
    let container = Container::new(store.clone(), &id);
    let volume = Volume::new(container.clone(), VolumeOptions::default()).expect("volume");
    let journal = Arc::new(Journal::default());
    volume.set_journal(journal.clone());
    let link = Arc::new(Link::default());
    volume.set_kernel_link(link.clone());
    write(volume.head(), b"a", "in the snapshot");
    let snap = container.snapshot(Some("s"), None).expect("snapshot");
    write(volume.head(), b"b", "after it");
    // Kernel numbers of `a` and `b` the kernel would know.
    volume.lookup(ROOT_KERNEL_INO, b"a").expect("lookup a");
    volume.lookup(ROOT_KERNEL_INO, b"b").expect("lookup b");
    container.restore(&snap.name).expect("restore");
    assert_eq!(journal.begun.lock().len(), 1, "the intent is journaled");
    assert_eq!(
        *journal.done.lock(),
        1,
        "and closed once the kernel was told"
    );
    let sent = link.drops.lock();
    let last = sent.last().expect("drops sent");
    assert!(
        last.entries.iter().any(|(_, n)| n == b"b"),
        "the kernel drops `b`: {last:?}"
    );
    (store, id, journal)
}

fn resumed_with(intent: Option<RestoreIntent>, unrecorded: Option<Epoch>) -> Resumed {
    Resumed {
        restore: intent,
        restore_unrecorded: unrecorded,
        ..Resumed::default()
    }
}

#[test]
fn a_restore_that_committed_as_its_daemon_died_is_finished_by_the_next() {
    let (store, id, journal) = restored();
    // The old daemon died after the commit, before the kernel heard of it: its journal
    // holds the intent and no end.
    let intent = journal.begun.lock()[0].clone();
    let container = Container::new(store.clone(), &id);
    let next = Arc::new(Journal::default());
    let volume = Volume::resume(
        container,
        VolumeOptions::default(),
        next.clone(),
        &resumed_with(Some(intent.clone()), None),
    )
    .expect("resume");
    let link = Arc::new(Link::default());
    volume.set_kernel_link(link.clone());
    volume.finish_takeover();
    let sent = link.drops.lock();
    assert_eq!(sent.len(), 1, "the drops the old daemon never sent");
    assert_eq!(sent[0].entries, intent.entries);
    assert!(sent[0].inodes.contains(&ROOT_KERNEL_INO));
    assert!(intent.inodes.iter().all(|i| sent[0].inodes.contains(i)));
    assert_eq!(*next.done.lock(), 1, "the intent is closed");
    if let Some(slot) = intent.slot {
        assert!(
            next.renumbered
                .lock()
                .iter()
                .any(|(s, inos)| *s == slot && *inos == intent.files),
            "the renumbering is journaled again"
        );
    }
    // `b` is gone from the head the new daemon serves.
    assert!(volume.lookup(ROOT_KERNEL_INO, b"b").is_err());
    // Once finished, nothing more is sent.
    drop(sent);
    volume.finish_takeover();
    assert_eq!(link.drops.lock().len(), 1);
}

#[test]
fn a_restore_that_never_committed_is_forgotten() {
    let (store, id, _journal) = restored();
    let container = Container::new(store.clone(), &id);
    let head = store.head(&id).expect("head").epoch;
    // An intent for a restore begun from the current head: its batch never committed.
    let intent = RestoreIntent {
        old_head: head,
        slot: None,
        files: Vec::new(),
        entries: vec![(ROOT_KERNEL_INO, b"a".to_vec())],
        inodes: Vec::new(),
    };
    let next = Arc::new(Journal::default());
    let volume = Volume::resume(
        container,
        VolumeOptions::default(),
        next.clone(),
        &resumed_with(Some(intent), None),
    )
    .expect("resume");
    let link = Arc::new(Link::default());
    volume.set_kernel_link(link.clone());
    volume.finish_takeover();
    assert!(link.drops.lock().is_empty(), "nothing to tell the kernel");
    assert_eq!(*next.done.lock(), 1, "the intent is closed");
}

#[test]
fn a_committed_restore_too_large_to_journal_ends_the_mount() {
    let (store, id, journal) = restored();
    let old = journal.begun.lock()[0].old_head;
    let r = Volume::resume(
        Container::new(store.clone(), &id),
        VolumeOptions::default(),
        Arc::new(Journal::default()),
        &resumed_with(None, Some(old)),
    );
    assert!(r.is_err(), "the mount cannot be served with stale caches");
    // Begun from the current head: it never committed; the mount goes on.
    let head = store.head(&id).expect("head").epoch;
    Volume::resume(
        Container::new(store, &id),
        VolumeOptions::default(),
        Arc::new(Journal::default()),
        &resumed_with(None, Some(head)),
    )
    .expect("resume");
}
