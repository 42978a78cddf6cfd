//! The crash tests' workload and model (see `tests/crash.rs`): files with two names each,
//! what each holds after every returned operation and at its last fsync, the snapshots
//! taken, and the checks of a store read back after a crash.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore};

pub const FILES: usize = 4;
pub const MAX_SIZE: usize = 384 * 1024;
pub const MAX_SNAPSHOTS: usize = 6;

/// One file of the workload, known by index; it lives at one of two names (renames toggle).
pub struct FileModel {
    pub names: [String; 2],
    /// Which name it has now (as far as the test process knows).
    pub at: usize,
    /// Content after every returned operation.
    pub content: Vec<u8>,
    /// Content at the last successful fsync.
    pub fsynced: Option<Vec<u8>>,
    /// A write/truncate was issued after the last fsync (it may or may not have landed).
    pub dirty: bool,
    /// Since the last fsync: byte ranges (start, end) that writes may have changed...
    pub touched: Vec<(usize, usize)>,
    /// ...and the shortest length any prefix of the later operations can leave; bytes below
    /// it and outside `touched` must still be the fsync'd ones.
    pub stable_len: usize,
    /// A restore was sent and its answer never came: the file may instead hold the restored
    /// snapshot's content (`Some(None)`: the snapshot's content of it is not known).
    pub restore_alt: Option<Option<Vec<u8>>>,
}

impl FileModel {
    /// Records an operation issued after the last fsync, before it is issued.
    pub fn issue(&mut self, write: Option<(usize, usize)>, truncate_to: Option<usize>) {
        self.dirty = true;
        if let Some(r) = write {
            self.touched.push(r);
        }
        if let Some(to) = truncate_to {
            self.stable_len = self.stable_len.min(to);
        }
    }

    pub fn synced(&mut self) {
        self.restore_alt = None;
        self.fsynced = Some(self.content.clone());
        self.dirty = false;
        self.touched.clear();
        self.stable_len = self.content.len();
    }
}

/// A snapshot whose mkdir returned and that is not being deleted.
pub struct SnapModel {
    pub alias: String,
    /// Files (index -> content) that were fsync'd and clean when the snapshot was taken.
    pub files: BTreeMap<usize, Vec<u8>>,
}

#[derive(Default)]
pub struct Totals {
    pub kills: u64,
    pub files_checked: u64,
    pub bytes_verified: u64,
    pub partial_files_checked: u64,
    pub partial_bytes_verified: u64,
    pub snapshots_verified: u64,
    pub snapshot_bytes_verified: u64,
    pub ops: u64,
    pub ops_failed_by_kill: u64,
    pub restores: u64,
    pub restores_interrupted: u64,
    pub files_restore_outcome: u64,
    pub kills_with_reclaim_unfinished: u64,
    pub versions_left_to_reclaim: u64,
    pub api_retries: u64,
}

impl Totals {
    /// Adds what one iteration's workload did.
    pub fn add(&mut self, w: &Workload) {
        self.ops += w.ops;
        self.restores += w.restores;
        self.restores_interrupted += w.restores_interrupted;
        self.api_retries += w.api_retries;
    }
}

pub fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

pub fn path_of(mnt: &Path, f: &FileModel) -> PathBuf {
    mnt.join(&f.names[f.at])
}

/// The one existing name of a file under `dir` (exactly one of its two names must exist).
pub fn locate(dir: &Path, f: &FileModel, what: &str) -> usize {
    try_locate(dir, f, what).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `locate`, with errors other than "no such file" (a killed daemon) returned.
pub fn try_locate(dir: &Path, f: &FileModel, what: &str) -> io::Result<usize> {
    let mut here = Vec::new();
    for i in 0..2 {
        match fs::symlink_metadata(dir.join(&f.names[i])) {
            Ok(_) => here.push(i),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    assert_eq!(
        here.len(),
        1,
        "{what}: file {:?} must exist at exactly one of its names, found at {here:?} in {}",
        f.names,
        dir.display()
    );
    Ok(here[0])
}

pub struct Workload<'a> {
    pub rng: &'a mut StdRng,
    pub mnt: &'a Path,
    pub files: &'a mut [FileModel],
    pub snaps: &'a mut Vec<SnapModel>,
    pub socket: &'a Path,
    pub iteration: u64,
    pub snap_counter: u64,
    pub ops: u64,
    pub restores: u64,
    pub restores_interrupted: u64,
    /// The daemon is resumed, not remounted, after a kill: an API call that finds no daemon
    /// is sent again once the next one answers (as `snapfs` commands wait for it).
    pub resume: bool,
    /// API calls sent again because the daemon was being replaced.
    pub api_retries: u64,
}

impl<'a> Workload<'a> {
    pub fn new(
        rng: &'a mut StdRng,
        mnt: &'a Path,
        files: &'a mut [FileModel],
        snaps: &'a mut Vec<SnapModel>,
        socket: &'a Path,
        iteration: u64,
        snap_counter: u64,
    ) -> Self {
        Workload {
            rng,
            mnt,
            files,
            snaps,
            socket,
            iteration,
            snap_counter,
            ops: 0,
            restores: 0,
            restores_interrupted: 0,
            resume: false,
            api_retries: 0,
        }
    }
}

impl Workload<'_> {
    /// One random operation; Err on the first failing syscall.
    pub fn step(&mut self) -> io::Result<()> {
        self.ops += 1;
        let roll = self.rng.gen_range(0..100);
        let i = self.rng.gen_range(0..FILES);
        match roll {
            0..=29 => {
                // Random write at a random offset (may extend the file, leaving a hole).
                let len = self.files[i].content.len();
                let off = self.rng.gen_range(0..=(len + 8192).min(MAX_SIZE - 1));
                let n = self.rng.gen_range(1..=20_000).min(MAX_SIZE - off);
                let data = random_bytes(self.rng, n);
                self.files[i].issue(Some((off, off + n)), None);
                let f = OpenOptions::new()
                    .write(true)
                    .open(path_of(self.mnt, &self.files[i]))?;
                f.write_all_at(&data, off as u64)?;
                let c = &mut self.files[i].content;
                if c.len() < off + n {
                    c.resize(off + n, 0);
                }
                c[off..off + n].copy_from_slice(&data);
            }
            30..=44 => {
                // Append.
                let len = self.files[i].content.len();
                let n = self.rng.gen_range(1..=8000).min(MAX_SIZE - len);
                if n == 0 {
                    return Ok(());
                }
                let data = random_bytes(self.rng, n);
                self.files[i].issue(Some((len, len + n)), None);
                let f = OpenOptions::new()
                    .append(true)
                    .open(path_of(self.mnt, &self.files[i]))?;
                f.write_all_at(&data, len as u64)?;
                self.files[i].content.extend_from_slice(&data);
            }
            45..=52 => {
                // Truncate (mostly shrink, sometimes grow).
                let len = self.files[i].content.len();
                let to = self.rng.gen_range(0..=(len + 4096).min(MAX_SIZE));
                self.files[i].issue(None, Some(to));
                let f = OpenOptions::new()
                    .write(true)
                    .open(path_of(self.mnt, &self.files[i]))?;
                f.set_len(to as u64)?;
                self.files[i].content.resize(to, 0);
            }
            53..=61 => {
                // Rename between the file's two names.
                let f = &mut self.files[i];
                let from = self.mnt.join(&f.names[f.at]);
                let to = self.mnt.join(&f.names[1 - f.at]);
                fs::rename(from, to)?;
                f.at = 1 - f.at;
            }
            62..=81 => {
                // fsync.
                let f = OpenOptions::new()
                    .write(true)
                    .open(path_of(self.mnt, &self.files[i]))?;
                f.sync_all()?;
                self.files[i].synced();
            }
            82..=87 => {
                // Create a snapshot (alias unique over the whole run).
                if self.snaps.len() >= MAX_SNAPSHOTS {
                    return Ok(());
                }
                self.snap_counter += 1;
                let alias = format!("c{}_{}", self.iteration, self.snap_counter);
                let files: BTreeMap<usize, Vec<u8>> = self
                    .files
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !f.dirty)
                    .filter_map(|(k, f)| f.fsynced.clone().map(|c| (k, c)))
                    .collect();
                fs::create_dir(self.mnt.join(".snapshots").join(&alias))?;
                self.snaps.push(SnapModel { alias, files });
            }
            88..=93 => self.restore()?,
            _ => {
                // Delete a snapshot: from now on it is "being deleted" and not checked.
                if self.snaps.is_empty() {
                    return Ok(());
                }
                let k = self.rng.gen_range(0..self.snaps.len());
                let snap = self.snaps.remove(k);
                let dir = self.mnt.join(".snapshots");
                let name = fs::read_link(dir.join(&snap.alias))?;
                fs::remove_dir(dir.join(name))?;
            }
        }
        Ok(())
    }
}

impl Workload<'_> {
    /// Restores a recorded snapshot through the API (what `snapfs snapshots restore` sends;
    /// called directly so that a dead daemon is never restarted behind the test's back).
    pub fn restore(&mut self) -> io::Result<()> {
        if self.snaps.is_empty() {
            return Ok(());
        }
        let k = self.rng.gen_range(0..self.snaps.len());
        let alias = self.snaps[k].alias.clone();
        for (idx, f) in self.files.iter_mut().enumerate() {
            f.restore_alt = Some(self.snaps[k].files.get(&idx).cloned());
        }
        let path = format!("/api/v1/containers/default/snapshots/{alias}");
        let t0 = Instant::now();
        let reply = loop {
            match snapfs::client::call(self.socket, "PATCH", &path, snapfs::client::NO_BODY) {
                Ok(r) => break r,
                // The same restore again: the head ends as the snapshot either way.
                Err(_) if self.resume && t0.elapsed() < Duration::from_secs(30) => {
                    self.api_retries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    self.restores_interrupted += 1;
                    return Err(io::Error::other(format!("restore {alias}: {e:#}")));
                }
            }
        };
        assert_eq!(
            reply.status,
            200,
            "iteration {}: restore {alias}: {}",
            self.iteration,
            String::from_utf8_lossy(&reply.body)
        );
        self.restores += 1;
        // Restored (and durable: the restore's batch is synced): the head is the snapshot.
        for (idx, f) in self.files.iter_mut().enumerate() {
            let at = try_locate(self.mnt, f, &format!("after restore {alias}"))?;
            let actual = fs::read(self.mnt.join(&f.names[at]))?;
            if let Some(want) = self.snaps[k].files.get(&idx) {
                assert!(
                    actual == *want,
                    "iteration {}: file {idx} after restore {alias}: len {} vs {} at snapshot",
                    self.iteration,
                    actual.len(),
                    want.len()
                );
            }
            f.at = at;
            f.content = actual;
            f.synced();
        }
        Ok(())
    }
}

pub enum Checked {
    /// Equal to its fsync'd content (bytes compared).
    Exact(u64),
    /// Written after its fsync: the bytes no later operation touched are the fsync'd ones.
    Partial(u64),
    /// Never fsync'd: nothing is promised.
    Nothing,
}

/// Compares a file read after the crash with what the model promises.
pub fn check_file(f: &FileModel, actual: &[u8]) -> Result<Checked, String> {
    let Some(want) = &f.fsynced else {
        return Ok(Checked::Nothing);
    };
    if !f.dirty {
        if actual != want.as_slice() {
            return Err(format!(
                "differs from its fsync'd content: len {} vs fsync'd {}, first difference at {:?}",
                actual.len(),
                want.len(),
                actual.iter().zip(want.iter()).position(|(a, b)| a != b)
            ));
        }
        return Ok(Checked::Exact(want.len() as u64));
    }
    // Written after its fsync: those writes may or may not have landed, the rest of the
    // fsync'd bytes must be there.
    if actual.len() < f.stable_len {
        return Err(format!(
            "is {} bytes, shorter than the {} bytes no operation after its fsync could have cut",
            actual.len(),
            f.stable_len
        ));
    }
    let mut keep = vec![true; f.stable_len];
    for &(a, b) in &f.touched {
        for x in keep.iter_mut().take(b.min(f.stable_len)).skip(a) {
            *x = false;
        }
    }
    let mut n = 0u64;
    for (x, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
        if actual[x] != want[x] {
            return Err(format!(
                "byte {x} is {:#x}, fsync'd {:#x}, and no later write touched it",
                actual[x], want[x]
            ));
        }
        n += 1;
    }
    Ok(Checked::Partial(n))
}

/// Checks everything recorded against the remounted store; then re-bases the model on what
/// is there (fsync'ing every file) so the next iteration starts from known durable state.
pub fn verify(mnt: &Path, files: &mut [FileModel], snaps: &[SnapModel], t: &mut Totals, it: u64) {
    for (k, f) in files.iter_mut().enumerate() {
        let at = locate(mnt, f, &format!("iteration {it}, head"));
        let path = mnt.join(&f.names[at]);
        let actual = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let checked = check_file(f, &actual)
            .map_err(|e| format!("iteration {it}: file {k} ({}): {e}", path.display()));
        match (checked, f.restore_alt.take()) {
            (Ok(Checked::Exact(n)), _) => {
                t.files_checked += 1;
                t.bytes_verified += n;
            }
            (Ok(Checked::Partial(n)), _) => {
                t.partial_files_checked += 1;
                t.partial_bytes_verified += n;
            }
            (Ok(Checked::Nothing), _) => {}
            // An interrupted restore happened after all: the file is the snapshot's.
            (Err(_), Some(Some(alt))) if actual == alt => {
                t.files_restore_outcome += 1;
                t.files_checked += 1;
                t.bytes_verified += alt.len() as u64;
            }
            // ... and the snapshot's content of this file was not known.
            (Err(_), Some(None)) => t.files_restore_outcome += 1,
            (Err(e), _) => panic!("{e}"),
        }
        // Re-base: what is there now becomes the fsync'd state.
        let h = OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        h.sync_all()
            .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
        f.at = at;
        f.content = actual;
        f.synced();
    }
    verify_snapshots(mnt, files, snaps, t, it);
}

/// Every recorded snapshot is listed and holds the files it was taken with.
fn verify_snapshots(mnt: &Path, files: &[FileModel], snaps: &[SnapModel], t: &mut Totals, it: u64) {
    let snapdir = mnt.join(".snapshots");
    let listed: Vec<String> = fs::read_dir(&snapdir)
        .unwrap_or_else(|e| panic!("list {}: {e}", snapdir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for s in snaps {
        assert!(
            listed.contains(&s.alias),
            "iteration {it}: snapshot {} (mkdir returned, never deleted) is missing; \
             .snapshots lists {listed:?}",
            s.alias
        );
        let root = snapdir.join(&s.alias);
        for (k, want) in &s.files {
            let at = locate(&root, &files[*k], &format!("iteration {it}, {}", s.alias));
            let path = root.join(&files[*k].names[at]);
            let actual = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            assert!(
                actual == *want,
                "iteration {it}: {} differs from the head at snapshot time: len {} vs {}",
                path.display(),
                actual.len(),
                want.len()
            );
            t.snapshot_bytes_verified += want.len() as u64;
        }
        t.snapshots_verified += 1;
    }
}

/// The workload's files, created and fsync'd in `mnt` with random content.
pub fn new_files(rng: &mut StdRng, mnt: &Path) -> Vec<FileModel> {
    let mut files: Vec<FileModel> = (0..FILES)
        .map(|k| FileModel {
            names: [format!("f{k}"), format!("f{k}.renamed")],
            at: 0,
            content: Vec::new(),
            fsynced: None,
            dirty: false,
            touched: Vec::new(),
            stable_len: 0,
            restore_alt: None,
        })
        .collect();
    for f in &mut files {
        let content = random_bytes(rng, 20_000);
        let path = path_of(mnt, f);
        fs::write(&path, &content).expect("create file");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|h| h.sync_all())
            .expect("fsync new file");
        f.content = content;
        f.synced();
    }
    fs::File::open(mnt)
        .and_then(|d| d.sync_all())
        .expect("fsync root");
    files
}

/// After a daemon was replaced under a running workload: every file is where the workload
/// last put it and holds exactly what every returned operation left (fsync'd or not), and
/// every recorded snapshot holds what it was taken with.
pub fn verify_exact(
    mnt: &Path,
    files: &mut [FileModel],
    snaps: &[SnapModel],
    t: &mut Totals,
    it: u64,
) {
    for (k, f) in files.iter_mut().enumerate() {
        let at = locate(mnt, f, &format!("iteration {it}, head"));
        assert_eq!(
            at, f.at,
            "iteration {it}: file {k} is at {:?}, its last rename put it at {:?}",
            f.names[at], f.names[f.at]
        );
        let path = mnt.join(&f.names[at]);
        let actual = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            actual == f.content,
            "iteration {it}: file {k} ({}) differs from what the workload wrote: len {} vs {}, \
             first difference at {:?}",
            path.display(),
            actual.len(),
            f.content.len(),
            actual
                .iter()
                .zip(f.content.iter())
                .position(|(a, b)| a != b)
        );
        t.files_checked += 1;
        t.bytes_verified += actual.len() as u64;
        f.restore_alt = None;
    }
    verify_snapshots(mnt, files, snaps, t, it);
}
