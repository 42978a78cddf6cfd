//! The `snapfs init|mount|umount` command-line contract: refusals are one stderr line
//! and a non-zero exit (never a panic), a successful mount prints nothing, returns once
//! the mount is live, and `umount` leaves the store free again.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{is_mounted, require_fuse, snapfs, snapfs_bin, Mount, Store};

fn mount_args<'a>(store: &'a Path, mnt: &'a Path) -> Vec<&'a OsStr> {
    vec![OsStr::new("mount"), store.as_os_str(), mnt.as_os_str()]
}

#[test]
fn init_existing_store_fails_one_line() {
    let store = Store::new();
    let out = snapfs([OsStr::new("init"), store.path().as_os_str()]);
    out.assert_one_line_error();
    // The existing store is still usable.
    let m = Mount::on(store, &[]);
    fs::write(m.join("f"), b"x").expect("write");
}

#[test]
fn init_block_size_out_of_range_fails_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    for bad in ["0", "1000", "2048", "5000", "65535", "2097152", "8388608"] {
        let p = dir.path().join(format!("store-{bad}"));
        let out = snapfs([
            OsStr::new("init"),
            p.as_os_str(),
            OsStr::new("--block-size"),
            OsStr::new(bad),
        ]);
        out.assert_one_line_error();
        // Nothing half-made stands in the way of a correct retry.
        let retry = snapfs([
            OsStr::new("init"),
            p.as_os_str(),
            OsStr::new("--block-size"),
            OsStr::new("4096"),
        ]);
        assert!(
            retry.success(),
            "init after a refused block size {bad}: {}",
            retry.describe()
        );
    }
    for good in ["4096", "65536", "1048576"] {
        let p = dir.path().join(format!("good-{good}"));
        let out = snapfs([
            OsStr::new("init"),
            p.as_os_str(),
            OsStr::new("--block-size"),
            OsStr::new(good),
        ]);
        assert!(
            out.success(),
            "block size {good} refused: {}",
            out.describe()
        );
    }
}

#[test]
fn mount_missing_store_fails_one_line() {
    require_fuse();
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = tempfile::tempdir().expect("mountpoint");
    let missing = dir.path().join("no-such-store");
    snapfs(mount_args(&missing, mnt.path())).assert_one_line_error();
    assert!(!is_mounted(mnt.path()));
    assert!(!missing.exists(), "mount created the missing store");
}

#[test]
fn mount_empty_dir_as_store_fails_one_line() {
    // An existing directory without a store in it is a missing store too.
    require_fuse();
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = tempfile::tempdir().expect("mountpoint");
    snapfs(mount_args(dir.path(), mnt.path())).assert_one_line_error();
    assert!(!is_mounted(mnt.path()));
    assert_eq!(
        fs::read_dir(dir.path()).expect("readdir").count(),
        0,
        "mount wrote into a non-store dir"
    );
}

#[test]
fn mount_missing_mountpoint_fails_one_line() {
    require_fuse();
    let store = Store::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    snapfs(mount_args(store.path(), &missing)).assert_one_line_error();
    // The store was released: a mount elsewhere works.
    let m = Mount::on(store, &[]);
    assert!(m.path().is_dir());
}

#[test]
fn mount_container_already_mounted_fails_one_line() {
    let m = Mount::new();
    fs::write(m.join("f"), b"first mount").expect("write");
    let other = tempfile::tempdir().expect("second mountpoint");
    // The same container twice: refused.
    snapfs(mount_args(m.store().path(), other.path())).assert_one_line_error();
    assert!(!is_mounted(other.path()), "second mount is live");
    // Another container of the same store: served by the same daemon.
    let out = snapfs(vec![
        OsStr::new("mount"),
        m.store().path().as_os_str(),
        other.path().as_os_str(),
        OsStr::new("--container"),
        OsStr::new("other"),
    ]);
    out.assert_success();
    assert!(is_mounted(other.path()), "second container is not mounted");
    assert!(fs::read_dir(other.path()).expect("list").next().is_none());
    snapfs(vec![OsStr::new("umount"), other.path().as_os_str()]).assert_success();
    assert!(!is_mounted(other.path()), "second container still mounted");
    // The first mount is unharmed.
    assert_eq!(fs::read(m.join("f")).expect("read"), b"first mount");
}

#[test]
fn mount_success_prints_nothing() {
    require_fuse();
    let store = Store::new();
    let mnt = tempfile::tempdir().expect("mountpoint");
    let out = snapfs(mount_args(store.path(), mnt.path()));
    let live = is_mounted(mnt.path());
    let cleanup = || {
        let _ = snapfs([OsStr::new("umount"), mnt.path().as_os_str()]);
        if is_mounted(mnt.path()) {
            let _ = Command::new("umount").arg("-l").arg(mnt.path()).status();
        }
    };
    if !out.success() || !live {
        cleanup();
        panic!("mount failed (live: {live}): {}", out.describe());
    }
    let printed = (out.stdout.clone(), out.stderr.clone());
    let umount = snapfs([OsStr::new("umount"), mnt.path().as_os_str()]);
    cleanup();
    assert_eq!(
        printed,
        (String::new(), String::new()),
        "mount printed something"
    );
    assert!(umount.success(), "umount: {}", umount.describe());
    assert_eq!(
        (umount.stdout.as_str(), umount.stderr.as_str()),
        ("", ""),
        "umount printed something"
    );
}

#[test]
fn mount_background_releases_callers_pipes() {
    // `out=$(snapfs mount …)` must return: the daemon may not keep our stdout/stderr.
    require_fuse();
    let store = Store::new();
    let mnt = tempfile::tempdir().expect("mountpoint");
    let mut child = Command::new(snapfs_bin())
        .args(mount_args(store.path(), mnt.path()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mount");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = stdout.read_to_end(&mut a);
        let _ = stderr.read_to_end(&mut b);
        let _ = tx.send((a, b));
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pipes = rx.recv_timeout(Duration::from_secs(10));
    let _ = snapfs([OsStr::new("umount"), mnt.path().as_os_str()]);
    if is_mounted(mnt.path()) {
        let _ = Command::new("umount").arg("-l").arg(mnt.path()).status();
    }
    let status = status.expect("snapfs mount did not return within 120 s");
    assert!(status.success(), "mount failed: {status}");
    assert!(
        pipes.is_ok(),
        "the background daemon kept the caller's stdout/stderr pipes open after `snapfs mount` returned"
    );
}

#[test]
fn mount_foreground_stays_until_umount() {
    require_fuse();
    let store = Store::new();
    let mnt = tempfile::tempdir().expect("mountpoint");
    let mut child = Command::new(snapfs_bin())
        .args(mount_args(store.path(), mnt.path()))
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn foreground mount");
    let pid = child.id();
    // Reap the foreground process as soon as it ends, as a shell would.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let start = Instant::now();
    let mut early_exit = None;
    while !is_mounted(mnt.path()) && start.elapsed() < Duration::from_secs(60) {
        if let Ok(s) = rx.try_recv() {
            early_exit = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let live = is_mounted(mnt.path());
    let mut wrote = None;
    if live {
        wrote = Some(fs::write(mnt.path().join("f"), b"fg"));
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(s) = rx.try_recv() {
            early_exit = Some(s);
        }
    }
    let umount = snapfs([OsStr::new("umount"), mnt.path().as_os_str()]);
    let exited = match early_exit {
        Some(_) => None,
        None => rx.recv_timeout(Duration::from_secs(60)).ok(),
    };
    if exited.is_none() && early_exit.is_none() {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    if is_mounted(mnt.path()) {
        let _ = Command::new("umount").arg("-l").arg(mnt.path()).status();
    }
    assert!(
        early_exit.is_none(),
        "foreground mount exited while it should stay: {early_exit:?}"
    );
    assert!(live, "foreground mount never became live");
    wrote.expect("wrote").expect("write in foreground mount");
    assert!(umount.success(), "umount: {}", umount.describe());
    let status = exited
        .expect("foreground daemon still running 60 s after umount")
        .expect("wait for foreground daemon");
    assert!(status.success(), "foreground daemon exit status {status}");
    // Everything was flushed: a background mount sees the file.
    let m = Mount::on(store, &[]);
    assert_eq!(fs::read(m.join("f")).expect("read"), b"fg");
}

#[test]
fn umount_not_mounted_fails_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    snapfs([OsStr::new("umount"), dir.path().as_os_str()]).assert_one_line_error();
    snapfs([OsStr::new("umount"), dir.path().join("missing").as_os_str()]).assert_one_line_error();
}

#[test]
fn umount_then_mount_again_sees_store_free() {
    let mut m = Mount::new();
    for i in 0..3 {
        fs::write(m.join(format!("f{i}")), format!("{i}")).expect("write");
        m.remount();
    }
    for i in 0..3 {
        assert_eq!(
            fs::read(m.join(format!("f{i}"))).expect("read"),
            format!("{i}").as_bytes()
        );
    }
}

#[test]
fn mount_container_option_isolates_trees() {
    let mut m = Mount::on(Store::new(), &["--container", "alpha"]);
    fs::write(m.join("only-in-alpha"), b"a").expect("write");
    m.remount_with(&["--container", "beta"]);
    assert_eq!(
        fs::read_dir(m.path()).expect("readdir").count(),
        0,
        "beta sees alpha's files"
    );
    fs::write(m.join("only-in-beta"), b"b").expect("write");
    m.remount_with(&[]);
    assert_eq!(
        fs::read_dir(m.path()).expect("readdir").count(),
        0,
        "default sees other containers"
    );
    fs::write(m.join("in-default"), b"d").expect("write");
    m.remount_with(&["--container", "default"]);
    assert_eq!(
        fs::read(m.join("in-default")).expect("read"),
        b"d",
        "--container default"
    );
    m.remount_with(&["--container", "alpha"]);
    let names: Vec<_> = fs::read_dir(m.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["only-in-alpha"], "alpha after the others were used");
    assert_eq!(fs::read(m.join("only-in-alpha")).expect("read"), b"a");
}
