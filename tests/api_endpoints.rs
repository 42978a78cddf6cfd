//! REST API success paths: every endpoint over TCP with the bearer token, a set over the
//! Unix socket without one; envelope, snapshot and container shapes.

mod common;

use common::api::*;
use common::http::Via;
use common::{is_mounted, require_fuse};
use serde_json::{json, Value};

fn id_of(c: &Value) -> String {
    c["id"].as_str().expect("id").to_string()
}

#[test]
fn list_containers_fresh_store_shows_default_container() {
    let d = Daemon::start();
    let r = d.call("GET", "/api/v1/containers", None);
    let env = r.envelope();
    assert_eq!(r.status, 200);
    assert_eq!(env["message"], "Containers retrieved successfully", "{env}");
    let list = d.containers();
    assert_eq!(list.len(), 1, "{list:?}");
    let c = &list[0];
    assert_eq!(c["name"], "default");
    assert_eq!(c["status"], "stopped");
    assert_eq!(c["snapshot_count"], 0);
    assert!(c["mountpoint"].is_null());
    assert!(c["project_id"].is_null());
    assert!(c["deleted_at"].is_null());
    let created = time_field(c, "created_at").expect("created_at");
    assert!(
        (now_ms() - created).abs() < 120_000,
        "created_at far from now: {c}"
    );
}

#[test]
fn container_create_get_delete_over_tcp_succeeds() {
    let d = Daemon::start();
    let before = now_ms();
    let r = d.call(
        "POST",
        "/api/v1/containers",
        Some(&json!({"name": "web", "project_id": "67e89abc123def456789abcd"})),
    );
    assert_eq!(r.envelope()["message"], "Container created successfully");
    let c = r.data();
    check_container(&c);
    assert_eq!(c["name"], "web");
    assert_eq!(c["project_id"], "67e89abc123def456789abcd");
    assert_eq!(c["status"], "stopped");
    assert_eq!(c["snapshot_count"], 0);
    let created = time_field(&c, "created_at").expect("created_at");
    assert!(
        created >= before - 1000 && created <= now_ms() + 1000,
        "{c}"
    );
    let id = id_of(&c);

    // Without a project id.
    let c2 = d.create_container("worker", None);
    assert!(c2["project_id"].is_null(), "{c2}");
    assert_ne!(id_of(&c2), id, "ids must differ");

    // By id and by name.
    let r = d.call("GET", &format!("/api/v1/containers/{id}"), None);
    assert_eq!(r.envelope()["message"], "Container retrieved successfully");
    let by_id = r.data();
    let by_name = d.container("web");
    assert_eq!(by_id, c);
    assert_eq!(by_name, c);

    let names: Vec<Value> = d.containers().iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, [json!("default"), json!("web"), json!("worker")]);

    // Delete by name.
    let r = d.call("DELETE", "/api/v1/containers/web", None);
    assert_eq!(r.envelope()["message"], "Container deleted successfully");
    let del = r.data();
    check_container(&del);
    assert_eq!(del["id"], c["id"]);
    assert_eq!(del["status"], "deleted");
    assert!(time_field(&del, "deleted_at").is_some(), "{del}");

    // Still visible by id, as deleted; the name is free again.
    let got = d.container(&id);
    assert_eq!(got["status"], "deleted");
    d.call("GET", "/api/v1/containers/web", None)
        .expect_error(404);
    let again = d.create_container("web", None);
    assert_ne!(id_of(&again), id);
}

#[test]
fn container_name_with_spaces_and_unicode_is_addressable_by_name() {
    let d = Daemon::start();
    let name = "my box ü-%.x";
    let c = d.create_container(name, None);
    let got = d.container(name);
    assert_eq!(got["id"], c["id"]);
    assert_eq!(got["name"], name);
    let s = d.snapshot(name, json!({}));
    assert_eq!(d.snapshots(name)[0]["name"], s["name"]);
}

#[test]
fn snapshot_lifecycle_over_tcp_succeeds() {
    let d = Daemon::start();
    let c = d.create_container("app", Some("proj-1"));
    let id = id_of(&c);
    let base = format!("/api/v1/containers/{id}/snapshots");

    // Create: empty body, alias, alias + expiry.
    let t0 = now_ms();
    let r = d.call_raw("POST", &base, b"");
    let env = r.envelope();
    assert_eq!(env["message"], "Snapshot created successfully", "{env}");
    let data = r.data();
    assert_eq!(data["container_id"], json!(id));
    assert_eq!(data["project_id"], "proj-1");
    let s1 = data["snapshot"].clone();
    check_snapshot(&s1);
    assert!(s1["alias"].is_null() && s1["expires_at"].is_null() && s1["last_used_at"].is_null());
    let created = time_field(&s1, "created_at").expect("created_at");
    assert!(created >= t0 - 1000 && created <= now_ms() + 1000, "{s1}");

    let s2 = d.snapshot(&id, json!({"alias": "production-stable"}));
    assert_eq!(s2["alias"], "production-stable");
    let s3 = d.snapshot(&id, json!({"alias": "temp-backup", "expiry": 30}));
    assert!(s3["expires_at"].is_string());
    let names = [&s1, &s2, &s3].map(|s| s["name"].as_str().expect("name").to_string());
    assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);

    // List: newest first, same objects.
    let r = d.call("GET", &base, None);
    assert_eq!(r.envelope()["message"], "Snapshots retrieved successfully");
    let data = r.data();
    assert_eq!(data["container_id"], json!(id));
    assert_eq!(data["project_id"], "proj-1");
    let list = d.snapshots(&id);
    let listed: Vec<&str> = list
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(listed, [&names[2], &names[1], &names[0]]);
    assert_eq!(list[2], s1);
    assert_eq!(list[1], s2);
    let created: Vec<i64> = list
        .iter()
        .map(|s| time_field(s, "created_at").expect("t"))
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {created:?}"
    );
    assert_eq!(d.container(&id)["snapshot_count"], 3);

    // Alias: set, then clear with null.
    let r = d.call(
        "PATCH",
        &format!("{base}/{}/alias", names[0]),
        Some(&json!({"alias": "first"})),
    );
    assert_eq!(
        r.envelope()["message"],
        "Snapshot alias updated successfully"
    );
    let data = r.data();
    assert_eq!(data["container_id"], json!(id));
    assert_eq!(data["snapshot"]["alias"], "first");
    assert_eq!(data["snapshot"]["name"], json!(names[0]));
    check_snapshot(&data["snapshot"]);
    let cleared = d.ok(
        "PATCH",
        &format!("{base}/first/alias"),
        Some(&json!({"alias": null})),
    );
    assert!(cleared["snapshot"]["alias"].is_null(), "{cleared}");

    // Restore by name (no body) and by alias (empty object).
    let r = d.call_raw("PATCH", &format!("{base}/{}", names[0]), b"");
    assert_eq!(r.envelope()["message"], "Snapshot restored successfully");
    let data = r.data();
    assert_eq!(data["snapshot"]["name"], json!(names[0]));
    let used = time_field(&data["snapshot"], "last_used_at").expect("last_used_at set");
    assert!((now_ms() - used).abs() < 60_000);
    let data = d.ok(
        "PATCH",
        &format!("{base}/production-stable"),
        Some(&json!({})),
    );
    assert_eq!(data["snapshot"]["name"], json!(names[1]));
    assert!(data["snapshot"]["last_used_at"].is_string());
    // Restore keeps every snapshot.
    assert_eq!(d.snapshots(&id).len(), 3);

    // Delete by alias, then by name.
    let r = d.call("DELETE", &format!("{base}/temp-backup"), None);
    assert_eq!(r.envelope()["message"], "Snapshot deleted successfully");
    let data = r.data();
    assert_eq!(data["container_id"], json!(id));
    assert_eq!(data["project_id"], "proj-1");
    assert_eq!(data["name"], json!(names[2]));
    d.ok("DELETE", &format!("{base}/{}", names[0]), None);
    let left: Vec<Value> = d.snapshots(&id).iter().map(|s| s["name"].clone()).collect();
    assert_eq!(left, [json!(names[1])]);
    assert_eq!(d.container(&id)["snapshot_count"], 1);
}

#[test]
fn start_stop_copy_over_tcp_succeed() {
    require_fuse();
    let d = Daemon::start();
    let c = d.create_container("svc", Some("p-src"));
    let id = id_of(&c);
    let mnt = d.new_mountpoint("m");
    let r = d.call(
        "POST",
        &format!("/api/v1/containers/{id}/start"),
        Some(&json!({"mountpoint": mnt.display().to_string(), "snapdir": "visible"})),
    );
    assert_eq!(r.envelope()["message"], "Container started successfully");
    let started = r.data();
    check_container(&started);
    assert_eq!(started["status"], "running");
    assert_eq!(started["mountpoint"], json!(mnt.display().to_string()));
    assert!(is_mounted(&mnt));
    // snapdir visible: the root lists .snapshots.
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&".snapshots".to_string()), "{names:?}");
    assert_eq!(d.container(&id)["status"], "running");
    let listed = d.containers();
    let me = listed
        .iter()
        .find(|x| x["id"] == json!(id))
        .expect("listed");
    assert_eq!(me["status"], "running");

    std::fs::write(mnt.join("f"), b"hello").expect("write");
    let s = d.snapshot(&id, json!({"alias": "one"}));

    let r = d.call("POST", &format!("/api/v1/containers/{id}/stop"), None);
    assert_eq!(r.envelope()["message"], "Container stopped successfully");
    let stopped = r.data();
    assert_eq!(stopped["status"], "stopped");
    assert!(stopped["mountpoint"].is_null());
    assert!(!is_mounted(&mnt));
    // Stop of a stopped container is a no-op success.
    assert_eq!(
        d.ok(
            "POST",
            &format!("/api/v1/containers/{id}/stop"),
            Some(&json!({}))
        )["status"],
        "stopped"
    );

    // Copy from the current tree and from a snapshot.
    let r = d.call(
        "POST",
        &format!("/api/v1/containers/{id}/copy"),
        Some(&json!({"name": "svc-copy", "target_project_id": "p-dst"})),
    );
    assert_eq!(r.envelope()["message"], "Container copied successfully");
    let cp = r.data();
    check_container(&cp);
    assert_eq!(cp["name"], "svc-copy");
    assert_eq!(cp["project_id"], "p-dst");
    assert_eq!(cp["status"], "stopped");
    assert_eq!(cp["snapshot_count"], 0);
    assert_ne!(cp["id"], json!(id));
    let cp2 = d.ok(
        "POST",
        "/api/v1/containers/svc/copy",
        Some(
            &json!({"name": "svc-from-snap", "target_project_id": "p-dst",
                     "source_snapshot": s["name"]}),
        ),
    );
    assert_eq!(cp2["project_id"], "p-dst");
    // Copying from a snapshot sets its last_used_at.
    let after = d.snapshots(&id);
    assert!(after[0]["last_used_at"].is_string(), "{after:?}");
    assert_eq!(d.containers().len(), 4);
}

#[test]
fn endpoints_over_unix_socket_succeed_without_token() {
    let d = Daemon::start();
    let u = |m: &str, p: &str, b: Option<Value>| d.call_via(Via::Unix, m, p, b.as_ref()).data();
    let list = u("GET", "/api/v1/containers", None);
    assert_eq!(list["containers"].as_array().expect("array").len(), 1);
    let c = u("POST", "/api/v1/containers", Some(json!({"name": "sock"})));
    check_container(&c);
    let id = id_of(&c);
    assert_eq!(
        u("GET", &format!("/api/v1/containers/{id}"), None)["name"],
        "sock"
    );
    let s = u(
        "POST",
        "/api/v1/containers/sock/snapshots",
        Some(json!({"alias": "a1"})),
    )["snapshot"]
        .clone();
    check_snapshot(&s);
    let name = s["name"].as_str().expect("name");
    let l = u("GET", "/api/v1/containers/sock/snapshots", None);
    assert_eq!(l["snapshots"][0]["name"], json!(name));
    let a = u(
        "PATCH",
        &format!("/api/v1/containers/sock/snapshots/{name}/alias"),
        Some(json!({"alias": "a2"})),
    );
    assert_eq!(a["snapshot"]["alias"], "a2");
    let r = u("PATCH", "/api/v1/containers/sock/snapshots/a2", None);
    assert!(r["snapshot"]["last_used_at"].is_string());
    let cp = u(
        "POST",
        "/api/v1/containers/sock/copy",
        Some(json!({"name": "sock2", "source_snapshot": "a2"})),
    );
    check_container(&cp);
    u("DELETE", "/api/v1/containers/sock/snapshots/a2", None);
    let del = u("DELETE", &format!("/api/v1/containers/{id}"), None);
    assert_eq!(del["status"], "deleted");
    // The socket answers 404s in the envelope too.
    d.call_via(Via::Unix, "GET", "/api/v1/containers/nope", None)
        .expect_error(404);
}

#[test]
fn snapshot_size_reports_bytes_written_in_its_epoch() {
    require_fuse();
    let d = Daemon::start();
    d.create_container("sz", None);
    let mnt = d.mount("sz", "m");
    let s0 = d.snapshot("sz", json!({}));
    // Incompressible bytes, so no storage layer can make them smaller.
    let data: Vec<u8> = (0..300_000u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    std::fs::write(mnt.join("big"), &data).expect("write");
    let s1 = d.snapshot("sz", json!({}));
    let size1 = s1["size"].as_u64().expect("size");
    assert!(
        size1 >= 300_000,
        "snapshot taken after writing 300000 bytes has size {size1} (snapshot before: {})",
        s0["size"]
    );
    let s2 = d.snapshot("sz", json!({}));
    assert!(
        s2["size"].as_u64().expect("size") < 300_000,
        "a snapshot with no new writes should be small: {s2}"
    );
    let c = d.container("sz");
    assert!(c["bytes_used"].as_u64().expect("bytes") >= 300_000, "{c}");
    d.unmount("sz", &mnt);
}
