//! History through a real mount, the REST API and the CLI: `GET .../snapshots/{name}/diff`
//! (to the live tree or to another snapshot, paginated, names that are not UTF-8) and
//! `snapfs snapshots diff`.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;

use common::api::*;
use common::http::enc;
use common::snapfs;
use serde_json::{json, Value};

fn diff(d: &Daemon, from: &str, query: &str) -> Value {
    d.ok(
        "GET",
        &format!(
            "/api/v1/containers/default/snapshots/{}/diff{query}",
            enc(from)
        ),
        None,
    )
}

/// `change path` (and `-> new` for renames) of each listed change, directories left out
/// (their mtimes follow their entries).
fn summary(data: &Value) -> Vec<String> {
    data["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["type"] != "dir")
        .map(|c| match c["old_path"].as_str() {
            Some(old) => format!("renamed {old} -> {}", c["path"].as_str().expect("path")),
            None => format!(
                "{} {}",
                c["change"].as_str().expect("change"),
                c["path"].as_str().expect("path")
            ),
        })
        .collect()
}

#[test]
fn diff_through_the_api_and_the_cli() {
    let d = Daemon::start();
    let mnt = d.mount("default", "m");
    fs::create_dir(mnt.join("etc")).expect("mkdir");
    fs::write(mnt.join("etc/app.conf"), "port=80\n").expect("write");
    fs::write(mnt.join("old"), "x").expect("write");
    fs::write(mnt.join("a"), "a").expect("write");
    let s1 = d.snapshot("default", json!({"alias": "before"}));
    let s1 = s1["name"].as_str().expect("name").to_string();

    fs::write(mnt.join("etc/app.conf"), "port=443\n").expect("write");
    fs::remove_file(mnt.join("old")).expect("rm");
    fs::rename(mnt.join("a"), mnt.join("etc/b")).expect("mv");
    let odd = OsStr::from_bytes(b"caf\xe9");
    fs::write(mnt.join(odd), "latin-1 name").expect("write");

    // To the live tree, by alias.
    let data = diff(&d, "before", "");
    assert_eq!(data["from"], json!(s1));
    assert!(data["to"].is_null(), "{data}");
    assert_eq!(
        summary(&data),
        vec![
            "added /caf\u{fffd}",
            "modified /etc/app.conf",
            "renamed /a -> /etc/b",
            "deleted /old"
        ]
    );
    let changes = data["changes"].as_array().expect("changes");
    let conf = changes
        .iter()
        .find(|c| c["path"] == "/etc/app.conf")
        .expect("app.conf");
    assert_eq!(conf["content_changed"], true);
    assert_eq!(conf["before"]["size"], 8);
    assert_eq!(conf["after"]["size"], 9);
    assert_eq!(conf["type"], "file");
    assert!(conf["after"]["mtime"].is_string());
    let latin = changes
        .iter()
        .find(|c| c["change"] == "added" && c["type"] == "file")
        .expect("added");
    assert_eq!(latin["path_base64"], "L2NhZuk=", "{latin}");
    assert!(changes
        .iter()
        .all(|c| c["path_base64"].is_null() || c["path"] == latin["path"]));
    assert!(data["next_cursor"].is_null());
    let total = data["total"].as_u64().expect("total") as usize;
    assert_eq!(total, changes.len());

    // Pages of two, following the cursor, give the same list.
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = diff(&d, &s1, &query);
        let items = page["changes"].as_array().expect("changes");
        assert!(items.len() <= 2);
        paged.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={}", enc(c)),
            None => break,
        }
    }
    assert_eq!(paged, *changes);

    // Between two snapshots; and the other way round.
    let s2 = d.snapshot("default", json!({}));
    let s2 = s2["name"].as_str().expect("name").to_string();
    fs::write(mnt.join("later"), "after s2").expect("write");
    let between = diff(&d, &s1, &format!("?to={}", enc(&s2)));
    assert_eq!(between["to"], json!(s2));
    assert_eq!(
        summary(&between),
        summary(&data),
        "s2 holds what the head held"
    );
    let back = diff(&d, &s2, &format!("?to={}", enc(&s1)));
    assert!(summary(&back).contains(&"renamed /etc/b -> /a".to_string()));
    assert!(summary(&diff(&d, &s2, "")).contains(&"added /later".to_string()));

    // Errors: unknown snapshots, a bad cursor, a bad limit, unknown parameters.
    let path = |q: &str| format!("/api/v1/containers/default/snapshots/{}/diff{q}", enc(&s1));
    d.call(
        "GET",
        "/api/v1/containers/default/snapshots/nope/diff",
        None,
    )
    .expect_error(404);
    d.call("GET", "/api/v1/containers/nope/snapshots/x/diff", None)
        .expect_error(404);
    d.call("GET", &path("?to=nope"), None).expect_error(404);
    d.call("GET", &path("?cursor=%21%21"), None)
        .expect_error(400);
    d.call("GET", &path("?limit=0"), None).expect_error(400);
    d.call("GET", &path("?limit=many"), None).expect_error(400);
    d.call("GET", &path("?colour=red"), None).expect_error(400);

    // The CLI: name-status lines, the odd byte escaped; --json is the API's data.
    let store = d.store().to_string_lossy().into_owned();
    let out = snapfs([
        "snapshots",
        "diff",
        "--store",
        &store,
        "--container",
        "default",
        "--from",
        "before",
        "--to",
        &s2,
    ]);
    let text = out.ok().to_string();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.ends_with("/etc") && *l != "M\t/")
        .collect();
    assert_eq!(
        lines,
        vec![
            "A\t/caf\\xe9",
            "M\t/etc/app.conf",
            "R\t/a -> /etc/b",
            "D\t/old"
        ],
        "{text}"
    );
    let out = snapfs([
        "snapshots",
        "diff",
        "--store",
        &store,
        "--container",
        "default",
        "--from",
        "before",
        "--json",
    ]);
    let json = out.json();
    assert_eq!(json["changes"], diff(&d, "before", "")["changes"]);
    let out = snapfs([
        "snapshots",
        "diff",
        "--store",
        &store,
        "--container",
        "default",
        "--from",
        "missing",
    ]);
    out.assert_one_line_error();
    d.unmount("default", &mnt);
}

#[test]
fn history_of_a_path_through_the_api_and_the_cli() {
    let d = Daemon::start();
    let mnt = d.mount("default", "m");
    fs::create_dir(mnt.join("etc")).expect("mkdir");
    let conf = mnt.join("etc/app.conf");
    let name = |v: Value| v["name"].as_str().expect("name").to_string();
    fs::write(&conf, "v1").expect("write");
    let s1 = name(d.snapshot("default", json!({"alias": "one"})));
    fs::write(&conf, "version 2").expect("write");
    let s2 = name(d.snapshot("default", json!({})));
    let _s3 = name(d.snapshot("default", json!({}))); // unchanged: not listed
    fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let s4 = name(d.snapshot("default", json!({})));
    fs::remove_file(&conf).expect("rm");
    let s5 = name(d.snapshot("default", json!({})));
    fs::write(&conf, "back").expect("write");

    let h = d.ok(
        "GET",
        "/api/v1/containers/default/history?path=/etc/app.conf",
        None,
    );
    assert_eq!(h["path"], "/etc/app.conf");
    let got: Vec<(Value, String, bool)> = h["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| {
            (
                e["snapshot"].clone(),
                e["change"].as_str().expect("change").to_string(),
                e["content_changed"].as_bool().expect("flag"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Value::Null, "added".to_string(), false),
            (json!(s5), "deleted".to_string(), false),
            (json!(s4), "modified".to_string(), false),
            (json!(s2), "modified".to_string(), true),
            (json!(s1), "added".to_string(), false),
        ],
        "{h}"
    );
    let first = &h["history"][4];
    assert_eq!(first["alias"], "one");
    assert_eq!(first["size"], 2);
    assert_eq!(h["history"][3]["size"], 9);
    assert_eq!(h["history"][3]["before"]["size"], 2);
    assert_eq!(h["history"][2]["metadata_changed"], true);
    assert_eq!(h["history"][0]["size"], 4);

    // The same path given as bytes; a name that is not UTF-8.
    let b64 = d.ok(
        "GET",
        "/api/v1/containers/default/history?path_base64=L2V0Yy9hcHAuY29uZg%3D%3D",
        None,
    );
    assert_eq!(b64["history"], h["history"]);
    fs::write(mnt.join(OsStr::from_bytes(b"caf\xe9")), "x").expect("write");
    let odd = d.ok(
        "GET",
        "/api/v1/containers/default/history?path_base64=L2NhZuk%3D",
        None,
    );
    assert_eq!(odd["path_base64"], "L2NhZuk=");
    assert_eq!(odd["history"][0]["change"], "added");

    // Errors.
    for (q, status) in [
        ("", 400),
        ("?path=etc/app.conf", 400),
        ("?path=/a/../b", 400),
        ("?path=/x&path_base64=L3g%3D", 400),
        ("?path_base64=%21", 400),
    ] {
        d.call(
            "GET",
            &format!("/api/v1/containers/default/history{q}"),
            None,
        )
        .expect_error(status);
    }
    d.call("GET", "/api/v1/containers/nope/history?path=/x", None)
        .expect_error(404);
    // A path that never existed: an empty history.
    let none = d.ok(
        "GET",
        "/api/v1/containers/default/history?path=/never",
        None,
    );
    assert_eq!(none["history"], json!([]));

    // The CLI.
    let store = d.store().to_string_lossy().into_owned();
    let args = |p: &str| {
        vec![
            "history".to_string(),
            "--store".into(),
            store.clone(),
            "--container".into(),
            "default".into(),
            p.to_string(),
        ]
    };
    let out = snapfs(args("/etc/app.conf"));
    let text = out.ok().to_string();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 6, "{text}");
    assert!(rows[0].starts_with("SNAPSHOT"), "{text}");
    assert!(
        rows[1].starts_with("(current)") && rows[1].contains("added"),
        "{text}"
    );
    assert!(
        rows[3].contains(&s4) && rows[3].contains("metadata"),
        "{text}"
    );
    assert!(rows[5].contains(&s1) && rows[5].contains("one"), "{text}");
    let mut json_args = args("/etc/app.conf");
    json_args.push("--json".into());
    assert_eq!(snapfs(json_args).json()["history"], h["history"]);
    let odd_arg = std::ffi::OsString::from(OsStr::from_bytes(b"/caf\xe9"));
    let out = snapfs([
        std::ffi::OsString::from("history"),
        "--store".into(),
        store.clone().into(),
        "--container".into(),
        "default".into(),
        odd_arg,
    ]);
    assert!(out.ok().contains("added"), "{}", out.describe());
    snapfs(args("relative/path")).assert_one_line_error();
    d.unmount("default", &mnt);
}
