//! Restoring some paths through the REST API (`PATCH .../snapshots/{name}` with `paths`),
//! seen through a FUSE mount: the named paths show the snapshot, everything else stays,
//! nothing the kernel cached of the replaced files shows, and descriptors open on them go
//! stale as after a full restore. Also the CLI's `--path` and the API's refusals.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::api::*;
use nix::errno::Errno;
use serde_json::json;

fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()))
}

#[test]
fn restore_paths_of_a_mounted_container() {
    let d = Daemon::start();
    d.create_container("p", None);
    let mnt = d.mount("p", "m");
    fs::create_dir_all(mnt.join("etc/nginx/sites")).expect("mkdir");
    write(&mnt.join("etc/nginx/nginx.conf"), b"good");
    write(&mnt.join("etc/nginx/sites/a"), b"site a");
    write(&mnt.join("etc/hosts"), b"hosts v1");
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    write(&mnt.join("db"), &big);
    d.snapshot("p", json!({"alias": "before"}));

    write(&mnt.join("etc/nginx/nginx.conf"), b"broken by the agent");
    fs::remove_file(mnt.join("etc/nginx/sites/a")).expect("rm");
    write(&mnt.join("etc/nginx/sites/junk"), b"junk");
    write(&mnt.join("etc/hosts"), b"hosts v2");
    write(&mnt.join("db"), b"truncated");
    write(&mnt.join("new"), b"created after");
    // Cache everything the kernel can: pages (read twice), listings, and absent names.
    for _ in 0..2 {
        assert_eq!(
            read(&mnt.join("etc/nginx/nginx.conf")),
            b"broken by the agent"
        );
        assert_eq!(read(&mnt.join("db")), b"truncated");
        assert_eq!(ls(&mnt.join("etc/nginx/sites")), ["junk"]);
        assert!(fs::metadata(mnt.join("etc/nginx/sites/a")).is_err());
    }
    let open_conf = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("etc/nginx/nginx.conf"))
        .expect("open conf");
    let open_hosts = File::open(mnt.join("etc/hosts")).expect("open hosts");
    let ino_before = fs::metadata(mnt.join("etc/nginx/nginx.conf"))
        .expect("stat")
        .ino();

    let data = d.ok(
        "PATCH",
        "/api/v1/containers/p/snapshots/before",
        Some(&json!({"paths": ["/etc/nginx", "/db", "/new"]})),
    );
    assert_eq!(data["restored_paths"], json!(["/etc/nginx", "/db", "/new"]));
    assert!(data["restored_inodes"].as_u64().unwrap_or(0) >= 5, "{data}");
    assert!(data["snapshot"]["last_used_at"].is_string(), "{data}");

    assert_eq!(read(&mnt.join("etc/nginx/nginx.conf")), b"good");
    assert_eq!(ls(&mnt.join("etc/nginx/sites")), ["a"]);
    assert_eq!(read(&mnt.join("etc/nginx/sites/a")), b"site a");
    assert!(read(&mnt.join("db")) == big, "db is not the snapshot's");
    assert_eq!(
        fs::metadata(mnt.join("new")).expect_err("new").kind(),
        ErrorKind::NotFound
    );
    // Not named: untouched, and its open descriptor keeps working.
    assert_eq!(read(&mnt.join("etc/hosts")), b"hosts v2");
    let mut buf = [0u8; 64];
    let n = open_hosts.read_at(&mut buf, 0).expect("read hosts");
    assert_eq!(&buf[..n], b"hosts v2");
    // The replaced file: a new inode number for the kernel, and its old descriptor is stale.
    let ino_after = fs::metadata(mnt.join("etc/nginx/nginx.conf"))
        .expect("stat")
        .ino();
    assert_ne!(ino_before, ino_after);
    let allowed = [Errno::ESTALE as i32, Errno::EIO as i32];
    match open_conf.read_at(&mut buf, 0) {
        Ok(n) => panic!(
            "old descriptor read {:?} after the restore",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(allowed.contains(&e.raw_os_error().unwrap_or(0)), "{e}"),
    }
    assert!(
        open_conf.write_at(b"XX", 0).is_err(),
        "old descriptor wrote"
    );
    drop(open_conf);
    assert_eq!(read(&mnt.join("etc/nginx/nginx.conf")), b"good");
    // The restored tree is an ordinary one: write, snapshot, restore again.
    write(&mnt.join("etc/nginx/nginx.conf"), b"edited after");
    d.snapshot("p", json!({"alias": "after"}));
    d.ok(
        "PATCH",
        "/api/v1/containers/p/snapshots/before",
        Some(&json!({"paths": ["/etc/nginx/nginx.conf"]})),
    );
    assert_eq!(read(&mnt.join("etc/nginx/nginx.conf")), b"good");
    assert_eq!(
        read(&mnt.join(".snapshots/after/etc/nginx/nginx.conf")),
        b"edited after"
    );
    // Deleting every snapshot and letting reclaim run keeps the restored data.
    for s in d.snapshots("p") {
        let name = s["name"].as_str().expect("name");
        d.ok(
            "DELETE",
            &format!("/api/v1/containers/p/snapshots/{name}"),
            None,
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    d.unmount("p", &mnt);
    let m2 = d.mount("p", "m2");
    assert!(
        read(&m2.join("db")) == big,
        "restored data lost after reclaim"
    );
    assert_eq!(read(&m2.join("etc/nginx/sites/a")), b"site a");
    d.unmount("p", &m2);
}

#[test]
fn restore_paths_brings_back_a_deleted_tree_the_kernel_cached_as_missing() {
    let d = Daemon::start();
    d.create_container("q", None);
    let mnt = d.mount("q", "m");
    fs::create_dir_all(mnt.join("a/b/c")).expect("mkdir");
    write(&mnt.join("a/b/c/f"), b"deep");
    write(&mnt.join("a/b/sibling"), b"sibling");
    let raw_name = b"caf\xe9".to_vec(); // not UTF-8
    write(
        &mnt.join(std::ffi::OsStr::from_bytes(&raw_name)),
        b"latin-1 name",
    );
    d.snapshot("q", json!({"alias": "s"}));
    fs::remove_dir_all(mnt.join("a/b")).expect("rm -rf");
    fs::remove_file(mnt.join(std::ffi::OsStr::from_bytes(&raw_name))).expect("rm");
    for _ in 0..2 {
        assert!(fs::metadata(mnt.join("a/b/c/f")).is_err());
        assert!(fs::metadata(mnt.join("a/b")).is_err());
    }
    let b64 = "L2NhZuk="; // "/caf\xe9"
    d.ok(
        "PATCH",
        "/api/v1/containers/q/snapshots/s",
        Some(&json!({"paths": ["/a/b/c/f"], "paths_base64": [b64]})),
    );
    assert_eq!(read(&mnt.join("a/b/c/f")), b"deep");
    assert_eq!(
        ls(&mnt.join("a/b")),
        ["c"],
        "only the path's parents come back"
    );
    assert_eq!(
        read(&mnt.join(std::ffi::OsStr::from_bytes(&raw_name))),
        b"latin-1 name"
    );
    d.unmount("q", &mnt);
}

#[test]
fn restore_paths_refuses_bad_bodies_and_changes_nothing() {
    let d = Daemon::start();
    d.create_container("e", None);
    let mnt = d.mount("e", "m");
    write(&mnt.join("f"), b"v1");
    write(&mnt.join("plain"), b"a file");
    d.snapshot("e", json!({"alias": "s"}));
    write(&mnt.join("f"), b"v2");
    let base = "/api/v1/containers/e/snapshots";
    let cases: Vec<(serde_json::Value, u16)> = vec![
        // A misspelt field must never become a full restore.
        (json!({"path": ["/f"]}), 400),
        (json!({"paths": []}), 400),
        (json!({"paths": ["f"]}), 400),
        (json!({"paths": ["/"]}), 400),
        (json!({"paths": ["/a/../f"]}), 400),
        (json!({"paths": "/f"}), 400),
        (json!({"paths_base64": ["***"]}), 400),
        (json!({"paths": ["/plain/inside"]}), 409),
    ];
    for (body, status) in cases {
        d.call("PATCH", &format!("{base}/s"), Some(&body))
            .expect_error(status);
    }
    d.call_raw("PATCH", &format!("{base}/s"), b"{\"paths\": [")
        .expect_error(400);
    d.call(
        "PATCH",
        &format!("{base}/nope"),
        Some(&json!({"paths": ["/f"]})),
    )
    .expect_error(404);
    assert_eq!(
        read(&mnt.join("f")),
        b"v2",
        "a refused request changed the tree"
    );
    assert!(d.snapshots("e")[0]["last_used_at"].is_null());
    d.unmount("e", &mnt);
}

#[test]
fn cli_restores_paths_and_a_stopped_container_too() {
    let d = Daemon::start();
    d.create_container("c", None);
    let mnt = d.mount("c", "m");
    write(&mnt.join("x"), b"x1");
    write(&mnt.join("y"), b"y1");
    d.snapshot("c", json!({"alias": "s"}));
    write(&mnt.join("x"), b"x2");
    write(&mnt.join("y"), b"y2");
    let store = d.store().to_str().expect("utf8").to_string();
    let out = std::process::Command::new(common::snapfs_bin())
        .args([
            "snapshots",
            "restore",
            "--container",
            "c",
            "--name",
            "s",
            "--path",
            "/x",
            "--store",
            &store,
        ])
        .output()
        .expect("run snapfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("restored 1 path(s)"), "{text}");
    assert_eq!(read(&mnt.join("x")), b"x1");
    assert_eq!(read(&mnt.join("y")), b"y2");
    // Stopped: the next mount shows it.
    d.unmount("c", &mnt);
    d.ok(
        "PATCH",
        "/api/v1/containers/c/snapshots/s",
        Some(&json!({"paths": ["/y"]})),
    );
    let m2 = d.mount("c", "m2");
    assert_eq!(read(&m2.join("y")), b"y1");
    assert_eq!(read(&m2.join("x")), b"x1");
    d.unmount("c", &m2);
}

/// A hard link from outside the restored path names the same file: after the restore it
/// shows the snapshot's content too, through names the kernel had cached.
#[test]
fn restore_paths_keeps_hard_links_from_outside_in_step() {
    let d = Daemon::start();
    d.create_container("h", None);
    let mnt = d.mount("h", "m");
    fs::create_dir(mnt.join("p")).expect("mkdir");
    fs::create_dir(mnt.join("q")).expect("mkdir");
    write(&mnt.join("p/f"), b"original");
    fs::hard_link(mnt.join("p/f"), mnt.join("q/g")).expect("link");
    d.snapshot("h", json!({"alias": "s"}));
    write(&mnt.join("q/g"), b"changed through q");
    for _ in 0..2 {
        assert_eq!(read(&mnt.join("q/g")), b"changed through q");
        assert_eq!(read(&mnt.join("p/f")), b"changed through q");
    }
    d.ok(
        "PATCH",
        "/api/v1/containers/h/snapshots/s",
        Some(&json!({"paths": ["/p"]})),
    );
    assert_eq!(read(&mnt.join("p/f")), b"original");
    assert_eq!(read(&mnt.join("q/g")), b"original");
    let (a, b) = (
        fs::metadata(mnt.join("p/f")).expect("stat"),
        fs::metadata(mnt.join("q/g")).expect("stat"),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    d.unmount("h", &mnt);
}
