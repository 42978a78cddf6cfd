//! Restart without unmount (issue 25): the daemon runs under its supervisor (the default;
//! `SNAPFS_SUPERVISOR=1` here makes it explicit), which keeps every mount's `/dev/fuse`
//! descriptor and state file; a daemon killed with -9 is started again and takes the mounts
//! over. The processes using the mount must not notice: no error, no ENOTCONN, every fsync'd
//! and every accepted byte there, open descriptors (also of an unlinked file) still good, a
//! cwd inside still valid.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{alive, require_fuse, snapfs, wait_until, Mount, Store};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};

const BLOCK: usize = 4096;

fn supervised() -> Mount {
    require_fuse();
    Mount::on_with_env(
        Store::new(),
        &[],
        &[
            ("SNAPFS_SUPERVISOR", Some("1")),
            // Reclaim in small batches, so that kills land in the middle of one.
            ("SNAPFS_RECLAIM_CHUNK", Some("2")),
            // Where the kernel offers io_uring (the io_uring pass of scripts/test.sh), a
            // daemon whose mounts outlive it still mounts over /dev/fuse.
            ("SNAPFS_FUSE_URING", None),
        ],
    )
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

/// Runs `f` until `stop`, recording its first error (with the step it failed at).
fn worker(
    name: &'static str,
    stop: &Arc<AtomicBool>,
    errors: &Arc<Mutex<Vec<String>>>,
    mut f: impl FnMut(u64) -> Result<(), String> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let (stop, errors) = (stop.clone(), errors.clone());
    std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = f(i) {
                errors
                    .lock()
                    .expect("errors")
                    .push(format!("{name} at step {i}: {e}"));
                return;
            }
            i += 1;
        }
    })
}

/// SIGKILLs the daemon and waits for its successor (a new pid, alive); returns how long the
/// new one took to appear.
fn kill_daemon(store: &Path) -> Duration {
    let pid = common::daemon_pid(store).expect("daemon pid");
    assert!(alive(pid), "daemon {pid} is not running");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the daemon");
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            common::daemon_pid(store).is_some_and(|p| p != pid && alive(p))
        }),
        "no new daemon 30 s after killing {pid}: {}",
        fs::read_to_string(store.join("snapfs.supervisor")).unwrap_or_default()
    );
    t0.elapsed()
}

#[test]
fn a_workload_never_sees_the_daemon_killed() {
    workload_across(20, "SNAPFS_RESTART_KILLS", kill_daemon);
}

/// Kills that land while the daemon takes in written-back pages: a daemon killed while the
/// kernel copied a WRITE into a page of its request buffer the process had never touched had
/// the kernel end that WRITE with EIO (faulting a page in gives up for a dying process), and
/// written-back data is not written again: the file read zeros there. Each new daemon starts
/// with fresh buffers and a backlog of WRITEs, and is killed a few milliseconds into it.
#[test]
fn written_back_data_survives_kills_while_the_daemon_takes_it_in() {
    let m = supervised();
    let root = m.path().to_path_buf();
    let store = m.store().path().to_path_buf();
    const CHUNK: usize = 256 << 10;
    const CHUNKS: u64 = 128;
    let stop = Arc::new(AtomicBool::new(false));
    // Round and chunk of the last accepted write (round r writes chunk i with pattern
    // r * CHUNKS + i over the last round's).
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::new(File::create(root.join("big")).expect("create big"));
    let writer = {
        let done = done.clone();
        let f = f.clone();
        // No fsync: every chunk goes through the kernel's writeback.
        worker("writer", &stop, &errors, move |n| {
            let at = (n % CHUNKS) * CHUNK as u64;
            f.write_all_at(&pattern(n, CHUNK), at)
                .map_err(|e| format!("write: {e}"))?;
            done.store(n + 1, Ordering::SeqCst);
            Ok(())
        })
    };
    let kills: usize = std::env::var("SNAPFS_RESTART_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..kills {
        // A few milliseconds into the new daemon's work.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
        kill_daemon(&store);
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread");
    let errors = errors.lock().expect("errors").clone();
    assert!(errors.is_empty(), "the writer saw errors: {errors:#?}");
    // A write-back the kernel saw fail is reported by the next fsync of the file (later
    // writes of a chunk would hide it from the comparison below).
    let synced = f.sync_all();
    let n = done.load(Ordering::SeqCst);
    assert!(n > CHUNKS, "only {n} chunks written");
    let f = File::open(root.join("big")).expect("open big");
    let mut bad = Vec::new();
    for c in 0..CHUNKS {
        // The last write of chunk c.
        let last = (n - 1) - ((n - 1 + CHUNKS - c) % CHUNKS);
        let mut b = vec![0u8; CHUNK];
        f.read_exact_at(&mut b, c * CHUNK as u64).expect("read big");
        if b != pattern(last, CHUNK) {
            let zeros = b.iter().filter(|x| **x == 0).count();
            bad.push(format!("chunk {c} (write {last}): {zeros} zero bytes"));
        }
    }
    if !bad.is_empty() || synced.is_err() {
        let log = fs::read_to_string(store.join("snapfs.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("daemon log (last lines first):\n{}", tail.join("\n"));
    }
    assert!(bad.is_empty(), "{n} writes accepted, lost: {bad:#?}");
    assert!(
        synced.is_ok(),
        "fsync after {n} writes: {synced:?} (a write-back failed)"
    );
}

#[test]
fn a_workload_never_sees_the_daemon_restarted() {
    workload_across(10, "SNAPFS_RESTART_RESTARTS", restart_daemon);
}

/// `snapfs restart`; returns how long it took.
fn restart_daemon(store: &Path) -> Duration {
    let pid = common::daemon_pid(store).expect("daemon pid");
    let t0 = Instant::now();
    let out = snapfs([std::ffi::OsStr::new("restart"), store.as_os_str()]);
    out.assert_success();
    let took = t0.elapsed();
    let new = common::daemon_pid(store).expect("new daemon pid");
    assert!(new != pid && alive(new), "{}", out.describe());
    took
}

/// Runs the workload while `disrupt` replaces the daemon `default` times (the variable
/// `env` overrides the count).
fn workload_across(default: usize, env: &str, mut disrupt: impl FnMut(&Path) -> Duration) {
    let mut m = supervised();
    let root = m.path().to_path_buf();
    let store = m.store().path().to_path_buf();
    let status = snapfs(["status", "--store", store.to_str().expect("utf-8")]);
    assert!(
        status.ok().contains("mounts kept across daemon restarts"),
        "{}",
        status.describe()
    );

    // What the readers check.
    let ro = pattern(1, 1 << 20);
    fs::write(root.join("ro.bin"), &ro).expect("write ro.bin");
    fs::create_dir(root.join("dir")).expect("mkdir dir");
    for i in 0..200 {
        fs::write(root.join(format!("dir/f{i}")), i.to_string()).expect("fill dir");
    }
    fs::create_dir(root.join("c")).expect("mkdir c");
    // A file unlinked while open stays readable through its descriptor.
    let gone_data = pattern(2, 100_000);
    let mut gone = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(root.join("gone"))
        .expect("create gone");
    gone.write_all(&gone_data).expect("write gone");
    fs::remove_file(root.join("gone")).expect("unlink gone");
    // A process whose cwd is inside.
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .current_dir(root.join("dir"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep");

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let synced = Arc::new(AtomicU64::new(0));
    let appended = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();

    // Writer with fsync: block i holds pattern(i); `synced` counts the fsync'd blocks. How
    // long each write + fsync took: the longest ones are the stalls the daemon's
    // replacements caused.
    let op_times = Arc::new(Mutex::new(Vec::new()));
    {
        let f = File::create(root.join("synced")).expect("create synced");
        let synced = synced.clone();
        let op_times = op_times.clone();
        threads.push(worker("fsync writer", &stop, &errors, move |i| {
            let t0 = Instant::now();
            f.write_all_at(&pattern(i, BLOCK), i * BLOCK as u64)
                .map_err(|e| format!("write: {e}"))?;
            f.sync_data().map_err(|e| format!("fsync: {e}"))?;
            op_times.lock().expect("times").push(t0.elapsed());
            synced.store(i + 1, Ordering::SeqCst);
            Ok(())
        }));
    }
    // Appender without fsync: every accepted line must survive.
    {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(root.join("appended"))
            .expect("create appended");
        let appended = appended.clone();
        threads.push(worker("appender", &stop, &errors, move |i| {
            f.write_all(format!("{i:08}\n").as_bytes())
                .map_err(|e| format!("append: {e}"))?;
            appended.store(i + 1, Ordering::SeqCst);
            Ok(())
        }));
    }
    // Readers: a whole file, a directory listing, the unlinked file.
    {
        let path = root.join("ro.bin");
        threads.push(worker("reader", &stop, &errors, move |_| {
            let got = fs::read(&path).map_err(|e| format!("read: {e}"))?;
            (got == ro)
                .then_some(())
                .ok_or("ro.bin changed".to_string())
        }));
    }
    {
        let dir = root.join("dir");
        threads.push(worker("lister", &stop, &errors, move |_| {
            let n = fs::read_dir(&dir)
                .map_err(|e| format!("opendir: {e}"))?
                .map(|e| e.map(|_| ()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("readdir: {e}"))?
                .len();
            (n == 200)
                .then_some(())
                .ok_or(format!("{n} entries, not 200"))
        }));
    }
    {
        let gone = gone.try_clone().expect("dup gone");
        let data = gone_data.clone();
        threads.push(worker("unlinked reader", &stop, &errors, move |i| {
            let at = (i * 7919) % (data.len() as u64 - 100);
            let mut b = [0u8; 100];
            gone.read_exact_at(&mut b, at)
                .map_err(|e| format!("read: {e}"))?;
            (b[..] == data[at as usize..at as usize + 100])
                .then_some(())
                .ok_or("unlinked file changed".to_string())
        }));
    }
    // Names made and removed: O_EXCL creates, renames, unlinks, mkdir/rmdir.
    {
        let c = root.join("c");
        threads.push(worker("namer", &stop, &errors, move |i| {
            let tmp = c.join(format!("t{i}"));
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| format!("create {}: {e}", tmp.display()))?;
            f.write_all(&i.to_le_bytes())
                .map_err(|e| format!("write: {e}"))?;
            drop(f);
            let done = c.join(format!("d{i}"));
            fs::rename(&tmp, &done).map_err(|e| format!("rename: {e}"))?;
            if i >= 10 {
                fs::remove_file(c.join(format!("d{}", i - 10)))
                    .map_err(|e| format!("unlink: {e}"))?;
            }
            let sub = c.join(format!("s{i}"));
            fs::create_dir(&sub).map_err(|e| format!("mkdir: {e}"))?;
            fs::remove_dir(&sub).map_err(|e| format!("rmdir: {e}"))?;
            Ok(())
        }));
    }
    // Snapshots taken and deleted through `.snapshots` (kills land in the middle of one, and
    // of the reclaim a deletion starts).
    {
        let snaps = root.join(".snapshots");
        threads.push(worker("snapshotter", &stop, &errors, move |i| {
            fs::create_dir(snaps.join(format!("k{i}"))).map_err(|e| format!("snapshot: {e}"))?;
            if i >= 2 {
                // `k{i}` is the alias (a symlink) of the snapshot's own name.
                let alias = snaps.join(format!("k{}", i - 2));
                let name = fs::read_link(&alias).map_err(|e| format!("readlink: {e}"))?;
                fs::remove_dir(snaps.join(name)).map_err(|e| format!("delete snapshot: {e}"))?;
            }
            std::thread::sleep(Duration::from_millis(20));
            Ok(())
        }));
    }

    let seed: u64 = std::env::var("SNAPFS_RESTART_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let kills: usize = std::env::var(env)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {seed}, {kills} daemon replacements");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut took = Vec::new();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
        if !errors.lock().expect("errors").is_empty() {
            break;
        }
        took.push(disrupt(&store));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("worker thread");
    }
    took.sort();
    let mut times = op_times.lock().expect("times").clone();
    times.sort_unstable_by(|a, b| b.cmp(a));
    let mut stalls: Vec<Duration> = times.into_iter().take(took.len()).collect();
    stalls.sort();
    eprintln!(
        "{} replacements: the command or the new daemon took p50 {:?}, max {:?}; \
         the fsync writer's longest stalls p50 {:?}, max {:?}",
        took.len(),
        took.get(took.len() / 2),
        took.last(),
        stalls.get(stalls.len() / 2),
        stalls.last()
    );
    let errors = errors.lock().expect("errors").clone();
    if !errors.is_empty() {
        let log = fs::read_to_string(store.join("snapfs.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!("daemon log (last lines first):\n{}", tail.join("\n"));
    }
    assert!(errors.is_empty(), "the workload saw errors: {errors:#?}");

    // Every fsync'd block, every accepted line.
    let n = synced.load(Ordering::SeqCst);
    let f = File::open(root.join("synced")).expect("open synced");
    for i in 0..n {
        let mut b = vec![0u8; BLOCK];
        f.read_exact_at(&mut b, i * BLOCK as u64)
            .expect("read synced");
        assert!(b == pattern(i, BLOCK), "fsync'd block {i} differs");
    }
    let mut text = String::new();
    File::open(root.join("appended"))
        .expect("open appended")
        .read_to_string(&mut text)
        .expect("read appended");
    let lines: Vec<&str> = text.lines().collect();
    let want = appended.load(Ordering::SeqCst) as usize;
    if lines.len() < want {
        // Say where the file stops being what was appended (a lost tail, or a block that
        // reads an older version: zeros where lines were).
        let first_bad = lines
            .iter()
            .enumerate()
            .find(|(i, l)| **l != format!("{i:08}"))
            .map(|(i, l)| {
                (
                    i,
                    l.chars()
                        .take(40)
                        .collect::<String>()
                        .escape_debug()
                        .to_string(),
                )
            });
        let log = fs::read_to_string(store.join("snapfs.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("daemon log (last lines first):\n{}", tail.join("\n"));
        panic!(
            "{} lines, {want} accepted: the file has {} bytes (want at least {}); first line \
             that differs: {first_bad:?}",
            lines.len(),
            text.len(),
            want * 9
        );
    }
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("{i:08}"), "line {i} of the appended file");
    }
    // The cwd of a process inside still resolves.
    let cwd: PathBuf = format!("/proc/{}/cwd", sleeper.id()).into();
    assert_eq!(
        fs::read_dir(&cwd).expect("list the sleeper's cwd").count(),
        200
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(gone);
    m.umount();
    let out = snapfs(["fsck", store.to_str().expect("utf-8 store path")]);
    out.assert_success();
}

/// A daemon that cannot start again (its database gone) leaves the mounts answering EIO,
/// never hanging; `snapfs umount` still works and the supervisor's status says why.
#[test]
fn mounts_answer_eio_when_no_daemon_can_start() {
    let mut m = supervised();
    let store = m.store().path().to_path_buf();
    fs::write(m.join("f"), b"data").expect("write");
    let db = store.join("db");
    let away = store.join("db.away");
    // The next daemon finds no database (a disk gone, say).
    fs::rename(&db, &away).expect("move the database away");
    let pid = common::daemon_pid(&store).expect("daemon pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL the daemon");
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let f = m.join("f");
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(&f).map_err(|e| e.raw_os_error()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a read on the mount still hangs after 60 s");
    assert_eq!(got, Err(Some(libc::EIO)), "a read answers EIO");
    eprintln!("EIO after {:?}", t0.elapsed());
    let status = fs::read_to_string(store.join("snapfs.supervisor")).expect("supervisor status");
    assert!(status.contains("gave up"), "{status}");
    // `snapfs status` says so too, in one line.
    let out = snapfs(["status", "--store", store.to_str().expect("utf-8")]);
    out.assert_one_line_error();
    assert!(
        out.one_line_error().contains("gave up"),
        "{}",
        out.describe()
    );
    // The store directory is still without its database: `snapfs umount` detaches.
    m.umount();
    // Its last mount gone, the supervisor leaves.
    let sup: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("supervisor "))
        .and_then(|p| p.trim().parse().ok())
        .expect("supervisor pid in its status");
    assert!(
        wait_until(Duration::from_secs(10), || !alive(sup)),
        "supervisor {sup} still running after the unmount"
    );
    fs::rename(&away, &db).expect("move the database back");
    snapfs(["fsck", store.to_str().expect("utf-8 store path")]).assert_success();
}

/// `snapfs restart` with a binary that cannot read the store's format is refused before the
/// daemon is told anything (the new daemon would fail to open the store). The daemon here
/// is a stand-in: a `sleep` named in the pid file, and a socket answering `GET /status`
/// with a format from the future.
#[test]
fn a_restart_across_store_formats_is_refused() {
    use std::os::unix::net::UnixListener;
    let store = Store::new();
    let sp = store.path().to_path_buf();
    let mut stand_in = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("start sleep");
    fs::write(
        snapfs::storedir::pid_path(&sp),
        format!("{}\nfdstore\n", stand_in.id()),
    )
    .expect("write the pid file");
    let listener = UnixListener::bind(snapfs::storedir::socket_path(&sp)).expect("bind");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).expect("read the request");
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let body = serde_json::json!({
            "statusCode": 200,
            "message": "Status",
            // What `snapfs restart` reads (a daemon of another version answers more).
            "data": {"version": "9.9.9", "format_version": 999}
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(resp.as_bytes()).expect("answer");
        String::from_utf8_lossy(&req).into_owned()
    });
    let out = snapfs([std::ffi::OsStr::new("restart"), sp.as_os_str()]);
    let req = server.join().expect("stand-in server");
    let still_there = matches!(stand_in.try_wait(), Ok(None));
    let _ = stand_in.kill();
    let _ = stand_in.wait();
    assert!(req.starts_with("GET /api/v1/status"), "asked first: {req}");
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("format 999") && out.stderr.contains("restart refused"),
        "{}",
        out.describe()
    );
    assert!(
        still_there,
        "the daemon was signalled although the restart was refused"
    );
    let _ = fs::remove_file(snapfs::storedir::pid_path(&sp));
}
