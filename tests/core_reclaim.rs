//! Reclaim at scale (no mount): deleting snapshots in any order costs what the deleted epochs
//! and their neighbours wrote, never the size of the container; every view stays intact; an
//! interrupted reclaim resumes after a reopen; chains stay short however many snapshots were
//! deleted.

#[path = "core/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use harness::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use snapfs::fs::{Fs, SetAttr, ROOT_INO};
use snapfs::keys;
use snapfs::kv::{Dir, Kv, Space};
use snapfs::store::{ReclaimControl, ReclaimStats, Store};

/// Files of the base tree (each one block plus its inode and entry: ~3 versions).
const BASE_FILES: usize = 600;

type Tree = BTreeMap<String, Vec<u8>>;

fn put(fs: &Fs, name: &str, data: &[u8]) {
    let ino = match fs.lookup(ROOT_INO, name.as_bytes()) {
        Ok((ino, _)) => ino,
        Err(_) => file(fs, name).0,
    };
    fs.setattr(
        ino,
        &SetAttr {
            size: Some(data.len() as u64),
            ..Default::default()
        },
        ME,
    )
    .expect("size");
    fs.write(ino, None, 0, data, false).expect("write");
}

fn read_tree(fs: &Fs) -> Tree {
    let fh = fs.opendir(ROOT_INO).expect("opendir");
    let entries = fs.readdir(ROOT_INO, fh, 0).expect("readdir");
    fs.releasedir(fh);
    entries
        .iter()
        .skip(2)
        .map(|e| {
            (
                String::from_utf8_lossy(&e.name).into_owned(),
                fs.read(e.ino, 0, 1 << 20).expect("read"),
            )
        })
        .collect()
}

/// Every change-index entry in the store (one per stored version).
fn versions(kv: &dyn Kv) -> u64 {
    let mut n = 0;
    kv.scan(
        Space::Meta,
        &[keys::TAG_CHANGE],
        &[keys::TAG_CHANGE + 1],
        Dir::Forward,
        &mut |_, _| {
            n += 1;
            true
        },
    )
    .expect("scan");
    n
}

fn epoch_versions(kv: &dyn Kv, e: Epoch) -> u64 {
    let start = keys::epoch_changes(e);
    let end = snapfs::kv::prefix_end(&start);
    let mut n = 0;
    kv.scan(Space::Meta, &start, &end, Dir::Forward, &mut |_, _| {
        n += 1;
        true
    })
    .expect("scan");
    n
}

struct Chain {
    fs: Fs,
    /// (snapshot name, its tree), oldest first.
    snaps: Vec<(String, Tree)>,
    /// Versions written by the epochs after the base (the small changes).
    changes: u64,
    base: u64,
}

/// A container with a base of `BASE_FILES` files, then `n` snapshots with two small changes
/// between each.
fn build(backend: &Backend, n: usize) -> Chain {
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let fs = open_default(store.clone());
    for i in 0..BASE_FILES {
        put(&fs, &format!("f{i:04}"), &[i as u8; 1000]);
    }
    let mut snaps = Vec::new();
    let mut changes = 0;
    let mut base = 0;
    for s in 0..n {
        let info = store
            .snapshot(fs.container(), None, None)
            .expect("snapshot");
        let count = epoch_versions(store.kv(), info.record.epoch);
        if s == 0 {
            base = count;
        } else {
            changes += count;
        }
        snaps.push((info.name, read_tree_cheap(&fs, s)));
        put(
            &fs,
            &format!("f{:04}", s % BASE_FILES),
            &[s as u8 ^ 0x5a; 700],
        );
        put(&fs, &format!("new{s:04}"), b"new file");
    }
    Chain {
        fs,
        snaps,
        changes,
        base,
    }
}

/// The tree is read in full only now and then (it is large); in between, `None` marks a
/// snapshot that is checked by comparison with its neighbours' known changes only.
fn read_tree_cheap(fs: &Fs, s: usize) -> Tree {
    if s.is_multiple_of(25) {
        read_tree(fs)
    } else {
        Tree::new()
    }
}

fn check_views(c: &Chain, alive: &[usize], ctx: &str) {
    let store = c.fs.store();
    for &i in alive {
        let (name, tree) = &c.snaps[i];
        if tree.is_empty() {
            continue;
        }
        let info = store
            .find_snapshot(c.fs.container(), name)
            .expect("find")
            .unwrap_or_else(|| panic!("{ctx}: snapshot {name} missing"));
        let view = Fs::frozen(store.clone(), c.fs.container(), store.snapshot_chain(&info));
        assert!(read_tree(&view) == *tree, "{ctx}: snapshot {i} differs");
    }
}

#[derive(Clone, Copy, Debug)]
enum Order {
    OldestFirst,
    NewestFirst,
    Random,
    AllButLast,
}

fn delete_in_order(order: Order) {
    const N: usize = 120;
    let backend = mem_backend();
    let c = build(&backend, N);
    let store = c.fs.store().clone();
    let head_before = read_tree(&c.fs);
    let mut idx: Vec<usize> = (0..N).collect();
    match order {
        Order::OldestFirst => {}
        Order::NewestFirst => idx.reverse(),
        Order::Random => idx.shuffle(&mut StdRng::seed_from_u64(7)),
        Order::AllButLast => {
            idx.pop();
        }
    }
    let keep = match order {
        Order::AllButLast => 1,
        _ => 0,
    };
    let mut total = ReclaimStats::default();
    let mut alive: Vec<usize> = (0..N).collect();
    for (k, &i) in idx.iter().enumerate().take(N - keep.max(10)) {
        store
            .delete_snapshot(c.fs.container(), &c.snaps[i].0)
            .expect("delete");
        alive.retain(|&a| a != i);
        let s = store.reclaim().expect("reclaim");
        total.versions_moved += s.versions_moved;
        total.versions_dropped += s.versions_dropped;
        total.versions_scanned += s.versions_scanned;
        if k.is_multiple_of(20) {
            check_views(&c, &alive, &format!("{order:?} after {k} deletions"));
            assert!(read_tree(&c.fs) == head_before, "{order:?}: head changed");
        }
    }
    check_views(&c, &alive, &format!("{order:?} at the end"));
    assert!(read_tree(&c.fs) == head_before, "{order:?}: head changed");
    eprintln!(
        "{order:?}: {total:?}, base {}, changes {}",
        c.base, c.changes
    );
    // The old algorithm moved the whole base one epoch down per oldest-first deletion:
    // ~N x base versions. Now the work follows the changes: the base is dropped at most once
    // and each small change is touched a few times.
    let bound = 2 * c.base + 6 * c.changes;
    assert!(
        total.work() <= bound,
        "{order:?}: reclaim touched {} versions ({total:?}); base {} + changes {} allow {bound}",
        total.work(),
        c.base,
        c.changes
    );
    assert!(
        total.versions_moved <= 4 * c.changes,
        "{order:?}: moved {} versions for {} changed",
        total.versions_moved,
        c.changes
    );
    // Retired epochs left in the head's chain are bounded by the live ones.
    let live = alive.len();
    let members = store.head(c.fs.container()).expect("head").members().len();
    assert!(
        members <= 2 * live + 2,
        "{order:?}: head chain has {members} epochs for {live} live snapshots"
    );
}

#[test]
fn delete_oldest_first_costs_the_changes_not_the_container() {
    delete_in_order(Order::OldestFirst);
}

#[test]
fn delete_newest_first_costs_the_changes_not_the_container() {
    delete_in_order(Order::NewestFirst);
}

#[test]
fn delete_in_random_order_costs_the_changes_not_the_container() {
    delete_in_order(Order::Random);
}

#[test]
fn delete_all_but_last_costs_the_changes_not_the_container() {
    delete_in_order(Order::AllButLast);
}

/// Stops a reclaim run after a given number of batches.
struct StopAfter {
    batches: AtomicU64,
    limit: u64,
}

impl ReclaimControl for StopAfter {
    fn should_stop(&self) -> bool {
        self.batches.load(Ordering::SeqCst) >= self.limit
    }
    fn after_batch(&self, _took: std::time::Duration) {
        self.batches.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn reclaim_stopped_after_any_batch_resumes_after_reopen() {
    let backend = mem_backend();
    let c = build(&backend, 30);
    let store = c.fs.store().clone();
    let head = read_tree(&c.fs);
    let container = c.fs.container().clone();
    // Delete every other snapshot and the oldest: merges, prunes and drops all happen.
    let mut alive: Vec<usize> = Vec::new();
    for (i, (name, _)) in c.snaps.iter().enumerate() {
        if i % 2 == 0 || i == 1 {
            store.delete_snapshot(&container, name).expect("delete");
        } else {
            alive.push(i);
        }
    }
    let mut store = store;
    let mut rounds = 0;
    loop {
        store.set_reclaim_chunk(3);
        let ctl = StopAfter {
            batches: AtomicU64::new(0),
            limit: 1 + rounds % 3,
        };
        store.reclaim_with(&ctl).expect("reclaim");
        rounds += 1;
        let finished = ctl.batches.load(Ordering::SeqCst) < ctl.limit;
        // Reopen from the backend: nothing in memory survives, the queue is rebuilt.
        drop(store);
        store = Arc::new(Store::open(backend.kv()).expect("reopen"));
        if finished {
            break;
        }
        assert!(rounds < 10_000, "reclaim never finished");
    }
    let fs = Fs::new(store.clone(), &container).expect("open");
    assert!(read_tree(&fs) == head, "head changed");
    let c = Chain { fs, ..c };
    check_views(&c, &alive, "after interrupted reclaims");
    let report = snapfs::fsck::check(&store).expect("fsck");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert!(rounds > 5, "reclaim was interrupted {rounds} times only");
}

#[test]
fn retired_parent_of_a_rewriting_head_is_pruned_again() {
    let backend = mem_backend();
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let fs = open_default(store.clone());
    for i in 0..3000 {
        put(&fs, &format!("f{i:04}"), &[1u8; 4000]);
    }
    let s = store
        .snapshot(fs.container(), None, None)
        .expect("snapshot");
    put(&fs, "small", b"x");
    store
        .delete_snapshot(fs.container(), &s.name)
        .expect("delete");
    // The retired base is larger than the head: it stays, pruned against the head.
    store.reclaim().expect("reclaim");
    let before = versions(store.kv());
    // The head rewrites every file: the base's copies are shadowed, and go once the head has
    // written enough.
    for i in 0..3000 {
        put(&fs, &format!("f{i:04}"), &[2u8; 4000]);
    }
    let s = store.reclaim().expect("reclaim");
    assert!(s.bytes_dropped >= 3000 * 4000, "{s:?}");
    let after = versions(store.kv());
    assert!(after <= before + 10, "{before} -> {after} versions");
    assert_eq!(read_tree(&fs).len(), 3001);
    assert!(read_tree(&fs)
        .values()
        .filter(|v| v.len() == 4000)
        .all(|v| v[0] == 2));
}

#[test]
fn snapshot_lookups_by_alias_survive_renames_and_deletes() {
    let backend = mem_backend();
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let fs = open_default(store.clone());
    let c = fs.container().clone();
    let a = store.snapshot(&c, Some("a"), None).expect("a");
    let b = store.snapshot(&c, Some("b"), None).expect("b");
    assert_eq!(store.find_snapshot(&c, "a").unwrap().unwrap().name, a.name);
    store.set_alias(&c, &a.name, Some("z")).expect("rename");
    assert!(store.find_snapshot(&c, "a").unwrap().is_none());
    assert_eq!(store.find_snapshot(&c, "z").unwrap().unwrap().name, a.name);
    // "a" is free again; "b" is not.
    store.set_alias(&c, &b.name, Some("a")).expect("reuse");
    assert!(store.set_alias(&c, &a.name, Some("a")).is_err());
    store.delete_snapshot(&c, "a").expect("delete by alias");
    assert!(store.find_snapshot(&c, "a").unwrap().is_none());
    assert!(store.find_snapshot(&c, &b.name).unwrap().is_none());
    let again = store
        .snapshot(&c, Some("a"), None)
        .expect("alias free after delete");
    assert_eq!(
        store.find_snapshot(&c, "a").unwrap().unwrap().name,
        again.name
    );
    // A store reopened keeps the index.
    drop(fs);
    drop(store);
    let store = Arc::new(Store::open(backend.kv()).expect("reopen"));
    assert_eq!(store.find_snapshot(&c, "z").unwrap().unwrap().name, a.name);
    let report = snapfs::fsck::check(&store).expect("fsck");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

#[test]
fn snapshot_summary_follows_creates_deletes_and_reopens() {
    let backend = mem_backend();
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let fs = open_default(store.clone());
    let c = fs.container().clone();
    assert_eq!(store.snapshot_summary(&c).unwrap(), (0, None));
    let mut taken = Vec::new();
    for _ in 0..5 {
        taken.push(store.snapshot(&c, None, None).expect("snapshot"));
    }
    let newest = taken[4].record.created_at;
    assert_eq!(store.snapshot_summary(&c).unwrap(), (5, Some(newest)));
    store
        .delete_snapshot(&c, &taken[4].name)
        .expect("delete newest");
    let (n, t) = store.snapshot_summary(&c).unwrap();
    assert_eq!((n, t), (4, Some(taken[3].record.created_at)));
    store
        .delete_snapshot(&c, &taken[0].name)
        .expect("delete oldest");
    drop(fs);
    drop(store);
    let store = Arc::new(Store::open(backend.kv()).expect("reopen"));
    assert_eq!(
        store.snapshot_summary(&c).unwrap(),
        (3, Some(taken[3].record.created_at))
    );
}

#[test]
fn expiry_index_lists_what_is_due_and_follows_changes() {
    use snapfs::codec::Ts;
    let backend = mem_backend();
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let fs = open_default(store.clone());
    let c = fs.container().clone();
    let now = Ts::now();
    let past = Ts {
        secs: now.secs - 10,
        nsecs: 0,
    };
    let future = Ts {
        secs: now.secs + 3600,
        nsecs: 0,
    };
    let a = store.snapshot(&c, None, Some(past)).expect("a");
    let b = store.snapshot(&c, Some("b"), Some(future)).expect("b");
    let plain = store.snapshot(&c, None, None).expect("plain");
    assert_eq!(
        store.expired(now).unwrap(),
        vec![(c.clone(), a.name.clone())]
    );
    // Moving b's expiry into the past makes it due; clearing a's takes it out.
    store.set_expiry(&c, "b", Some(past)).expect("expire b");
    store.set_expiry(&c, &a.name, None).expect("keep a");
    assert_eq!(
        store.expired(now).unwrap(),
        vec![(c.clone(), b.name.clone())]
    );
    // An alias change keeps the expiry entry; a deletion removes it.
    store.set_alias(&c, &b.name, Some("bb")).expect("alias");
    assert_eq!(store.expired(now).unwrap().len(), 1);
    store.delete_snapshot(&c, "bb").expect("delete");
    assert!(store.expired(now).unwrap().is_empty());
    store
        .set_expiry(&c, &plain.name, Some(future))
        .expect("later");
    assert!(store.expired(now).unwrap().is_empty());
    assert_eq!(
        store
            .expired(Ts {
                secs: future.secs,
                nsecs: 0
            })
            .unwrap(),
        vec![(c.clone(), plain.name.clone())]
    );
    let report = snapfs::fsck::check(&store).expect("fsck");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}
