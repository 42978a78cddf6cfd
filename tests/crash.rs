//! Crash safety under `kill -9` (issue 5, item 3; issue 25).
//!
//! A seeded workload runs through a real mount (random writes, appends, truncates, renames,
//! fsyncs, snapshot create/delete, restores through the API) while a timer thread SIGKILLs
//! the daemon at a random moment. Reclaim runs in 2-version batches
//! (`SNAPFS_RECLAIM_CHUNK=2`) so that kills land in the middle of it too. Outside the store
//! the test records what was fsync'd and which snapshots existed (`crash/model.rs`).
//!
//! Two tests:
//! - *remounted*: a daemon without a supervisor (`SNAPFS_SUPERVISOR=0`): its mount dies with
//!   it. After every kill the test counts the retired epochs whose versions were not all
//!   reclaimed yet, `snapfs fsck` must be clean, the store is mounted again, and every
//!   fsync'd file and every recorded snapshot must read back exactly. A restore the kill
//!   interrupted may or may not have happened: either outcome is accepted, nothing else.
//! - *resumed*: the default daemon, under its supervisor, which starts another that takes
//!   the mount over. The workload must see no error at all across the kills, and after each
//!   every file must hold exactly what the workload wrote, fsync'd or not (each accepted write
//!   is in RocksDB's log); fsck is clean at the end. On a store on object storage, accepted
//!   writes may die with the daemon: there the test replaces the daemon with `snapfs restart`
//!   instead (nothing may be lost), and checks that after a kill the mount ends (ENOTCONN)
//!   rather than serving on, and that a new mount has every fsync'd byte.
//!
//! `SNAPFS_CRASH_ITERATIONS` (default 20) and `SNAPFS_CRASH_SEED` (default fixed) control
//! the runs; the seed is printed so a failure can be replayed.

mod common;
#[path = "crash/model.rs"]
mod model;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{alive, is_mounted, require_fuse, run, snapfs, snapfs_bin, wait_until, Store};
use model::{new_files, verify, verify_exact, FileModel, SnapModel, Totals, Workload};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEED: u64 = 0x5eed_c0de_2026;

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

/// `snapfs mount`; with `supervised`, the daemon it starts runs under its supervisor.
#[track_caller]
fn mount(store: &Path, mnt: &Path, supervised: bool) {
    let out = run(std::process::Command::new(snapfs_bin())
        .arg("mount")
        .arg(store)
        .arg(mnt)
        .env_remove("SNAPFS_STORE")
        .env("SNAPFS_RECLAIM_CHUNK", "2")
        .env("SNAPFS_SUPERVISOR", if supervised { "1" } else { "0" })
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

/// How the daemon is replaced under the workload.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Interrupt {
    /// SIGKILL.
    Kill,
    /// `snapfs restart STORE` (a planned handover).
    Restart,
}

/// A timer thread that kills or restarts the daemon `pid` after `delay`; the flag is set
/// just before it does.
fn interrupt_after(
    delay: Duration,
    pid: i32,
    store: &Path,
    how: Interrupt,
) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let fired = Arc::new(AtomicBool::new(false));
    let store = store.to_path_buf();
    let timer = {
        let fired = Arc::clone(&fired);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            fired.store(true, Ordering::SeqCst);
            match how {
                Interrupt::Kill => {
                    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the daemon")
                }
                Interrupt::Restart => {
                    let out = snapfs([std::ffi::OsStr::new("restart"), store.as_os_str()]);
                    assert!(out.status.success(), "snapfs restart: {}", out.describe());
                }
            }
        })
    };
    (fired, timer)
}

/// When the iteration's kill comes: half early (mostly file operations), half after the
/// daemon's first background passes (reclaim of deleted snapshots and restored-over heads).
fn kill_delay(rng: &mut StdRng, it: u64) -> Duration {
    if it.is_multiple_of(2) {
        Duration::from_millis(rng.gen_range(5..=300))
    } else {
        Duration::from_millis(rng.gen_range(900..=2500))
    }
}

/// Each iteration's operation sequence has its own seed, so it does not depend on how many
/// operations the previous (timing-dependent) kills let through.
fn iteration_rng(seed: u64, it: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ (it + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn seed_and_iterations(what: &str) -> (u64, u64) {
    let iterations = env_u64("SNAPFS_CRASH_ITERATIONS").unwrap_or(20);
    let seed = env_u64("SNAPFS_CRASH_SEED").unwrap_or(DEFAULT_SEED);
    println!(
        "crash ({what}): seed {seed:#x} ({seed}), {iterations} iterations \
         (SNAPFS_CRASH_SEED / SNAPFS_CRASH_ITERATIONS)"
    );
    (seed, iterations)
}

fn print_summary(what: &str, seed: u64, t: &Totals, started: Instant) {
    println!(
        "crash summary ({what}): seed {seed:#x}, kills {}, ops {}, \
         files checked exactly {} ({} bytes), written-after-fsync files checked {} \
         ({} untouched bytes), fsync'd bytes verified {}, snapshots verified {} ({} bytes), \
         restores {} (+{} interrupted by the kill, {} files found in the restored state), \
         kills with reclaim unfinished {} ({} versions left), API calls sent again {}, {:.1?}",
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
        t.api_retries,
        started.elapsed()
    );
}

/// One test's run: its seed, its store (the guard unmounts every mount point it handed out
/// and stops the daemon on drop, also when an assertion fails), the mounted container and the
/// workload's files in it.
struct Rig {
    _store: Store,
    mnt: PathBuf,
    sp: PathBuf,
    socket: PathBuf,
    seed: u64,
    iterations: u64,
    rng: StdRng,
    started: Instant,
    files: Vec<FileModel>,
}

fn rig(what: &str, supervised: bool) -> Rig {
    require_fuse();
    let (seed, iterations) = seed_and_iterations(what);
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let sp = store.path().to_path_buf();
    let socket = snapfs::storedir::socket_path(&sp);
    mount(&sp, &mnt, supervised);
    let files = new_files(&mut rng, &mnt);
    Rig {
        _store: store,
        mnt,
        sp,
        socket,
        seed,
        iterations,
        rng,
        started,
        files,
    }
}

#[test]
fn crash_kill9_random_moments_lose_nothing_fsynced() {
    let Rig {
        _store,
        mnt,
        sp,
        socket,
        seed,
        iterations,
        mut rng,
        started,
        mut files,
    } = rig("remounted", false);
    let mut snaps: Vec<SnapModel> = Vec::new();
    let mut t = Totals::default();
    let mut snap_counter = 0u64;
    for it in 0..iterations {
        let pid = daemon_pid(&sp);
        let delay = kill_delay(&mut rng, it);
        let (killed, timer) = interrupt_after(delay, pid, &sp, Interrupt::Kill);
        let mut it_rng = iteration_rng(seed, it);
        let mut w = Workload::new(
            &mut it_rng,
            &mnt,
            &mut files,
            &mut snaps,
            &socket,
            it,
            snap_counter,
        );
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
        t.add(&w);
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
        mount(&sp, &mnt, false);
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
    print_summary("remounted", seed, &t, started);
    assert!(t.restores > 0, "the workload never restored a snapshot");
}

/// The last `n` lines of the store's daemon log.
fn log_tail(store: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(store.join("snapfs.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The daemon that replaced `old` (the supervisor's next child), once it is running.
#[track_caller]
fn wait_next_daemon(store: &Path, old: i32, what: &str) -> i32 {
    let mut next = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            next = common::daemon_pid(store).filter(|p| *p != old && alive(*p));
            next.is_some()
        }),
        "{what}: no daemon replaced {old} within 20 s"
    );
    next.unwrap_or_default()
}

#[test]
fn crash_kill9_daemon_resumed_workload_sees_no_error() {
    let Rig {
        _store,
        mnt,
        sp,
        socket,
        seed,
        iterations,
        mut rng,
        started,
        mut files,
    } = rig("resumed", true);
    // On object storage a batch the daemon answered may still be in its memory: a killed
    // daemon's mounts end (see the end of this test); a planned restart loses nothing.
    let object_store = std::env::var_os("SNAPFS_TEST_OBJECT_STORE").is_some();
    let how = if object_store {
        Interrupt::Restart
    } else {
        Interrupt::Kill
    };
    let iterations = if object_store {
        iterations.min(5)
    } else {
        iterations
    };

    let mut snaps: Vec<SnapModel> = Vec::new();
    let mut t = Totals::default();
    let mut snap_counter = 0u64;
    for it in 0..iterations {
        let pid = daemon_pid(&sp);
        let delay = kill_delay(&mut rng, it);
        // The workload goes on this long after the kill (through the takeover).
        let after = Duration::from_millis(rng.gen_range(200..=800));
        let (fired, timer) = interrupt_after(delay, pid, &sp, how);
        let mut it_rng = iteration_rng(seed, it);
        let mut w = Workload::new(
            &mut it_rng,
            &mnt,
            &mut files,
            &mut snaps,
            &socket,
            it,
            snap_counter,
        );
        w.resume = true;
        let t0 = Instant::now();
        let mut fired_at = None;
        loop {
            if let Err(e) = w.step() {
                panic!(
                    "iteration {it}: the workload saw an error across the daemon's {how:?} \
                     after {delay:?} (seed {seed:#x}): {e}\nthe daemons' log ends with:\n{}",
                    log_tail(&sp, 30)
                );
            }
            if fired.load(Ordering::SeqCst) {
                let at = *fired_at.get_or_insert_with(Instant::now);
                if at.elapsed() >= after {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "iteration {it}: the workload did not get through the {how:?} in 60 s"
            );
        }
        snap_counter = w.snap_counter;
        let ops = w.ops;
        t.add(&w);
        timer.join().expect("timer thread");
        t.kills += 1;
        let next = wait_next_daemon(&sp, pid, &format!("iteration {it}"));
        verify_exact(&mnt, &mut files, &snaps, &mut t, it);
        println!(
            "crash: iteration {it}: {how:?} of {pid} after {delay:?}, daemon {next} took over \
             ({ops} ops, none failed); {} snapshots recorded",
            snaps.len()
        );
    }
    // How often a kill landed between a restore's commit and the kernel's drops (the next
    // daemon finished them; timing decides, so it is counted, not required).
    let log = fs::read_to_string(snapfs::storedir::log_path(&sp)).unwrap_or_default();
    println!(
        "crash: {} restores finished by the daemon that took over",
        log.matches("finishing a restore the previous daemon committed")
            .count()
    );
    if object_store {
        killed_mount_on_object_storage_ends(&sp, &mnt, &socket, &mut files, &mut snaps, &mut t);
    }
    let out = snapfs([std::ffi::OsStr::new("umount"), mnt.as_os_str()]);
    assert!(out.status.success(), "final umount: {}", out.describe());
    common::stop_daemon(&sp);
    fsck_clean(&sp, "after the takeovers and a clean unmount");
    assert!(t.files_checked > 0, "no file was ever checked");
    print_summary("resumed", seed, &t, started);
    assert!(t.restores > 0, "the workload never restored a snapshot");
}

/// On object storage: after a kill the mount must end (its users get an error, the next
/// daemon says why) rather than serve on with writes lost; mounted again, every fsync'd byte
/// is there.
fn killed_mount_on_object_storage_ends(
    sp: &Path,
    mnt: &Path,
    socket: &Path,
    files: &mut [FileModel],
    snaps: &mut Vec<SnapModel>,
    t: &mut Totals,
) {
    let pid = daemon_pid(sp);
    let mut rng = StdRng::seed_from_u64(7);
    let (_, timer) = interrupt_after(Duration::from_millis(100), pid, sp, Interrupt::Kill);
    let mut w = Workload::new(&mut rng, mnt, files, snaps, socket, 99, 1000);
    let t0 = Instant::now();
    let err = loop {
        if let Err(e) = w.step() {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the workload went on 30 s after the kill: the mount was served on"
        );
    };
    t.add(&w);
    timer.join().expect("timer thread");
    t.kills += 1;
    assert!(
        wait_until(Duration::from_secs(20), || !is_mounted(mnt)),
        "the killed daemon's mount is still there 20 s later (the workload saw: {err})"
    );
    let log = fs::read_to_string(snapfs::storedir::log_path(sp)).unwrap_or_default();
    assert!(
        log.contains("not yet put on object storage"),
        "the log does not say why the mount ended"
    );
    mount(sp, mnt, true);
    verify(mnt, files, snaps, t, 99);
    println!(
        "crash: kill on object storage: the mount ended ({err}); remounted, nothing fsync'd lost"
    );
}
