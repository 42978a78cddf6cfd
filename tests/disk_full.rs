//! Disk full (issue 5, item 4): a store on a loop-mounted 256 MiB ext4 filesystem is filled
//! through a real mount. Writers must get ENOSPC (or EDQUOT), never EIO; the daemon stays up;
//! `statfs` reports the truth; everything written before reads back byte-identical (head and
//! snapshot); after deleting the big file and the snapshot, writes succeed again once
//! reclaim has run; and `snapfs fsck` is clean afterwards. Needs root and FUSE.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    alive, daemon_pid, is_mounted, require_fuse, run, snapfs, stop_daemon, umount_quietly,
};
use tempfile::TempDir;

const MIB: usize = 1 << 20;
const IMAGE_SIZE: &str = "256M";
/// More chunks than the image can ever hold: the fill loop must fail before this.
const MAX_FILL_CHUNKS: usize = 400;
/// How long writes may take to succeed again after the deletions.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Deterministic incompressible bytes (xorshift64*), so compression cannot hide the fill.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs a system command (with the fixtures' timeout) and asserts success.
#[track_caller]
fn sys(program: &str, args: &[&OsStr]) -> String {
    let out = run(Command::new(program).args(args));
    assert!(out.status.success(), "{}", out.describe());
    out.stdout
}

/// The loop-mounted filesystem, the store on it and the snapfs mountpoint. On drop (also on
/// failure): `snapfs umount` and `umount -l` of the snapfs mount, SIGTERM (then SIGKILL) to
/// the store's daemon, then the loop mount is unmounted (lazily if busy).
struct Rig {
    _dir: TempDir,
    image: PathBuf,
    disk: PathBuf,
    store: PathBuf,
    mnt: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("snapfs-diskfull-")
            .tempdir()
            .expect("temp dir");
        let image = dir.path().join("img");
        let disk = dir.path().join("disk");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&disk).expect("mkdir disk");
        fs::create_dir(&mnt).expect("mkdir mnt");
        let rig = Rig {
            store: disk.join("store"),
            _dir: dir,
            image,
            disk,
            mnt,
        };
        sys(
            "truncate",
            &[
                OsStr::new("-s"),
                OsStr::new(IMAGE_SIZE),
                rig.image.as_os_str(),
            ],
        );
        sys(
            "mkfs.ext4",
            &[OsStr::new("-q"), OsStr::new("-F"), rig.image.as_os_str()],
        );
        sys(
            "mount",
            &[
                OsStr::new("-o"),
                OsStr::new("loop"),
                rig.image.as_os_str(),
                rig.disk.as_os_str(),
            ],
        );
        assert!(is_mounted(&rig.disk), "loop mount missing");
        rig
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        umount_quietly(&self.mnt);
        stop_daemon(&self.store);
        if is_mounted(&self.disk) {
            let _ = Command::new("umount")
                .arg(&self.disk)
                .stderr(Stdio::null())
                .status();
        }
        if is_mounted(&self.disk) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.disk)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// statvfs figures in bytes: (total, free, available).
fn space(p: &Path) -> (u64, u64, u64) {
    let s = nix::sys::statvfs::statvfs(p).expect("statvfs");
    let frag = s.fragment_size().max(1);
    (
        s.blocks() * frag,
        s.blocks_free() * frag,
        s.blocks_available() * frag,
    )
}

/// Bytes under `p` (regular files), like `du --apparent-size`.
fn tree_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![p.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                pending.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn errno_name(n: i32) -> String {
    format!("{:?} ({n})", nix::errno::Errno::from_raw(n))
}

/// Writes `data` to `path` in 1 MiB chunks and fsyncs.
fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    for chunk in data.chunks(MIB) {
        f.write_all(chunk)?;
    }
    f.sync_all()
}

#[track_caller]
fn assert_same_content(path: &Path, want: &[u8]) {
    let mut got = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut got))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(got.len(), want.len(), "{}: length differs", path.display());
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{}: first differing byte at offset {i}", path.display());
    }
}

/// The daemon is running and the mount answers `ls`.
#[track_caller]
fn assert_daemon_serving(rig: &Rig, when: &str) {
    let pid =
        daemon_pid(&rig.store).unwrap_or_else(|| panic!("{when}: no pid in STORE/snapfs.pid"));
    assert!(alive(pid), "{when}: daemon pid {pid} is gone");
    let ls = run(Command::new("ls").arg("-la").arg(&rig.mnt));
    assert!(
        ls.status.success(),
        "{when}: the mount does not answer ls: {}",
        ls.describe()
    );
}

/// The tail of the store's log, for failure messages.
fn log_tail(rig: &Rig) -> String {
    let text = fs::read_to_string(rig.store.join("snapfs.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn disk_full_gives_enospc_and_recovers_after_reclaim() {
    require_fuse();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the disk-full test needs root (loop mount); it fails, never skips"
    );
    let rig = Rig::new();
    snapfs([OsStr::new("init"), rig.store.as_os_str()]).ok();
    snapfs([
        OsStr::new("mount"),
        rig.store.as_os_str(),
        rig.mnt.as_os_str(),
    ])
    .ok();
    assert!(is_mounted(&rig.mnt), "snapfs mount missing");
    let (disk_total, _, disk_avail0) = space(&rig.disk);
    println!("ext4 image: total {disk_total} B, available at start {disk_avail0} B");

    // 1. Known files, fsync'd, and a snapshot of them.
    let known: Vec<(String, Vec<u8>)> = (0..3u64)
        .map(|i| {
            (
                format!("known-{i}"),
                pattern(i + 1, 5 * MIB + 1234 * i as usize),
            )
        })
        .collect();
    fs::create_dir(rig.join("dir")).expect("mkdir dir");
    for (name, data) in &known {
        write_file(&rig.join(&format!("dir/{name}")), data)
            .unwrap_or_else(|e| panic!("write {name}: {e}"));
        println!(
            "wrote dir/{name}: {} B, crc32 {:08x}",
            data.len(),
            crc32fast::hash(data)
        );
    }
    fs::create_dir(rig.join(".snapshots/base")).expect("mkdir .snapshots/base");
    let snap_name = run(Command::new("getfattr").args([
        OsStr::new("--only-values"),
        OsStr::new("-n"),
        OsStr::new("user.snapfs.name"),
        rig.join(".snapshots/base").as_os_str(),
    ]));
    assert!(snap_name.status.success(), "{}", snap_name.describe());
    let snap_name = snap_name.stdout.trim().to_string();
    assert!(!snap_name.is_empty(), "empty snapshot name");
    println!("snapshot base = {snap_name}");

    // 2. Fill the disk in 1 MiB chunks until a write fails.
    let big = rig.join("big");
    let start = Instant::now();
    let mut written: u64 = 0;
    let mut failure: Option<(i32, &str)> = None;
    {
        let mut f = File::create(&big).expect("create big");
        for i in 0..MAX_FILL_CHUNKS {
            let chunk = pattern(1000 + i as u64, MIB);
            match f.write(&chunk) {
                Ok(n) if n == chunk.len() => written += n as u64,
                Ok(n) => {
                    // A short write: the next write reports the error.
                    written += n as u64;
                }
                Err(e) => {
                    failure = Some((errno_of(&e), "write"));
                    break;
                }
            }
        }
        if failure.is_none() {
            if let Err(e) = f.sync_all() {
                failure = Some((errno_of(&e), "fsync"));
            }
        }
        // Close: an error here is reported too (FUSE flush).
        drop(f);
    }
    let fill_secs = start.elapsed().as_secs_f64();
    let (errno, op) = failure.unwrap_or_else(|| {
        panic!(
            "wrote {written} B ({MAX_FILL_CHUNKS} MiB) into a {IMAGE_SIZE} filesystem \
             without an error"
        )
    });
    println!(
        "fill: {written} B ({} MiB) written in {fill_secs:.1} s, then {op} failed with {}",
        written / MIB as u64,
        errno_name(errno)
    );
    assert!(
        errno == libc::ENOSPC || errno == libc::EDQUOT,
        "disk full reported by {op} as {} instead of ENOSPC/EDQUOT\n--- log ---\n{}",
        errno_name(errno),
        log_tail(&rig)
    );
    assert_daemon_serving(&rig, "after ENOSPC");

    // 3. statfs reports the truth: near-zero available space, as on the backing filesystem.
    let m = nix::sys::statvfs::statvfs(&rig.mnt).expect("statvfs of the mount");
    let frag = m.fragment_size().max(1);
    let (m_total, m_free, m_avail) = (
        m.blocks() * frag,
        m.blocks_free() * frag,
        m.blocks_available() * frag,
    );
    let (d_total, d_free, d_avail) = space(&rig.disk);
    println!(
        "statfs of the mount: bsize {} frsize {frag} blocks {} bfree {} bavail {} \
         => total {m_total} B, free {m_free} B, available {m_avail} B",
        m.block_size(),
        m.blocks(),
        m.blocks_free(),
        m.blocks_available()
    );
    println!("statfs of the ext4: total {d_total} B, free {d_free} B, available {d_avail} B");
    assert!(
        m_total > 0 && m_avail * 50 <= m_total,
        "statfs says {m_avail} B of {m_total} B available on a full disk (more than 2%)"
    );
    // snapfs keeps a reserve on its device (so flushes and deletions always fit; 64 MiB with
    // the default 16 MiB write buffers) and reports what file data can still use: the
    // device's available space less that reserve.
    let close = |a: u64, b: u64| a.abs_diff(b) <= 8 * MIB as u64;
    let reserve = 64 * MIB as u64;
    assert!(
        close(m_total, d_total) && close(m_avail, d_avail.saturating_sub(reserve)),
        "statfs of the mount (total {m_total}, avail {m_avail}) does not match the \
         backing filesystem less the reserve (total {d_total}, avail {d_avail})"
    );

    // 4. Everything written before is intact, on the head and in the snapshot.
    for (name, data) in &known {
        assert_same_content(&rig.join(&format!("dir/{name}")), data);
        assert_same_content(
            &rig.join(&format!(".snapshots/{snap_name}/dir/{name}")),
            data,
        );
        assert_same_content(&rig.join(&format!(".snapshots/base/dir/{name}")), data);
    }
    println!("known files read back identical (head and snapshot)");

    // 5. Delete the big file and the snapshot, then poll (1 s apart, up to 60 s) until a
    // 20 MiB write + fsync succeeds. The deletions themselves are retried in the same loop:
    // on a full disk they may need a moment too, and if they never succeed the history says so.
    let again = pattern(77, 20 * MIB);
    let after = rig.join("after");
    let snap_dir = rig.join(&format!(".snapshots/{snap_name}"));
    let start = Instant::now();
    let mut history = Vec::new();
    let (mut big_gone, mut snap_gone) = (false, false);
    let recovered = loop {
        let secs = start.elapsed().as_secs_f64();
        let mut step = Vec::new();
        if !big_gone {
            match fs::remove_file(&big) {
                Ok(()) => {
                    big_gone = true;
                    step.push("unlink big ok".to_string());
                }
                Err(e) => step.push(format!("unlink big: {}", errno_name(errno_of(&e)))),
            }
        }
        if !snap_gone {
            match fs::remove_dir(&snap_dir) {
                Ok(()) => {
                    snap_gone = true;
                    step.push(format!("rmdir {snap_name} ok"));
                }
                Err(e) => step.push(format!("rmdir {snap_name}: {}", errno_name(errno_of(&e)))),
            }
        }
        let mut done = false;
        if big_gone && snap_gone {
            match write_file(&after, &again) {
                Ok(()) => {
                    done = true;
                    step.push("20 MiB write+fsync ok".to_string());
                }
                Err(e) => {
                    step.push(format!("20 MiB write: {}", errno_name(errno_of(&e))));
                    let _ = fs::remove_file(&after);
                }
            }
        }
        let (_, _, avail) = space(&rig.disk);
        history.push(format!(
            "{secs:5.1} s: {}; ext4 available {avail} B, store {} B",
            step.join(", "),
            tree_bytes(&rig.store)
        ));
        if done {
            break Some(secs);
        }
        if start.elapsed() >= RECOVERY_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let Some(recovery_secs) = recovered else {
        // Diagnostics for the report: RocksDB's background error, then whether the store
        // can be reopened (fsck) once the daemon is gone.
        let alive_now = daemon_pid(&rig.store).is_some_and(alive);
        let rocks_log = fs::read_to_string(rig.store.join("db/LOG")).unwrap_or_default();
        let bg: Vec<&str> = rocks_log
            .lines()
            .filter(|l| l.contains("error_handler") || l.contains("Background IO error"))
            .take(6)
            .collect();
        let umount = snapfs([OsStr::new("umount"), rig.mnt.as_os_str()]);
        let after_umount = format!(
            "still mounted: {}, daemon alive: {}",
            is_mounted(&rig.mnt),
            daemon_pid(&rig.store).is_some_and(alive)
        );
        let fsck = snapfs([OsStr::new("fsck"), rig.store.as_os_str()]);
        let (_, _, avail) = space(&rig.disk);
        panic!(
            "writes did not succeed again within {RECOVERY_TIMEOUT:?} after deleting the big \
             file and the snapshot (daemon alive: {alive_now})\n{}\n--- RocksDB LOG ---\n{}\n\
             --- snapfs umount ---\n{}\n({after_umount})\n--- snapfs fsck (ext4 available {avail} B) ---\n{}",
            history.join("\n"),
            bg.join("\n"),
            umount.describe(),
            fsck.describe()
        );
    };
    for line in &history {
        println!("recovery {line}");
    }
    println!("writes succeed again after {recovery_secs:.1} s");
    assert_same_content(&after, &again);
    for (name, data) in &known {
        assert_same_content(&rig.join(&format!("dir/{name}")), data);
    }
    assert_daemon_serving(&rig, "after recovery");

    // 6. Unmount; fsck is clean.
    snapfs([OsStr::new("umount"), rig.mnt.as_os_str()]).ok();
    assert!(!is_mounted(&rig.mnt), "still mounted after snapfs umount");
    let fsck = snapfs([OsStr::new("fsck"), rig.store.as_os_str()]);
    println!("fsck:\n{}{}", fsck.stdout, fsck.stderr);
    assert!(
        fsck.status.success(),
        "fsck after disk full: {}",
        fsck.describe()
    );
    let (_, _, avail_end) = space(&rig.disk);
    println!("ext4 available at the end: {avail_end} B");
}
