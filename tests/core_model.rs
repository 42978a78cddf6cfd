//! Model-based randomized test of snapshots: random file operations, snapshots, restores,
//! copies, snapshot deletions, reclaim of deleted epochs and store reopens, applied to the real core (on both kv
//! backends) and to a simple in-memory model; after every step every live container and every
//! snapshot view must match the model. Seeded and reproducible: a failure names its seed/step.

#[path = "core/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;

use harness::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use snapfs::codec::Kind;
use snapfs::fs::{ChangeKind, Fs, SetAttr, ROOT_INO};
use snapfs::store::{Chain, Store};

/// A tree: file name -> contents (files live in the root and in one subdirectory `d`).
type Tree = BTreeMap<String, Vec<u8>>;

struct Model {
    containers: BTreeMap<String, Tree>,
    /// (container, snapshot name) -> tree
    snapshots: BTreeMap<(String, String), Tree>,
}

const NAMES: [&str; 6] = ["a", "b", "c", "d/x", "d/y", "big"];

fn split(path: &str) -> (Option<&str>, &str) {
    match path.split_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, path),
    }
}

/// Reads a whole view into a Tree (root files plus files of subdirectory `d`).
fn read_tree(fs: &Fs) -> Tree {
    let mut out = Tree::new();
    let fh = fs.opendir(ROOT_INO).expect("opendir");
    let entries = fs.readdir(ROOT_INO, fh, 0).expect("readdir");
    for e in entries.iter().skip(2) {
        let name = String::from_utf8(e.name.clone()).expect("utf8");
        if name == "d" {
            let dfh = fs.opendir(e.ino).expect("opendir d");
            for f in fs.readdir(e.ino, dfh, 0).expect("readdir d").iter().skip(2) {
                let data = fs.read(f.ino, 0, 1 << 24).expect("read");
                out.insert(format!("d/{}", String::from_utf8_lossy(&f.name)), data);
            }
            fs.releasedir(dfh);
        } else {
            out.insert(name, fs.read(e.ino, 0, 1 << 24).expect("read"));
        }
    }
    fs.releasedir(fh);
    out
}

fn dir_of(fs: &Fs, d: Option<&str>) -> Ino {
    match d {
        None => ROOT_INO,
        Some(d) => match fs.lookup(ROOT_INO, d.as_bytes()) {
            Ok((ino, _)) => ino,
            Err(_) => {
                fs.mkdir(ROOT_INO, d.as_bytes(), 0o755, ME)
                    .expect("mkdir")
                    .0
            }
        },
    }
}

fn apply_write(fs: &Fs, tree: &mut Tree, rng: &mut StdRng) {
    let path = NAMES[rng.gen_range(0..NAMES.len())];
    let (d, f) = split(path);
    let dir = dir_of(fs, d);
    let ino = match fs.lookup(dir, f.as_bytes()) {
        Ok((ino, _)) => ino,
        Err(_) => {
            let (ino, _, fh) = fs
                .create(dir, f.as_bytes(), 0o644, libc::O_RDWR, ME)
                .expect("create");
            fs.release(fh).expect("release");
            ino
        }
    };
    let content = tree.entry(path.to_string()).or_default();
    let max = if path == "big" { 200_000 } else { 9_000 };
    let off = rng.gen_range(0..max);
    let len = rng.gen_range(1..max / 2);
    let byte: u8 = rng.gen_range(1..=255);
    fs.write(ino, None, off as u64, &vec![byte; len], false)
        .expect("write");
    if content.len() < off + len {
        content.resize(off + len, 0);
    }
    content[off..off + len].fill(byte);
}

fn apply_truncate(fs: &Fs, tree: &mut Tree, rng: &mut StdRng) {
    let Some(path) = tree
        .keys()
        .nth(rng.gen_range(0..tree.len().max(1)))
        .cloned()
    else {
        return;
    };
    let (d, f) = split(&path);
    let dir = dir_of(fs, d);
    let (ino, _) = fs.lookup(dir, f.as_bytes()).expect("lookup");
    // Often to zero: a fresh data id, and a "gone" marker for the old one.
    let size = if rng.gen_bool(0.3) {
        0
    } else {
        rng.gen_range(0..12_000usize)
    };
    let set = SetAttr {
        size: Some(size as u64),
        ..Default::default()
    };
    fs.setattr(ino, &set, ME).expect("truncate");
    if let Some(c) = tree.get_mut(&path) {
        c.resize(size, 0);
    }
}

fn apply_unlink(fs: &Fs, tree: &mut Tree, rng: &mut StdRng) {
    let Some(path) = tree
        .keys()
        .nth(rng.gen_range(0..tree.len().max(1)))
        .cloned()
    else {
        return;
    };
    let (d, f) = split(&path);
    let dir = dir_of(fs, d);
    fs.unlink(dir, f.as_bytes()).expect("unlink");
    tree.remove(&path);
}

struct World {
    store: Arc<Store>,
    heads: BTreeMap<String, Fs>,
}

/// The id of the live container called `name`.
fn id(store: &Store, name: &str) -> ContainerId {
    store
        .container_by_name(name)
        .expect("lookup")
        .expect("container")
        .id
}

impl World {
    fn open(store: Arc<Store>, model: &Model) -> World {
        let heads = model
            .containers
            .keys()
            .map(|c| {
                (
                    c.clone(),
                    Fs::new(store.clone(), &id(&store, c)).expect("open"),
                )
            })
            .collect();
        World { store, heads }
    }

    fn check(&self, model: &Model, ctx: &str) {
        for (c, tree) in &model.containers {
            assert_eq!(&read_tree(&self.heads[c]), tree, "container {c} at {ctx}");
            // Head chains are maintained incrementally: they equal a walk up the tree.
            let chain = self.store.head(&id(&self.store, c)).expect("head");
            assert_eq!(
                chain.members(),
                self.store.chain(chain.epoch).members(),
                "head chain of {c} at {ctx}"
            );
        }
        for ((c, name), tree) in &model.snapshots {
            let info = self
                .store
                .find_snapshot(&id(&self.store, c), name)
                .expect("find")
                .unwrap_or_else(|| panic!("snapshot {name} missing at {ctx}"));
            let view = Fs::frozen(
                self.store.clone(),
                &id(&self.store, c),
                self.store.snapshot_chain(&info),
            );
            assert_eq!(&read_tree(&view), tree, "snapshot {name} of {c} at {ctx}");
        }
        for c in model.containers.keys() {
            let listed = self
                .store
                .snapshots(&id(&self.store, c))
                .expect("list")
                .len();
            let expected = model.snapshots.keys().filter(|(sc, _)| sc == c).count();
            assert_eq!(listed, expected, "snapshot count of {c} at {ctx}");
        }
    }
}

/// The trees of container `c`, newest first: its head (if live) and its snapshots by
/// creation time, each with its chain and the model's tree.
fn trees_of(world: &World, model: &Model, c: &str) -> Vec<(Arc<Chain>, Tree)> {
    let cid = id(&world.store, c);
    let mut snaps = world.store.snapshots(&cid).expect("list");
    snaps.sort_by_key(|s| std::cmp::Reverse((s.record.created_at.secs, s.record.created_at.nsecs)));
    let mut out = vec![(
        world.store.head(&cid).expect("head"),
        model.containers[c].clone(),
    )];
    for s in snaps {
        let tree = model.snapshots[&(c.to_string(), s.name.clone())].clone();
        out.push((world.store.snapshot_chain(&s), tree));
    }
    out
}

/// Diff and history against the model, for two random trees of a random container and a
/// random path. The model knows file contents only, so: every path whose content or
/// existence differs is listed with the right kind, and nothing listed contradicts the model
/// (a change listed without `content` has equal contents; metadata-only changes, such as a
/// rewrite of the same bytes, are beyond the model). Directories are not modelled.
fn check_diff_and_history(world: &World, model: &Model, rng: &mut StdRng, ctx: &str) {
    let cs: Vec<&String> = model.containers.keys().collect();
    let c = cs[rng.gen_range(0..cs.len())].as_str();
    let cid = id(&world.store, c);
    let trees = trees_of(world, model, c);
    let (i, j) = (rng.gen_range(0..trees.len()), rng.gen_range(0..trees.len()));
    let (older, newer) = (&trees[i.max(j)], &trees[i.min(j)]);
    let reader = Fs::frozen(world.store.clone(), &cid, older.0.clone());
    let changes = reader.diff(&older.0, &newer.0).expect("diff");
    let key = |p: &[u8]| String::from_utf8_lossy(&p[1..]).into_owned();
    let mut listed: BTreeMap<String, Vec<(ChangeKind, bool)>> = BTreeMap::new();
    for ch in &changes {
        let is_dir = ch.after.as_ref().or(ch.before.as_ref()).map(|s| s.kind) == Some(Kind::Dir);
        if is_dir || ch.path == b"/" {
            continue;
        }
        listed
            .entry(key(&ch.path))
            .or_default()
            .push((ch.change, ch.content));
        if let Some(old) = &ch.old_path {
            listed
                .entry(key(old))
                .or_default()
                .push((ChangeKind::Deleted, true));
            listed
                .entry(key(&ch.path))
                .or_default()
                .push((ChangeKind::Added, true));
        }
    }
    let (a, b) = (&older.1, &newer.1);
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let got = listed.remove(p).unwrap_or_default();
        let has = |k: ChangeKind| got.iter().any(|(g, _)| *g == k);
        match (a.get(p), b.get(p)) {
            (Some(_), None) => assert!(has(ChangeKind::Deleted), "{p} deleted: {got:?} at {ctx}"),
            (None, Some(_)) => assert!(has(ChangeKind::Added), "{p} added: {got:?} at {ctx}"),
            (Some(x), Some(y)) => {
                assert!(
                    x == y || !got.is_empty(),
                    "{p} changed content but is not listed at {ctx}"
                );
                let untouched = !has(ChangeKind::Deleted) && !has(ChangeKind::Added);
                if untouched && x != y {
                    assert!(
                        got.iter().any(|(_, content)| *content),
                        "{p}: {got:?} at {ctx}"
                    );
                }
            }
            (None, None) => {}
        }
    }
    assert!(
        listed.is_empty(),
        "listed but absent from both trees: {listed:?} at {ctx}"
    );

    // History of one path: each tree against the next older one.
    let path = RESTORABLE[rng.gen_range(0..RESTORABLE.len())];
    if path == "d" {
        return;
    }
    let raw = format!("/{path}");
    let first = Fs::frozen(world.store.clone(), &cid, trees[0].0.clone());
    for k in 0..trees.len() {
        let newer = &trees[k];
        let older = trees.get(k + 1);
        let got = first
            .compare_path(older.map(|t| &*t.0), &newer.0, raw.as_bytes())
            .expect("compare_path");
        let before = older.and_then(|t| t.1.get(path));
        let after = newer.1.get(path);
        let kind = got.as_ref().map(|g| g.change);
        match (before, after) {
            (None, None) => assert!(got.is_none(), "{path} in tree {k}: {got:?} at {ctx}"),
            (None, Some(_)) => {
                assert_eq!(kind, Some(ChangeKind::Added), "{path} tree {k} at {ctx}")
            }
            (Some(_), None) => {
                assert_eq!(kind, Some(ChangeKind::Deleted), "{path} tree {k} at {ctx}")
            }
            (Some(x), Some(y)) if x != y => {
                let g =
                    got.unwrap_or_else(|| panic!("{path} tree {k} changed, not listed at {ctx}"));
                assert!(
                    g.change == ChangeKind::Modified && g.content,
                    "{path} tree {k}: {g:?} at {ctx}"
                );
            }
            (Some(_), Some(_)) => {
                assert!(
                    matches!(kind, None | Some(ChangeKind::Modified)),
                    "{path} tree {k}: {got:?} at {ctx}"
                )
            }
        }
    }
}

/// Snapshot names of container `c` in the model.
fn mine(model: &Model, c: &str) -> Vec<String> {
    model
        .snapshots
        .keys()
        .filter(|(sc, _)| sc == c)
        .map(|(_, n)| n.clone())
        .collect()
}

/// Upper bounds (exclusive, out of 100) of each operation's share of the random draws:
/// write, truncate, unlink, snapshot, restore, copy, delete, reclaim, restore of some
/// paths; the rest reopens.
struct Mix([u32; 9]);

/// Mostly file operations, with the whole snapshot lifecycle in between.
const EVERYDAY: Mix = Mix([40, 48, 55, 67, 75, 80, 87, 90, 97]);
/// Long chains: many snapshots, deleted in random order, reclaimed often.
const LONG_CHAINS: Mix = Mix([27, 31, 33, 63, 65, 67, 84, 93, 99]);

/// What a path restore may name: every file, and the subdirectory.
const RESTORABLE: [&str; 7] = ["a", "b", "c", "d", "d/x", "d/y", "big"];

/// The model of restoring `paths` of `tree` from `snap`.
fn restore_model(tree: &mut Tree, snap: &Tree, paths: &[&str]) {
    for p in paths {
        let under = |k: &String| k == p || k.starts_with(&format!("{p}/"));
        tree.retain(|k, _| !under(k));
        for (k, v) in snap {
            if under(k) {
                tree.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Syncs every container of the world into `mirror` as `snapfs sync` would (snapshot
/// streams, incremental from the newest snapshot both hold, rolling back what the source
/// deleted) and checks every received snapshot and the mirror's live tree against the model.
fn sync_mirror(world: &World, mirror: &Arc<Store>, model: &Model, ctx: &str) {
    for c in model.containers.keys() {
        let cid = id(&world.store, c);
        let mut ours = world.store.snapshots(&cid).expect("list");
        ours.sort_by_key(|s| s.record.epoch);
        // Twice at most: a snapshot name the source reused (deleted, then taken again in the
        // same second after a reopen) that the mirror still holds is refused; the mirror of
        // that container then starts over.
        for attempt in 0..2 {
            let theirs = match mirror.container_by_name(c).expect("lookup") {
                Some(m) => mirror.snapshots(&m.id).expect("list"),
                None => Vec::new(),
            };
            let base = ours.iter().rposition(|s| {
                theirs
                    .iter()
                    .any(|t| t.name == s.name && t.record.created_at == s.record.created_at)
            });
            if base.is_none() || attempt > 0 {
                if let Some(m) = mirror.container_by_name(c).expect("lookup") {
                    mirror.delete_container(&m.id).expect("drop the mirror");
                }
            }
            let base = if attempt > 0 { None } else { base };
            let mut from = base.map(|i| ours[i].name.clone());
            let mut reused = false;
            for s in &ours[base.map_or(0, |i| i + 1)..] {
                let mut bytes = Vec::new();
                world
                    .store
                    .send(&cid, &s.name, from.as_deref(), &mut bytes)
                    .expect("send");
                let got = match mirror.receive(&mut &bytes[..], c, true) {
                    Ok(got) => got,
                    Err(e) if attempt == 0 && e.to_string().contains("already has snapshot") => {
                        reused = true;
                        break;
                    }
                    Err(e) => panic!("receive {} of {c} at {ctx}: {e}", s.name),
                };
                let view = Fs::frozen(
                    mirror.clone(),
                    &got.container.id,
                    mirror.snapshot_chain(&got.snapshot),
                );
                assert_eq!(
                    &read_tree(&view),
                    &model.snapshots[&(c.clone(), s.name.clone())],
                    "mirror of snapshot {} of {c} at {ctx}",
                    s.name
                );
                // The mirror's live tree is the snapshot it received last.
                let head = Fs::new(mirror.clone(), &got.container.id).expect("mirror head");
                assert_eq!(
                    &read_tree(&head),
                    &model.snapshots[&(c.clone(), s.name.clone())],
                    "mirror head of {c} at {ctx}"
                );
                from = Some(s.name.clone());
            }
            if !reused {
                break;
            }
        }
    }
}

fn run(seed: u64, backend: Backend, steps: usize) {
    run_mix(seed, backend, steps, &EVERYDAY);
}

/// Runs `steps` random operations; returns (snapshots taken, snapshots deleted, the most
/// snapshots alive at once).
fn run_mix(seed: u64, backend: Backend, steps: usize, mix: &Mix) -> (usize, usize, usize) {
    let (mut taken, mut deleted, mut most) = (0, 0, 0);
    let mut rng = StdRng::seed_from_u64(seed);
    let store = Arc::new(Store::init(backend.kv(), 4096).expect("init"));
    let mut model = Model {
        containers: BTreeMap::from([("default".to_string(), Tree::new())]),
        snapshots: BTreeMap::new(),
    };
    let mut world = World::open(store, &model);
    let mirror = Arc::new(Store::init(harness::mem_backend().kv(), 4096).expect("init mirror"));
    let mut copies = 0;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        let cs: Vec<String> = model.containers.keys().cloned().collect();
        let c = cs[rng.gen_range(0..cs.len())].clone();
        let fs = &world.heads[&c];
        let cid = id(&world.store, &c);
        let mine = mine(&model, &c);
        let snaps = model.snapshots.clone();
        let tree = model.containers.get_mut(&c).expect("container");
        let draw = rng.gen_range(0..100u32);
        let op = mix.0.iter().position(|&b| draw < b).unwrap_or(9);
        match op {
            0 => apply_write(fs, tree, &mut rng),
            1 => apply_truncate(fs, tree, &mut rng),
            2 => apply_unlink(fs, tree, &mut rng),
            3 => {
                let info = world.store.snapshot(&cid, None, None).expect("snapshot");
                model.snapshots.insert((c.clone(), info.name), tree.clone());
                taken += 1;
                most = most.max(model.snapshots.len());
            }
            4 => {
                if let Some(name) = mine.get(rng.gen_range(0..mine.len().max(1))) {
                    world.store.restore(&cid, name).expect("restore");
                    *tree = snaps[&(c.clone(), name.clone())].clone();
                }
            }
            5 if copies < 3 => {
                copies += 1;
                let target = format!("copy{copies}");
                let from = mine.get(rng.gen_range(0..mine.len().max(1))).cloned();
                let t = match &from {
                    Some(name) => snaps[&(c.clone(), name.clone())].clone(),
                    None => tree.clone(),
                };
                let rec = world
                    .store
                    .copy_container(&cid, from.as_deref(), &target, None)
                    .expect("copy");
                model.containers.insert(target.clone(), t);
                let fs = Fs::new(world.store.clone(), &rec.id).expect("open copy");
                world.heads.insert(target, fs);
            }
            6 => {
                let n = rng.gen_range(0..model.snapshots.len().max(1));
                if let Some(key) = model.snapshots.keys().nth(n).cloned() {
                    model.snapshots.remove(&key);
                    deleted += 1;
                    let (sc, name) = key;
                    world
                        .store
                        .delete_snapshot(&id(&world.store, &sc), &name)
                        .expect("delete");
                }
            }
            7 => {
                world.store.reclaim().expect("reclaim");
                // And the backend's own garbage collection (segments: deletion and repack,
                // which moves live blocks while views read them).
                if let Some(m) = world.store.kv().maintenance() {
                    m.compact(snapfs::kv::Space::Data).expect("compact");
                }
            }
            8 => {
                if let Some(name) = mine.get(rng.gen_range(0..mine.len().max(1))) {
                    let n = rng.gen_range(1..=2);
                    let paths: Vec<&str> = (0..n)
                        .map(|_| RESTORABLE[rng.gen_range(0..RESTORABLE.len())])
                        .collect();
                    let info = world
                        .store
                        .find_snapshot(&cid, name)
                        .expect("find")
                        .expect("snapshot");
                    let raw: Vec<Vec<u8>> =
                        paths.iter().map(|p| format!("/{p}").into_bytes()).collect();
                    fs.restore_paths(&info, &raw).expect("restore paths");
                    restore_model(tree, &snaps[&(c.clone(), name.clone())], &paths);
                }
            }
            5 => {}
            _ => {
                // Reopen the whole store from its backend.
                drop(world);
                let store = Arc::new(Store::open(backend.kv()).expect("reopen"));
                world = World::open(store, &model);
            }
        }
        world.check(&model, &ctx);
        if step % 10 == 9 {
            check_diff_and_history(&world, &model, &mut rng, &ctx);
        }
        if step % 15 == 14 {
            sync_mirror(&world, &mirror, &model, &ctx);
        }
        if step % 25 == 24 {
            let report = snapfs::fsck::check(&world.store).expect("fsck");
            assert!(
                report.problems.is_empty(),
                "fsck at {ctx}: {:#?}",
                report.problems
            );
        }
    }
    (taken, deleted, most)
}

#[test]
fn model_random_ops_mem_backend_match() {
    for seed in 0..40 {
        run(seed, mem_backend(), 200);
    }
}

#[test]
fn model_long_chains_random_deletion_order_mem_backend_match() {
    for seed in 200..206 {
        let (taken, deleted, most) = run_mix(seed, mem_backend(), 500, &LONG_CHAINS);
        assert!(
            taken >= 100 && deleted >= 70 && most >= 20,
            "seed {seed}: only {taken} snapshots taken, {deleted} deleted, {most} at once"
        );
    }
}

#[test]
fn model_random_ops_rocks_backend_match() {
    for seed in 100..106 {
        run(seed, rocks_backend(), 150);
    }
}

/// The same model on SlateDB (a local directory as its object store), reopens included:
/// the store layer runs unchanged on the second backend.
#[cfg(feature = "slatedb")]
#[test]
fn model_random_ops_slatedb_backend_match() {
    for seed in 300..303 {
        run(seed, slate_backend(), 120);
    }
}
