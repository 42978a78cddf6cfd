//! Diffs between two trees (`Fs::diff`): after random changes and snapshot lifecycles, the
//! diff between every pair of views equals a brute-force diff that walks both trees whole
//! (no change index, no back links), and a few scenarios give exactly the expected lines.

#[path = "core/harness.rs"]
mod harness;
#[path = "core/treeops.rs"]
mod treeops;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use harness::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use snapfs::codec::{Inode, Kind};
use snapfs::fs::{Change, ChangeKind, Fs, SetAttr, ROOT_INO};
use snapfs::kv::{Batch, Dir, Kv, KvRead, KvResult, Pair, Space, Visit};
use snapfs::store::{Chain, Store};
use treeops::*;

/// Everything the brute-force diff needs of one tree.
struct Whole {
    inodes: HashMap<Ino, Inode>,
    links: HashMap<Ino, BTreeSet<(Ino, Vec<u8>)>>,
    dir_paths: HashMap<Ino, Vec<u8>>,
}

fn walk(fs: &Fs) -> Whole {
    let mut w = Whole {
        inodes: HashMap::new(),
        links: HashMap::new(),
        dir_paths: HashMap::from([(ROOT_INO, Vec::new())]),
    };
    w.inodes
        .insert(ROOT_INO, fs.getattr(ROOT_INO).expect("root"));
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        let fh = fs.opendir(dir).expect("opendir");
        let entries = fs.readdir(dir, fh, 0).expect("readdir");
        fs.releasedir(fh);
        for e in entries.iter().skip(2) {
            w.inodes.insert(e.ino, fs.getattr(e.ino).expect("getattr"));
            w.links
                .entry(e.ino)
                .or_default()
                .insert((dir, e.name.clone()));
            if e.kind == Kind::Dir {
                let mut p = w.dir_paths[&dir].clone();
                p.push(b'/');
                p.extend_from_slice(&e.name);
                w.dir_paths.insert(e.ino, p);
                stack.push(e.ino);
            }
        }
    }
    w
}

fn path(w: &Whole, link: &(Ino, Vec<u8>)) -> Vec<u8> {
    let mut p = w.dir_paths[&link.0].clone();
    p.push(b'/');
    p.extend_from_slice(&link.1);
    p
}

fn contents(fs: &Fs, i: &Inode, ino: Ino) -> Vec<u8> {
    if i.kind == Kind::File {
        fs.read(ino, 0, i.size as u32).expect("read")
    } else {
        Vec::new()
    }
}

fn xattrs(fs: &Fs, ino: Ino) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = fs.listxattr(ino).unwrap_or_default();
    names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| (n.to_vec(), fs.getxattr(ino, n).expect("getxattr")))
        .collect()
}

/// (path, old path, change, inode, metadata changed, content changed) by walking both trees.
type Line = (Vec<u8>, Option<Vec<u8>>, ChangeKind, Ino, bool, bool);

fn brute_diff(a_fs: &Fs, b_fs: &Fs) -> Vec<Line> {
    let (a, b) = (walk(a_fs), walk(b_fs));
    let inos: BTreeSet<Ino> = a.inodes.keys().chain(b.inodes.keys()).copied().collect();
    let mut out = Vec::new();
    for ino in inos {
        // Either side may hold the inode unlinked but open (an orphan): ask the view.
        let before = a_fs.getattr(ino).ok();
        let after = b_fs.getattr(ino).ok();
        let (content, metadata) = match (&before, &after) {
            (Some(x), Some(y)) => (
                x.size != y.size
                    || x.target != y.target
                    || x.data_id != y.data_id
                    || contents(a_fs, x, ino) != contents(b_fs, y, ino),
                x.kind != y.kind
                    || x.perm != y.perm
                    || x.uid != y.uid
                    || x.gid != y.gid
                    || x.mtime != y.mtime
                    || x.rdev != y.rdev
                    || xattrs(a_fs, ino) != xattrs(b_fs, ino),
            ),
            _ => (false, false),
        };
        if ino == ROOT_INO {
            if content || metadata {
                out.push((
                    b"/".to_vec(),
                    None,
                    ChangeKind::Modified,
                    ino,
                    metadata,
                    content,
                ));
            }
            continue;
        }
        let empty = BTreeSet::new();
        let la = a.links.get(&ino).unwrap_or(&empty);
        let lb = b.links.get(&ino).unwrap_or(&empty);
        let gone: Vec<_> = la.difference(lb).collect();
        let came: Vec<_> = lb.difference(la).collect();
        if before.is_some() && after.is_some() && gone.len() == 1 && came.len() == 1 {
            out.push((
                path(&b, came[0]),
                Some(path(&a, gone[0])),
                ChangeKind::Renamed,
                ino,
                metadata,
                content,
            ));
        } else {
            for l in gone {
                out.push((
                    path(&a, l),
                    None,
                    ChangeKind::Deleted,
                    ino,
                    metadata,
                    content,
                ));
            }
            for l in came {
                out.push((path(&b, l), None, ChangeKind::Added, ino, metadata, content));
            }
        }
        if content || metadata {
            for l in lb.intersection(la) {
                out.push((
                    path(&b, l),
                    None,
                    ChangeKind::Modified,
                    ino,
                    metadata,
                    content,
                ));
            }
        }
    }
    out.sort_by(|x, y| x.0.cmp(&y.0).then(x.2.as_str().cmp(y.2.as_str())));
    out
}

fn fast_diff(fs: &Fs, a: &Chain, b: &Chain) -> Vec<Change> {
    fs.diff(a, b).expect("diff")
}

/// The fast diff lists exactly the brute-force lines. Content may be flagged where the
/// bytes are equal again (a rewrite with the same bytes): such a write also changed mtime.
fn same(fast: &[Change], brute: &[Line], ctx: &str) {
    let f: Vec<_> = fast
        .iter()
        .map(|c| {
            (
                c.path.clone(),
                c.old_path.clone(),
                c.change,
                c.ino,
                c.metadata,
            )
        })
        .collect();
    let b: Vec<_> = brute
        .iter()
        .map(|l| (l.0.clone(), l.1.clone(), l.2, l.3, l.4))
        .collect();
    assert_eq!(f, b, "{ctx}");
    for (c, l) in fast.iter().zip(brute) {
        assert!(
            c.content == l.5 || (c.content && c.metadata),
            "{ctx}: content flag of {:?}: fast {} brute {}",
            String::from_utf8_lossy(&c.path),
            c.content,
            l.5
        );
    }
}

fn random_run(seed: u64, backend: Backend, steps: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let t = make(backend);
    let store: Arc<Store> = t.store().clone();
    let mut lines = 0;
    for step in 0..steps {
        random_step(&store, &mut rng, true);
        if step % 20 != 19 {
            continue;
        }
        let views = views(&store);
        let (_, any, _) = &views[0];
        for (na, fa, ca) in &views {
            for (nb, fb, cb) in &views {
                let fast = fast_diff(any, ca, cb);
                let brute = brute_diff(fa, fb);
                lines += fast.len();
                same(
                    &fast,
                    &brute,
                    &format!("seed {seed} step {step}: {na} -> {nb}"),
                );
            }
        }
    }
    lines
}

#[test]
fn diff_of_every_pair_of_views_equals_the_brute_force_diff_mem() {
    let mut lines = 0;
    for seed in 0..10 {
        lines += random_run(seed, mem_backend(), 200);
    }
    // The runs did change things: the comparison is not between empty lists.
    assert!(lines > 1000, "only {lines} diff lines in all");
}

#[test]
fn diff_of_every_pair_of_views_equals_the_brute_force_diff_rocks() {
    assert!(random_run(77, rocks_backend(), 200) > 0);
}

fn lines(fs: &Fs, a: &Chain, b: &Chain) -> Vec<String> {
    fs.diff(a, b)
        .expect("diff")
        .iter()
        .map(|c| {
            let p = String::from_utf8_lossy(&c.path);
            match &c.old_path {
                Some(o) => format!(
                    "{} {} -> {p}",
                    c.change.as_str(),
                    String::from_utf8_lossy(o)
                ),
                None => format!(
                    "{} {p}{}{}",
                    c.change.as_str(),
                    if c.content { " content" } else { "" },
                    if c.metadata { " metadata" } else { "" }
                ),
            }
        })
        .collect()
}

#[test]
fn diff_names_added_deleted_modified_and_renamed_paths() {
    let t = make(mem_backend());
    let store = t.store().clone();
    let id = t.container().clone();
    let (d, _) = t.mkdir(ROOT_INO, b"etc", 0o755, ME).expect("mkdir");
    let (conf, _, _) = t
        .create(d, b"app.conf", 0o644, libc::O_RDWR, ME)
        .expect("create");
    t.write(conf, None, 0, b"port=80", false).expect("write");
    let (old, _, _) = t
        .create(ROOT_INO, b"old", 0o644, libc::O_RDWR, ME)
        .expect("create");
    let (mv, _, _) = t
        .create(ROOT_INO, b"a", 0o644, libc::O_RDWR, ME)
        .expect("create");
    let (meta, _, _) = t
        .create(ROOT_INO, b"m", 0o644, libc::O_RDWR, ME)
        .expect("create");
    let s1 = store.snapshot(&id, None, None).expect("snapshot");
    let c1 = store.snapshot_chain(&s1);

    t.write(conf, None, 5, b"443", false).expect("write");
    t.unlink(ROOT_INO, b"old").expect("unlink");
    t.rename(ROOT_INO, b"a", d, b"b", 0).expect("rename");
    t.setattr(
        meta,
        &SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        ME,
    )
    .expect("chmod");
    t.create(d, b"new", 0o644, libc::O_RDWR, ME)
        .expect("create");
    let _ = (old, mv);
    let head = store.head(&id).expect("head");

    let mut got = lines(&t, &c1, &head);
    // Directory mtimes follow their entries: "/" and "/etc" are modified too.
    let dirs = ["modified / metadata", "modified /etc metadata"];
    assert!(dirs.iter().all(|d| got.iter().any(|l| l == d)), "{got:?}");
    got.retain(|l| !dirs.contains(&l.as_str()));
    assert_eq!(
        got,
        vec![
            "modified /etc/app.conf content metadata",
            "renamed /a -> /etc/b",
            "added /etc/new",
            "modified /m metadata",
            "deleted /old",
        ]
    );
    // And back the other way.
    let back = lines(&t, &head, &c1);
    assert!(
        back.contains(&"renamed /etc/b -> /a".to_string()),
        "{back:?}"
    );
    assert!(back.contains(&"added /old".to_string()), "{back:?}");
    assert!(back.contains(&"deleted /etc/new".to_string()), "{back:?}");
    // A view against itself: nothing.
    assert_eq!(lines(&t, &head, &head), Vec::<String>::new());
}

/// A MemKv that counts the keys it hands out (gets, seeks and every scanned key).
struct CountingKv {
    inner: Arc<snapfs::kv::mem::MemKv>,
    reads: std::sync::atomic::AtomicU64,
}

impl CountingKv {
    fn count(&self, n: u64) {
        self.reads
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl KvRead for CountingKv {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.count(1);
        self.inner.get(space, key)
    }
    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        self.count(1);
        self.inner.seek_for_prev(space, lower, key)
    }
    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        self.count(1);
        self.inner.scan(space, start, end, dir, &mut |k, v| {
            self.count(1);
            f(k, v)
        })
    }
}

impl Kv for CountingKv {
    fn writes_outlive_the_process(&self) -> bool {
        self.inner.writes_outlive_the_process()
    }

    fn write(&self, batch: Batch, durable: bool) -> KvResult<()> {
        self.inner.write(batch, durable)
    }
    fn sync(&self) -> KvResult<()> {
        self.inner.sync()
    }
    fn read_view(&self) -> Box<dyn KvRead + '_> {
        self.inner.read_view()
    }
    fn maintenance(&self) -> Option<&dyn snapfs::kv::Maintenance> {
        self.inner.maintenance()
    }
    fn status(&self) -> Option<&dyn snapfs::kv::Status> {
        self.inner.status()
    }
    fn segments(&self) -> Option<&dyn snapfs::kv::segments::SegmentCheck> {
        self.inner.segments()
    }
}

/// The work follows what changed: a diff between two snapshots a few changes apart in a
/// tree of 3,000 files reads a few dozen keys, where a walk reads every entry and inode.
#[test]
fn diff_cost_follows_the_changes_not_the_tree() {
    let kv = Arc::new(CountingKv {
        inner: Arc::new(snapfs::kv::mem::MemKv::new()),
        reads: Default::default(),
    });
    let store = Arc::new(Store::init(kv.clone(), 4096).expect("init"));
    let t = open_default(store.clone());
    let id = t.container().clone();
    for i in 0..3000 {
        t.create(
            ROOT_INO,
            format!("f{i}").as_bytes(),
            0o644,
            libc::O_RDWR,
            ME,
        )
        .expect("create");
    }
    let s1 = store.snapshot(&id, None, None).expect("snapshot");
    let (ino, _) = t.lookup(ROOT_INO, b"f7").expect("lookup");
    t.write(ino, None, 0, b"x", false).expect("write");
    let s2 = store.snapshot(&id, None, None).expect("snapshot");
    store.cache_bump();
    let before = kv.reads();
    let d = t
        .diff(&store.snapshot_chain(&s1), &store.snapshot_chain(&s2))
        .expect("diff");
    let reads = kv.reads() - before;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, b"/f7");
    assert!(d[0].content && d[0].metadata);
    assert!(
        reads < 100,
        "the diff read {reads} keys for one changed file"
    );
    // For contrast, the walk a tree-comparing diff would do.
    let before = kv.reads();
    let _ = walk(&t);
    assert!(
        kv.reads() - before > 6000,
        "a walk reads every entry and inode"
    );
}

/// What a path holds in a tree, for the brute-force history: walked from the whole tree.
fn state_at(fs: &Fs, w: &Whole, path: &[u8]) -> Option<(Ino, Inode)> {
    w.inodes.iter().find_map(|(&ino, inode)| {
        let named = if ino == ROOT_INO {
            path == b"/"
        } else {
            w.links
                .get(&ino)
                .is_some_and(|ls| ls.iter().any(|l| self::path(w, l) == path))
        };
        named.then(|| (ino, fs.getattr(ino).unwrap_or_else(|_| inode.clone())))
    })
}

/// The history of random paths over the head and every snapshot (newest first) equals a
/// brute-force comparison of whole-tree walks.
#[test]
fn history_of_paths_equals_the_brute_force_history() {
    const PATHS: [&[u8]; 8] = [
        b"/n0", b"/n1", b"/n2", b"/n\xff5", b"/n0/n1", b"/n1/n0", b"/n2/n3", b"/",
    ];
    let mut listed = 0;
    for seed in 0..8 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let t = make(mem_backend());
        let store: Arc<Store> = t.store().clone();
        for _ in 0..150 {
            random_step(&store, &mut rng, true);
        }
        // Head first, then snapshots newest first (names sort by creation time).
        let mut trees = views(&store);
        trees[1..].sort_by(|a, b| b.0.cmp(&a.0));
        let walks: Vec<Whole> = trees.iter().map(|(_, fs, _)| walk(fs)).collect();
        let reader = &trees[0].1;
        for path in PATHS {
            for i in 0..trees.len() {
                let (label, newer_fs, newer) = &trees[i];
                let older = trees.get(i + 1).map(|(_, _, c)| &**c);
                let fast = reader.compare_path(older, newer, path).expect("cmp");
                let now = state_at(newer_fs, &walks[i], path);
                let before = match trees.get(i + 1) {
                    Some((_, older_fs, _)) => state_at(older_fs, &walks[i + 1], path),
                    None => None,
                };
                let brute = match (&before, &now) {
                    (None, None) => None,
                    (None, Some(_)) => Some((ChangeKind::Added, false, false)),
                    (Some(_), None) => Some((ChangeKind::Deleted, false, false)),
                    (Some((ia, a)), Some((ib, b))) => {
                        let older_fs = &trees[i + 1].1;
                        let meta = a.kind != b.kind
                            || a.perm != b.perm
                            || a.uid != b.uid
                            || a.gid != b.gid
                            || a.mtime != b.mtime
                            || a.rdev != b.rdev
                            || xattrs(older_fs, *ia) != xattrs(newer_fs, *ib);
                        let content = ia != ib
                            || a.size != b.size
                            || a.target != b.target
                            || a.data_id != b.data_id
                            || contents(older_fs, a, *ia) != contents(newer_fs, b, *ib);
                        (content || meta).then_some((ChangeKind::Modified, content, meta))
                    }
                };
                let ctx = format!("seed {seed} {label} {:?}", String::from_utf8_lossy(path));
                match (&fast, brute) {
                    (None, None) => {}
                    (Some(f), Some((change, content, meta))) => {
                        listed += 1;
                        assert_eq!((f.change, f.metadata), (change, meta), "{ctx}");
                        // Rewritten with the same bytes: content flagged, mtime moved.
                        assert!(f.content == content || (f.content && f.metadata), "{ctx}");
                    }
                    (f, b) => panic!("{ctx}: fast {f:?}, brute {b:?}"),
                }
            }
        }
    }
    assert!(listed > 100, "only {listed} history entries in all");
}
