//! Copy through the REST API (from a snapshot, from the current tree, from a deleted
//! container's snapshot), checked through FUSE mounts of source and copy.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::api::*;
use common::is_mounted;
use serde_json::json;

fn read(p: &Path) -> String {
    String::from_utf8(fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
        .expect("utf8")
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn copy_from_snapshot_is_independent_of_source() {
    let d = Daemon::start();
    d.create_container("src", Some("p-src"));
    let ms = d.mount("src", "ms");
    fs::write(ms.join("a"), "1").expect("write");
    fs::create_dir(ms.join("dir")).expect("mkdir");
    fs::write(ms.join("dir/x"), "x").expect("write");
    let s = d.snapshot("src", json!({"alias": "base"}));
    fs::write(ms.join("a"), "2").expect("write after snapshot");

    let cp = d.ok(
        "POST",
        "/api/v1/containers/src/copy",
        Some(&json!({"name": "cp", "target_project_id": "p-dst", "source_snapshot": "base"})),
    );
    check_container(&cp);
    assert_eq!(cp["project_id"], "p-dst");
    assert_eq!(cp["name"], "cp");
    assert_eq!(cp["snapshot_count"], 0);
    let used = d.snapshots("src")[0].clone();
    assert_eq!(used["name"], s["name"]);
    assert!(
        used["last_used_at"].is_string(),
        "copy must set last_used_at: {used}"
    );

    let mc = d.mount("cp", "mc");
    assert_eq!(read(&mc.join("a")), "1", "copy shows the snapshot");
    assert_eq!(read(&mc.join("dir/x")), "x");

    // Writes on either side stay there.
    fs::write(mc.join("a"), "copy").expect("write in copy");
    fs::write(mc.join("only-copy"), "c").expect("write in copy");
    fs::remove_file(mc.join("dir/x")).expect("rm in copy");
    fs::write(ms.join("only-src"), "s").expect("write in source");
    fs::write(ms.join("dir/x"), "src-x").expect("write in source");
    assert_eq!(read(&ms.join("a")), "2");
    assert!(!exists(&ms.join("only-copy")));
    assert_eq!(read(&ms.join("dir/x")), "src-x");
    assert_eq!(read(&mc.join("a")), "copy");
    assert!(!exists(&mc.join("only-src")));
    assert!(!exists(&mc.join("dir/x")));
    // The snapshot itself is untouched.
    assert_eq!(read(&ms.join(".snapshots/base/a")), "1");
    assert_eq!(read(&ms.join(".snapshots/base/dir/x")), "x");

    // Both survive a stop/start.
    d.unmount("cp", &mc);
    d.unmount("src", &ms);
    let mc2 = d.mount("cp", "mc2");
    let ms2 = d.mount("src", "ms2");
    assert_eq!(read(&mc2.join("a")), "copy");
    assert_eq!(read(&ms2.join("a")), "2");
    assert!(!exists(&mc2.join("only-src")) && !exists(&ms2.join("only-copy")));
    d.unmount("cp", &mc2);
    d.unmount("src", &ms2);
}

#[test]
fn copy_from_current_tree_of_mounted_container_is_independent() {
    let d = Daemon::start();
    d.create_container("live", Some("p1"));
    let ml = d.mount("live", "ml");
    fs::write(ml.join("a"), "at-copy").expect("write (no fsync)");
    let cp = d.ok(
        "POST",
        "/api/v1/containers/live/copy",
        Some(&json!({"name": "cur", "target_project_id": "p2"})),
    );
    assert_eq!(cp["project_id"], "p2");
    assert!(
        d.snapshots("live").is_empty(),
        "copy of the current tree made a snapshot"
    );
    assert_eq!(d.container("live")["status"], "running");

    fs::write(ml.join("a"), "after-copy").expect("write in source after copy");
    fs::write(ml.join("src-only"), "s").expect("write");
    let mc = d.mount("cur", "mc");
    assert_eq!(
        read(&mc.join("a")),
        "at-copy",
        "copy must hold the tree at copy time"
    );
    assert!(!exists(&mc.join("src-only")));
    fs::write(mc.join("copy-only"), "c").expect("write in copy");
    fs::write(mc.join("a"), "copy-a").expect("write in copy");
    assert_eq!(read(&ml.join("a")), "after-copy");
    assert!(!exists(&ml.join("copy-only")));

    // The source keeps working: snapshot and restore.
    let s = d.snapshot("live", json!({}));
    fs::write(ml.join("a"), "later").expect("write");
    d.ok(
        "PATCH",
        &format!(
            "/api/v1/containers/live/snapshots/{}",
            s["name"].as_str().expect("name")
        ),
        None,
    );
    assert_eq!(read(&ml.join("a")), "after-copy");
    assert_eq!(read(&mc.join("a")), "copy-a");
    d.unmount("cur", &mc);
    d.unmount("live", &ml);
}

#[test]
fn copy_from_current_tree_keeps_source_bytes_used() {
    let d = Daemon::start();
    d.create_container("acct", None);
    let m = d.mount("acct", "m");
    fs::write(m.join("blob"), vec![5u8; 200_000]).expect("write");
    d.unmount("acct", &m);
    let before = d.container("acct")["bytes_used"]
        .as_u64()
        .expect("bytes_used");
    assert!(
        before >= 200_000,
        "bytes_used {before} after writing 200000 bytes"
    );
    d.ok(
        "POST",
        "/api/v1/containers/acct/copy",
        Some(&json!({"name": "acct2"})),
    );
    let after = d.container("acct")["bytes_used"]
        .as_u64()
        .expect("bytes_used");
    assert!(
        after >= 200_000,
        "source bytes_used fell from {before} to {after} after a copy of its current tree \
         (its data is still there)"
    );
}

#[test]
fn deleted_container_snapshots_stay_listable_and_copyable() {
    let d = Daemon::start();
    let c = d.create_container("gone", Some("p-old"));
    let id = c["id"].as_str().expect("id").to_string();
    let m = d.mount("gone", "m");
    fs::write(m.join("data"), "precious").expect("write");
    fs::create_dir(m.join("sub")).expect("mkdir");
    fs::write(m.join("sub/f"), "f").expect("write");
    let s = d.snapshot("gone", json!({"alias": "last"}));
    fs::write(m.join("data"), "not in snapshot").expect("write");

    // Deleting a mounted container with force unmounts it.
    let del = d.ok(
        "DELETE",
        &format!("/api/v1/containers/{id}?force=true"),
        None,
    );
    assert_eq!(del["status"], "deleted");
    assert!(!is_mounted(&m));

    let got = d.container(&id);
    assert_eq!(got["status"], "deleted");
    assert!(got["deleted_at"].is_string(), "{got}");
    assert_eq!(got["snapshot_count"], 1);
    assert_eq!(got["project_id"], "p-old");
    let listed = d.containers();
    let row = listed
        .iter()
        .find(|c| c["id"] == json!(id))
        .expect("deleted still listed");
    assert_eq!(row["status"], "deleted");
    let snaps = d.snapshots(&id);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["name"], s["name"]);
    assert_eq!(snaps[0]["alias"], "last");
    let env = d.ok("GET", &format!("/api/v1/containers/{id}/snapshots"), None);
    assert_eq!(env["container_id"], json!(id));

    // The name is free again, for an empty container.
    d.create_container("gone", None);
    let fresh = d.mount("gone", "fresh");
    assert!(!exists(&fresh.join("data")));
    d.unmount("gone", &fresh);

    // Copy from the deleted container's snapshot (by alias) into a new container.
    let cp = d.ok(
        "POST",
        &format!("/api/v1/containers/{id}/copy"),
        Some(&json!({"name": "reborn", "target_project_id": "p-new", "source_snapshot": "last"})),
    );
    assert_eq!(cp["project_id"], "p-new");
    assert_eq!(cp["status"], "stopped");
    assert!(d.snapshots(&id)[0]["last_used_at"].is_string());
    let mr = d.mount("reborn", "mr");
    assert_eq!(read(&mr.join("data")), "precious");
    assert_eq!(read(&mr.join("sub/f")), "f");
    d.unmount("reborn", &mr);

    // Alias changes and deletion still work on the deleted container's snapshots; the
    // copy keeps its data after the snapshot is deleted and space is reclaimed.
    let a = d.ok(
        "PATCH",
        &format!("/api/v1/containers/{id}/snapshots/last/alias"),
        Some(&json!({"alias": "final"})),
    );
    assert_eq!(a["snapshot"]["alias"], "final");
    d.ok(
        "DELETE",
        &format!("/api/v1/containers/{id}/snapshots/final"),
        None,
    );
    assert!(d.snapshots(&id).is_empty());
    assert_eq!(d.container(&id)["snapshot_count"], 0);
    std::thread::sleep(Duration::from_millis(2500)); // background reclaim runs every second
    let mr2 = d.mount("reborn", "mr2");
    assert_eq!(read(&mr2.join("data")), "precious");
    assert_eq!(read(&mr2.join("sub/f")), "f");
    d.unmount("reborn", &mr2);
}
