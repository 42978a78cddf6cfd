//! Shared fixtures for the end-to-end FUSE tests: a fresh store (`snapfs init`), a
//! [`Mount`] guard that always leaves the mountpoint unmounted, command runners with
//! timeouts, and errno assertions.
//!
//! Every FUSE test starts through [`Mount::new`] (or [`require_fuse`]): a machine
//! without `/dev/fuse` makes the tests fail loudly, never skip.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use rand::{RngCore, SeedableRng};
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

/// Runs the snapfs binary with `args`.
#[track_caller]
pub fn snapfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(snapfs_bin()).args(args).current_dir("/"))
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

/// Whether `path` is a mount point, according to /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.to_string_lossy();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
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

/// A freshly initialised store in its own temporary directory.
pub struct Store {
    dir: TempDir,
    path: PathBuf,
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

    fn init(extra: &[String]) -> Store {
        let dir = tempfile::Builder::new()
            .prefix("snapfs-store-")
            .tempdir()
            .expect("create store temp dir");
        let path = dir.path().join("store");
        let mut args: Vec<&OsStr> = vec![OsStr::new("init"), path.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        snapfs(&args).assert_success();
        Store { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
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

/// A mounted container. Dropping it runs `snapfs umount`, falling back to `umount -l`,
/// so a failing test never leaves a mount behind. An unclean unmount of a test that
/// did not already fail makes it fail.
pub struct Mount {
    mnt: TempDir,
    store: Store,
    extra: Vec<String>,
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
        require_fuse();
        let mnt = tempfile::Builder::new()
            .prefix("snapfs-mnt-")
            .tempdir()
            .expect("create mountpoint temp dir");
        let mut m = Mount {
            mnt,
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
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
        let out = snapfs(&args);
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

fn lazy_umount(path: &Path) {
    for _ in 0..3 {
        if !is_mounted(path) {
            return;
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(path)
            .stdin(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Something that carries an errno.
pub trait AsErrno {
    fn errno(&self) -> Errno;
}

impl AsErrno for io::Error {
    fn errno(&self) -> Errno {
        Errno::from_raw(self.raw_os_error().unwrap_or(0))
    }
}

impl AsErrno for Errno {
    fn errno(&self) -> Errno {
        *self
    }
}

impl AsErrno for rustix::io::Errno {
    fn errno(&self) -> Errno {
        Errno::from_raw(self.raw_os_error())
    }
}

/// Asserts that `r` failed with exactly `want`.
#[track_caller]
pub fn expect_errno<T: Debug, E: AsErrno + Debug>(r: Result<T, E>, want: Errno, what: &str) {
    expect_errno_any(r, &[want], what)
}

/// Asserts that `r` failed with one of `allowed` (where POSIX allows several).
#[track_caller]
pub fn expect_errno_any<T: Debug, E: AsErrno + Debug>(
    r: Result<T, E>,
    allowed: &[Errno],
    what: &str,
) {
    match r {
        Ok(v) => panic!("{what}: expected {allowed:?}, but it succeeded ({v:?})"),
        Err(e) => assert!(
            allowed.contains(&e.errno()),
            "{what}: expected {allowed:?}, got {:?} ({e:?})",
            e.errno()
        ),
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// This process's umask, read without changing it (from /proc/self/status).
pub fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line in /proc/self/status");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}

/// Permission bits and type of a path (lstat).
pub fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mode()
}

/// Creates `dir` (inside a mount) with mode `mode`, set explicitly (no umask).
pub fn mkdir_mode(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
}

/// Sets the permission bits of `p` (chmod).
pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, p.display()));
}

/// (seconds, nanoseconds) of mtime and ctime.
pub fn times(p: &Path) -> ((i64, i64), (i64, i64), (i64, i64)) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (
        (md.atime(), md.atime_nsec()),
        (md.mtime(), md.mtime_nsec()),
        (md.ctime(), md.ctime_nsec()),
    )
}

/// Sorted `stat -c FORMAT` lines for every path under `root` (paths relative, `./…`).
pub fn stat_lines(root: &Path, format: &str) -> Vec<String> {
    let out = run(Command::new("find")
        .arg(".")
        .arg("-exec")
        .arg("stat")
        .arg("-c")
        .arg(format)
        .arg("{}")
        .arg("+")
        .current_dir(root));
    out.assert_success();
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Asserts two sorted line lists are equal, printing only the differing lines.
#[track_caller]
pub fn assert_same_lines(what: &str, expected: &[String], got: &[String]) {
    if expected == got {
        return;
    }
    let exp: std::collections::BTreeSet<&String> = expected.iter().collect();
    let got_set: std::collections::BTreeSet<&String> = got.iter().collect();
    let missing: Vec<&&String> = exp.difference(&got_set).take(20).collect();
    let extra: Vec<&&String> = got_set.difference(&exp).take(20).collect();
    panic!(
        "{what}: {} expected lines, {} got; first expected-but-missing: {missing:#?}\n\
         first unexpected: {extra:#?}",
        expected.len(),
        got.len()
    );
}
