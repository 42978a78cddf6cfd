//! Back links (inode -> directory, name): kept by every entry change in every view, equal
//! to what a rebuild from the entries' history derives (the migration of older stores), and
//! checked and repaired by fsck.

#[path = "core/harness.rs"]
mod harness;
#[path = "core/treeops.rs"]
mod treeops;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use harness::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use snapfs::fs::{Fs, ROOT_INO};
use snapfs::keys;
use snapfs::kv::{Batch, Dir, Space};
use snapfs::store::Store;
use treeops::*;

type Links = BTreeSet<(Ino, Ino, Vec<u8>)>;

/// Every live back link of the view.
fn index_links(fs: &Fs) -> Links {
    let mut out = Links::new();
    fs.all_links(&mut |ino, dir, name| {
        out.insert((ino, dir, name.to_vec()));
    })
    .expect("links");
    out
}

fn all_views_links(store: &Arc<Store>) -> BTreeMap<String, Links> {
    views(store)
        .into_iter()
        .map(|(n, fs, _)| (n, index_links(&fs)))
        .collect()
}

fn fsck_clean(store: &Arc<Store>, ctx: &str) {
    let r = snapfs::fsck::check(store).expect("fsck");
    assert!(r.problems.is_empty(), "{ctx}: {:#?}", r.problems);
}

/// Random entry changes (create, mkdir, hard link, rename over files, exchange, unlink,
/// rmdir) between snapshots, restores and deletions: after every step each view's back
/// links equal its tree, and a rebuild from history gives back exactly the same links.
fn random_run(seed: u64, backend: Backend) {
    let mut rng = StdRng::seed_from_u64(seed);
    let t = make(backend);
    let store = t.store().clone();
    for step in 0..300 {
        random_step(&store, &mut rng, true);
        for (label, view, _) in views(&store) {
            assert_eq!(
                index_links(&view),
                tree_links(&view),
                "seed {seed} step {step}: {label}"
            );
        }
    }
    let before = all_views_links(&store);
    store.rebuild_links().expect("rebuild");
    assert_eq!(
        all_views_links(&store),
        before,
        "seed {seed}: rebuild differs"
    );
    fsck_clean(&store, &format!("seed {seed} after rebuild"));
}

#[test]
fn back_links_follow_every_entry_change_in_every_view_mem() {
    for seed in 0..12 {
        random_run(seed, mem_backend());
    }
}

#[test]
fn back_links_follow_every_entry_change_in_every_view_rocks() {
    random_run(100, rocks_backend());
}

#[test]
fn links_name_every_hard_link_and_follow_renames() {
    let t = make(mem_backend());
    let (a, _) = file(&t, "a");
    let (d, _) = t.mkdir(ROOT_INO, b"d", 0o755, ME).expect("mkdir");
    t.link(a, d, b"b").expect("link");
    assert_eq!(
        t.links(a).expect("links"),
        vec![(ROOT_INO, b"a".to_vec()), (d, b"b".to_vec())]
    );
    let snap = t
        .store()
        .snapshot(t.container(), None, None)
        .expect("snapshot");
    t.rename(ROOT_INO, b"a", d, b"c", 0).expect("rename");
    assert_eq!(
        t.links(a).expect("links"),
        vec![(d, b"b".to_vec()), (d, b"c".to_vec())]
    );
    // The snapshot keeps the names it had.
    let frozen = Fs::frozen(
        t.store().clone(),
        t.container(),
        t.store().snapshot_chain(&snap),
    );
    assert_eq!(
        frozen.links(a).expect("links"),
        vec![(ROOT_INO, b"a".to_vec()), (d, b"b".to_vec())]
    );
    t.unlink(d, b"b").expect("unlink");
    t.unlink(d, b"c").expect("unlink");
    assert_eq!(t.links(a).expect("links"), vec![]);
}

/// fsck finds a missing and a stale back link, in the head and in a snapshot, and
/// `--repair` rebuilds them; a store without them (written before they existed) gets them
/// from `index_links`.
#[test]
fn fsck_finds_and_repair_rebuilds_broken_back_links() {
    let t = make(mem_backend());
    let store = t.store().clone();
    let (a, _) = file(&t, "a");
    let (b, _) = file(&t, "b");
    store.snapshot(t.container(), None, None).expect("snapshot");
    t.rename(ROOT_INO, b"a", ROOT_INO, b"z", 0).expect("rename");
    let good = all_views_links(&store);

    // Drop every version of a's back links, and invent one for b.
    let mut batch = Batch::new();
    let prefix = keys::link_prefix(a);
    store
        .kv()
        .scan(
            Space::Meta,
            &prefix,
            &snapfs::kv::prefix_end(&prefix),
            Dir::Forward,
            &mut |k, _| {
                batch.delete(Space::Meta, k.to_vec());
                if let Some((base, e)) = keys::split_version(k) {
                    batch.delete(Space::Meta, keys::change(e, Space::Meta, base));
                }
                true
            },
        )
        .expect("scan");
    let head = store.head(t.container()).expect("head").epoch;
    snapfs::store::put_version(
        &mut batch,
        Space::Meta,
        &keys::link(b, ROOT_INO, b"ghost"),
        head,
        snapfs::codec::encode_live(&()),
    );
    store.kv().write(batch, true).expect("corrupt");
    store.cache_bump();

    let r = snapfs::fsck::check(&store).expect("fsck");
    // a: missing in the head (z) and in the snapshot (a); b: a stale link in the head.
    assert_eq!(r.back_link_problems, 3, "{:#?}", r.problems);
    let r = snapfs::fsck::repair(&store).expect("repair");
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert!(
        r.repaired.iter().any(|l| l.contains("back links rebuilt")),
        "{:?}",
        r.repaired
    );
    assert_eq!(all_views_links(&store), good);

    // A store from before the links: no setting, no links; fsck does not complain, the
    // daemon's open builds them.
    let mut batch = Batch::new();
    batch.delete(Space::Meta, keys::setting("link_index"));
    let (start, end) = ([keys::TAG_LINK], [keys::TAG_LINK + 1]);
    store
        .kv()
        .scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
            batch.delete(Space::Meta, k.to_vec());
            if let Some((base, e)) = keys::split_version(k) {
                batch.delete(Space::Meta, keys::change(e, Space::Meta, base));
            }
            true
        })
        .expect("scan");
    store.kv().write(batch, true).expect("strip");
    store.cache_bump();
    assert!(!store.links_indexed().expect("setting"));
    fsck_clean(&store, "store without back links");
    store.index_links().expect("index");
    assert!(store.links_indexed().expect("setting"));
    assert_eq!(all_views_links(&store), good);
    fsck_clean(&store, "after index_links");
}
