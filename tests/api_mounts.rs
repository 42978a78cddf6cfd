//! Mount lifecycle through the REST API: start options (snapdir, admin_uid), conflicts on
//! a mountpoint however it is spelled, stop of a busy mount, delete of a running container
//! (refused, or forced), shutdown.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::*;
use common::{is_mounted, require_fuse, sh_as};
use serde_json::json;

fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn start_snapdir_hidden_by_default_and_visible_on_request() {
    let d = Daemon::start();
    d.create_container("h", None);
    d.create_container("v", None);
    let mh = d.mount("h", "mh");
    fs::write(mh.join("f"), "x").expect("write");
    let s = d.snapshot("h", json!({"alias": "al"}));
    assert_eq!(ls(&mh), ["f"], ".snapshots must not be listed by default");
    let snapdir = ls(&mh.join(".snapshots"));
    let name = s["name"].as_str().expect("name").to_string();
    assert!(
        snapdir.contains(&name) && snapdir.contains(&"al".to_string()),
        "{snapdir:?}"
    );
    let mv = d.new_mountpoint("mv");
    d.ok(
        "POST",
        "/api/v1/containers/v/start",
        Some(&json!({"mountpoint": mv.display().to_string(), "snapdir": "visible"})),
    );
    assert_eq!(ls(&mv), [".snapshots"]);
    d.unmount("h", &mh);
    d.unmount("v", &mv);
}

#[test]
fn start_with_admin_uid_lets_that_user_snapshot_through_fuse() {
    require_fuse();
    let d = Daemon::start();
    d.create_container("adm", None);
    d.create_container("plain", None);
    let ma = d.new_mountpoint("ma");
    let mp = d.new_mountpoint("mp");
    // Let the unprivileged users reach the mountpoints.
    let parent = ma.parent().expect("parent");
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).expect("chmod");
    d.ok(
        "POST",
        "/api/v1/containers/adm/start",
        Some(&json!({"mountpoint": ma.display().to_string(), "admin_uid": 1000})),
    );
    d.ok(
        "POST",
        "/api/v1/containers/plain/start",
        Some(&json!({"mountpoint": mp.display().to_string()})),
    );
    assert!(
        sh_as(
            1000,
            1000,
            &format!("mkdir '{}/.snapshots/by-admin'", ma.display())
        )
        .success(),
        "admin uid could not create a snapshot"
    );
    assert!(
        !sh_as(
            1001,
            1001,
            &format!("mkdir '{}/.snapshots/by-other'", ma.display())
        )
        .success(),
        "a non-admin uid created a snapshot"
    );
    assert!(
        !sh_as(
            1000,
            1000,
            &format!("mkdir '{}/.snapshots/by-1000'", mp.display())
        )
        .success(),
        "uid 1000 created a snapshot where it is not admin"
    );
    let aliases: Vec<serde_json::Value> = d
        .snapshots("adm")
        .iter()
        .map(|s| s["alias"].clone())
        .collect();
    assert_eq!(aliases, [json!("by-admin")]);
    assert!(d.snapshots("plain").is_empty());
    d.unmount("adm", &ma);
    d.unmount("plain", &mp);
}

#[test]
fn start_on_mounted_directory_spelled_differently_returns_409() {
    let d = Daemon::start();
    d.create_container("first", None);
    d.create_container("second", None);
    let m = d.mount("first", "m");
    let parent = m.parent().expect("parent").to_path_buf();
    let link = parent.join("link-to-m");
    std::os::unix::fs::symlink(&m, &link).expect("symlink");
    let before = d.state();
    let mut wrong = Vec::new();
    for spelling in [
        format!("{}/", m.display()),
        format!("{}/../m", m.display()),
        format!("{}/./m", parent.display()),
        link.display().to_string(),
    ] {
        let r = d.call(
            "POST",
            "/api/v1/containers/second/start",
            Some(&json!({ "mountpoint": spelling })),
        );
        if r.status != 409 || r.check_envelope().is_err() {
            wrong.push(r.describe());
            // Undo a stacked mount so the next spelling is tried against the first only.
            let _ = d.call("POST", "/api/v1/containers/second/stop", None);
        }
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let stacked = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(&m.display().to_string()))
        .count();
    assert!(
        wrong.is_empty(),
        "starting a second container on {} (another spelling) was not refused with 409:\n{}",
        m.display(),
        wrong.join("\n")
    );
    assert_eq!(stacked, 1, "mounts stacked on {}", m.display());
    assert_eq!(d.state(), before);
    d.unmount("first", &m);
}

#[test]
fn stop_with_open_descriptor_succeeds_promptly() {
    let d = Daemon::start();
    d.create_container("busy", None);
    let m = d.mount("busy", "m");
    fs::write(m.join("f"), "data").expect("write");
    let f = File::open(m.join("f")).expect("open");
    let t0 = Instant::now();
    let r = d.call("POST", "/api/v1/containers/busy/stop", None);
    let took = t0.elapsed();
    drop(f);
    assert_eq!(
        r.status,
        200,
        "stop of a busy mount after {took:?}: {}",
        r.describe()
    );
    assert!(
        took < Duration::from_secs(15),
        "stop of a busy mount took {took:?}"
    );
    assert!(!is_mounted(&m), "still mounted after stop");
    assert_eq!(d.container("busy")["status"], "stopped");
    // It starts again with its data.
    let m2 = d.mount("busy", "m2");
    assert_eq!(fs::read(m2.join("f")).expect("read"), b"data");
    d.unmount("busy", &m2);
}

#[test]
fn daemon_sigterm_unmounts_every_container_and_removes_socket() {
    let mut d = Daemon::start();
    d.create_container("a", None);
    d.create_container("b", None);
    let ma = d.mount("a", "ma");
    let mb = d.mount("b", "mb");
    fs::write(ma.join("x"), b"x").expect("write");
    // Deleting a mounted container with force unmounts it.
    let del = d.ok("DELETE", "/api/v1/containers/a?force=true", None);
    assert_eq!(del["status"], "deleted");
    assert!(!is_mounted(&ma), "deleted container still mounted");
    fs::write(mb.join("y"), b"y").expect("write");
    let st = d.shutdown().expect("daemon exited on SIGTERM");
    assert!(st.success(), "daemon exit status {st}");
    assert!(!is_mounted(&mb), "mount left behind after SIGTERM");
    assert!(!d.socket().exists(), "socket left behind after SIGTERM");
}

const RUNNING: &str = "container is running; stop it first, or pass force";

#[test]
fn delete_running_container_returns_409_and_keeps_mount_and_data() {
    let d = Daemon::start();
    let id = d.create_container("live", None)["id"]
        .as_str()
        .expect("id")
        .to_string();
    let m = d.mount("live", "m");
    fs::write(m.join("f"), "data").expect("write");
    d.snapshot("live", json!({"alias": "s"}));
    let before = d.state();
    for path in [
        "/api/v1/containers/live".to_string(),
        format!("/api/v1/containers/{id}"),
        "/api/v1/containers/live?force=false".to_string(),
    ] {
        let r = d.call("DELETE", &path, None);
        r.expect_error(409);
        assert_eq!(r.envelope()["message"], RUNNING, "{}", r.describe());
    }
    assert_eq!(d.state(), before, "a refused delete changed the store");
    assert!(is_mounted(&m), "a refused delete unmounted the container");
    assert_eq!(fs::read(m.join("f")).expect("read"), b"data");
    fs::write(m.join("g"), "more").expect("write after the refused delete");
    assert_eq!(fs::read(m.join("g")).expect("read"), b"more");
    let c = d.container("live");
    assert_eq!(c["status"], "running", "{c}");
    // Once stopped, a plain delete works.
    d.unmount("live", &m);
    let del = d.ok("DELETE", "/api/v1/containers/live", None);
    assert_eq!(del["status"], "deleted", "{del}");
}

#[test]
fn delete_force_with_a_file_held_open_unmounts_then_deletes_and_keeps_snapshots() {
    let d = Daemon::start();
    let id = d.create_container("busy", None)["id"]
        .as_str()
        .expect("id")
        .to_string();
    let m = d.mount("busy", "m");
    fs::write(m.join("f"), "data").expect("write");
    let snap = d.snapshot("busy", json!({"alias": "before"}));
    // Two holders: a descriptor of this process, and a process reading a file with its
    // working directory in the mount.
    let held = File::open(m.join("f")).expect("open");
    let mut sleeper = Command::new("sleep")
        .arg("1000")
        .stdin(File::open(m.join("f")).expect("open for the sleeper"))
        .current_dir(&m)
        .spawn()
        .expect("spawn sleep");
    let r = d.call("DELETE", "/api/v1/containers/busy?force=true", None);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop(held);
    let del = r.data();
    check_container(&del);
    assert_eq!(del["status"], "deleted", "{del}");
    assert!(del["mountpoint"].is_null(), "{del}");
    assert!(!is_mounted(&m), "still mounted after a forced delete");
    assert_eq!(d.container(&id)["status"], "deleted");
    let snaps = d.snapshots(&id);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["name"], snap["name"]);
    // The daemon still serves, and the snapshot holds the data.
    d.ok(
        "POST",
        &format!("/api/v1/containers/{id}/copy"),
        Some(&json!({"name": "revived", "source_snapshot": "before"})),
    );
    let m2 = d.mount("revived", "m2");
    assert_eq!(fs::read(m2.join("f")).expect("read"), b"data");
    d.unmount("revived", &m2);
}

/// A field of /proc/PID/status, as a number (VmRSS in KiB).
fn proc_status(pid: u32, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Mounts share the daemon's FUSE workers (and io_uring rings): a mount costs no thread of
/// its own and little memory (it used to cost 4-10 threads and ~30 MiB each).
#[test]
fn mounts_cost_no_thread_of_their_own() {
    let d = Daemon::start();
    d.create_container("c0", None);
    let m0 = d.mount("c0", "m0");
    fs::write(m0.join("f"), b"first").expect("write");
    let (threads0, rss0) = (
        proc_status(d.pid(), "Threads:"),
        proc_status(d.pid(), "VmRSS:"),
    );
    let n = 24;
    for i in 1..=n {
        let name = format!("c{i}");
        d.create_container(&name, None);
        let m = d.mount(&name, &format!("m{i}"));
        fs::write(m.join("f"), vec![i as u8; 65536]).expect("write");
        assert_eq!(fs::read(m.join("f")).expect("read").len(), 65536);
    }
    let (threads, rss) = (
        proc_status(d.pid(), "Threads:"),
        proc_status(d.pid(), "VmRSS:"),
    );
    assert!(
        threads <= threads0 + 8,
        "{n} more mounts took {} threads ({threads0} -> {threads})",
        threads.saturating_sub(threads0)
    );
    assert!(
        rss <= rss0 + 64 * 1024,
        "{n} more mounts took {} KiB ({rss0} -> {rss} KiB)",
        rss.saturating_sub(rss0)
    );
    let st = d.ok("GET", "/api/v1/status", None);
    assert_eq!(st["mounts"], json!(n + 1), "{st}");
}
