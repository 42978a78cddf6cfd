//! `snapfs snapshots create|list|restore|delete|alias`: tables, `--json` (the API's `data`),
//! `SNAPFS_STORE`, restore through a live mount, and misuse as one stderr line.

mod common;

use std::fs;

use common::cli::table;
use common::{require_fuse, snapfs, Store};
use serde_json::Value;

fn names(list: &Value) -> Vec<String> {
    list["snapshots"]
        .as_array()
        .expect("snapshots array")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn create_and_list_table_and_json() {
    let store = Store::new();
    let created = store.json(&[
        "snapshots",
        "create",
        "--container",
        "default",
        "--alias",
        "first",
        "--expiry",
        "7",
    ]);
    let snap = &created["snapshot"];
    let first = snap["name"].as_str().expect("name").to_string();
    assert!(first.starts_with("snap-"), "{created}");
    assert_eq!(snap["alias"], "first");
    assert!(snap["expires_at"].is_string(), "{created}");
    assert!(snap["last_used_at"].is_null());
    assert!(snap["size"].is_u64());
    assert_eq!(snap["stateful"], false);
    assert!(created["container_id"].is_string());
    assert!(created.get("project_id").is_some());

    // Table output of create: the header and one row with the new snapshot.
    let out = store.cli(&["snapshots", "create", "--container", "default"]);
    let (header, rows) = table(out.ok());
    assert_eq!(
        header,
        ["NAME", "ALIAS", "CREATED", "EXPIRES", "LAST USED", "SIZE"],
        "{}",
        out.describe()
    );
    assert_eq!(rows.len(), 1, "{}", out.describe());
    let second = rows[0][0].clone();
    assert!(second.starts_with("snap-") && second != first);
    assert_eq!(rows[0][1], "-", "no alias shows as -");

    // List, JSON: newest first, exactly the API's data.
    let list = store.json(&["snapshots", "list", "--container", "default"]);
    assert_eq!(names(&list), [second.clone(), first.clone()]);
    assert_eq!(list["container_id"], created["container_id"]);
    let s = &list["snapshots"][1];
    for key in [
        "name",
        "alias",
        "created_at",
        "last_used_at",
        "expires_at",
        "stateful",
        "size",
    ] {
        assert!(s.get(key).is_some(), "{key} missing in {s}");
    }

    // List, table: aligned columns, times without the RFC 3339 T, sizes with units.
    let out = store.cli(&["snapshots", "list", "--container", "default"]);
    let text = out.ok();
    let (header, rows) = table(text);
    assert_eq!(
        header,
        ["NAME", "ALIAS", "CREATED", "EXPIRES", "LAST USED", "SIZE"]
    );
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0][0], second);
    assert_eq!(rows[1][0], first);
    assert_eq!(rows[1][1], "first");
    let created_cell = &rows[1][2];
    assert_eq!(created_cell.len(), 19, "{text}");
    assert!(!created_cell.contains('T'), "{text}");
    assert!(rows[1][5].ends_with('B'), "size with a unit: {text}");
    // Every line starts its second column at the same offset.
    let offsets: Vec<usize> = text
        .lines()
        .map(|l| {
            let gap = l.find("  ").expect("two columns");
            gap + l[gap..].find(|c| c != ' ').expect("second column")
        })
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] == w[1]), "{text}");

    // By container id too.
    let id = created["container_id"].as_str().expect("id");
    let by_id = store.json(&["snapshots", "list", "--container", id]);
    assert_eq!(by_id, list);
}

#[test]
fn empty_list_prints_the_header_and_json_an_empty_array() {
    let store = Store::new();
    let out = store.cli(&["snapshots", "list", "--container", "default"]);
    let (header, rows) = table(out.ok());
    assert_eq!(header[0], "NAME");
    assert!(rows.is_empty());
    let list = store.json(&["snapshots", "list", "--container", "default"]);
    assert_eq!(list["snapshots"], serde_json::json!([]));
}

#[test]
fn store_defaults_from_env() {
    let store = Store::new();
    let out = store.cli_env(&[
        "snapshots",
        "create",
        "--container",
        "default",
        "--alias",
        "via-env",
        "--json",
    ]);
    let v = out.json();
    assert_eq!(v["snapshot"]["alias"], "via-env");
    let list = store.json(&["snapshots", "list", "--container", "default"]);
    assert_eq!(list["snapshots"][0]["alias"], "via-env");
    // --store wins over the variable.
    let other = Store::new();
    let out = other.cli_env(&[
        "snapshots",
        "list",
        "--container",
        "default",
        "--json",
        "--store",
        store.path().to_str().expect("utf8"),
    ]);
    assert_eq!(out.json()["snapshots"][0]["alias"], "via-env");
}

#[test]
fn restore_by_name_and_alias_through_a_mount() {
    require_fuse();
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let m = mnt.to_str().expect("utf8");
    store
        .cli(&["containers", "start", "default", "--mountpoint", m])
        .ok();
    fs::write(mnt.join("f"), "v1").expect("write v1");
    let v1 = store.json(&[
        "snapshots",
        "create",
        "--container",
        "default",
        "--alias",
        "v1",
    ]);
    let v1_name = v1["snapshot"]["name"].as_str().expect("name").to_string();
    fs::write(mnt.join("f"), "v2").expect("write v2");
    fs::write(mnt.join("g"), "new").expect("write g");
    let v2 = store.json(&["snapshots", "create", "--container", "default"]);
    let v2_name = v2["snapshot"]["name"].as_str().expect("name").to_string();

    // Restore by alias (table output) while mounted.
    let out = store.cli(&[
        "snapshots",
        "restore",
        "--container",
        "default",
        "--name",
        "v1",
    ]);
    let (_, rows) = table(out.ok());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], v1_name);
    assert_ne!(rows[0][4], "-", "LAST USED is set by a restore");
    assert_eq!(fs::read_to_string(mnt.join("f")).expect("read f"), "v1");
    assert!(!mnt.join("g").exists());

    // Restore by name, JSON.
    let r = store.json(&[
        "snapshots",
        "restore",
        "--container",
        "default",
        "--name",
        &v2_name,
    ]);
    assert_eq!(r["snapshot"]["name"], v2_name.as_str());
    assert!(r["snapshot"]["last_used_at"].is_string());
    assert_eq!(fs::read_to_string(mnt.join("f")).expect("read f"), "v2");
    assert_eq!(fs::read_to_string(mnt.join("g")).expect("read g"), "new");

    // Restore of a stopped container shows at the next mount.
    store.cli(&["containers", "stop", "default"]).ok();
    store
        .cli(&[
            "snapshots",
            "restore",
            "--container",
            "default",
            "--name",
            "v1",
        ])
        .ok();
    store
        .cli(&["containers", "start", "default", "--mountpoint", m])
        .ok();
    assert_eq!(fs::read_to_string(mnt.join("f")).expect("read f"), "v1");
    store.cli(&["containers", "stop", "default"]).ok();
}

#[test]
fn delete_by_name_and_alias() {
    let store = Store::new();
    let a = store.json(&["snapshots", "create", "--container", "default"]);
    let a_name = a["snapshot"]["name"].as_str().expect("name").to_string();
    store
        .cli(&[
            "snapshots",
            "create",
            "--container",
            "default",
            "--alias",
            "keep",
        ])
        .ok();
    store
        .cli(&[
            "snapshots",
            "create",
            "--container",
            "default",
            "--alias",
            "gone",
        ])
        .ok();

    let d = store.json(&[
        "snapshots",
        "delete",
        "--container",
        "default",
        "--name",
        &a_name,
    ]);
    assert_eq!(d["name"], a_name.as_str());
    assert!(d["container_id"].is_string());
    let out = store.cli(&[
        "snapshots",
        "delete",
        "--container",
        "default",
        "--name",
        "gone",
    ]);
    assert!(
        out.ok().contains("deleted snapshot snap-"),
        "{}",
        out.describe()
    );

    let list = store.json(&["snapshots", "list", "--container", "default"]);
    let snaps = list["snapshots"].as_array().expect("array");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["alias"], "keep");
    // Deleting it again is a 404.
    store
        .cli(&[
            "snapshots",
            "delete",
            "--container",
            "default",
            "--name",
            &a_name,
        ])
        .one_line_error();
}

#[test]
fn alias_set_rename_and_clear() {
    let store = Store::new();
    let a = store.json(&["snapshots", "create", "--container", "default"]);
    let name = a["snapshot"]["name"].as_str().expect("name").to_string();

    let out = store.cli(&[
        "snapshots",
        "alias",
        "--container",
        "default",
        "--name",
        &name,
        "--alias",
        "golden",
    ]);
    let (_, rows) = table(out.ok());
    assert_eq!(rows[0][0], name);
    assert_eq!(rows[0][1], "golden");

    // Addressed by its alias, renamed.
    let v = store.json(&[
        "snapshots",
        "alias",
        "--container",
        "default",
        "--name",
        "golden",
        "--alias",
        "platinum",
    ]);
    assert_eq!(v["snapshot"]["alias"], "platinum");
    assert_eq!(v["snapshot"]["name"], name.as_str());

    let v = store.json(&[
        "snapshots",
        "alias",
        "--container",
        "default",
        "--name",
        &name,
        "--clear",
    ]);
    assert!(v["snapshot"]["alias"].is_null(), "{v}");
    let list = store.json(&["snapshots", "list", "--container", "default"]);
    assert!(list["snapshots"][0]["alias"].is_null());
}

#[test]
fn misuse_is_one_stderr_line() {
    let store = Store::new();
    let snap = store.json(&[
        "snapshots",
        "create",
        "--container",
        "default",
        "--alias",
        "taken",
    ]);
    let name = snap["snapshot"]["name"].as_str().expect("name").to_string();
    let long = "x".repeat(101);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["snapshots", "list", "--container", "nope"],
            "not found",
        ),
        (
            vec!["snapshots", "create", "--container", "nope"],
            "not found",
        ),
        (
            vec![
                "snapshots",
                "restore",
                "--container",
                "default",
                "--name",
                "nope",
            ],
            "not found",
        ),
        (
            vec![
                "snapshots",
                "restore",
                "--container",
                "nope",
                "--name",
                &name,
            ],
            "not found",
        ),
        (
            vec![
                "snapshots",
                "delete",
                "--container",
                "default",
                "--name",
                "snap-19990101-000000",
            ],
            "not found",
        ),
        (
            vec![
                "snapshots",
                "alias",
                "--container",
                "default",
                "--name",
                "nope",
                "--alias",
                "a",
            ],
            "not found",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--alias",
                "snap-1",
            ],
            "alias",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--alias",
                &long,
            ],
            "alias",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--alias",
                "a/b",
            ],
            "alias",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--alias",
                "",
            ],
            "alias",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--alias",
                "taken",
            ],
            "",
        ),
        (
            vec![
                "snapshots",
                "alias",
                "--container",
                "default",
                "--name",
                &name,
                "--alias",
                "snap-2",
            ],
            "alias",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--expiry",
                "0",
            ],
            "expiry",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--expiry",
                "soon",
            ],
            "--expiry",
        ),
        (
            vec![
                "snapshots",
                "create",
                "--container",
                "default",
                "--expiry",
                "-3",
            ],
            "",
        ),
        // (Without --container the commands take `default`, as `snapfs mount` does.)
        (vec!["snapshots", "list", "--container"], "--container"),
        (
            vec!["snapshots", "restore", "--container", "default"],
            "--name",
        ),
        (
            vec!["snapshots", "delete", "--container", "default"],
            "--name",
        ),
        (
            vec![
                "snapshots",
                "alias",
                "--container",
                "default",
                "--name",
                &name,
            ],
            "",
        ),
        (
            vec![
                "snapshots",
                "alias",
                "--container",
                "default",
                "--name",
                &name,
                "--alias",
                "x",
                "--clear",
            ],
            "",
        ),
        (vec!["snapshots"], "subcommand"),
        (vec!["snapshots", "frobnicate"], ""),
        (
            vec!["snapshots", "list", "--container", "default", "--bogus"],
            "--bogus",
        ),
    ];
    for (args, needle) in &cases {
        let out = store.cli(args);
        let line = out.one_line_error();
        assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
    }
    // Nothing above changed the snapshot list.
    let list = store.json(&["snapshots", "list", "--container", "default"]);
    assert_eq!(names(&list), [name]);
    assert_eq!(list["snapshots"][0]["alias"], "taken");

    // No store: neither --store nor SNAPFS_STORE; or a store that does not exist.
    let line = snapfs(["snapshots", "list", "--container", "default"])
        .one_line_error()
        .to_string();
    assert!(line.contains("SNAPFS_STORE"), "{line}");
    let missing = store.path().with_file_name("no-such-store");
    let out = snapfs([
        "snapshots",
        "list",
        "--container",
        "default",
        "--store",
        missing.to_str().expect("utf8"),
    ]);
    out.one_line_error();
    assert!(!missing.exists());
    // An existing directory that is not a store.
    let not_store = store.path().with_file_name("mnt-empty");
    fs::create_dir(&not_store).expect("mkdir");
    snapfs([
        "snapshots",
        "list",
        "--container",
        "default",
        "--store",
        not_store.to_str().expect("utf8"),
    ])
    .one_line_error();
}

#[test]
fn help_and_version_succeed() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["snapshots", "--help"],
        &["snapshots", "create", "--help"],
        &["containers", "--help"],
        &["containers", "copy", "--help"],
    ] {
        let out = snapfs(args);
        assert!(out.status.success(), "{}", out.describe());
        assert!(!out.stdout.is_empty());
    }
}
