//! Snapshot streams through the REST API of two daemons (TCP with tokens): `GET
//! /containers/{id}/send` streams a snapshot, `POST /containers/{id}/receive` takes it; the
//! copy mounts and reads like the source's snapshots; bad requests and streams are the
//! envelope with the right status and change nothing.

mod common;

use std::fs;

use common::api::*;
use common::http::{Auth, Via};
use serde_json::json;

#[test]
fn send_and_receive_between_two_daemons() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.create_container("src", None);
    let ms = a.mount("src", "ms");
    fs::create_dir(ms.join("dir")).expect("mkdir");
    fs::write(ms.join("dir/a"), "one").expect("write");
    fs::write(ms.join("big"), vec![5u8; 3 << 20]).expect("write");
    let s1 = a.snapshot("src", json!({"alias": "one"}));
    fs::write(ms.join("dir/a"), "two").expect("write");
    fs::remove_file(ms.join("big")).expect("rm");
    let s2 = a.snapshot("src", json!({"alias": "two"}));

    let full = a.call("GET", "/api/v1/containers/src/send?snapshot=one", None);
    assert_eq!(full.status, 200, "{}", full.describe());
    assert_eq!(
        full.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(full.body.starts_with(b"SNFS"));
    assert!(full.body.len() > 3 << 20, "the stream carries the data");
    let got = b
        .call_raw("POST", "/api/v1/containers/copy/receive", &full.body)
        .data();
    let typed: snapfs::contract::Received = check_typed(&got);
    assert_eq!(typed.snapshot.name, s1["name"].as_str().expect("name"));
    assert_eq!(typed.snapshot.alias.as_deref(), Some("one"));
    assert_eq!(
        typed.snapshot.created_at,
        s1["created_at"].as_str().expect("t")
    );
    assert_eq!(typed.container.name, "copy");
    assert!(typed.records > 0 && typed.bytes > 3 << 20, "{got}");
    assert!(typed.rolled_back.is_empty());

    let inc = a.call(
        "GET",
        "/api/v1/containers/src/send?snapshot=two&from=one",
        None,
    );
    assert_eq!(inc.status, 200, "{}", inc.describe());
    assert!(
        inc.body.len() < 64 << 10,
        "incremental: {} bytes",
        inc.body.len()
    );
    let got2 = b
        .call_raw("POST", "/api/v1/containers/copy/receive", &inc.body)
        .data();
    assert_eq!(got2["snapshot"]["name"], s2["name"]);
    assert_eq!(got2["container"]["snapshot_count"], 2);

    let mc = b.mount("copy", "mc");
    assert_eq!(fs::read(mc.join("dir/a")).expect("read"), b"two");
    assert!(!mc.join("big").exists());
    assert_eq!(
        fs::read(mc.join(".snapshots/one/big")).expect("read"),
        vec![5u8; 3 << 20]
    );
    // A mounted target refuses a receive (409), and the copy stays as it was.
    let s3 = a.snapshot("src", json!({"alias": "three"}));
    let inc3 = a.call(
        "GET",
        "/api/v1/containers/src/send?snapshot=three&from=two",
        None,
    );
    b.call_raw("POST", "/api/v1/containers/copy/receive", &inc3.body)
        .expect_error(409);
    b.unmount("copy", &mc);
    let got3 = b
        .call_raw("POST", "/api/v1/containers/copy/receive", &inc3.body)
        .data();
    assert_eq!(got3["snapshot"]["name"], s3["name"]);
    a.unmount("src", &ms);
}

#[test]
fn bad_requests_and_streams_are_refused_with_their_status() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.snapshot("default", json!({"alias": "one"}));
    a.snapshot("default", json!({"alias": "two"}));
    // Unknown container or snapshot: 404; a missing or unknown parameter: 400; a base
    // newer than the snapshot: 400.
    a.call("GET", "/api/v1/containers/nope/send?snapshot=one", None)
        .expect_error(404);
    a.call("GET", "/api/v1/containers/default/send?snapshot=nope", None)
        .expect_error(404);
    a.call("GET", "/api/v1/containers/default/send", None)
        .expect_error(400);
    a.call(
        "GET",
        "/api/v1/containers/default/send?snapshot=one&bogus=1",
        None,
    )
    .expect_error(400);
    a.call(
        "GET",
        "/api/v1/containers/default/send?snapshot=one&from=two",
        None,
    )
    .expect_error(400);
    let full = a.call("GET", "/api/v1/containers/default/send?snapshot=one", None);
    assert_eq!(full.status, 200, "{}", full.describe());
    // Junk, truncated and corrupted streams: 400, and no container appears.
    let mut flipped = full.body.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    for (what, body) in [
        ("junk", b"{\"not\": \"a stream\"}".to_vec()),
        ("empty", Vec::new()),
        ("truncated", full.body[..full.body.len() - 3].to_vec()),
        ("corrupted", flipped),
    ] {
        let r = b.call_raw("POST", "/api/v1/containers/copy/receive", &body);
        r.expect_error(400);
        assert!(
            r.envelope()["message"]
                .as_str()
                .is_some_and(|m| m.contains("stream")),
            "{what}: {}",
            r.describe()
        );
    }
    assert!(
        b.containers().iter().all(|c| c["name"] != "copy"),
        "a failed receive left a container"
    );
    // A bad query: 400. A full stream onto an existing container: 409.
    b.call_raw(
        "POST",
        "/api/v1/containers/copy/receive?rollback=maybe",
        &full.body,
    )
    .expect_error(400);
    b.call_raw("POST", "/api/v1/containers/copy/receive", &full.body)
        .data();
    b.call_raw("POST", "/api/v1/containers/copy/receive", &full.body)
        .expect_error(409);
    // Without the token over TCP: 401.
    let r = b.request(
        Via::Tcp,
        &Auth::Header("Bearer wrong".into()),
        "POST",
        "/api/v1/containers/copy2/receive",
        &full.body,
    );
    r.expect_error(401);
}

/// A POST of `body` to `b`'s receive endpoint for `copy` whose first `upto` bytes are
/// sent and the connection held open (the receive runs until it is dropped).
fn hold_receive(b: &Daemon, body: &[u8], upto: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    let head = format!(
        "POST /api/v1/containers/copy/receive HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        b.token,
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("head");
    conn.write_all(&body[..upto]).expect("part");
    conn
}

/// A snapshot of `default` on `a` holding one 12 MiB file `big` of a pattern, and its full
/// stream: (snapshot name, the file's bytes, the stream).
fn big_snapshot(a: &Daemon, modulus: u32) -> (String, Vec<u8>, Vec<u8>) {
    let ms = a.mount("default", "ms");
    let data: Vec<u8> = (0..12u32 << 20).map(|i| (i % modulus) as u8).collect();
    fs::write(ms.join("big"), &data).expect("write");
    let s1 = a.snapshot("default", json!({}));
    a.unmount("default", &ms);
    let name = s1["name"].as_str().expect("name").to_string();
    let full = a.call(
        "GET",
        &format!("/api/v1/containers/default/send?snapshot={name}"),
        None,
    );
    assert_eq!(full.status, 200, "{}", full.describe());
    (name, data, full.body)
}

#[test]
fn a_cut_receive_is_resumed_with_its_token_or_by_a_sync() {
    let a = Daemon::start();
    let b = Daemon::start();
    let (name, data, full) = big_snapshot(&a, 253);
    // Cut inside the third chunk: 400 naming the token; the receive waits.
    let cut = b.call_raw("POST", "/api/v1/containers/copy/receive", &full[..9 << 20]);
    cut.expect_error(400);
    let msg = cut.envelope()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("resume with token"), "{msg}");
    let state = b.ok("GET", "/api/v1/containers/copy/receive", None);
    let typed: snapfs::contract::ReceiveState = check_typed(&state);
    assert_eq!(typed.snapshot, name);
    let token = typed.token.expect("token");
    assert!(msg.ends_with(&token), "{msg}");
    // The rest, by token; bad tokens and mixed parameters are 400.
    a.call(
        "GET",
        "/api/v1/containers/default/send?resume=garbage",
        None,
    )
    .expect_error(400);
    a.call(
        "GET",
        &format!("/api/v1/containers/default/send?resume={token}&snapshot=x"),
        None,
    )
    .expect_error(400);
    let rest = a.call(
        "GET",
        &format!("/api/v1/containers/default/send?resume={token}"),
        None,
    );
    assert_eq!(rest.status, 200, "{}", rest.describe());
    assert!(rest.body.len() < full.len() - (6 << 20));
    let got = b
        .call_raw("POST", "/api/v1/containers/copy/receive", &rest.body)
        .data();
    assert_eq!(got["snapshot"]["name"], json!(name));
    b.call("GET", "/api/v1/containers/copy/receive", None)
        .expect_error(404);
    b.call("DELETE", "/api/v1/containers/copy/receive", None)
        .expect_error(404);
    let mc = b.mount("copy", "mc");
    assert_eq!(fs::read(mc.join("big")).expect("read"), data);
    b.unmount("copy", &mc);

    // A sync finds a cut receive of the snapshot it sends and sends only the rest.
    let cut = b.call_raw(
        "POST",
        "/api/v1/containers/mirror/receive",
        &full[..9 << 20],
    );
    cut.expect_error(400);
    let target = json!({"url": format!("http://127.0.0.1:{}", b.port), "token": b.token});
    let synced = a.ok(
        "POST",
        "/api/v1/containers/default/sync",
        Some(&json!({"target_server": target, "name": "mirror"})),
    );
    assert_eq!(synced["sent"], json!([name]));
    assert!(
        synced["bytes"].as_u64().unwrap() < 6 << 20,
        "resumed, not sent again: {synced}"
    );
    // An aborted receive is gone; the next stream starts over.
    b.call_raw("POST", "/api/v1/containers/third/receive", &full[..9 << 20])
        .expect_error(400);
    b.ok("DELETE", "/api/v1/containers/third/receive", None);
    b.call("GET", "/api/v1/containers/third/receive", None)
        .expect_error(404);
}

#[test]
fn a_running_receive_is_listed_with_its_progress() {
    let a = Daemon::start();
    let b = Daemon::start();
    let (_, _, full) = big_snapshot(&a, 7);
    assert!(b.ok("GET", "/api/v1/transfers", None)["transfers"]
        .as_array()
        .unwrap()
        .is_empty());
    // Half a stream, the connection held open: the receive runs.
    let conn = hold_receive(&b, &full, 9 << 20);
    let mut seen = None;
    for _ in 0..100 {
        let list = b.ok("GET", "/api/v1/transfers", None);
        let t = &list["transfers"][0];
        if t["done_bytes"].as_u64().unwrap_or(0) >= 4 << 20 {
            seen = Some(list.clone());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let list = seen.expect("the receive shows its progress");
    let typed: snapfs::contract::TransferList = check_typed(&list);
    let t = &typed.transfers[0];
    assert_eq!(t.direction, "receive");
    assert_eq!(t.container, "copy");
    assert!(t.total_bytes >= 12 << 20, "{list}");
    assert!(t.percent > 0.0 && t.percent < 100.0, "{list}");
    // The sender goes away: the receive ends (cut, resumable) and leaves the list.
    drop(conn);
    let mut gone = false;
    for _ in 0..100 {
        if b.ok("GET", "/api/v1/transfers", None)["transfers"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(gone, "the cut receive left the list");
    let state = b.ok("GET", "/api/v1/containers/copy/receive", None);
    assert!(state["token"].is_string(), "{state}");
}

#[test]
fn a_receiver_killed_mid_stream_resumes_after_its_restart() {
    let a = Daemon::start();
    let b = Daemon::start();
    let (name, data, full) = big_snapshot(&a, 241);
    let conn = hold_receive(&b, &full, 9 << 20);
    // Wait until two chunks are in, then kill the receiving daemon (its supervisor starts
    // it again).
    let ok = common::wait_until(std::time::Duration::from_secs(20), || {
        b.ok("GET", "/api/v1/transfers", None)["transfers"][0]["done_bytes"]
            .as_u64()
            .unwrap_or(0)
            >= 8 << 20
    });
    assert!(ok, "the receive did not progress");
    let pid = b.pid() as i32;
    assert!(pid > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    drop(conn);
    let back = common::wait_until(std::time::Duration::from_secs(30), || {
        b.pid() as i32 != pid
            && b.try_request(
                common::http::Via::Tcp,
                &common::http::Auth::Good,
                "GET",
                "/api/v1/containers/copy/receive",
                b"",
            )
            .is_ok_and(|r| r.status == 200)
    });
    assert!(back, "the daemon came back with the receive waiting");
    let state = b.ok("GET", "/api/v1/containers/copy/receive", None);
    let token = state["token"].as_str().expect("token").to_string();
    assert!(state["records"].as_u64().unwrap() > 0, "{state}");
    let rest = a.call(
        "GET",
        &format!("/api/v1/containers/default/send?resume={token}"),
        None,
    );
    assert_eq!(rest.status, 200, "{}", rest.describe());
    let got = b
        .call_raw("POST", "/api/v1/containers/copy/receive", &rest.body)
        .data();
    assert_eq!(got["snapshot"]["name"], json!(name));
    let mc = b.mount("copy", "mc");
    assert_eq!(fs::read(mc.join("big")).expect("read"), data);
    b.unmount("copy", &mc);
}
