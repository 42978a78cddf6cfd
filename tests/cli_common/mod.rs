//! Fixtures of the `snapfs snapshots|containers` CLI and mount-helper tests: a temporary
//! store made by `snapfs init`, command runners with a timeout, and a guard that on drop
//! unmounts every mount the test made (`snapfs umount`, then `umount -l`) and stops the
//! store's daemon (SIGTERM to the pid in `STORE/snapfs.pid`).
#![allow(dead_code)]

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long one command may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_snapfs")
}

/// Panics (never skips) when FUSE is missing.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse does not exist: these tests need FUSE (they fail, never skip)"
    );
}

/// A finished command.
pub struct Out {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }

    /// Success and nothing on stderr; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.status.success(), "command failed: {}", self.describe());
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

    /// The error contract: non-zero exit, nothing on stdout, exactly one stderr line
    /// `snapfs: error: ...`, no panic. Returns that line.
    #[track_caller]
    pub fn one_line_error(&self) -> &str {
        assert!(
            !self.status.success(),
            "expected a failure: {}",
            self.describe()
        );
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
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one stderr line: {}",
            self.describe()
        );
        assert!(
            lines[0].starts_with("snapfs: error: "),
            "bad error line: {}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "panic: {}",
            self.describe()
        );
        lines[0]
    }
}

/// Runs `cmd` with stdout/stderr in files (a daemon inheriting them cannot block us).
#[track_caller]
pub fn run(cmd: &mut Command) -> Out {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("stdout capture file");
    let mut err = tempfile::tempfile().expect("stderr capture file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(err.try_clone().expect("clone"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        what,
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

fn read_all(f: &mut File) -> String {
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("rewind");
    f.read_to_end(&mut buf).expect("read capture");
    String::from_utf8_lossy(&buf).into_owned()
}

/// `snapfs ARGS` with `SNAPFS_STORE` unset.
#[track_caller]
pub fn snapfs<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Out {
    run(Command::new(bin())
        .args(args)
        .env_remove("SNAPFS_STORE")
        .current_dir("/"))
}

/// Whether `path` is a mount point (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    mount_source(path).is_some()
}

/// The source (`STORE:CONTAINER`) of the mount on `path`, per /proc/self/mountinfo.
pub fn mount_source(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = path.to_string_lossy();
    info.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.len() > sep + 2 && unescape(f[4]) == want).then(|| unescape(f[sep + 2]))
    })
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
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

/// Polls `f` until true or `timeout`.
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
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
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

/// A store from `snapfs init` in a temp dir, with mountpoints beside it. On drop: every
/// mountpoint handed out is unmounted and the store's daemon is stopped.
pub struct Store {
    dir: TempDir,
    path: PathBuf,
    mountpoints: RefCell<Vec<PathBuf>>,
}

impl Store {
    pub fn new() -> Store {
        let dir = tempfile::Builder::new()
            .prefix("snapfs-cli-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("store");
        snapfs([OsStr::new("init"), path.as_os_str()]).ok();
        Store {
            dir,
            path,
            mountpoints: RefCell::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh empty directory to mount on (unmounted when the store is dropped).
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir(&p).expect("create mountpoint");
        self.mountpoints.borrow_mut().push(p.clone());
        p
    }

    /// `snapfs ARGS --store STORE`.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Out {
        let mut v: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        v.push(OsStr::new("--store"));
        v.push(self.path.as_os_str());
        snapfs(v)
    }

    /// `snapfs ARGS --store STORE --json`, parsed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut v = args.to_vec();
        v.push("--json");
        self.cli(&v).json()
    }

    /// The pid in STORE/snapfs.pid, if any.
    pub fn daemon_pid(&self) -> Option<i32> {
        fs::read_to_string(self.path.join("snapfs.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `SNAPFS_STORE=STORE snapfs ARGS` (no --store).
    #[track_caller]
    pub fn cli_env(&self, args: &[&str]) -> Out {
        run(Command::new(bin())
            .args(args)
            .env("SNAPFS_STORE", &self.path)
            .current_dir("/"))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for m in self.mountpoints.borrow().iter() {
            if is_mounted(m) {
                let _ = Command::new(bin())
                    .arg("umount")
                    .arg(m)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            if is_mounted(m) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(m)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(pid) = self.daemon_pid() {
            let pid_t = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGTERM);
            if !wait_until(Duration::from_secs(30), || !alive(pid)) {
                let _ = nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// The table printed on stdout: header cells and rows, split on runs of 2+ spaces.
pub fn table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let split = |l: &str| -> Vec<String> {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = text.lines();
    let header = split(lines.next().unwrap_or(""));
    (header, lines.map(split).collect())
}
