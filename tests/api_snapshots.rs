//! Snapshot creation through the REST API: expiry (relative and absolute), concurrent
//! creation, aliases and names.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::api::*;
use common::http::enc;
use common::wait_until;
use serde_json::{json, Value};

#[test]
fn create_with_expires_at_soon_expires_without_user_action() {
    let d = Daemon::start();
    d.create_container("exp", None);
    let keep = d.snapshot("exp", json!({"alias": "permanent"}));
    let when = now_ms() + 2000;
    let at = format_time_ms(when);
    let s = d.snapshot("exp", json!({"alias": "short-lived", "expires_at": at}));
    assert_eq!(
        s["expires_at"],
        json!(at),
        "expires_at echoes the ms-precision time"
    );
    assert_eq!(d.snapshots("exp").len(), 2);
    let gone = wait_until(Duration::from_secs(10), || d.snapshots("exp").len() == 1);
    let left = d.snapshots("exp");
    assert!(
        gone,
        "snapshot expiring at {at} still listed at {}: {left:?}",
        format_time_ms(now_ms())
    );
    assert!(now_ms() >= when - 50, "expired too early");
    assert_eq!(left[0]["name"], keep["name"]);
    assert_eq!(d.container("exp")["snapshot_count"], 1);
    // Its alias is free again and its name no longer resolves.
    let name = s["name"].as_str().expect("name");
    d.call(
        "DELETE",
        &format!("/api/v1/containers/exp/snapshots/{name}"),
        None,
    )
    .expect_error(404);
    d.snapshot("exp", json!({"alias": "short-lived"}));
}

#[test]
fn create_with_expiry_days_sets_expires_at_days_ahead() {
    let d = Daemon::start();
    let t0 = now_ms();
    let s = d.snapshot("default", json!({"alias": "temp-backup", "expiry": 30}));
    let t1 = now_ms();
    let exp = time_field(&s, "expires_at").expect("expires_at set");
    let created = time_field(&s, "created_at").expect("created_at");
    let month = 30 * 86_400_000;
    assert!(
        exp >= t0 + month - 1000 && exp <= t1 + month + 1000,
        "expires_at {} is not now + 30 days ({})",
        format_time_ms(exp),
        format_time_ms(t0 + month)
    );
    assert!(
        (exp - created - month).abs() <= 1000,
        "expires_at - created_at != 30 days: {s}"
    );
    let one = d.snapshot("default", json!({"expiry": 1}));
    let e1 = time_field(&one, "expires_at").expect("expires_at");
    assert!((e1 - now_ms() - 86_400_000).abs() < 5000, "{one}");
    let max = d.snapshot("default", json!({"expiry": 36_500}));
    assert!(max["expires_at"].is_string());
    let none = d.snapshot("default", json!({"expiry": null}));
    assert!(none["expires_at"].is_null(), "{none}");
    // Listed with the same expiries.
    let list = d.snapshots("default");
    assert_eq!(list.len(), 4);
    assert_eq!(list[3]["expires_at"], s["expires_at"]);
}

#[test]
fn create_with_expires_at_offset_is_normalised_to_utc() {
    let d = Daemon::start();
    let s = d.snapshot(
        "default",
        json!({"expires_at": "2099-06-01T14:30:45.123+02:00"}),
    );
    assert_eq!(s["expires_at"], "2099-06-01T12:30:45.123Z");
    let s = d.snapshot("default", json!({"expires_at": "2099-06-01T12:30:45Z"}));
    assert_eq!(s["expires_at"], "2099-06-01T12:30:45.000Z");
}

#[test]
fn create_50_concurrent_snapshots_all_succeed_with_distinct_names() {
    let d = Arc::new(Daemon::start());
    let c = d.create_container("busy", None);
    let id = c["id"].as_str().expect("id").to_string();
    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (d, id, barrier) = (d.clone(), id.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let body = if i % 2 == 0 {
                    json!({})
                } else {
                    json!({"alias": format!("c{i}")})
                };
                d.call(
                    "POST",
                    &format!("/api/v1/containers/{id}/snapshots"),
                    Some(&body),
                )
            })
        })
        .collect();
    let mut names = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for h in handles {
        let r = h.join().expect("thread");
        if r.status == 200 {
            let s = r.data()["snapshot"].clone();
            check_snapshot(&s);
            names.insert(s["name"].as_str().expect("name").to_string());
        } else {
            failures.push(r.describe());
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(names.len(), n, "names not distinct: {names:?}");
    let listed: std::collections::BTreeSet<String> = d
        .snapshots(&id)
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(listed, names);
    assert_eq!(d.container(&id)["snapshot_count"], n);
}

#[test]
fn create_concurrent_same_alias_exactly_one_succeeds() {
    let d = Arc::new(Daemon::start());
    let n = 12;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (d, barrier) = (d.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                d.call(
                    "POST",
                    "/api/v1/containers/default/snapshots",
                    Some(&json!({"alias": "race"})),
                )
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().expect("thread");
            r.envelope();
            r.status
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        n - 1,
        "{statuses:?}"
    );
    assert_eq!(d.snapshots("default").len(), 1);
}

#[test]
fn snapshot_names_same_second_get_numbered_suffixes() {
    let d = Daemon::start();
    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(
            d.snapshot("default", json!({}))["name"]
                .as_str()
                .expect("name")
                .to_string(),
        );
    }
    for w in names.windows(2) {
        assert_ne!(w[0], w[1]);
        let base = |s: &str| s[..20].to_string();
        if base(&w[0]) == base(&w[1]) {
            assert!(
                w[1].len() > 20,
                "same-second name without suffix: {names:?}"
            );
        }
    }
    // Each name carries its creation time (UTC).
    for s in d.snapshots("default") {
        let name = s["name"].as_str().expect("name");
        let created = s["created_at"].as_str().expect("created_at");
        let stamp = format!(
            "snap-{}{}{}-{}{}{}",
            &created[0..4],
            &created[5..7],
            &created[8..10],
            &created[11..13],
            &created[14..16],
            &created[17..19]
        );
        assert_eq!(&name[..20], stamp, "{s}");
    }
}

#[test]
fn alias_set_move_clear_and_use_as_key() {
    let d = Daemon::start();
    let a = d.snapshot("default", json!({}));
    let b = d.snapshot("default", json!({"alias": "b"}));
    let an = a["name"].as_str().expect("name");
    let base = "/api/v1/containers/default/snapshots";
    // 100 characters (multi-byte) is the limit and is accepted.
    let long: String = "é".repeat(100);
    let r = d.ok(
        "PATCH",
        &format!("{base}/{an}/alias"),
        Some(&json!({"alias": long})),
    );
    assert_eq!(r["snapshot"]["alias"], json!(long));
    let r = d.ok("DELETE", &format!("{base}/{}", enc(&long)), None);
    assert_eq!(r["name"], json!(an));
    // Re-alias b, then the old alias no longer resolves and the new one does.
    let bn = b["name"].as_str().expect("name");
    d.ok(
        "PATCH",
        &format!("{base}/b/alias"),
        Some(&json!({"alias": "b2 with space"})),
    );
    d.call("PATCH", &format!("{base}/b"), None)
        .expect_error(404);
    let r = d.ok("PATCH", &format!("{base}/{}", enc("b2 with space")), None);
    assert_eq!(r["snapshot"]["name"], json!(bn));
    // Clearing with an empty object (alias omitted) too.
    let r = d.ok("PATCH", &format!("{base}/{bn}/alias"), Some(&json!({})));
    assert!(r["snapshot"]["alias"].is_null(), "{r}");
    let list: Vec<Value> = d.snapshots("default");
    assert_eq!(list.len(), 1);
    assert!(list[0]["alias"].is_null());
}

#[test]
fn snapshot_of_container_with_project_reports_it() {
    let d = Daemon::start();
    let c = d.create_container("proj", Some("67e89abc123def456789abcd"));
    let data = d.ok(
        "POST",
        "/api/v1/containers/proj/snapshots",
        Some(&json!({})),
    );
    assert_eq!(data["container_id"], c["id"]);
    assert_eq!(data["project_id"], "67e89abc123def456789abcd");
    let list = d.ok("GET", "/api/v1/containers/proj/snapshots", None);
    assert_eq!(list["project_id"], "67e89abc123def456789abcd");
    assert_eq!(list["container_id"], c["id"]);
}
