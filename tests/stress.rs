//! Bounded concurrency stress: two containers of one store mounted at once, 8 worker threads
//! doing random mixed operations (each in its own subdirectory, against an in-memory model),
//! snapshot churn (create, delete, restore on container `b`) and a watchdog that fails the test
//! on any hang. Afterwards container `a`'s trees must match the models exactly and `fsck` must
//! be clean. `SNAPFS_STRESS_SECS` sets the duration (default 20), `SNAPFS_STRESS_SEED` the seed.

mod common;
#[path = "stress/worker.rs"]
mod worker;

use worker::{verify_tree, Model, Worker};

use std::collections::VecDeque;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{alive, require_fuse, snapfs, wait_until, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORKERS_PER_MOUNT: usize = 4;
const HANG: Duration = Duration::from_secs(30);

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
