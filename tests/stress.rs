//! Bounded concurrency stress: two containers of one store mounted at once, 8 worker threads
//! doing random mixed operations (each in its own subdirectory, against an in-memory model),
//! snapshot churn (create, delete, restore on container `b`) and a watchdog that fails the test
//! on any hang. Afterwards container `a`'s trees must match the models exactly and `fsck` must
//! be clean. `SNAPFS_STRESS_SECS` sets the duration (default 20), `SNAPFS_STRESS_SEED` the seed.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{alive, require_fuse, snapfs, wait_until, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustix::fs::{getxattr, setxattr, XattrFlags};

const WORKERS_PER_MOUNT: usize = 4;
const HANG: Duration = Duration::from_secs(30);
const FILE_NAMES: usize = 12;
const DIR_NAMES: usize = 4;

/// Progress of one thread, watched by the watchdog.
struct Progress {
    name: String,
    ops: AtomicU64,
    errs: AtomicU64,
    last_ms: AtomicU64,
    done: AtomicBool,
    current: Mutex<String>,
}

impl Progress {
    fn new(name: String) -> Progress {
        Progress {
            name,
            ops: AtomicU64::new(0),
            errs: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            current: Mutex::new(String::new()),
        }
    }
    fn begin(&self, what: String) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = what;
    }
    fn tick(&self, t0: Instant) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.last_ms
            .store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The model of one worker's subdirectory: relative path -> node; node -> content and xattrs.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, usize>,
    dirs: BTreeSet<String>,
    nodes: BTreeMap<usize, Node>,
    next: usize,
}

#[derive(Default, Clone)]
struct Node {
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Model {
    fn links(&self, node: usize) -> u64 {
        self.files.values().filter(|&&n| n == node).count() as u64
    }
    fn remove_path(&mut self, p: &str) {
        if let Some(n) = self.files.remove(p) {
            if self.links(n) == 0 {
                self.nodes.remove(&n);
            }
        }
    }
    fn node_mut(&mut self, p: &str) -> &mut Node {
        let n = self.files[p];
        self.nodes.get_mut(&n).expect("node of a path")
    }
    /// Names directly in `dir` ("" is the root of the subdirectory).
    fn children(&self, dir: &str) -> BTreeSet<String> {
        let under = |p: &str| -> Option<String> {
            let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
            (parent == dir).then(|| p.rsplit('/').next().unwrap_or(p).to_string())
        };
        self.files
            .keys()
            .filter_map(|p| under(p))
            .chain(self.dirs.iter().filter_map(|p| under(p)))
            .collect()
    }
}

type OpResult = Result<(), String>;

fn io(what: &str, r: std::io::Result<()>) -> OpResult {
    r.map_err(|e| format!("{what}: {e}"))
}

fn random_data(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// One worker: random operations in `root` (its own `wN/`). In strict mode every result is
/// checked against the model and the first mismatch ends the worker with an error; otherwise
/// errors are ignored (the tree may be replaced under it by a restore).
struct Worker {
    root: PathBuf,
    strict: bool,
    rng: StdRng,
    m: Model,
}

impl Worker {
    fn random_dir(&mut self) -> String {
        let mut v: Vec<String> = vec![String::new()];
        v.extend(self.m.dirs.iter().cloned());
        v[self.rng.gen_range(0..v.len())].clone()
    }
    fn random_file_name(&mut self) -> String {
        let d = self.random_dir();
        let f = format!("f{}", self.rng.gen_range(0..FILE_NAMES));
        if d.is_empty() {
            f
        } else {
            format!("{d}/{f}")
        }
    }
    fn existing_file(&mut self) -> Option<String> {
        if self.m.files.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.m.files.len());
        self.m.files.keys().nth(i).cloned()
    }
    fn abs(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Runs one random operation; returns its description and result.
    fn step(&mut self) -> (String, OpResult) {
        let op = self.rng.gen_range(0..15);
        match op {
            0 | 1 => {
                let p = self.random_file_name();
                let data = random_data(&mut self.rng, 40_000);
                let what = format!("create {p} len {}", data.len());
                let r = io(&what, fs::write(self.abs(&p), &data));
                if r.is_ok() {
                    if self.m.files.contains_key(&p) {
                        self.m.node_mut(&p).data = data;
                    } else {
                        self.m.next += 1;
                        let n = self.m.next;
                        self.m.files.insert(p, n);
                        self.m.nodes.insert(
                            n,
                            Node {
                                data,
                                ..Node::default()
                            },
                        );
                    }
                }
                (what, r)
            }
            2 | 3 => {
                let Some(p) = self.existing_file() else {
                    return ("write (no file)".into(), Ok(()));
                };
                let size = self.m.node_mut(&p).data.len() as u64;
                let off = self.rng.gen_range(0..=size + 5000);
                let data = random_data(&mut self.rng, 20_000);
                let what = format!("write {p} at {off} len {}", data.len());
                let r = io(
                    &what,
                    (|| {
                        let mut f = OpenOptions::new().write(true).open(self.abs(&p))?;
                        f.seek(SeekFrom::Start(off))?;
                        f.write_all(&data)
                    })(),
                );
                // A write of nothing changes nothing, not even past the end (POSIX; the kernel
                // does not even send it).
                if r.is_ok() && !data.is_empty() {
                    let d = &mut self.m.node_mut(&p).data;
                    let end = off as usize + data.len();
                    if d.len() < end {
                        d.resize(end, 0);
                    }
                    d[off as usize..end].copy_from_slice(&data);
                }
                (what, r)
            }
            4 => {
                let Some(p) = self.existing_file() else {
                    return ("append (no file)".into(), Ok(()));
                };
                let data = random_data(&mut self.rng, 10_000);
                let what = format!("append {p} len {}", data.len());
                let r = io(
                    &what,
                    (|| {
                        OpenOptions::new()
                            .append(true)
                            .open(self.abs(&p))?
                            .write_all(&data)
                    })(),
                );
                if r.is_ok() {
                    self.m.node_mut(&p).data.extend_from_slice(&data);
                }
                (what, r)
            }
            5 => {
                let Some(p) = self.existing_file() else {
                    return ("truncate (no file)".into(), Ok(()));
                };
                let size = self.m.node_mut(&p).data.len() as u64;
                let len = self.rng.gen_range(0..=size + 20_000);
                let what = format!("truncate {p} to {len}");
                let r = io(
                    &what,
                    (|| {
                        OpenOptions::new()
                            .write(true)
                            .open(self.abs(&p))?
                            .set_len(len)
                    })(),
                );
                if r.is_ok() {
                    self.m.node_mut(&p).data.resize(len as usize, 0);
                }
                (what, r)
            }
            6 => {
                let Some(src) = self.existing_file() else {
                    return ("rename (no file)".into(), Ok(()));
                };
                let dst = self.random_file_name();
                let what = format!("rename {src} -> {dst}");
                let r = io(&what, fs::rename(self.abs(&src), self.abs(&dst)));
                if r.is_ok() {
                    let n = self.m.files[&src];
                    // Renaming onto another link of the same inode does nothing.
                    if self.m.files.get(&dst) != Some(&n) {
                        self.m.files.remove(&src);
                        self.m.remove_path(&dst);
                        self.m.files.insert(dst, n);
                    }
                }
                (what, r)
            }
            7 => {
                let Some(p) = self.existing_file() else {
                    return ("unlink (no file)".into(), Ok(()));
                };
                let what = format!("unlink {p}");
                let r = io(&what, fs::remove_file(self.abs(&p)));
                if r.is_ok() {
                    self.m.remove_path(&p);
                }
                (what, r)
            }
            8 => {
                let d = format!("d{}", self.rng.gen_range(0..DIR_NAMES));
                let what = format!("mkdir {d}");
                if self.m.dirs.contains(&d) {
                    let r = fs::create_dir(self.abs(&d));
                    let ok = matches!(&r, Err(e) if e.kind() == ErrorKind::AlreadyExists);
                    let res = if ok || !self.strict {
                        Ok(())
                    } else {
                        Err(format!(
                            "{what} of an existing dir: expected EEXIST, got {r:?}"
                        ))
                    };
                    return (what, res);
                }
                let r = io(&what, fs::create_dir(self.abs(&d)));
                if r.is_ok() {
                    self.m.dirs.insert(d);
                }
                (what, r)
            }
            9 => {
                let Some(d) = self.m.dirs.iter().next().cloned() else {
                    return ("rmdir (no dir)".into(), Ok(()));
                };
                let what = format!("rmdir {d}");
                let empty = self.m.children(&d).is_empty();
                let r = fs::remove_dir(self.abs(&d));
                match (&r, empty) {
                    (Ok(()), true) => {
                        self.m.dirs.remove(&d);
                        (what, Ok(()))
                    }
                    (Err(e), false) if e.raw_os_error() == Some(libc::ENOTEMPTY) => (what, Ok(())),
                    _ if !self.strict => {
                        if r.is_ok() {
                            self.m.dirs.remove(&d);
                            let pre = format!("{d}/");
                            let gone: Vec<String> = (self.m.files.keys())
                                .filter(|p| p.starts_with(&pre))
                                .cloned()
                                .collect();
                            for p in gone {
                                self.m.remove_path(&p);
                            }
                        }
                        (what, Ok(()))
                    }
                    _ => (what, Err(format!("model empty={empty}, got {r:?}"))),
                }
            }
            10 => {
                let Some(src) = self.existing_file() else {
                    return ("link (no file)".into(), Ok(()));
                };
                let dst = self.random_file_name();
                if self.m.files.contains_key(&dst) {
                    return ("link (target exists)".into(), Ok(()));
                }
                let what = format!("link {src} -> {dst}");
                let r = io(&what, fs::hard_link(self.abs(&src), self.abs(&dst)));
                if r.is_ok() {
                    let n = self.m.files[&src];
                    self.m.files.insert(dst, n);
                }
                (what, r)
            }
            11 => {
                let Some(p) = self.existing_file() else {
                    return ("setxattr (no file)".into(), Ok(()));
                };
                let key = format!("user.k{}", self.rng.gen_range(0..3));
                let val = random_data(&mut self.rng, 64);
                let what = format!("setxattr {p} {key} len {}", val.len());
                let r = setxattr(self.abs(&p), key.as_str(), &val, XattrFlags::empty())
                    .map_err(|e| format!("{what}: {e}"));
                if r.is_ok() {
                    self.m.node_mut(&p).xattrs.insert(key, val);
                }
                (what, r)
            }
            12 => {
                let d = self.random_dir();
                let what = format!("readdir '{d}'");
                let r = fs::read_dir(self.abs(&d)).and_then(|it| {
                    it.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect::<std::io::Result<BTreeSet<String>>>()
                });
                let res = match r {
                    Ok(names) if self.strict => {
                        let want = self.m.children(&d);
                        if names == want {
                            Ok(())
                        } else {
                            Err(format!("names {names:?}, model {want:?}"))
                        }
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("{e}")),
                };
                (what, res)
            }
            13 => {
                let Some(p) = self.existing_file() else {
                    return ("stat (no file)".into(), Ok(()));
                };
                let what = format!("stat+read {p}");
                let n = self.m.files[&p];
                let want_links = self.m.links(n);
                let res = match fs::metadata(self.abs(&p)).and_then(|md| {
                    let mut buf = Vec::new();
                    fs::File::open(self.abs(&p))?.read_to_end(&mut buf)?;
                    Ok((md, buf))
                }) {
                    Err(e) => Err(e.to_string()),
                    Ok(_) if !self.strict => Ok(()),
                    Ok((md, buf)) => {
                        let want = &self.m.nodes[&n].data;
                        if md.len() != want.len() as u64 || md.nlink() != want_links {
                            Err(format!(
                                "size {} nlink {}, model size {} nlink {want_links}",
                                md.len(),
                                md.nlink(),
                                want.len()
                            ))
                        } else if &buf != want {
                            Err(format!("content differs ({})", first_diff(&buf, want)))
                        } else {
                            Ok(())
                        }
                    }
                };
                (what, res)
            }
            _ => {
                let Some(p) = self.existing_file() else {
                    return ("fsync (no file)".into(), Ok(()));
                };
                let data = random_data(&mut self.rng, 8_000);
                let what = format!("write+fsync {p} at 0 len {}", data.len());
                let r = io(
                    &what,
                    (|| {
                        let mut f = OpenOptions::new().write(true).open(self.abs(&p))?;
                        f.write_all(&data)?;
                        f.sync_all()
                    })(),
                );
                if r.is_ok() {
                    let d = &mut self.m.node_mut(&p).data;
                    if d.len() < data.len() {
                        d.resize(data.len(), 0);
                    }
                    d[..data.len()].copy_from_slice(&data);
                }
                (what, r)
            }
        }
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at byte {i}, lens {} vs {}",
            a.len(),
            b.len()
        ),
        None => format!("lens {} vs {}", a.len(), b.len()),
    }
}

/// Compares the tree under `root` with the model: names, types, contents, nlink, xattrs.
fn verify_tree(root: &Path, m: &Model) -> Result<(), String> {
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let rd = fs::read_dir(&abs).map_err(|e| format!("read_dir {}: {e}", abs.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("read_dir entry: {e}"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().map_err(|e| format!("{p}: {e}"))?;
            if ft.is_dir() {
                dirs.insert(p.clone());
                stack.push(p);
            } else {
                files.insert(p);
            }
        }
    }
    let want_files: BTreeSet<String> = m.files.keys().cloned().collect();
    if files != want_files || dirs != m.dirs {
        return Err(format!(
            "names differ: files {files:?} dirs {dirs:?}, model files {want_files:?} dirs {:?}",
            m.dirs
        ));
    }
    for (p, n) in &m.files {
        let node = &m.nodes[n];
        let abs = root.join(p);
        let got = fs::read(&abs).map_err(|e| format!("read {p}: {e}"))?;
        if got != node.data {
            return Err(format!("content of {p}: {}", first_diff(&got, &node.data)));
        }
        let md = fs::metadata(&abs).map_err(|e| format!("stat {p}: {e}"))?;
        if md.nlink() != m.links(*n) {
            return Err(format!(
                "nlink of {p}: {} vs model {}",
                md.nlink(),
                m.links(*n)
            ));
        }
        for (k, v) in &node.xattrs {
            let mut buf = vec![0u8; 256];
            let len = getxattr(&abs, k.as_str(), &mut buf[..])
                .map_err(|e| format!("getxattr {p} {k}: {e}"))?;
            if &buf[..len] != v.as_slice() {
                return Err(format!("xattr {k} of {p} differs"));
            }
        }
    }
    Ok(())
}

fn secs() -> u64 {
    std::env::var("SNAPFS_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

#[derive(Default, Debug)]
struct ChurnStats {
    created: u64,
    deleted: u64,
    restores: u64,
    errors: Vec<String>,
}

/// Takes snapshots `cN` of the container mounted at `mnt`, deletes all but the newest few by
/// name, and (when `restore` is set) restores a random one through the API now and then.
#[allow(clippy::too_many_arguments)]
fn churn(
    mnt: PathBuf,
    container: &'static str,
    sock: PathBuf,
    restore: bool,
    seed: u64,
    stop: Arc<AtomicBool>,
    prog: Arc<Progress>,
    t0: Instant,
) -> ChurnStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut st = ChurnStats::default();
    let mut live: VecDeque<String> = VecDeque::new();
    let snaps = mnt.join(".snapshots");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let alias = format!("c{i}");
        prog.begin(format!("mkdir .snapshots/{alias}"));
        match fs::create_dir(snaps.join(&alias)) {
            Ok(()) => {
                st.created += 1;
                prog.begin(format!("readlink .snapshots/{alias}"));
                match fs::read_link(snaps.join(&alias)) {
                    Ok(t) => live.push_back(t.to_string_lossy().into_owned()),
                    Err(e) => st.errors.push(format!("readlink {alias}: {e}")),
                }
            }
            Err(e) => st.errors.push(format!("mkdir .snapshots/{alias}: {e}")),
        }
        prog.tick(t0);
        while live.len() > 3 {
            let name = live.pop_front().unwrap_or_default();
            prog.begin(format!("rmdir .snapshots/{name}"));
            match fs::remove_dir(snaps.join(&name)) {
                Ok(()) => st.deleted += 1,
                Err(e) => st.errors.push(format!("rmdir .snapshots/{name}: {e}")),
            }
            prog.tick(t0);
        }
        if restore && !live.is_empty() && rng.gen_range(0..4) == 0 {
            let name = live[rng.gen_range(0..live.len())].clone();
            prog.begin(format!("restore {container}/{name}"));
            let out = Command::new("curl")
                .args(["-s", "--max-time", "60", "--unix-socket"])
                .arg(&sock)
                .args(["-X", "PATCH"])
                .arg(format!(
                    "http://x/api/v1/containers/{container}/snapshots/{name}"
                ))
                .output();
            match out {
                Ok(o) if String::from_utf8_lossy(&o.stdout).contains("\"statusCode\":200") => {
                    st.restores += 1
                }
                Ok(o) => st.errors.push(format!(
                    "restore {name}: {} {}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout)
                )),
                Err(e) => st.errors.push(format!("curl: {e}")),
            }
            prog.tick(t0);
        }
        thread::sleep(Duration::from_millis(rng.gen_range(50..300)));
    }
    prog.done.store(true, Ordering::Relaxed);
    st
}

#[test]
fn stress_threads_two_containers_with_snapshot_churn_no_hang_fsck_clean() {
    require_fuse();
    let duration = Duration::from_secs(secs());
    let seed: u64 = std::env::var("SNAPFS_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("stress: seed {seed} (SNAPFS_STRESS_SEED), {duration:?}");

    let store = Store::new();
    let sp = store.path().to_path_buf();
    let mnt_a = store.mountpoint("mnt-a");
    let mnt_b = store.mountpoint("mnt-b");
    for (m, c) in [(&mnt_a, "a"), (&mnt_b, "b")] {
        snapfs([
            "mount",
            &sp.to_string_lossy(),
            &m.to_string_lossy(),
            "--container",
            c,
        ])
        .ok();
    }
    let daemon = store.daemon_pid().expect("daemon pid");

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut progs = Vec::new();
    let mut workers = Vec::new();
    for i in 0..2 * WORKERS_PER_MOUNT {
        let strict = i < WORKERS_PER_MOUNT;
        let mnt = if strict { &mnt_a } else { &mnt_b };
        let root = mnt.join(format!("w{i}"));
        fs::create_dir(&root).expect("worker dir");
        let prog = Arc::new(Progress::new(format!(
            "worker w{i} (container {})",
            if strict { "a" } else { "b" }
        )));
        progs.push(prog.clone());
        let stop = stop.clone();
        let wseed = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        workers.push(thread::spawn(move || {
            let mut w = Worker {
                root,
                strict,
                rng: StdRng::seed_from_u64(wseed),
                m: Model::default(),
            };
            let mut err = None;
            let mut log: VecDeque<String> = VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                if !strict && !w.root.exists() {
                    // A restore replaced the tree: start over in a fresh directory.
                    let _ = fs::create_dir_all(&w.root);
                    w.m = Model::default();
                }
                let n = prog.ops.load(Ordering::Relaxed);
                prog.begin(format!("op {n}"));
                let (what, r) = w.step();
                prog.begin(format!("op {n} done: {what}"));
                log.push_back(what.clone());
                if log.len() > 20 {
                    log.pop_front();
                }
                prog.tick(t0);
                if let Err(e) = r {
                    prog.errs.fetch_add(1, Ordering::Relaxed);
                    if strict {
                        err = Some(format!(
                            "w{i} (seed {wseed}) op {n} `{what}` failed: {e}\nlast ops: {log:?}"
                        ));
                        break;
                    }
                }
            }
            prog.done.store(true, Ordering::Relaxed);
            (w.m, err)
        }));
    }
    let mut churners = Vec::new();
    for (k, (m, c, restore)) in [(&mnt_a, "a", false), (&mnt_b, "b", true)]
        .into_iter()
        .enumerate()
    {
        let prog = Arc::new(Progress::new(format!("snapshot churn of {c}")));
        progs.push(prog.clone());
        let (m, sock, stop) = (m.clone(), sp.join("snapfs.sock"), stop.clone());
        let cseed = seed.wrapping_add(1000 + k as u64);
        churners.push(thread::spawn(move || {
            churn(m, c, sock, restore, cseed, stop, prog, t0)
        }));
    }

    // Watchdog: returns a description of the hang, if any.
    let watchdog = {
        let (progs, stop) = (progs.clone(), stop.clone());
        thread::spawn(move || -> Option<String> {
            loop {
                if t0.elapsed() >= duration {
                    stop.store(true, Ordering::Relaxed);
                }
                if progs.iter().all(|p| p.done.load(Ordering::Relaxed)) {
                    return None;
                }
                let now = t0.elapsed().as_millis() as u64;
                let stuck: Vec<String> = progs
                    .iter()
                    .filter(|p| !p.done.load(Ordering::Relaxed))
                    .filter(|p| {
                        now.saturating_sub(p.last_ms.load(Ordering::Relaxed))
                            > HANG.as_millis() as u64
                    })
                    .map(|p| {
                        format!(
                            "{} stuck in `{}` after {} ops",
                            p.name,
                            p.current(),
                            p.ops.load(Ordering::Relaxed)
                        )
                    })
                    .collect();
                if !stuck.is_empty() {
                    stop.store(true, Ordering::Relaxed);
                    return Some(stuck.join("\n"));
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let hang = watchdog.join().expect("watchdog");
    if let Some(h) = hang {
        // Unblocks the stuck threads (their requests fail with ENOTCONN); they are left behind;
        // then `umount -l` (which would stat, and hang on, a live stuck mount).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon),
            nix::sys::signal::Signal::SIGKILL,
        );
        for m in [&mnt_a, &mnt_b] {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        drop(store);
        panic!("HANG: no progress for {HANG:?} (seed {seed}):\n{h}");
    }

    let mut failures = Vec::new();
    let mut models = Vec::new();
    for (i, h) in workers.into_iter().enumerate() {
        let (m, err) = h.join().expect("worker panicked");
        failures.extend(err);
        if i < WORKERS_PER_MOUNT {
            models.push(m);
        }
    }
    let stats: Vec<ChurnStats> = churners
        .into_iter()
        .map(|h| h.join().expect("churn panicked"))
        .collect();
    println!("stress summary after {:?}:", t0.elapsed());
    for p in &progs {
        println!(
            "  {}: {} ops, {} tolerated errors",
            p.name,
            p.ops.load(Ordering::Relaxed),
            p.errs.load(Ordering::Relaxed)
        );
    }
    for (c, s) in ["a", "b"].iter().zip(&stats) {
        println!(
            "  container {c}: {} snapshots created, {} deleted, {} restores, {} errors",
            s.created,
            s.deleted,
            s.restores,
            s.errors.len()
        );
        for e in s.errors.iter().take(5) {
            println!("    {e}");
        }
    }
    assert!(alive(daemon), "the daemon died during the run");
    for (i, m) in models.iter().enumerate() {
        if let Err(e) = verify_tree(&mnt_a.join(format!("w{i}")), m) {
            failures.push(format!("final check of w{i} (live mount): {e}"));
        }
    }
    failures.extend(stats[0].errors.iter().map(|e| format!("churn of a: {e}")));
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
    assert!(
        stats[0].created > 0 && stats[1].created > 0,
        "no snapshots taken"
    );

    for m in [&mnt_a, &mnt_b] {
        snapfs(["umount", &m.to_string_lossy()]).ok();
    }
    assert!(
        wait_until(Duration::from_secs(30), || !alive(daemon)),
        "daemon still running after both umounts"
    );
    let fsck = snapfs(["fsck", &sp.to_string_lossy()]);
    println!("fsck: {}", fsck.stdout.trim());
    assert!(fsck.status.success(), "fsck not clean: {}", fsck.describe());
}
