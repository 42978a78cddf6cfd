//! REST API authentication: TCP needs `Authorization: Bearer TOKEN`; every other header
//! is a 401 in the envelope that changes nothing. The Unix socket is mode 0600.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::api::*;
use common::http::{Auth, Via};
use serde_json::json;

fn bad_headers() -> Vec<Auth> {
    let t = TOKEN;
    let mut wrong_same_len = t.as_bytes().to_vec();
    let last = wrong_same_len.len() - 1;
    wrong_same_len[last] ^= 1;
    let wrong_same_len = String::from_utf8(wrong_same_len).expect("ascii");
    vec![
        Auth::None,
        Auth::Header(format!("Bearer {wrong_same_len}")),
        Auth::Header(format!("Bearer {}", &t[..t.len() - 1])),
        Auth::Header(format!("Bearer {t}x")),
        Auth::Header(format!("Bearer {t}{t}")),
        Auth::Header(format!("Bearer {}", &t[..16])),
        Auth::Header("Bearer ".to_string()),
        Auth::Header("Bearer".to_string()),
        Auth::Header(format!("Basic {t}")),
        Auth::Header("Basic YWRtaW46YXBpLXRlc3QtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==".to_string()),
        Auth::Header(format!("Token {t}")),
        Auth::Header(t.to_string()),
        Auth::Header(format!("Bearer{t}")),
        Auth::Header(format!("Bearer {}", t.to_uppercase())),
    ]
}

#[test]
fn requests_with_bad_or_missing_token_return_401_and_change_nothing() {
    let d = Daemon::start();
    let c = d.create_container("box", None);
    let id = c["id"].as_str().expect("id").to_string();
    let s = d.snapshot(&id, json!({"alias": "keep"}));
    let name = s["name"].as_str().expect("name").to_string();
    let before = d.state();
    let body = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
    let requests: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/api/v1/containers".into(), vec![]),
        (
            "POST",
            "/api/v1/containers".into(),
            body(json!({"name": "new"})),
        ),
        ("GET", format!("/api/v1/containers/{id}"), vec![]),
        ("DELETE", format!("/api/v1/containers/{id}"), vec![]),
        ("GET", format!("/api/v1/containers/{id}/snapshots"), vec![]),
        (
            "POST",
            format!("/api/v1/containers/{id}/snapshots"),
            body(json!({"alias": "x"})),
        ),
        ("POST", format!("/api/v1/containers/{id}/snapshots"), vec![]),
        (
            "PATCH",
            format!("/api/v1/containers/{id}/snapshots/{name}"),
            vec![],
        ),
        (
            "DELETE",
            format!("/api/v1/containers/{id}/snapshots/keep"),
            vec![],
        ),
        (
            "PATCH",
            format!("/api/v1/containers/{id}/snapshots/{name}/alias"),
            body(json!({"alias": "y"})),
        ),
        (
            "POST",
            format!("/api/v1/containers/{id}/copy"),
            body(json!({"name": "cp"})),
        ),
        ("POST", format!("/api/v1/containers/{id}/stop"), vec![]),
        (
            "POST",
            format!("/api/v1/containers/{id}/start"),
            body(json!({"mountpoint": "/tmp"})),
        ),
        // Unknown endpoints and wrong methods are not revealed without the token.
        ("GET", "/api/v1/nothing".into(), vec![]),
        ("PUT", "/api/v1/containers".into(), vec![]),
        // Nor is the body looked at.
        (
            "POST",
            format!("/api/v1/containers/{id}/snapshots"),
            vec![b' '; 70_000],
        ),
    ];
    for auth in bad_headers() {
        for (m, p, b) in &requests {
            let r = d.request(Via::Tcp, &auth, m, p, b);
            assert_eq!(r.status, 401, "{auth:?}: {}", r.describe());
            let env = r.envelope();
            assert!(env["data"].is_null());
        }
    }
    assert_eq!(
        d.state(),
        before,
        "a request without a valid token changed the store"
    );
    // The right token still works afterwards.
    assert_eq!(d.snapshots(&id).len(), 1);
}

#[test]
fn post_snapshot_with_wrong_token_creates_nothing() {
    let d = Daemon::start();
    let auth = Auth::Header("Bearer not-the-right-token-at-all!".to_string());
    for _ in 0..5 {
        let r = d.request(
            Via::Tcp,
            &auth,
            "POST",
            "/api/v1/containers/default/snapshots",
            br#"{"alias": "sneaky"}"#,
        );
        r.expect_error(401);
    }
    assert!(d.snapshots("default").is_empty());
    // Over the Unix socket, no token is needed.
    let r = d.request(
        Via::Unix,
        &Auth::None,
        "POST",
        "/api/v1/containers/default/snapshots",
        br#"{"alias": "fine"}"#,
    );
    assert_eq!(r.data()["snapshot"]["alias"], "fine");
}

#[test]
fn daemon_socket_has_mode_0600() {
    let d = Daemon::start();
    let md = std::fs::metadata(d.socket()).expect("stat socket");
    assert!(md.file_type().is_socket(), "not a socket");
    assert_eq!(
        md.permissions().mode() & 0o7777,
        0o600,
        "socket mode {:o}",
        md.permissions().mode()
    );
    assert_eq!(md.uid(), nix::unistd::geteuid().as_raw(), "socket owner");
}

#[test]
fn correct_token_with_tcp_succeeds_and_socket_ignores_missing_token() {
    let d = Daemon::start();
    let r = d.request(Via::Tcp, &Auth::Good, "GET", "/api/v1/containers", b"");
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = d.request(Via::Unix, &Auth::None, "GET", "/api/v1/containers", b"");
    assert_eq!(r.status, 200, "{}", r.describe());
}
