//! REST API errors: every documented error status, always in the envelope, and never a
//! change to the store (the full listing before and after is equal).

mod common;

use common::api::*;
use common::{is_mounted, require_fuse};
use serde_json::{json, Value};

/// A store with a container `box` (project `pr`), two snapshots (`keep` alias on the
/// older) and a second container `other`.
fn fixture() -> (Daemon, String, String, String) {
    let d = Daemon::start();
    let c = d.create_container("box", Some("pr"));
    let id = c["id"].as_str().expect("id").to_string();
    let s1 = d.snapshot(&id, json!({"alias": "keep"}));
    let s2 = d.snapshot(&id, json!({}));
    d.create_container("other", None);
    (
        d,
        id,
        s1["name"].as_str().expect("name").to_string(),
        s2["name"].as_str().expect("name").to_string(),
    )
}

/// Sends each (method, path, raw body), expects `status` in the envelope for all, and
/// checks that the store is unchanged.
#[track_caller]
fn expect_all(d: &Daemon, status: u16, cases: &[(&str, String, Vec<u8>)]) {
    let before = d.state();
    let mut wrong = Vec::new();
    for (m, p, b) in cases {
        let r = d.call_raw(m, p, b);
        match r.check_envelope() {
            Err(e) => wrong.push(e),
            Ok(_) if r.status != status => wrong.push(r.describe()),
            Ok(_) => {}
        }
    }
    let after = d.state();
    assert!(
        wrong.is_empty(),
        "{} of {} requests were not answered {status} in the envelope:\n{}\nstore changed: {}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        after != before
    );
    assert_eq!(after, before, "store changed by requests answered {status}");
}

fn j(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("json")
}

#[test]
fn bad_json_and_wrong_types_return_400_and_change_nothing() {
    let (d, id, s1, _) = fixture();
    let snaps = format!("/api/v1/containers/{id}/snapshots");
    let restore = format!("{snaps}/{s1}");
    let alias = format!("{snaps}/{s1}/alias");
    let start = format!("/api/v1/containers/{id}/start");
    let stop = format!("/api/v1/containers/{id}/stop");
    let copy = format!("/api/v1/containers/{id}/copy");
    let conts = "/api/v1/containers".to_string();
    let raw = |s: &str| s.as_bytes().to_vec();
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        // Not JSON / truncated / not an object.
        ("POST", snaps.clone(), raw("{\"alias\": \"x\"")),
        ("POST", snaps.clone(), raw("alias=x")),
        ("POST", snaps.clone(), raw("\"x\"")),
        ("POST", snaps.clone(), raw("null")),
        ("POST", snaps.clone(), raw("{\"alias\": \"x\"} trailing")),
        ("POST", snaps.clone(), vec![0xff, 0xfe, b'{', b'}']),
        ("PATCH", restore.clone(), raw("{")),
        ("PATCH", restore.clone(), raw("[1]")),
        ("PATCH", restore.clone(), raw("42")),
        ("PATCH", alias.clone(), raw("{\"alias\":")),
        ("POST", conts.clone(), raw("{name: \"x\"}")),
        ("POST", start.clone(), raw("{\"mountpoint\": \"/tmp\"")),
        ("POST", stop.clone(), raw("[]")),
        ("POST", copy.clone(), raw("{\"name\": \"c\",}")),
        // Wrong types.
        ("POST", snaps.clone(), j(json!({"alias": 5}))),
        ("POST", snaps.clone(), j(json!({"alias": ["a"]}))),
        ("POST", snaps.clone(), j(json!({"expiry": "30"}))),
        ("POST", snaps.clone(), j(json!({"expiry": 1.5}))),
        ("POST", snaps.clone(), j(json!({"expiry": 30.0}))),
        ("POST", snaps.clone(), j(json!({"expiry": true}))),
        ("POST", snaps.clone(), j(json!({"expiry": {}}))),
        ("POST", snaps.clone(), j(json!({"expires_at": 12345}))),
        ("PATCH", alias.clone(), j(json!({"alias": 7}))),
        ("POST", conts.clone(), j(json!({"name": 7}))),
        (
            "POST",
            conts.clone(),
            j(json!({"name": "n", "project_id": 3})),
        ),
        ("POST", conts.clone(), j(json!({}))),
        ("POST", conts.clone(), raw("")),
        ("POST", start.clone(), j(json!({"mountpoint": 5}))),
        ("POST", start.clone(), j(json!({}))),
        (
            "POST",
            start.clone(),
            j(json!({"mountpoint": "/tmp", "admin_uid": "0"})),
        ),
        (
            "POST",
            start.clone(),
            j(json!({"mountpoint": "/tmp", "admin_uid": -1})),
        ),
        (
            "POST",
            start.clone(),
            j(json!({"mountpoint": "/tmp", "snapdir": true})),
        ),
        ("POST", copy.clone(), j(json!({"name": 1}))),
        ("POST", copy.clone(), j(json!({}))),
        (
            "POST",
            copy.clone(),
            j(json!({"name": "c", "source_snapshot": 1})),
        ),
        (
            "POST",
            copy.clone(),
            j(json!({"name": "c", "target_project_id": false})),
        ),
        // Unknown fields, on every endpoint that takes a body.
        (
            "POST",
            snaps.clone(),
            j(json!({"alias": "ok", "stateful": true})),
        ),
        ("POST", snaps.clone(), j(json!({"Alias": "ok"}))),
        ("PATCH", alias.clone(), j(json!({"alias": "ok", "x": 1}))),
        ("POST", conts.clone(), j(json!({"name": "ok", "id": "x"}))),
        (
            "POST",
            start.clone(),
            j(json!({"mountpoint": "/tmp", "ro": true})),
        ),
        (
            "POST",
            copy.clone(),
            j(json!({"name": "ok", "project_id": "x"})),
        ),
    ];
    expect_all(&d, 400, &cases);
}

#[test]
fn json_array_bodies_return_400_and_change_nothing() {
    // Bodies must be JSON objects; serde would otherwise read an array as the struct's
    // fields in order (`["x"]` = alias "x").
    let (d, id, s1, _) = fixture();
    let snaps = format!("/api/v1/containers/{id}/snapshots");
    let raw = |s: &str| s.as_bytes().to_vec();
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("POST", snaps.clone(), raw("[]")),
        ("POST", snaps.clone(), raw("[\"arr-alias\"]")),
        (
            "PATCH",
            format!("{snaps}/{s1}/alias"),
            raw("[\"arr-alias2\"]"),
        ),
        ("PATCH", format!("{snaps}/{s1}/alias"), raw("[]")),
        (
            "POST",
            "/api/v1/containers".into(),
            raw("[\"arr-container\"]"),
        ),
        (
            "POST",
            format!("/api/v1/containers/{id}/copy"),
            raw("[null, \"arr-copy\"]"),
        ),
        ("POST", format!("/api/v1/containers/{id}/start"), raw("[5]")),
    ];
    expect_all(&d, 400, &cases);
}

#[test]
fn invalid_values_return_400_and_change_nothing() {
    let (d, id, s1, _) = fixture();
    let snaps = format!("/api/v1/containers/{id}/snapshots");
    let alias = format!("{snaps}/{s1}/alias");
    let start = format!("/api/v1/containers/{id}/start");
    let copy = format!("/api/v1/containers/{id}/copy");
    let conts = "/api/v1/containers".to_string();
    let not_dir = d.store().join("snapfs.sock").display().to_string();
    let long = "a".repeat(101);
    let long_mb = "é".repeat(101);
    let mut cases: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for bad in [
        json!(long),
        json!(long_mb),
        json!("snap-x"),
        json!("snap-20251109-143045"),
        json!("a/b"),
        json!("/"),
        json!(""),
        json!("."),
        json!(".."),
        json!("nul\u{0}x"),
    ] {
        cases.push(("POST", snaps.clone(), j(json!({"alias": bad.clone()}))));
        cases.push(("PATCH", alias.clone(), j(json!({"alias": bad}))));
    }
    for e in [json!(0), json!(-1), json!(36_501), json!(u64::MAX)] {
        cases.push(("POST", snaps.clone(), j(json!({"expiry": e}))));
    }
    let future = format_time_ms(now_ms() + 86_400_000);
    cases.extend([
        (
            "POST",
            snaps.clone(),
            j(json!({"expiry": 3, "expires_at": future})),
        ),
        ("POST", snaps.clone(), j(json!({"expires_at": "tomorrow"}))),
        (
            "POST",
            snaps.clone(),
            j(json!({"expires_at": "2025-02-30T00:00:00.000Z"})),
        ),
        (
            "POST",
            snaps.clone(),
            j(json!({"expires_at": "2025-11-09 14:30:45"})),
        ),
        (
            "POST",
            start.clone(),
            j(json!({"mountpoint": "relative/dir"})),
        ),
        (
            "POST",
            start.clone(),
            j(json!({"mountpoint": "/nonexistent/snapfs/dir"})),
        ),
        ("POST", start.clone(), j(json!({"mountpoint": not_dir}))),
        (
            "POST",
            start.clone(),
            j(json!({"mountpoint": "/tmp", "snapdir": "sideways"})),
        ),
        ("POST", conts.clone(), j(json!({"name": ""}))),
        ("POST", conts.clone(), j(json!({"name": "a/b"}))),
        ("POST", conts.clone(), j(json!({"name": "x".repeat(256)}))),
        ("POST", conts.clone(), j(json!({"name": "tab\there"}))),
        ("POST", copy.clone(), j(json!({"name": "a/b"}))),
        ("POST", copy.clone(), j(json!({"name": ""}))),
    ]);
    // Delete's only query parameter is force=true|false.
    for q in [
        "force=yes",
        "force=1",
        "force=",
        "force",
        "forse=true",
        "force=true&x=1",
    ] {
        cases.push(("DELETE", format!("/api/v1/containers/{id}?{q}"), vec![]));
    }
    expect_all(&d, 400, &cases);
}

#[test]
fn unknown_container_snapshot_or_endpoint_returns_404_and_changes_nothing() {
    let (d, id, s1, _) = fixture();
    let nx = "0123456789abcdef01234567"; // well-formed id, no such container
    let body = |v: Value| j(v);
    let mut cases: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for c in [nx, "nope", "BOX"] {
        let b = format!("/api/v1/containers/{c}");
        cases.extend([
            ("GET", b.clone(), vec![]),
            ("DELETE", b.clone(), vec![]),
            ("GET", format!("{b}/snapshots"), vec![]),
            (
                "POST",
                format!("{b}/snapshots"),
                body(json!({"alias": "z"})),
            ),
            ("PATCH", format!("{b}/snapshots/{s1}"), vec![]),
            ("DELETE", format!("{b}/snapshots/{s1}"), vec![]),
            (
                "PATCH",
                format!("{b}/snapshots/{s1}/alias"),
                body(json!({"alias": "z"})),
            ),
            (
                "POST",
                format!("{b}/start"),
                body(json!({"mountpoint": "/tmp"})),
            ),
            ("POST", format!("{b}/stop"), vec![]),
            ("POST", format!("{b}/copy"), body(json!({"name": "z"}))),
        ]);
    }
    let b = format!("/api/v1/containers/{id}");
    for s in ["snap-20000101-000000", "nosuch", "snap-x", "KEEP"] {
        cases.extend([
            ("PATCH", format!("{b}/snapshots/{s}"), vec![]),
            ("DELETE", format!("{b}/snapshots/{s}"), vec![]),
            (
                "PATCH",
                format!("{b}/snapshots/{s}/alias"),
                body(json!({"alias": "z"})),
            ),
        ]);
    }
    cases.extend([
        (
            "POST",
            format!("{b}/copy"),
            body(json!({"name": "z", "source_snapshot": "nosuch"})),
        ),
        ("GET", "/".to_string(), vec![]),
        ("GET", "/api".to_string(), vec![]),
        ("GET", "/api/v1".to_string(), vec![]),
        ("GET", "/api/v2/containers".to_string(), vec![]),
        ("GET", "/api/v1/snapshots".to_string(), vec![]),
        ("GET", format!("{b}/nothing"), vec![]),
        ("POST", format!("{b}/snapshots/{s1}/restore"), vec![]),
        ("GET", format!("{b}/snapshots/{s1}/alias/x"), vec![]),
        (
            "POST",
            "/api/v1/containers/".to_string(),
            body(json!({"name": "z"})),
        ),
    ]);
    expect_all(&d, 404, &cases);
}

#[test]
fn wrong_method_returns_405_and_changes_nothing() {
    let (d, id, s1, _) = fixture();
    let b = format!("/api/v1/containers/{id}");
    let name = json!({"name": "z"});
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("PUT", "/api/v1/containers".into(), j(name.clone())),
        ("DELETE", "/api/v1/containers".into(), vec![]),
        ("PATCH", "/api/v1/containers".into(), j(name.clone())),
        ("POST", b.clone(), j(name.clone())),
        ("PUT", b.clone(), j(name.clone())),
        ("GET", format!("{b}/start"), vec![]),
        ("DELETE", format!("{b}/stop"), vec![]),
        ("GET", format!("{b}/copy"), vec![]),
        ("PUT", format!("{b}/snapshots"), j(json!({}))),
        ("DELETE", format!("{b}/snapshots"), vec![]),
        ("PATCH", format!("{b}/snapshots"), vec![]),
        ("GET", format!("{b}/snapshots/{s1}"), vec![]),
        ("POST", format!("{b}/snapshots/{s1}"), vec![]),
        ("PUT", format!("{b}/snapshots/{s1}"), vec![]),
        ("GET", format!("{b}/snapshots/{s1}/alias"), vec![]),
        (
            "POST",
            format!("{b}/snapshots/{s1}/alias"),
            j(json!({"alias": "z"})),
        ),
        ("DELETE", format!("{b}/snapshots/{s1}/alias"), vec![]),
    ];
    let before = d.state();
    for (m, p, body) in &cases {
        let r = d.call_raw(m, p, body);
        r.expect_error(405);
        assert!(
            r.header("allow").is_some(),
            "405 without Allow: {}",
            r.describe()
        );
    }
    // PATCH of a container changes its quotas only: a name is refused, not applied.
    d.call_raw("PATCH", &b, &j(name)).expect_error(400);
    assert_eq!(d.state(), before);
}

#[test]
fn conflicts_return_409_and_change_nothing() {
    require_fuse();
    let (d, id, s1, s2) = fixture();
    let mnt = d.mount(&id, "m");
    let other_mnt = d.new_mountpoint("m2");
    let snaps = format!("/api/v1/containers/{id}/snapshots");
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        // Alias taken: on create, and on set for another snapshot.
        ("POST", snaps.clone(), j(json!({"alias": "keep"}))),
        (
            "POST",
            snaps.clone(),
            j(json!({"alias": "keep", "expiry": 1})),
        ),
        (
            "PATCH",
            format!("{snaps}/{s2}/alias"),
            j(json!({"alias": "keep"})),
        ),
        // Container name taken: create and copy (by name of a live container).
        (
            "POST",
            "/api/v1/containers".into(),
            j(json!({"name": "box"})),
        ),
        (
            "POST",
            "/api/v1/containers".into(),
            j(json!({"name": "other", "project_id": "p"})),
        ),
        (
            "POST",
            format!("/api/v1/containers/{id}/copy"),
            j(json!({"name": "other"})),
        ),
        (
            "POST",
            format!("/api/v1/containers/{id}/copy"),
            j(json!({"name": "box", "source_snapshot": s1})),
        ),
        // Already mounted: the same container again, anywhere.
        (
            "POST",
            format!("/api/v1/containers/{id}/start"),
            j(json!({"mountpoint": other_mnt.display().to_string()})),
        ),
        (
            "POST",
            "/api/v1/containers/box/start".into(),
            j(json!({"mountpoint": mnt.display().to_string()})),
        ),
        // Another container on a mountpoint in use.
        (
            "POST",
            "/api/v1/containers/other/start".into(),
            j(json!({"mountpoint": mnt.display().to_string()})),
        ),
        // Deleting a running container without force.
        ("DELETE", format!("/api/v1/containers/{id}"), vec![]),
        (
            "DELETE",
            "/api/v1/containers/box?force=false".into(),
            vec![],
        ),
    ];
    expect_all(&d, 409, &cases);
    assert!(!is_mounted(&other_mnt));
    // Setting a snapshot's own alias again is not a conflict.
    d.ok(
        "PATCH",
        &format!("{snaps}/{s1}/alias"),
        Some(&json!({"alias": "keep"})),
    );
    d.unmount(&id, &mnt);
}

#[test]
fn oversized_body_returns_413_and_changes_nothing() {
    let (d, id, s1, _) = fixture();
    let pad = |prefix: &str, suffix: &str, total: usize| {
        let mut v = prefix.as_bytes().to_vec();
        v.resize(total - suffix.len(), b' ');
        v.extend_from_slice(suffix.as_bytes());
        v
    };
    let big = 64 * 1024 + 1;
    let snaps = format!("/api/v1/containers/{id}/snapshots");
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("POST", snaps.clone(), pad("{\"alias\": \"big\"", "}", big)),
        ("POST", snaps.clone(), pad("{\"alias\": \"", "\"}", 1 << 20)),
        (
            "PATCH",
            format!("{snaps}/{s1}/alias"),
            pad("{\"alias\": \"b\"", "}", big),
        ),
        ("PATCH", format!("{snaps}/{s1}"), pad("{", "}", big)),
        (
            "POST",
            "/api/v1/containers".into(),
            pad("{\"name\": \"big\"", "}", big),
        ),
        (
            "POST",
            format!("/api/v1/containers/{id}/copy"),
            pad("{\"name\": \"big\"", "}", big),
        ),
        (
            "POST",
            format!("/api/v1/containers/{id}/stop"),
            pad("{", "}", big),
        ),
    ];
    expect_all(&d, 413, &cases);
    // Exactly 64 KiB is accepted.
    let ok = d.call_raw("POST", &snaps, &pad("{\"alias\": \"edge\"", "}", 64 * 1024));
    assert_eq!(ok.data()["snapshot"]["alias"], "edge");
}

#[test]
fn invalid_utf8_in_path_returns_400_envelope() {
    let (d, id, _, _) = fixture();
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/api/v1/containers/%FF%FE".into(), vec![]),
        ("DELETE", "/api/v1/containers/%C0".into(), vec![]),
        ("GET", "/api/v1/containers/%C0/snapshots".into(), vec![]),
        (
            "DELETE",
            format!("/api/v1/containers/{id}/snapshots/%FF"),
            vec![],
        ),
        (
            "PATCH",
            format!("/api/v1/containers/{id}/snapshots/a%E9b"),
            vec![],
        ),
    ];
    expect_all(&d, 400, &cases);
}

#[test]
fn errors_leave_deleted_container_untouched() {
    let (d, id, s1, _) = fixture();
    d.ok("DELETE", &format!("/api/v1/containers/{id}"), None);
    let b = format!("/api/v1/containers/{id}");
    // A deleted container cannot be deleted, started, snapshotted or restored again.
    expect_all(
        &d,
        404,
        &[
            ("DELETE", b.clone(), vec![]),
            ("POST", format!("{b}/snapshots"), vec![]),
            ("PATCH", format!("{b}/snapshots/{s1}"), vec![]),
            (
                "POST",
                format!("{b}/start"),
                j(json!({"mountpoint": "/tmp"})),
            ),
            ("GET", "/api/v1/containers/box".into(), vec![]),
        ],
    );
    // Copying its current tree is refused (only snapshots remain).
    expect_all(
        &d,
        400,
        &[("POST", format!("{b}/copy"), j(json!({"name": "z"})))],
    );
}
