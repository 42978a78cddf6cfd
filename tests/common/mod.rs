//! The one fixture module of the integration tests. Every test binary says `mod common;` and
//! uses the parts it needs:
//! - here: the snapfs binary and command runners with timeouts ([`Output`]), mount points
//!   (`/proc/self/mountinfo`), a fresh store ([`Store`], `snapfs init`) that on drop unmounts
//!   the mountpoints it handed out and stops its daemon, and the [`Mount`] guard (a mounted
//!   container that always leaves the mountpoint unmounted);
//! - [`posix`] (re-exported): errno assertions, modes, times, `stat` listings;
//! - [`cli`]: the CLI's `--store` runners and its table output;
//! - [`http`] and [`api`]: a small HTTP client and a store served by `snapfs serve` with the
//!   API's JSON shapes.
//! - [`s3`]: a loopback S3 server; [`containerd`]: a private containerd with a proxy
//!   snapshotter, its `ctr`, and the test image.
//!
//! Tests that need FUSE start through [`require_fuse`] (or [`Mount::new`]): a machine without
//! `/dev/fuse` makes them fail loudly, never skip.
#![allow(dead_code)]

pub mod api;
pub mod cli;
pub mod containerd;
pub mod http;
mod posix;
pub mod s3;

// Each test binary uses a subset.
#[allow(unused_imports)]
pub use posix::*;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

/// How long any single helper command (init, mount, umount, tar, …) may take.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(300);

/// An unprivileged uid/gid pair used for permission tests (needs no passwd entry).
pub const USER_A: u32 = 1000;
/// A second unprivileged uid/gid pair.
pub const USER_B: u32 = 1001;

pub fn snapfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_snapfs")
}

/// Panics with a clear message when FUSE is not available: these tests never skip.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse does not exist: the snapfs FUSE integration tests need the `fuse` kernel \
         module and the /dev/fuse device in this machine or container (they fail, never skip)"
    );
}

// ---------------------------------------------------------------------------------------
// Commands

/// The result of a finished command, with stdout and stderr captured.
pub struct Output {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed: {}", self.describe());
        self
    }

    /// Success and nothing on stderr; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        self.assert_success();
        assert!(
            self.stderr.trim().is_empty(),
            "stderr not empty: {}",
            self.describe()
        );
        &self.stdout
    }

    /// Success, stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let text = self.ok();
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }

    /// The CLI error contract: non-zero exit, exactly one line on stderr, no panic trace.
    #[track_caller]
    pub fn assert_one_line_error(&self) {
        assert!(
            !self.success(),
            "expected a non-zero exit: {}",
            self.describe()
        );
        let lines = self.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr: {}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("stack backtrace"),
            "stderr shows a panic: {}",
            self.describe()
        );
    }

    /// [`Output::assert_one_line_error`], and also: an exit (not a signal), nothing on
    /// stdout, the line reads `snapfs: error: ...`. Returns that line.
    #[track_caller]
    pub fn one_line_error(&self) -> &str {
        self.assert_one_line_error();
        assert!(
            self.status.code().is_some(),
            "killed by a signal: {}",
            self.describe()
        );
        assert!(
            self.stdout.trim().is_empty(),
            "stdout not empty: {}",
            self.describe()
        );
        let line = self.stderr_lines()[0];
        assert!(
            line.starts_with("snapfs: error: "),
            "bad error line: {}",
            self.describe()
        );
        line
    }
}

/// Runs `cmd` to completion with stdout/stderr captured in anonymous files (not pipes,
/// so a daemon that inherits them cannot block us), killing it after `CMD_TIMEOUT`.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, CMD_TIMEOUT)
}

#[track_caller]
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("create stdout capture file");
    let mut err = tempfile::tempfile().expect("create stderr capture file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone stdout file"))
        .stderr(err.try_clone().expect("clone stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break status,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not finish within {timeout:?}; stdout: {} stderr: {}",
                    read_all(&mut out),
                    read_all(&mut err)
                );
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Output {
        what,
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

fn read_all(f: &mut File) -> String {
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("rewind capture file");
    f.read_to_end(&mut buf).expect("read capture file");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs the snapfs binary with `args` (and `SNAPFS_STORE` unset).
#[track_caller]
pub fn snapfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(snapfs_bin())
        .args(args)
        .env_remove("SNAPFS_STORE")
        .current_dir("/"))
}

/// Runs the snapfs binary with `args`, `SNAPFS_STORE` unset and `env` applied (`Some`: set,
/// `None`: removed), so a daemon it starts inherits them.
#[track_caller]
pub fn snapfs_env(args: &[&OsStr], env: &[(String, Option<String>)]) -> Output {
    let mut cmd = Command::new(snapfs_bin());
    cmd.args(args).env_remove("SNAPFS_STORE").current_dir("/");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    run(&mut cmd)
}

/// Runs `sh -c script` as root in `dir`.
#[track_caller]
pub fn sh(dir: &Path, script: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(script).current_dir(dir))
}

/// Runs `sh -c script` with the given uid and gid and no supplementary groups.
#[track_caller]
pub fn sh_as(uid: u32, gid: u32, script: &str) -> Output {
    run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir("/")
        .uid(uid)
        .gid(gid))
}

/// Quotes a path for `sh`.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Polls `f` every 20 ms until it is true or `timeout` passes; its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Is `pid` running (a zombie counts as gone)?
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .is_some_and(|c| c != 'Z' && c != 'X')
}

// ---------------------------------------------------------------------------------------
// Mounts and daemons

/// Whether `path` is a mount point, according to /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    mount_source(path).is_some()
}

/// The source (`STORE:CONTAINER` for snapfs) of the newest mount on `path`.
pub fn mount_source(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.to_string_lossy();
    info.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.len() > sep + 2 && unescape_mountinfo(f[4]) == want)
            .then(|| unescape_mountinfo(f[sep + 2]))
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `umount -l` until `path` is no mount point (a few tries).
pub fn lazy_umount(path: &Path) {
    for _ in 0..5 {
        if !is_mounted(path) {
            return;
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cleanup: `snapfs umount` of a mount still on `mnt`, then `umount -l` if it stayed.
pub fn umount_quietly(mnt: &Path) {
    if is_mounted(mnt) {
        let _ = Command::new(snapfs_bin())
            .arg("umount")
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    lazy_umount(mnt);
}

/// The pid in `STORE/snapfs.pid`, if any.
pub fn daemon_pid(store: &Path) -> Option<i32> {
    fs::read_to_string(store.join("snapfs.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Cleanup: SIGTERM to the store's running daemon (its supervisor, if any, exits with it),
/// SIGKILL to both if it is not gone in 30 s (the supervisor first: it would start another).
pub fn stop_daemon(store: &Path) {
    let Some(pid) = daemon_pid(store).filter(|p| alive(*p)) else {
        return;
    };
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    if !wait_until(Duration::from_secs(30), || !alive(pid)) {
        if let Some(sup) = snapfs::storedir::read_supervisor_pid(store).filter(|p| alive(*p)) {
            let _ = kill(Pid::from_raw(sup), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

static NEXT_STORE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A store from `snapfs init` in its own temporary directory, with mountpoints beside it.
/// On drop: every mountpoint it handed out is unmounted and its daemon is stopped.
pub struct Store {
    dir: TempDir,
    path: PathBuf,
    mountpoints: Mutex<Vec<PathBuf>>,
}

impl Store {
    /// `snapfs init` with the default block size.
    pub fn new() -> Store {
        Store::init(&[])
    }

    /// `snapfs init --block-size N`.
    pub fn with_block_size(n: u64) -> Store {
        Store::init(&["--block-size".to_string(), n.to_string()])
    }

    /// With `SNAPFS_TEST_OBJECT_STORE=s3://BUCKET/PREFIX` in the environment (and the
    /// `AWS_*` variables of its server, as `scripts/test.sh` sets them for its object-store
    /// pass), every store is created on object storage, under a prefix of its own.
    fn init(extra: &[String]) -> Store {
        let mut extra = extra.to_vec();
        if let Ok(base) = std::env::var("SNAPFS_TEST_OBJECT_STORE") {
            let unique = format!(
                "{}/t{}-{}",
                base.trim_end_matches('/'),
                std::process::id(),
                NEXT_STORE.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            );
            extra.extend(["--object-store".to_string(), unique]);
        }
        Store::init_env(&extra, &[])
    }

    /// `snapfs init STORE [extra]` with `env` applied.
    pub fn init_env(extra: &[String], env: &[(String, Option<String>)]) -> Store {
        let dir = tempfile::Builder::new()
            .prefix("snapfs-store-")
            .tempdir()
            .expect("create store temp dir");
        let path = dir.path().join("store");
        let mut args: Vec<&OsStr> = vec![OsStr::new("init"), path.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        snapfs_env(&args, env).ok();
        Store {
            dir,
            path,
            mountpoints: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory that holds the store (removed with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh empty directory beside the store to mount on (unmounted on drop).
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        self.mountpoints
            .lock()
            .expect("mountpoints")
            .push(p.clone());
        p
    }

    /// The pid in STORE/snapfs.pid, if any.
    pub fn daemon_pid(&self) -> Option<i32> {
        daemon_pid(&self.path)
    }

    /// Total bytes allocated on disk by the store's files.
    pub fn disk_usage(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let md = fs::symlink_metadata(p).expect("stat store file");
            let mut total = md.blocks() * 512;
            if md.is_dir() {
                for e in fs::read_dir(p).expect("read store dir") {
                    total += walk(&e.expect("store dir entry").path());
                }
            }
            total
        }
        walk(&self.path)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let mountpoints = self.mountpoints.lock().map(|m| m.clone());
        for m in mountpoints.unwrap_or_default() {
            umount_quietly(&m);
        }
        stop_daemon(&self.path);
    }
}

/// A mounted container. Dropping it runs `snapfs umount`, falling back to `umount -l`,
/// so a failing test never leaves a mount behind. An unclean unmount of a test that
/// did not already fail makes it fail.
pub struct Mount {
    mnt: TempDir,
    store: Store,
    extra: Vec<String>,
    /// Environment of `snapfs mount` (hence of the daemon it starts): `None` removes.
    env: Vec<(String, Option<String>)>,
    mounted: bool,
}

impl Mount {
    /// A fresh store (default block size) mounted with default options.
    pub fn new() -> Mount {
        require_fuse();
        Mount::on(Store::new(), &[])
    }

    /// A fresh store with the given block size, mounted with default options.
    pub fn with_block_size(n: u64) -> Mount {
        require_fuse();
        Mount::on(Store::with_block_size(n), &[])
    }

    /// Mounts `store` with extra `snapfs mount` arguments into a new temporary directory.
    pub fn on(store: Store, extra: &[&str]) -> Mount {
        Mount::on_with_env(store, extra, &[])
    }

    /// Like [`Mount::on`], with environment variables for the daemon (`None` removes one):
    /// e.g. `SNAPFS_FUSE_URING` to choose the FUSE transport.
    pub fn on_with_env(store: Store, extra: &[&str], env: &[(&str, Option<&str>)]) -> Mount {
        require_fuse();
        let mnt = tempfile::Builder::new()
            .prefix("snapfs-mnt-")
            .tempdir()
            .expect("create mountpoint temp dir");
        let mut m = Mount {
            mnt,
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            mounted: false,
        };
        m.mount();
        m
    }

    pub fn path(&self) -> &Path {
        self.mnt.path()
    }

    /// `rel` inside the mount.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.path().join(rel)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `snapfs mount STORE MNT [extra]`; asserts success and that the mount is live.
    pub fn mount(&mut self) {
        assert!(!self.mounted, "already mounted");
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("mount"),
            self.store.path.as_os_str(),
            self.mnt.path().as_os_str(),
        ];
        args.extend(self.extra.iter().map(OsStr::new));
        let out = snapfs_env(&args, &self.env);
        out.assert_success();
        self.mounted = true;
        assert!(
            is_mounted(self.mnt.path()),
            "`snapfs mount` returned success but {} is not a mount point: {}",
            self.mnt.path().display(),
            out.describe()
        );
    }

    /// `snapfs umount MNT`; asserts success and that the mountpoint is released.
    pub fn umount(&mut self) {
        assert!(self.mounted, "not mounted");
        let out = snapfs([OsStr::new("umount"), self.mnt.path().as_os_str()]);
        let still = is_mounted(self.mnt.path());
        if !out.success() || still {
            lazy_umount(self.mnt.path());
            self.mounted = false;
            panic!(
                "`snapfs umount` failed (still mounted: {still}): {}",
                out.describe()
            );
        }
        self.mounted = false;
    }

    /// `snapfs umount MNT`, returning what it printed; the mount is gone afterwards either
    /// way (a lazy unmount if `snapfs umount` left it).
    pub fn umount_output(&mut self) -> Output {
        assert!(self.mounted, "not mounted");
        let out = snapfs([OsStr::new("umount"), self.mnt.path().as_os_str()]);
        lazy_umount(self.mnt.path());
        self.mounted = false;
        out
    }

    /// Unmounts (everything flushed, daemon gone) and mounts the same container again.
    pub fn remount(&mut self) {
        self.umount();
        self.mount();
    }

    /// Unmounts and mounts the same store again with other `snapfs mount` arguments.
    pub fn remount_with(&mut self, extra: &[&str]) {
        self.umount();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.mount();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let out = run_with_timeout(
            Command::new(snapfs_bin())
                .arg("umount")
                .arg(self.mnt.path())
                .current_dir("/"),
            Duration::from_secs(120),
        );
        let clean = out.success() && !is_mounted(self.mnt.path());
        if !clean {
            lazy_umount(self.mnt.path());
            if !std::thread::panicking() {
                panic!("unmount at end of test was not clean: {}", out.describe());
            }
            eprintln!(
                "unmount after failed test was not clean: {}",
                out.describe()
            );
        }
    }
}
