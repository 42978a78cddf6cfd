//! Crash safety under `kill -9` (issue 5, item 3).
//!
//! A seeded workload runs through a real mount (random writes, appends, truncates, renames,
//! fsyncs, snapshot create/delete, restores through the API) while a timer thread SIGKILLs
//! the daemon at a random moment. Reclaim runs in 2-version batches
//! (`SNAPFS_RECLAIM_CHUNK=2`) so that kills land in the middle of it too; after each kill the
//! test counts the retired epochs whose versions were not all reclaimed yet. Outside the store
//! the test records what was fsync'd and which snapshots existed. After every kill: the stale
//! mount is cleaned, `snapfs fsck` must be clean, the store is mounted again, and every
//! fsync'd file and every recorded snapshot must read back exactly. A restore the kill
//! interrupted may or may not have happened: either outcome is accepted, nothing else.
//!
//! `SNAPFS_CRASH_ITERATIONS` (default 20) and `SNAPFS_CRASH_SEED` (default fixed) control
//! the run; the seed is printed so a failure can be replayed.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, require_fuse, run, snapfs, snapfs_bin, wait_until, Store};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const FILES: usize = 4;
const MAX_SIZE: usize = 384 * 1024;
const MAX_SNAPSHOTS: usize = 6;
const DEFAULT_SEED: u64 = 0x5eed_c0de_2026;

/// One file of the workload, known by index; it lives at one of two names (renames toggle).
struct FileModel {
    names: [String; 2],
    /// Which name it has now (as far as the test process knows).
    at: usize,
    /// Content after every returned operation.
    content: Vec<u8>,
    /// Content at the last successful fsync.
    fsynced: Option<Vec<u8>>,
    /// A write/truncate was issued after the last fsync (it may or may not have landed).
    dirty: bool,
    /// Since the last fsync: byte ranges (start, end) that writes may have changed...
    touched: Vec<(usize, usize)>,
    /// ...and the shortest length any prefix of the later operations can leave; bytes below
    /// it and outside `touched` must still be the fsync'd ones.
    stable_len: usize,
    /// A restore was sent and its answer never came: the file may instead hold the restored
    /// snapshot's content (`Some(None)`: the snapshot's content of it is not known).
    restore_alt: Option<Option<Vec<u8>>>,
}

impl FileModel {
    /// Records an operation issued after the last fsync, before it is issued.
    fn issue(&mut self, write: Option<(usize, usize)>, truncate_to: Option<usize>) {
        self.dirty = true;
        if let Some(r) = write {
            self.touched.push(r);
        }
        if let Some(to) = truncate_to {
            self.stable_len = self.stable_len.min(to);
        }
    }

    fn synced(&mut self) {
        self.restore_alt = None;
        self.fsynced = Some(self.content.clone());
        self.dirty = false;
        self.touched.clear();
        self.stable_len = self.content.len();
    }
}

/// A snapshot whose mkdir returned and that is not being deleted.
struct SnapModel {
    alias: String,
    /// Files (index -> content) that were fsync'd and clean when the snapshot was taken.
    files: BTreeMap<usize, Vec<u8>>,
}

#[derive(Default)]
struct Totals {
    kills: u64,
    files_checked: u64,
    bytes_verified: u64,
    partial_files_checked: u64,
    partial_bytes_verified: u64,
    snapshots_verified: u64,
    snapshot_bytes_verified: u64,
    ops: u64,
    ops_failed_by_kill: u64,
    restores: u64,
    restores_interrupted: u64,
    files_restore_outcome: u64,
    kills_with_reclaim_unfinished: u64,
    versions_left_to_reclaim: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = if let Some(hex) = v.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        v.parse()
    };
    Some(parsed.unwrap_or_else(|e| panic!("bad {name}={v}: {e}")))
}

fn daemon_pid(store: &Path) -> i32 {
    let text = fs::read_to_string(store.join("snapfs.pid")).expect("read STORE/snapfs.pid");
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("bad snapfs.pid: {text:?}"))
}

#[track_caller]
fn mount(store: &Path, mnt: &Path) {
    let out = run(std::process::Command::new(snapfs_bin())
        .arg("mount")
        .arg(store)
        .arg(mnt)
        .env_remove("SNAPFS_STORE")
        .env("SNAPFS_RECLAIM_CHUNK", "2")
        .current_dir("/"));
    assert!(out.status.success(), "mount failed: {}", out.describe());
}

#[track_caller]
fn fsck_clean(store: &Path, what: &str) {
    let out = snapfs([std::ffi::OsStr::new("fsck"), store.as_os_str()]);
    assert!(
        out.status.code() == Some(0),
        "fsck not clean {what}: {}",
        out.describe()
    );
}

/// Retired epochs still holding versions (reclaim not finished) and those versions.
fn unfinished_reclaim(store: &Path) -> (u64, u64) {
    // The killed daemon's leader may be a zombie while its other threads still exit (io_uring
    // rings are torn down in exit): its store lock goes with the last of them.
    let mut st = snapfs::storedir::open_store(store);
    let t0 = std::time::Instant::now();
    while st.as_ref().is_err_and(|e| e.to_string().contains("in use"))
        && t0.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
        st = snapfs::storedir::open_store(store);
    }
    let st = st.expect("open the store after the kill");
    let (mut epochs, mut versions) = (0, 0);
    for (e, rec) in st.epochs_snapshot() {
        if rec.kind != snapfs::store::EpochKind::Retired {
            continue;
        }
        let prefix = snapfs::keys::epoch_changes(e);
        let mut n = 0u64;
        st.kv()
            .scan(
                snapfs::kv::Space::Meta,
                &prefix,
                &snapfs::kv::prefix_end(&prefix),
                snapfs::kv::Dir::Forward,
                &mut |_, _| {
                    n += 1;
                    true
                },
            )
            .expect("scan the change index");
        if n > 0 {
            epochs += 1;
            versions += n;
        }
    }
    (epochs, versions)
}

/// After the kill: wait for the daemon to be gone, take the dead mount away.
fn wait_daemon_dead(pid: i32) {
    assert!(
        wait_until(Duration::from_secs(20), || !alive(pid)),
        "daemon {pid} still alive 20 s after SIGKILL"
    );
    // The dead mount stays in place: the next `snapfs mount` must detect it (statfs answers
    // ENOTCONN even while stat is served from the kernel's cache) and clean it up itself.
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn path_of(mnt: &Path, f: &FileModel) -> PathBuf {
    mnt.join(&f.names[f.at])
}

/// The one existing name of a file under `dir` (exactly one of its two names must exist).
fn locate(dir: &Path, f: &FileModel, what: &str) -> usize {
    try_locate(dir, f, what).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `locate`, with errors other than "no such file" (a killed daemon) returned.
fn try_locate(dir: &Path, f: &FileModel, what: &str) -> io::Result<usize> {
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

struct Workload<'a> {
    rng: &'a mut StdRng,
    mnt: &'a Path,
    files: &'a mut [FileModel],
    snaps: &'a mut Vec<SnapModel>,
    socket: &'a Path,
    iteration: u64,
    snap_counter: u64,
    ops: u64,
    restores: u64,
    restores_interrupted: u64,
}

impl Workload<'_> {
    /// One random operation; Err on the first failing syscall.
    fn step(&mut self) -> io::Result<()> {
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
    fn restore(&mut self) -> io::Result<()> {
        if self.snaps.is_empty() {
            return Ok(());
        }
        let k = self.rng.gen_range(0..self.snaps.len());
        let alias = self.snaps[k].alias.clone();
        for (idx, f) in self.files.iter_mut().enumerate() {
            f.restore_alt = Some(self.snaps[k].files.get(&idx).cloned());
        }
        let path = format!("/api/v1/containers/default/snapshots/{alias}");
        let reply = match snapfs::client::call(self.socket, "PATCH", &path, snapfs::client::NO_BODY)
        {
            Ok(r) => r,
            Err(e) => {
                self.restores_interrupted += 1;
                return Err(io::Error::other(format!("restore {alias}: {e:#}")));
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

enum Checked {
    /// Equal to its fsync'd content (bytes compared).
    Exact(u64),
    /// Written after its fsync: the bytes no later operation touched are the fsync'd ones.
    Partial(u64),
    /// Never fsync'd: nothing is promised.
    Nothing,
}

/// Compares a file read after the crash with what the model promises.
fn check_file(f: &FileModel, actual: &[u8]) -> Result<Checked, String> {
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
fn verify(mnt: &Path, files: &mut [FileModel], snaps: &[SnapModel], t: &mut Totals, it: u64) {
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

#[test]
fn crash_kill9_random_moments_lose_nothing_fsynced() {
    require_fuse();
    let iterations = env_u64("SNAPFS_CRASH_ITERATIONS").unwrap_or(20);
    let seed = env_u64("SNAPFS_CRASH_SEED").unwrap_or(DEFAULT_SEED);
    println!("crash: seed {seed:#x} ({seed}), {iterations} iterations (SNAPFS_CRASH_SEED / SNAPFS_CRASH_ITERATIONS)");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    // The Store guard unmounts every mount point it handed out and stops the daemon on
    // drop, also when an assertion fails.
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let sp = store.path().to_path_buf();
    let socket = snapfs::storedir::socket_path(&sp);

    mount(&sp, &mnt);
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
        let content = random_bytes(&mut rng, 20_000);
        let path = path_of(&mnt, f);
        fs::write(&path, &content).expect("create file");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|h| h.sync_all())
            .expect("fsync new file");
        f.content = content;
        f.synced();
    }
    fs::File::open(&mnt)
        .and_then(|d| d.sync_all())
        .expect("fsync root");

    let mut snaps: Vec<SnapModel> = Vec::new();
    let mut t = Totals::default();
    let mut snap_counter = 0u64;
    for it in 0..iterations {
        let pid = daemon_pid(&sp);
        // Half the kills come early (mostly file operations), half after the daemon's first
        // background passes (reclaim of deleted snapshots and restored-over heads).
        let delay = if it % 2 == 0 {
            Duration::from_millis(rng.gen_range(5..=300))
        } else {
            Duration::from_millis(rng.gen_range(900..=2500))
        };
        let killed = Arc::new(AtomicBool::new(false));
        let timer = {
            let killed = Arc::clone(&killed);
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                killed.store(true, Ordering::SeqCst);
                kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the daemon");
            })
        };
        // Each iteration's operation sequence has its own seed, so it does not depend on how
        // many operations the previous (timing-dependent) kills let through.
        let mut it_rng = StdRng::seed_from_u64(seed ^ (it + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut w = Workload {
            rng: &mut it_rng,
            mnt: &mnt,
            files: &mut files,
            snaps: &mut snaps,
            socket: &socket,
            iteration: it,
            snap_counter,
            ops: 0,
            restores: 0,
            restores_interrupted: 0,
        };
        let t0 = Instant::now();
        let err = loop {
            if let Err(e) = w.step() {
                break e;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "iteration {it}: workload not stopped by the kill after 30 s"
            );
        };
        snap_counter = w.snap_counter;
        let ops = w.ops;
        t.ops += ops;
        t.restores += w.restores;
        t.restores_interrupted += w.restores_interrupted;
        timer.join().expect("timer thread");
        assert!(
            killed.load(Ordering::SeqCst),
            "iteration {it}: operation failed before the kill: {err}"
        );
        t.ops_failed_by_kill += 1;
        t.kills += 1;

        wait_daemon_dead(pid);
        let (pending_epochs, pending_versions) = unfinished_reclaim(&sp);
        if pending_epochs > 0 {
            t.kills_with_reclaim_unfinished += 1;
            t.versions_left_to_reclaim += pending_versions;
        }
        fsck_clean(&sp, &format!("after kill {} (seed {seed:#x})", it + 1));
        mount(&sp, &mnt);
        verify(&mnt, &mut files, &snaps, &mut t, it);
        println!(
            "crash: iteration {it}: killed after {delay:?} ({} ops, stopped by: {err}); \
             {} snapshots recorded; {pending_epochs} retired epochs with {pending_versions} \
             versions left to reclaim",
            ops,
            snaps.len()
        );
    }

    // A clean shutdown at the end must leave a clean store too.
    let out = snapfs([std::ffi::OsStr::new("umount"), mnt.as_os_str()]);
    assert!(out.status.success(), "final umount: {}", out.describe());
    fsck_clean(&sp, "after the final clean unmount");

    assert!(
        t.files_checked > 0 && t.bytes_verified > 0,
        "no fsync'd file was ever checked exactly"
    );
    println!(
        "crash summary: iterations {iterations}, seed {seed:#x}, kills {}, ops {}, \
         fsync'd files checked exactly {} ({} bytes), written-after-fsync files checked {} \
         ({} untouched bytes), fsync'd bytes verified {}, snapshots verified {} ({} bytes), \
         restores {} (+{} interrupted by the kill, {} files found in the restored state), \
         kills with reclaim unfinished {} ({} versions left), {:.1?}",
        t.kills,
        t.ops,
        t.files_checked,
        t.bytes_verified,
        t.partial_files_checked,
        t.partial_bytes_verified,
        t.bytes_verified + t.partial_bytes_verified,
        t.snapshots_verified,
        t.snapshot_bytes_verified,
        t.restores,
        t.restores_interrupted,
        t.files_restore_outcome,
        t.kills_with_reclaim_unfinished,
        t.versions_left_to_reclaim,
        started.elapsed()
    );
    assert!(t.restores > 0, "the workload never restored a snapshot");
}
