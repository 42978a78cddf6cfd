//! Copies and syncs between two daemons over TCP with tokens: `POST /containers/{id}/sync`
//! sends every snapshot the other side lacks, incrementally and in order (nothing the second
//! time), `copy` with `target_server` makes a container there; the disaster-recovery
//! scenario (sync while writing, source gone, the copy holds the last synced snapshot);
//! wrong tokens, unreachable and non-loopback targets are refused with their status.

mod common;

use std::fs;
use std::path::Path;

use common::api::*;
use serde_json::{json, Value};

fn target(d: &Daemon) -> Value {
    json!({"url": format!("http://127.0.0.1:{}", d.port), "token": d.token})
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("name").to_string())
        .collect()
}

/// Every file under `root` with its content, sorted (for comparing trees).
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.file_name().is_some_and(|n| n == ".snapshots") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("prefix").display().to_string();
                out.push((rel, fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sync_sends_what_the_target_lacks_in_order() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.create_container("web", None);
    let ma = a.mount("web", "ma");
    fs::write(ma.join("f"), "1").expect("write");
    let s1 = a.snapshot("web", json!({}));
    fs::write(ma.join("f"), "2").expect("write");
    fs::write(ma.join("g"), vec![9u8; 1 << 20]).expect("write");
    let s2 = a.snapshot("web", json!({"alias": "second"}));

    let first = a.ok(
        "POST",
        "/api/v1/containers/web/sync",
        Some(&json!({"target_server": target(&b)})),
    );
    let typed: snapfs::contract::Synced = check_typed(&first);
    assert_eq!(typed.container, "web");
    assert_eq!(typed.base, None);
    assert_eq!(
        names(&first["sent"]),
        vec![s1["name"].as_str().unwrap(), s2["name"].as_str().unwrap()]
    );
    assert!(typed.bytes > 1 << 20);
    let theirs = b.snapshots("web");
    assert_eq!(theirs.len(), 2);
    // Nothing new: nothing sent.
    let again = a.ok(
        "POST",
        "/api/v1/containers/web/sync",
        Some(&json!({"target_server": target(&b)})),
    );
    assert!(names(&again["sent"]).is_empty(), "{again}");
    assert_eq!(again["base"], s2["name"]);
    // One more snapshot: only it goes, incrementally.
    fs::remove_file(ma.join("g")).expect("rm");
    let s3 = a.snapshot("web", json!({}));
    let third = a.ok(
        "POST",
        "/api/v1/containers/web/sync",
        Some(&json!({"target_server": target(&b), "name": "web"})),
    );
    assert_eq!(names(&third["sent"]), vec![s3["name"].as_str().unwrap()]);
    assert!(third["bytes"].as_u64().unwrap() < 64 << 10, "{third}");
    let mb = b.mount("web", "mb");
    assert_eq!(fs::read(mb.join("f")).expect("read"), b"2");
    assert!(!mb.join("g").exists());
    assert_eq!(
        fs::read(mb.join(".snapshots/second/g")).expect("read"),
        vec![9u8; 1 << 20]
    );
    b.unmount("web", &mb);

    // A copy to the other server, from a snapshot.
    let cp = a.ok(
        "POST",
        "/api/v1/containers/web/copy",
        Some(&json!({"name": "cp", "source_snapshot": "second", "target_server": target(&b)})),
    );
    check_container(&cp);
    assert_eq!(cp["name"], "cp");
    assert_eq!(cp["snapshot_count"], 1);
    // Without a snapshot to copy: 400. A target container of another history: 409.
    a.call(
        "POST",
        "/api/v1/containers/web/copy",
        Some(&json!({"name": "cp2", "target_server": target(&b)})),
    )
    .expect_error(400);
    b.create_container("other", None);
    b.snapshot("other", json!({}));
    a.call(
        "POST",
        "/api/v1/containers/web/sync",
        Some(&json!({"target_server": target(&b), "name": "other"})),
    )
    .expect_error(409);
    a.unmount("web", &ma);
}

#[test]
fn bad_targets_are_refused_with_their_status() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.snapshot("default", json!({}));
    let sync = |t: Value| {
        a.call(
            "POST",
            "/api/v1/containers/default/sync",
            Some(&json!({"target_server": t})),
        )
    };
    // Wrong token: the target's 401.
    sync(json!({"url": format!("http://127.0.0.1:{}", b.port), "token": "wrong"}))
        .expect_error(401);
    // Plain http to a non-loopback address, a bad URL: 400 before anything is sent.
    for url in ["http://192.0.2.1:9", "127.0.0.1:9", "http://127.0.0.1:9/x"] {
        let r = sync(json!({"url": url, "token": "t"}));
        r.expect_error(400);
    }
    // Nobody listening: 502.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    sync(json!({"url": format!("http://127.0.0.1:{closed}"), "token": "t"})).expect_error(502);
    // Bad JSON: 400.
    a.call_raw(
        "POST",
        "/api/v1/containers/default/sync",
        b"{\"target_server\": 3}",
    )
    .expect_error(400);
    assert!(b.containers().iter().all(|c| c["name"] == "default"));
}

#[test]
fn disaster_recovery_copy_holds_the_last_synced_snapshot() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.create_container("db", None);
    let ma = a.mount("db", "ma");
    let mut last = Vec::new();
    for round in 0..5 {
        // Writes go on while syncs happen; what a sync sends is a snapshot.
        for i in 0..20 {
            fs::write(ma.join(format!("f{i}")), format!("round {round} file {i}")).expect("write");
        }
        fs::write(ma.join(format!("only-{round}")), vec![round as u8; 100_000]).expect("write");
        a.snapshot("db", json!({}));
        last = files(&ma);
        a.ok(
            "POST",
            "/api/v1/containers/db/sync",
            Some(&json!({"target_server": target(&b)})),
        );
        // Written after the sync: not on the copy.
        fs::write(ma.join("f0"), format!("after sync {round}")).expect("write");
    }
    // The source goes away; the copy starts on the other store.
    a.unmount("db", &ma);
    drop(a);
    let mb = b.mount("db", "mb");
    assert_eq!(files(&mb), last);
    assert_eq!(b.snapshots("db").len(), 5);
    b.unmount("db", &mb);
}

#[test]
fn snapfs_sync_from_the_command_line() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.snapshot("default", json!({"alias": "one"}));
    let token = a.store().parent().expect("dir").join("target-token");
    fs::write(&token, format!("{}\n", b.token)).expect("token file");
    let url = format!("http://127.0.0.1:{}", b.port);
    let run = |extra: &[&str]| {
        let store = a.store().display().to_string();
        let tok = token.display().to_string();
        let mut args = vec![
            "sync",
            store.as_str(),
            "--to",
            url.as_str(),
            "--token-file",
            tok.as_str(),
            "--name",
            "mirror",
        ];
        args.extend_from_slice(extra);
        common::snapfs(args)
    };
    let out = run(&[]);
    assert!(
        out.ok().contains("synced 1 snapshot(s) to mirror"),
        "{}",
        out.describe()
    );
    assert!(run(&[]).ok().contains("mirror is current on the target"));
    let json = run(&["--json"]).json();
    assert_eq!(json["sent"], json!([]));
    // A wrong token: one line, the target's message.
    fs::write(&token, "nope\n").expect("token file");
    let bad = run(&[]);
    assert!(bad.one_line_error().contains("401"), "{}", bad.describe());
    assert_eq!(b.snapshots("mirror").len(), 1);
}

/// A self-signed certificate for `localhost` in `dir`: (cert file, key file).
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(&cert, c.cert.pem()).expect("cert");
    fs::write(&key, c.key_pair.serialize_pem()).expect("key");
    (cert, key)
}

#[test]
fn sync_over_tls_checks_the_target_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let a = Daemon::start();
    let b = Daemon::start_with(
        common::Store::new(),
        &[
            std::ffi::OsStr::new("--tls-cert"),
            cert.as_os_str(),
            std::ffi::OsStr::new("--tls-key"),
            key.as_os_str(),
        ],
    );
    a.snapshot("default", json!({"alias": "one"}));
    let url = format!("https://localhost:{}", b.port);
    // Trusting the target's certificate: the sync goes through.
    let ok = a.ok(
        "POST",
        "/api/v1/containers/default/sync",
        Some(&json!({"target_server": {"url": url, "token": b.token, "ca_file": cert}, "name": "mirror"})),
    );
    assert_eq!(ok["sent"].as_array().map(Vec::len), Some(1), "{ok}");
    // Another certificate (not the one the target shows): refused, nothing sent.
    let other = tempfile::tempdir().expect("tempdir");
    let (wrong, _) = self_signed(other.path());
    let r = a.call(
        "POST",
        "/api/v1/containers/default/sync",
        Some(&json!({"target_server": {"url": url, "token": b.token, "ca_file": wrong}, "name": "mirror2"})),
    );
    r.expect_error(502);
    assert!(r.describe().contains("TLS"), "{}", r.describe());
    // Plain http to a TLS listener fails; plain http to a non-loopback address is refused.
    a.call(
        "POST",
        "/api/v1/containers/default/sync",
        Some(&json!({"target_server": {"url": format!("http://127.0.0.1:{}", b.port), "token": b.token}, "name": "mirror3"})),
    )
    .expect_error(502);
    // (The test client speaks no TLS: the target is checked over its Unix socket.)
    let list = b
        .call_via(
            common::http::Via::Unix,
            "GET",
            "/api/v1/containers/mirror/snapshots",
            None,
        )
        .data();
    assert_eq!(
        list["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
}
