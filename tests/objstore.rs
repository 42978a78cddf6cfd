//! Stores on object storage (issue 16), through real mounts, on a loopback S3 server
//! (SeaweedFS, started per test by `scripts/s3.sh`): two hosts are two store directories on
//! this machine with their own daemons, sharing one prefix in the bucket.
//! - host A killed with -9: host B attaches, mounts, and finds every fsync'ed byte and every
//!   snapshot, fsck clean;
//! - host A alive: B takes over; A's next write fails cleanly (EIO, and `snapfs status` says
//!   why) and nothing A had fsync'ed is lost;
//! - a read-only host browses snapshots while the writer writes, and never fences it;
//! - the S3 server stopped mid-write and started again: writes return, fsync fails after the
//!   configured timeout, everything resumes, nothing fsync'ed is lost;
//! - a reader host reads an old snapshot while the writer's garbage collection repacks and
//!   deletes the segment objects under it (issue 28), and never fails.

mod common;

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::s3::S3Server;
use common::{require_fuse, snapfs_env, wait_until, Mount, Store};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A host: a store directory attached to (or creating) the store at `url`.
fn host(s3: &S3Server, url: &str, extra: &[&str]) -> Store {
    let mut args = vec!["--object-store".to_string(), url.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let store = Store::init_env(&args, &s3.env());
    assert!(
        store.path().join("store.json").exists(),
        "snapfs init {args:?} made no store"
    );
    store
}

fn mount(s3: &S3Server, store: Store, extra: &[&str]) -> Mount {
    let env = s3.env();
    let env: Vec<(&str, Option<&str>)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    let mut args = vec!["--snapdir", "visible"];
    args.extend_from_slice(extra);
    Mount::on_with_env(store, &args, &env)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` to `path` and fsyncs it.
fn write_synced(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

fn snapfs_with(s3: &S3Server, args: &[&str]) -> common::Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    snapfs_env(&args, &s3.env())
}

fn status(s3: &S3Server, store: &Store) -> serde_json::Value {
    let p = store.path().to_string_lossy().into_owned();
    snapfs_with(s3, &["status", "--store", &p, "--json"]).json()
}

/// `GET /metrics` over the store's socket.
fn get_metrics(store: &Store) -> String {
    let sock = std::os::unix::net::UnixStream::connect(store.path().join("snapfs.sock"))
        .expect("connect to the daemon");
    let req = common::http::build_request("GET", "/metrics", &[], b"");
    let resp = common::http::exchange(sock, &req, "GET /metrics").expect("GET /metrics");
    String::from_utf8_lossy(&resp.body).into_owned()
}

fn fsck_clean(s3: &S3Server, store: &Store) {
    let p = store.path().to_string_lossy().into_owned();
    let out = snapfs_with(s3, &["fsck", &p]);
    assert!(out.success(), "fsck: {}", out.describe());
}

fn daemon_kill9(store: &Store) {
    let pid = store.daemon_pid().expect("daemon pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
    assert!(
        wait_until(Duration::from_secs(10), || !common::alive(pid)),
        "daemon {pid} still alive"
    );
}

#[test]
fn takeover_after_kill_finds_every_fsynced_byte_and_snapshot() {
    require_fuse();
    let s3 = S3Server::start();
    let url = s3.url("kill9");
    let mut a = mount(&s3, host(&s3, &url, &[]), &[]);
    let big = pattern(1, 3 << 20);
    write_synced(&a.join("big"), &big);
    fs::create_dir(a.join("dir")).expect("mkdir");
    write_synced(&a.join("dir/small"), b"small file\n");
    fs::create_dir(a.join(".snapshots/before")).expect("snapshot");
    // After the snapshot: overwrite part of big, fsync.
    let f = OpenOptions::new()
        .write(true)
        .open(a.join("big"))
        .expect("open");
    f.write_all_at(&[0xee; 8192], 1 << 20).expect("pwrite");
    f.sync_all().expect("fsync");
    drop(f);
    let mut big_now = big.clone();
    big_now[1 << 20..(1 << 20) + 8192].fill(0xee);
    // Not synced: may or may not survive.
    fs::write(a.join("unsynced"), b"maybe").expect("write");
    daemon_kill9(a.store());
    let _ = a.umount_output();

    let b_store = host(&s3, &url, &["--attach"]);
    // A command first: it starts a reader daemon; the mount below replaces it with a writer.
    let bp = b_store.path().to_string_lossy().into_owned();
    let listed = snapfs_with(
        &s3,
        &[
            "snapshots",
            "list",
            "--store",
            &bp,
            "--container",
            "default",
        ],
    );
    assert!(listed.success(), "{}", listed.describe());
    {
        let b = mount(&s3, b_store, &[]);
        assert_eq!(fs::read(b.join("big")).expect("read big"), big_now);
        assert_eq!(
            fs::read(b.join("dir/small")).expect("read small"),
            b"small file\n"
        );
        assert_eq!(
            fs::read(b.join(".snapshots/before/big")).expect("read snapshot"),
            big
        );
        if let Ok(u) = fs::read(b.join("unsynced")) {
            assert!(u.is_empty() || u == b"maybe", "unsynced holds {u:?}");
        }
        // B writes: it is the writer now.
        write_synced(&b.join("from-b"), b"b");
        let st = status(&s3, b.store());
        assert_eq!(st["object_store"]["fenced"], false, "{st}");
        assert_eq!(st["object_store"]["read_only"], false, "{st}");
        let mut b = b;
        b.umount();
        fsck_clean(&s3, b.store());
    }
}

#[test]
fn takeover_of_a_live_host_fences_it_and_loses_nothing_it_fsynced() {
    require_fuse();
    let s3 = S3Server::start();
    let url = s3.url("live");
    let mut a = mount(&s3, host(&s3, &url, &[]), &[]);
    let data = pattern(7, 1 << 20);
    write_synced(&a.join("a1"), &data);
    fs::create_dir(a.join(".snapshots/s1")).expect("snapshot");
    write_synced(&a.join("a2"), b"second");

    let mut b = mount(&s3, host(&s3, &url, &["--attach"]), &[]);
    assert_eq!(fs::read(b.join("a1")).expect("read a1 on B"), data);
    assert_eq!(fs::read(b.join("a2")).expect("read a2 on B"), b"second");
    assert_eq!(
        fs::read(b.join(".snapshots/s1/a1")).expect("snapshot on B"),
        data
    );

    // A's next durable write fails with EIO; later writes fail too.
    let r = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(a.join("after"))?;
        f.write_all(b"lost")?;
        f.sync_all()
    })();
    let e = r.expect_err("A wrote durably after B took over");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let again =
        fs::write(a.join("again"), b"x").and_then(|_| fs::File::open(a.join("again"))?.sync_all());
    assert!(again.is_err(), "A still writes after being fenced");
    let st = status(&s3, a.store());
    assert_eq!(st["object_store"]["fenced"], true, "{st}");
    let metrics = get_metrics(a.store());
    assert!(
        metrics.contains("snapfs_object_store_fenced 1"),
        "metrics do not say fenced: {metrics}"
    );
    let p = a.store().path().to_string_lossy().into_owned();
    let human = snapfs_with(&s3, &["status", "--store", &p]);
    assert!(
        human.stdout.contains("FENCED"),
        "status does not say why: {}",
        human.describe()
    );
    // A's reads answer EIO (its database is closed) or what it had; never other data.
    match fs::read(a.join("a1")) {
        Ok(d) => assert_eq!(d, data),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    // Unmounting A works, and says why it could not save anything.
    let out = a.umount_output();
    assert!(out.success(), "umount of a fenced host: {}", out.describe());
    assert!(
        out.stderr.contains("another host"),
        "umount does not say why: {}",
        out.describe()
    );

    // B has everything A fsync'ed, and none of what failed.
    assert_eq!(fs::read(b.join("a1")).expect("B a1"), data);
    assert!(!b.join("after").exists() || fs::read(b.join("after")).unwrap_or_default().is_empty());
    write_synced(&b.join("b1"), b"mine");
    b.umount();
    fsck_clean(&s3, b.store());
}

#[test]
fn read_only_host_browses_snapshots_while_the_writer_writes() {
    require_fuse();
    let s3 = S3Server::start();
    let url = s3.url("reader");
    let a = mount(&s3, host(&s3, &url, &[]), &[]);
    let v1 = pattern(3, 256 << 10);
    write_synced(&a.join("f"), &v1);
    fs::create_dir(a.join(".snapshots/v1")).expect("snapshot");

    // Commands on an attached host that runs no daemon start a reader: listing snapshots or
    // checking the store never takes it over.
    let r_store = host(&s3, &url, &["--attach"]);
    let rp = r_store.path().to_string_lossy().into_owned();
    let listed = snapfs_with(
        &s3,
        &[
            "snapshots",
            "list",
            "--store",
            &rp,
            "--container",
            "default",
            "--json",
        ],
    );
    assert!(listed.success(), "{}", listed.describe());
    assert!(listed.stdout.contains("v1"), "{}", listed.describe());
    // A change through that reader is refused with one clear line (409), not a 500.
    let refused = snapfs_with(
        &s3,
        &[
            "snapshots",
            "create",
            "--store",
            &rp,
            "--container",
            "default",
        ],
    );
    refused.assert_one_line_error();
    assert!(
        refused.stderr.contains("read-only"),
        "{}",
        refused.describe()
    );
    common::stop_daemon(r_store.path());
    fsck_clean(&s3, &r_store);
    write_synced(&a.join("after-list"), b"still the writer");
    let r = mount(&s3, r_store, &["--read-only"]);
    assert_eq!(
        fs::read(r.join(".snapshots/v1/f")).expect("reader snapshot"),
        v1
    );
    assert_eq!(fs::read(r.join("f")).expect("reader head"), v1);
    let e = fs::write(r.join("nope"), b"x").expect_err("reader wrote");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = fs::create_dir(r.join(".snapshots/nope")).expect_err("reader took a snapshot");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let st = status(&s3, r.store());
    assert_eq!(st["object_store"]["read_only"], true, "{st}");

    // The writer keeps writing and syncing: the reader never fenced it.
    for i in 0..20u8 {
        write_synced(&a.join(format!("w{i}")), &pattern(i, 64 << 10));
        assert_eq!(
            fs::read(r.join(".snapshots/v1/f")).expect("reader during writes"),
            v1
        );
    }
    fs::create_dir(a.join(".snapshots/v2")).expect("writer snapshot after the reader");
    let st = status(&s3, a.store());
    assert_eq!(st["object_store"]["fenced"], false, "{st}");
    drop(r);
    drop(a);
}

#[test]
fn s3_outage_blocks_fsync_then_everything_resumes() {
    require_fuse();
    let mut s3 = S3Server::start();
    let url = s3.url("outage");
    let store = host(&s3, &url, &["--fsync-timeout-ms", "3000"]);
    let mut a = mount(&s3, store, &[]);
    let before = pattern(9, 512 << 10);
    write_synced(&a.join("before"), &before);

    s3.stop();
    // Unsynced writes still return (they wait in the backlog).
    let during = pattern(11, 256 << 10);
    let f = fs::File::create(a.join("during")).expect("create during the outage");
    f.write_all_at(&during, 0).expect("write during the outage");
    // fsync fails after the timeout, with EIO.
    let e = f
        .sync_all()
        .expect_err("fsync succeeded with the server down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let log = fs::read_to_string(a.store().path().join("snapfs.log")).unwrap_or_default();
    assert!(
        log.contains("took no write"),
        "no log line for the failed fsync: {log}"
    );

    s3.restart();
    // The same descriptor syncs once the server is back.
    assert!(
        wait_until(Duration::from_secs(60), || f.sync_all().is_ok()),
        "fsync never succeeded after the server came back"
    );
    drop(f);
    write_synced(&a.join("after"), b"after");
    let st = status(&s3, a.store());
    let o = &st["object_store"];
    assert_eq!(o["backlog_bytes"], 0, "{st}");
    // The traffic counters: everything written was sent at least once.
    let written = o["written_bytes"].as_u64().expect("written_bytes");
    assert!(written >= (768 << 10), "{st}");
    assert!(
        o["put_bytes"].as_u64().expect("put_bytes") >= written,
        "{st}"
    );
    assert!(
        o["put_requests"].as_u64().expect("put_requests") > 0,
        "{st}"
    );
    a.remount();
    assert_eq!(fs::read(a.join("before")).expect("before"), before);
    assert_eq!(fs::read(a.join("during")).expect("during"), during);
    assert_eq!(fs::read(a.join("after")).expect("after"), b"after");
    a.umount();
    fsck_clean(&s3, a.store());
}

#[test]
fn init_refuses_what_would_lose_or_share_data() {
    let s3 = S3Server::start();
    let url = s3.url("refuse");
    let _a = host(&s3, &url, &[]);
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("x").to_string_lossy().into_owned();
    // A second store on the same prefix would fence the first's data: refused.
    let out = snapfs_with(&s3, &["init", &p, "--object-store", &url]);
    out.assert_one_line_error();
    assert!(out.stderr.contains("--attach"), "{}", out.describe());
    assert!(!Path::new(&p).exists(), "a refused init left {p}");
    // Attaching to nothing: refused.
    let out = snapfs_with(
        &s3,
        &["init", &p, "--object-store", &s3.url("empty"), "--attach"],
    );
    out.assert_one_line_error();
    assert!(!Path::new(&p).exists());
    // Bad URLs and an unreachable server: one clear line each.
    for bad in ["gs://b/x", "s3://", "s3://UPPER/x"] {
        let out = snapfs_with(&s3, &["init", &p, "--object-store", bad]);
        out.assert_one_line_error();
    }
    let args: Vec<&OsStr> = ["init", p.as_str(), "--object-store", "s3://snapfs/x"]
        .into_iter()
        .map(OsStr::new)
        .collect();
    let out = snapfs_env(
        &args,
        &[
            (
                "AWS_ENDPOINT_URL".to_string(),
                Some("http://127.0.0.1:9".to_string()),
            ),
            ("AWS_ALLOW_HTTP".to_string(), Some("true".to_string())),
            ("AWS_ACCESS_KEY_ID".to_string(), Some("k".to_string())),
            ("AWS_SECRET_ACCESS_KEY".to_string(), Some("s".to_string())),
            ("AWS_REGION".to_string(), Some("us-east-1".to_string())),
        ],
    );
    out.assert_one_line_error();
    assert!(out.stderr.contains("cannot reach"), "{}", out.describe());
    // A second daemon on the same directory: refused by its lock, not a takeover.
    let store = host(&s3, &s3.url("lock"), &[]);
    let m = mount(&s3, store, &[]);
    let sp = m.store().path().to_string_lossy().into_owned();
    let out = snapfs_with(&s3, &["fsck", &sp]);
    assert!(!out.success(), "fsck opened a store its daemon holds");
    assert!(out.stderr.contains("in use"), "{}", out.describe());
}

/// Writes that are not synced keep returning while the server is down, until the backlog
/// is full; then they wait, and go on once the server is back. (At the kv level: through a
/// mount the page cache would absorb the writes first.)
#[test]
fn a_full_backlog_makes_writes_wait_until_the_server_is_back() {
    use snapfs::kv::slate::{SlateKv, SlateOptions};
    use snapfs::kv::Status;
    use snapfs::kv::{Batch, Kv, KvRead, Space};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let mut s3 = S3Server::start();
    // The client configured from this server's AWS_* values (not the process environment).
    let vars = s3.env().into_iter().filter_map(|(k, v)| Some((k, v?)));
    let os = Arc::new(snapfs::kv::slate::s3_client("snapfs", vars).expect("S3 client"));
    let opts = SlateOptions {
        backlog_bytes: 1 << 20,
        ..Default::default()
    };
    let kv = Arc::new(SlateKv::open_with(os, "backlog", &opts).expect("open"));
    let chunk = vec![0x5a; 128 << 10];
    let mut b = Batch::new();
    b.put(Space::Data, b"first".to_vec(), chunk.clone());
    kv.write(b, true)
        .expect("durable write while the server is up");

    s3.stop();
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (kv, done, chunk) = (kv.clone(), done.clone(), chunk.clone());
        std::thread::spawn(move || {
            for i in 0..32u32 {
                let mut b = Batch::new();
                b.put(Space::Data, format!("k{i:04}").into_bytes(), chunk.clone());
                kv.write(b, false).expect("write");
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // 32 x 128 KiB = 4 MiB, four times the backlog: the writer stops part of the way.
    std::thread::sleep(Duration::from_secs(3));
    let stalled_at = done.load(Ordering::SeqCst);
    assert!(
        stalled_at < 32,
        "all 4 MiB returned with a 1 MiB backlog and the server down"
    );
    assert!(
        stalled_at > 0,
        "no write returned at all while the server was down"
    );
    let st = kv.remote_status().expect("remote status");
    assert!(st.backlog_bytes > 0, "{st:?}");

    s3.restart();
    writer.join().expect("writer");
    assert_eq!(done.load(Ordering::SeqCst), 32);
    kv.sync().expect("sync once the server is back");
    for i in 0..32u32 {
        let v = kv
            .get(Space::Data, format!("k{i:04}").as_bytes())
            .expect("get");
        assert_eq!(v.as_deref(), Some(&chunk[..]), "k{i:04}");
    }
    assert_eq!(kv.remote_status().expect("status").backlog_bytes, 0);
}

/// A daemon told to stop while the object store is down exits in bounded time (closing gives
/// up after 30 s instead of retrying for ever), and what was synced before is all there.
#[test]
fn unmount_with_the_server_down_exits_in_bounded_time() {
    require_fuse();
    let mut s3 = S3Server::start();
    let store = host(&s3, &s3.url("down"), &["--fsync-timeout-ms", "2000"]);
    let mut a = mount(&s3, store, &[]);
    write_synced(&a.join("kept"), b"synced before the outage");
    s3.stop();
    fs::write(a.join("unsynced"), b"maybe").expect("write during the outage");
    let pid = a.store().daemon_pid().expect("daemon pid");
    let _ = a.umount_output();
    assert!(
        wait_until(Duration::from_secs(90), || !common::alive(pid)),
        "the daemon still runs 90 s after its last unmount with the server down"
    );
    s3.restart();
    // The same server (ports and credentials kept): the mount's environment still holds.
    a.mount();
    assert_eq!(
        fs::read(a.join("kept")).expect("kept"),
        b"synced before the outage"
    );
    a.umount();
}

/// Reads 4 KiB pieces of `path` at pseudo-random offsets and compares them with `want`,
/// dropping the kernel's cached pages first so that every read reaches the daemon.
fn read_pieces(path: &Path, want: &[u8], seed: &mut u64, n: usize) -> Result<(), String> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(|e| format!("fadvise {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = ((*seed >> 33) as usize % (want.len() / 4096)) * 4096;
        f.read_exact_at(&mut buf, off as u64)
            .map_err(|e| format!("read {} at {off}: {e}", path.display()))?;
        if buf[..] != want[off..off + 4096] {
            return Err(format!("{} at {off}: other bytes", path.display()));
        }
    }
    Ok(())
}

/// Issue 28: a reader host reads an old snapshot while the writer overwrites a file, takes
/// and deletes snapshots, and its garbage collection repacks and deletes the segments the
/// snapshot's blocks were in. The reader's small cache makes it fetch again and again, with
/// views that follow the writer seconds behind: no read fails or returns other bytes.
#[test]
fn reader_host_reads_an_old_snapshot_while_the_writer_collects_segments() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    require_fuse();
    let s3 = S3Server::start();
    let url = s3.url("reader-gc");
    let a = mount(&s3, host(&s3, &url, &[]), &[]);
    let old = pattern(17, 12 << 20);
    write_synced(&a.join("big"), &old);
    fs::create_dir(a.join(".snapshots/old")).expect("snapshot old");

    let r = mount(
        &s3,
        host(&s3, &url, &["--attach", "--cache-size", "64M"]),
        &["--read-only"],
    );
    let snap = r.join(".snapshots/old/big");
    assert!(
        wait_until(Duration::from_secs(30), || fs::read(&snap)
            .is_ok_and(|d| d == old)),
        "the reader never saw snapshot old"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let (snap, head, old) = (snap.clone(), r.join("big"), old.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let mut seed = 7u64;
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                read_pieces(&snap, &old, &mut seed, 64)?;
                reads += 64;
                // The head moves under the reader: any content, but no error (its reads
                // churn the reader's cache).
                let f = fs::File::open(&head).map_err(|e| format!("open head: {e}"))?;
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0u64;
                loop {
                    let n = f
                        .read_at(&mut buf, off)
                        .map_err(|e| format!("read head at {off}: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    off += n as u64;
                }
                // The whole snapshot file, now and then.
                if reads.is_multiple_of(512) {
                    let d = fs::read(&snap).map_err(|e| format!("read snapshot: {e}"))?;
                    if d != old {
                        return Err("the snapshot read whole holds other bytes".into());
                    }
                }
            }
            Ok(reads)
        })
    };

    // The writer: each round overwrites big (16 MiB), takes a snapshot and deletes the one
    // before the last (12 rounds: three segments' worth); then it idles, which makes its
    // garbage collection repack the segments the old blocks are in, and delete the emptied
    // ones 20 s after they emptied. The reader reads all along.
    let mut round = 0u32;
    while round < 12 && !reader.is_finished() {
        round += 1;
        write_synced(&a.join("big"), &pattern(round as u8, 16 << 20));
        fs::create_dir(a.join(format!(".snapshots/s{round}"))).expect("snapshot");
        if round > 2 {
            let alias = a.join(format!(".snapshots/s{}", round - 2));
            let name = fs::read_link(&alias).expect("alias link");
            fs::remove_dir(a.join(".snapshots").join(name)).expect("rmdir snapshot");
        }
    }
    let t0 = std::time::Instant::now();
    let deleted = loop {
        let st = status(&s3, a.store());
        let deleted = st["object_store"]["segments_deleted"].as_u64().unwrap_or(0);
        if deleted >= 3 || reader.is_finished() {
            break deleted;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "fewer than 3 segments deleted after 240 s idle: {st}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // The reader goes on a few seconds past the deletions.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let reads = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("the reader failed after {round} writer rounds: {e}"));
    eprintln!(
        "reader-gc: {reads} snapshot reads over {round} writer rounds, {deleted} segments deleted"
    );
    assert!(reads > 0, "the reader read nothing");
    // What the reader sees at the end, after the writer's repacks: the same bytes.
    assert_eq!(fs::read(&snap).expect("reader snapshot at the end"), old);
    assert_eq!(fs::read(a.join(".snapshots/old/big")).expect("writer"), old);
    drop(r);
    let mut a = a;
    a.umount();
    fsck_clean(&s3, a.store());
}
