//! Assertions and helpers about files seen through a mount: errno checks, modes, times,
//! `stat` listings, deterministic data.

use std::fmt::Debug;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use rand::{RngCore, SeedableRng};

use super::run;

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
