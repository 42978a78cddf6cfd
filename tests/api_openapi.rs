//! The OpenAPI description: the committed `docs/openapi.json` is exactly what the code
//! generates and what the daemon serves, and it describes every route the router answers.
//! (`scripts/api_fuzz.sh` then runs schemathesis against a live daemon with it.)
//!
//! After changing a type of `snapfs::contract` (or a handler's annotation), regenerate it:
//! `SNAPFS_WRITE_OPENAPI=1 cargo test --release --test api_openapi` (or
//! `snapfs openapi > docs/openapi.json`).

mod common;

use common::api::*;
use serde_json::Value;

fn committed() -> Value {
    let text = std::fs::read_to_string(COMMITTED).expect("read docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

#[test]
fn committed_description_is_the_generated_one() {
    let doc = snapfs::api::doc::openapi();
    if std::env::var_os("SNAPFS_WRITE_OPENAPI").is_some_and(|v| v == "1") {
        // As `snapfs openapi` prints it.
        let text = doc.to_pretty_json().expect("encode");
        std::fs::write(COMMITTED, format!("{text}\n")).expect("write docs/openapi.json");
    }
    let generated = serde_json::to_value(doc).expect("encode");
    assert!(
        generated == committed(),
        "docs/openapi.json is out of date: regenerate it with \
         `SNAPFS_WRITE_OPENAPI=1 cargo test --release --test api_openapi`"
    );
}

#[test]
fn the_daemon_serves_it_and_every_described_route_answers() {
    let d = Daemon::start();
    let r = d.call("GET", "/api/v1/openapi.json", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    let served: Value = serde_json::from_slice(&r.body).expect("json");
    assert!(
        served == committed(),
        "served description differs from docs/openapi.json"
    );
    // Every described operation is routed: none of them answers "no such endpoint" or 405.
    let paths = served["paths"].as_object().expect("paths");
    assert!(paths.len() >= 14, "{}", paths.len());
    for (path, item) in paths {
        let concrete = path.replace("{id}", "default").replace("{name}", "nope");
        for method in item.as_object().expect("item").keys() {
            let m = method.to_uppercase();
            if !["GET", "POST", "PATCH", "DELETE"].contains(&m.as_str()) || path.ends_with("/start")
            {
                continue;
            }
            if m == "DELETE" && path == "/api/v1/containers/{id}" {
                continue; // would delete the container the other checks use
            }
            let r = d.call_raw(&m, &concrete, b"");
            assert_ne!(r.status, 405, "{m} {concrete}: {}", r.describe());
            if r.status == 404 {
                let body = String::from_utf8_lossy(&r.body);
                assert!(
                    !body.contains("no such endpoint"),
                    "{m} {concrete} is not routed"
                );
            }
        }
    }
}
