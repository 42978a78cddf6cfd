//! The FUSE transport: `/dev/fuse` (the daemon's shared workers) or FUSE-over-io_uring
//! (per-CPU rings).
//! Which one a mount uses follows `/sys/module/fuse/parameters/enable_uring` and
//! `SNAPFS_FUSE_URING`; the daemon reports it (and counts the requests its rings served), so
//! a silent fallback cannot pass for io_uring. Both transports must answer identically.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use common::*;
use rustix::fs::{FallocateFlags, RenameFlags, SeekFrom, Timespec, Timestamps, XattrFlags, CWD};

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Tests that read or change the kernel's global switch run one at a time.
static SWITCH: Mutex<()> = Mutex::new(());

fn switch_lock() -> MutexGuard<'static, ()> {
    SWITCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kernel's switch: Some(true) for Y; None if this kernel has no FUSE-over-io_uring.
fn enable_uring() -> Option<bool> {
    fs::read_to_string(ENABLE_URING)
        .ok()
        .map(|v| v.trim() == "Y")
}

/// Puts the switch back as it was when dropped (a test that forces io_uring turns it on).
struct RestoreSwitch(Option<bool>);

impl Drop for RestoreSwitch {
    fn drop(&mut self) {
        if let Some(was) = self.0 {
            let _ = fs::write(ENABLE_URING, if was { "Y" } else { "N" });
        }
    }
}

/// A mount whose daemon runs without a supervisor (with one, mounts take /dev/fuse: see
/// `a_supervised_daemon_mounts_over_dev_fuse`).
fn mount(env: Option<&str>) -> Mount {
    Mount::on_with_env(
        Store::new(),
        &[],
        &[("SNAPFS_FUSE_URING", env), ("SNAPFS_SUPERVISOR", Some("0"))],
    )
}

/// Some requests of every common kind.
fn exercise(root: &Path) {
    fs::create_dir(root.join("d")).expect("mkdir");
    fs::write(root.join("d/f"), b"data").expect("write");
    assert_eq!(fs::read(root.join("d/f")).expect("read"), b"data");
    assert!(fs::read_dir(root.join("d")).expect("readdir").count() == 1);
    fs::remove_file(root.join("d/f")).expect("unlink");
    fs::remove_dir(root.join("d")).expect("rmdir");
}

#[test]
fn mount_transport_follows_enable_uring_parameter() {
    let _g = switch_lock();
    let Some(on) = enable_uring() else {
        // No FUSE-over-io_uring in this kernel: /dev/fuse is the only transport.
        let m = mount(None);
        assert_eq!(m.fuse_transport(), ("dev_fuse".to_string(), 0));
        return;
    };
    let m = mount(None);
    exercise(m.path());
    let (transport, requests) = m.fuse_transport();
    if on {
        assert_eq!(
            transport, "io_uring",
            "enable_uring is Y but the mount fell back"
        );
        assert!(
            requests > 0,
            "io_uring mount served no request through its rings"
        );
        exercise(m.path());
        let (_, after) = m.fuse_transport();
        assert!(
            after > requests,
            "requests did not go through the rings: {after}"
        );
    } else {
        assert_eq!((transport.as_str(), requests), ("dev_fuse", 0));
    }
}

#[test]
fn mount_with_uring_off_uses_dev_fuse() {
    let m = mount(Some("0"));
    exercise(m.path());
    assert_eq!(m.fuse_transport(), ("dev_fuse".to_string(), 0));
}

#[test]
fn mount_with_uring_forced_uses_io_uring() {
    let _g = switch_lock();
    let _restore = RestoreSwitch(enable_uring());
    let mut m = mount(Some("1"));
    assert_eq!(
        enable_uring(),
        Some(true),
        "SNAPFS_FUSE_URING=1 must turn {ENABLE_URING} on (this kernel needs FUSE-over-io_uring)"
    );
    exercise(m.path());
    let (transport, requests) = m.fuse_transport();
    assert_eq!(
        transport, "io_uring",
        "SNAPFS_FUSE_URING=1 but the mount fell back"
    );
    assert!(requests > 0);
    // The requests a queue hands to helper threads: fsync, and a snapshot (which waits
    // for the kernel), then a clean unmount and a remount.
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    fs::File::open(&f)
        .and_then(|h| h.sync_all())
        .expect("fsync");
    fs::create_dir(m.join(".snapshots/s1")).expect("snapshot");
    assert_eq!(fs::read(m.join(".snapshots/s1/f")).expect("read"), b"x");
    m.remount();
    assert_eq!(m.fuse_transport().0, "io_uring");
    assert_eq!(fs::read(&f).expect("read after remount"), b"x");
}

/// What a sequence of operations observed: results and errors, without the values that
/// differ between two runs (inode numbers, current times).
fn transcript(root: &Path) -> Vec<String> {
    let mut t = Vec::new();
    let mut note = |what: &str, v: String| t.push(format!("{what}: {v}"));
    let st = |p: &Path| match fs::symlink_metadata(p) {
        Ok(m) => format!(
            "mode {:o} nlink {} size {} blocks {} uid {} gid {} rdev {} blksize {}",
            m.mode(),
            m.nlink(),
            m.size(),
            m.blocks(),
            m.uid(),
            m.gid(),
            m.rdev(),
            m.blksize()
        ),
        Err(e) => format!("error {:?}", e.raw_os_error()),
    };
    let err = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error {:?}", e.raw_os_error()),
    };
    let rerr = |r: rustix::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("errno {}", e.raw_os_error()),
    };
    let p = |rel: &str| root.join(rel);

    note("mkdir", err(fs::create_dir(p("d"))));
    note("stat d", st(&p("d")));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(p("d/f"))
        .expect("create");
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    f.write_all(&body).expect("write");
    drop(f);
    note("stat f", st(&p("d/f")));
    let back = fs::read(p("d/f")).expect("read");
    note("read back equal", (back == body).to_string());
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: -2,
            tv_nsec: 800_000_000,
        },
        last_modification: Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 500,
        },
    };
    note(
        "utimensat",
        rerr(rustix::fs::utimensat(
            CWD,
            p("d/f"),
            &times,
            rustix::fs::AtFlags::empty(),
        )),
    );
    let m = fs::metadata(p("d/f")).expect("stat");
    note(
        "times",
        format!(
            "{} {} {} {}",
            m.atime(),
            m.atime_nsec(),
            m.mtime(),
            m.mtime_nsec()
        ),
    );
    note("symlink", err(symlink("f", p("d/l"))));
    note("readlink", format!("{:?}", fs::read_link(p("d/l"))));
    note("lstat l", st(&p("d/l")));
    note("link", err(fs::hard_link(p("d/f"), p("d/h"))));
    note("stat h", st(&p("d/h")));
    note("rename", err(fs::rename(p("d/l"), p("d/l2"))));
    note(
        "rename noreplace",
        rerr(rustix::fs::renameat_with(
            CWD,
            p("d/l2"),
            CWD,
            p("d/f"),
            RenameFlags::NOREPLACE,
        )),
    );
    note("unlink missing", err(fs::remove_file(p("d/nope"))));
    note("stat missing", st(&p("d/nope")));
    note("stat missing again", st(&p("d/nope")));
    note("rmdir nonempty", err(fs::remove_dir(p("d"))));
    note(
        "setxattr",
        rerr(rustix::fs::setxattr(
            p("d/f"),
            "user.a",
            b"value-1",
            XattrFlags::empty(),
        )),
    );
    note(
        "getxattr size",
        format!("{:?}", rustix::fs::getxattr_query(p("d/f"), "user.a")),
    );
    let mut small = [0u8; 2];
    note(
        "getxattr small",
        format!(
            "{:?}",
            rustix::fs::getxattr(p("d/f"), "user.a", &mut small[..]).map(|_| ())
        ),
    );
    let mut buf = [0u8; 64];
    note(
        "getxattr",
        format!(
            "{:?}",
            rustix::fs::getxattr(p("d/f"), "user.a", &mut buf[..]).map(|n| buf[..n].to_vec())
        ),
    );
    let mut list = [0u8; 64];
    note(
        "listxattr",
        format!(
            "{:?}",
            rustix::fs::listxattr(p("d/f"), &mut list[..]).map(|n| list[..n].to_vec())
        ),
    );
    note(
        "removexattr",
        rerr(rustix::fs::removexattr(p("d/f"), "user.a")),
    );
    note(
        "getxattr removed",
        format!(
            "{:?}",
            rustix::fs::getxattr(p("d/f"), "user.a", &mut buf[..]).map(|_| ())
        ),
    );
    for i in 0..300 {
        fs::write(p(&format!("d/n{i:03}")), b"").expect("create many");
    }
    let mut names: Vec<String> = fs::read_dir(p("d"))
        .expect("readdir")
        .map(|e| {
            let e = e.expect("entry");
            let ft = e.file_type().expect("type");
            format!("{}:{}", e.file_name().to_string_lossy(), ft.is_dir())
        })
        .collect();
    names.sort();
    note("listing", format!("{} {:?}", names.len(), &names[..5]));
    let vfs = rustix::fs::statvfs(root).expect("statvfs");
    note("statvfs", format!("{} {}", vfs.f_bsize, vfs.f_namemax));
    let g = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(p("d/g"))
        .expect("create g");
    note(
        "fallocate",
        rerr(rustix::fs::fallocate(
            &g,
            FallocateFlags::empty(),
            65536,
            8192,
        )),
    );
    note("stat g", st(&p("d/g")));
    note(
        "seek data",
        format!("{:?}", rustix::fs::seek(&g, SeekFrom::Data(0))),
    );
    note(
        "seek hole",
        format!("{:?}", rustix::fs::seek(&g, SeekFrom::Hole(65536))),
    );
    let src = fs::File::open(p("d/f")).expect("open f");
    let (mut off_in, mut off_out) = (4096u64, 0u64);
    note(
        "copy_file_range",
        format!(
            "{:?}",
            rustix::fs::copy_file_range(&src, Some(&mut off_in), &g, Some(&mut off_out), 10000)
        ),
    );
    note("fsync", err(g.sync_all()));
    drop(g);
    let mut copied = Vec::new();
    fs::File::open(p("d/g"))
        .and_then(|mut h| h.read_to_end(&mut copied))
        .expect("read g");
    note(
        "copied equal",
        (copied[..10000] == body[4096..14096]).to_string(),
    );
    note(
        "truncate",
        err(fs::OpenOptions::new()
            .write(true)
            .open(p("d/f"))
            .and_then(|h| h.set_len(3))),
    );
    note("read truncated", format!("{:?}", fs::read(p("d/f"))));
    note(
        "mkfifo",
        rerr(rustix::fs::mknodat(
            CWD,
            p("d/p"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )),
    );
    note(
        "fifo",
        format!(
            "{:?}",
            fs::symlink_metadata(p("d/p")).map(|m| m.file_type().is_fifo())
        ),
    );
    note(
        "chmod suid",
        err(fs::set_permissions(
            p("d/f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4755),
        )),
    );
    note("stat suid", st(&p("d/f")));
    note("snapshot", err(fs::create_dir(p(".snapshots/s1"))));
    note(
        "snapshot read",
        format!("{:?}", fs::read(p(".snapshots/s1/d/f"))),
    );
    note("snapshot stat", st(&p(".snapshots/s1/d/f")));
    note(
        "snapshot write",
        err(fs::write(p(".snapshots/s1/d/f"), b"no")),
    );
    note(
        "open missing",
        format!("{:?}", fs::File::open(p("nope")).map(|_| ())),
    );
    t
}

#[test]
fn transports_answer_requests_identically() {
    let _g = switch_lock();
    let _restore = RestoreSwitch(enable_uring());
    let classic = mount(Some("0"));
    let uring = mount(Some("1"));
    assert_eq!(classic.fuse_transport().0, "dev_fuse");
    assert_eq!(
        uring.fuse_transport().0,
        "io_uring",
        "io_uring mount fell back"
    );
    let a = transcript(classic.path());
    let b = transcript(uring.path());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "/dev/fuse and io_uring answered differently");
    }
    assert_eq!(a.len(), b.len());
    assert!(uring.fuse_transport().1 > 300);
}

/// Pins the calling thread (and the processes it starts) to one CPU; undone on drop.
struct Pinned(nix::sched::CpuSet);

impl Pinned {
    fn to_cpu(cpu: usize) -> Pinned {
        let me = nix::unistd::Pid::from_raw(0);
        let was = nix::sched::sched_getaffinity(me).expect("sched_getaffinity");
        let mut one = nix::sched::CpuSet::new();
        one.set(cpu).expect("cpu set");
        nix::sched::sched_setaffinity(me, &one).expect("sched_setaffinity");
        Pinned(was)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.0);
    }
}

/// With the writeback cache a snapshot first makes the kernel write an open file's dirty
/// pages back; those WRITEs come from the daemon's notifier thread. With the daemon, its
/// notifier and the caller all on CPU 0, they land on the queue whose thread serves the
/// `mkdir`: the snapshot must not hold that thread while it waits (else it stalls for the
/// 120 s flush timeout and fails).
#[test]
fn snapshot_with_writeback_on_one_cpu_does_not_block_its_queue() {
    let _g = switch_lock();
    let _restore = RestoreSwitch(enable_uring());
    let _pin = Pinned::to_cpu(0);
    let m = Mount::on_with_env(
        Store::new(),
        &[],
        &[
            ("SNAPFS_FUSE_URING", Some("1")),
            ("SNAPFS_WRITEBACK", Some("1")),
        ],
    );
    assert_eq!(m.fuse_transport().0, "io_uring", "io_uring mount fell back");
    let mut f = fs::File::create(m.join("open")).expect("create");
    for round in 0..3u8 {
        let data = vec![round + 1; 256 * 1024];
        f.write_all(&data).expect("write into the page cache");
        let t = std::time::Instant::now();
        let snap = m.join(format!(".snapshots/s{round}"));
        fs::create_dir(&snap).expect("snapshot");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "snapshot took {:?}: it waited on its own queue",
            t.elapsed()
        );
        let got = fs::read(snap.join("open")).expect("read snapshot");
        assert_eq!(got.len(), 256 * 1024 * (round as usize + 1));
        assert!(got.ends_with(&data), "snapshot lacks the cached writes");
    }
}

/// A mount whose queues cannot be set up falls back to /dev/fuse and works: queues the
/// kernel refuses (payload buffers smaller than max_write), and queues that fail before
/// registering (the daemon then makes the kernel refuse one registration, else the kernel
/// would hold every request).
#[test]
fn mount_falls_back_to_dev_fuse_when_queues_fail() {
    let _g = switch_lock();
    let _restore = RestoreSwitch(enable_uring());
    for payload_kib in ["64", "0"] {
        let mut m = Mount::on_with_env(
            Store::new(),
            &[],
            &[
                ("SNAPFS_FUSE_URING", Some("1")),
                ("SNAPFS_FUSE_URING_PAYLOAD_KIB", Some(payload_kib)),
            ],
        );
        exercise(m.path());
        fs::write(m.join("f"), b"fallback").expect("write");
        assert_eq!(
            m.fuse_transport(),
            ("dev_fuse".to_string(), 0),
            "payload {payload_kib} KiB"
        );
        m.umount();
    }
}

/// An io_uring mount cannot outlive its daemon (its ring dies with it): a daemon under its
/// supervisor, whose mounts must survive it, mounts over /dev/fuse even where the kernel
/// offers io_uring, unless SNAPFS_FUSE_URING=1 asks for io_uring.
#[test]
fn a_supervised_daemon_mounts_over_dev_fuse() {
    let _g = switch_lock();
    let _restore = RestoreSwitch(enable_uring());
    if enable_uring().is_some() {
        fs::write(ENABLE_URING, "Y").expect("turn enable_uring on");
    }
    let m = Mount::on_with_env(
        Store::new(),
        &[],
        &[
            ("SNAPFS_FUSE_URING", None),
            ("SNAPFS_SUPERVISOR", Some("1")),
        ],
    );
    exercise(m.path());
    assert_eq!(m.fuse_transport(), ("dev_fuse".to_string(), 0));
    assert!(
        snapfs::storedir::daemon_keeps_mounts(m.store().path()),
        "the supervised daemon keeps its mounts"
    );
}
