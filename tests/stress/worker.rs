//! The random file operations of the stress test's workers and the in-memory model they
//! are checked against (included by `tests/stress.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use rustix::fs::{getxattr, setxattr, XattrFlags};

/// Names a worker picks from.
const FILE_NAMES: usize = 12;
const DIR_NAMES: usize = 4;

/// The model of one worker's subdirectory: relative path -> node; node -> content and xattrs.
#[derive(Default)]
pub struct Model {
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
pub struct Worker {
    pub root: PathBuf,
    pub strict: bool,
    pub rng: StdRng,
    pub m: Model,
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
    pub fn step(&mut self) -> (String, OpResult) {
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
pub fn verify_tree(root: &Path, m: &Model) -> Result<(), String> {
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
