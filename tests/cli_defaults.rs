//! What a new user types first: snapshot and history commands without `--container` (the
//! container `snapfs mount` mounts), `snapfs history` on a path inside a mount (absolute,
//! relative to the current directory, or under `.snapshots/NAME/`), and `snapfs status`
//! ending its output with one newline.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{run, snapfs, snapfs_bin, Mount, Output, Store};
use serde_json::Value;

/// `snapfs ARGS` run in `dir`, with neither `--store` nor `SNAPFS_STORE`.
#[track_caller]
fn snapfs_in(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(snapfs_bin())
        .args(args)
        .env_remove("SNAPFS_STORE")
        .current_dir(dir))
}

fn default_id(store: &Store) -> String {
    let c = store.json(&["containers", "show", "default"]);
    c["id"].as_str().expect("id").to_string()
}

#[test]
fn snapshot_commands_without_container_use_default() {
    let store = Store::new();
    let id = default_id(&store);
    let created = store.json(&["snapshots", "create", "--alias", "first"]);
    assert_eq!(created["container_id"], id.as_str(), "{created}");
    let name = created["snapshot"]["name"]
        .as_str()
        .expect("name")
        .to_string();

    let list = store.json(&["snapshots", "list"]);
    assert_eq!(list["container_id"], id.as_str(), "{list}");
    assert_eq!(list["snapshots"][0]["name"], name.as_str(), "{list}");

    let diff = store.json(&["snapshots", "diff", "--from", &name]);
    assert_eq!(diff["container_id"], id.as_str(), "{diff}");
    assert_eq!(diff["changes"], Value::Array(vec![]), "{diff}");
    // An empty diff prints nothing.
    assert_eq!(
        store.cli(&["snapshots", "diff", "--from", "first"]).ok(),
        ""
    );

    let aliased = store.json(&["snapshots", "alias", "--name", &name, "--alias", "second"]);
    assert_eq!(aliased["snapshot"]["alias"], "second", "{aliased}");
    let history = store.json(&["history", "/"]);
    assert_eq!(history["container_id"], id.as_str(), "{history}");
    let out = store.cli(&["history", "/nothing-here"]);
    assert_eq!(out.ok(), "/nothing-here: no version in any tree\n");
    let deleted = store.json(&["snapshots", "delete", "--name", "second"]);
    assert_eq!(deleted["name"], name.as_str(), "{deleted}");
    assert_eq!(
        store.json(&["snapshots", "list"])["snapshots"],
        Value::Array(vec![])
    );
    // `--container` still chooses another one.
    store.cli(&["containers", "create", "web"]).ok();
    let web = store.json(&["snapshots", "list", "--container", "web"]);
    assert_ne!(web["container_id"], id.as_str(), "{web}");
}

#[test]
fn history_takes_a_path_inside_a_mount() {
    let m = Mount::new();
    let store = m.store();
    let id = default_id(store);
    fs::create_dir(m.join("etc")).expect("mkdir");
    fs::write(m.join("etc/passwd"), "v1\n").expect("write");
    let snap = store.json(&["snapshots", "create", "--alias", "before"]);
    let name = snap["snapshot"]["name"].as_str().expect("name").to_string();
    fs::write(m.join("etc/passwd"), "version two\n").expect("write");

    // The mount gives the store and the container: no --store, no SNAPFS_STORE.
    let file = m.join("etc/passwd");
    let by_abs = snapfs(["history", file.to_str().expect("utf8"), "--json"]).json();
    assert_eq!(by_abs["container_id"], id.as_str(), "{by_abs}");
    assert_eq!(by_abs["path"], "/etc/passwd", "{by_abs}");
    let entries = by_abs["history"].as_array().expect("history");
    assert_eq!(entries.len(), 2, "{by_abs}");
    assert!(entries[0]["snapshot"].is_null(), "{by_abs}");
    assert_eq!(entries[0]["change"], "modified", "{by_abs}");
    assert_eq!(entries[1]["snapshot"], name.as_str(), "{by_abs}");
    assert_eq!(entries[1]["change"], "added", "{by_abs}");

    // Relative to the current directory, and through `..`.
    let by_rel = snapfs_in(&m.join("etc"), &["history", "passwd", "--json"]).json();
    assert_eq!(by_rel, by_abs);
    let by_dots = snapfs_in(&m.join("etc"), &["history", "../etc/passwd", "--json"]).json();
    assert_eq!(by_dots, by_abs);
    // The table names the trees.
    let text = snapfs_in(&m.join("etc"), &["history", "passwd"]);
    let (header, rows) = common::cli::table(text.ok());
    assert_eq!(header[0], "SNAPSHOT", "{}", text.describe());
    assert_eq!(rows.len(), 2, "{}", text.describe());
    assert_eq!(rows[0][0], "(current)");

    // A path in a snapshot's tree is the same path.
    let in_snap = m.join(format!(".snapshots/{name}/etc/passwd"));
    let by_snap = snapfs(["history", in_snap.to_str().expect("utf8"), "--json"]).json();
    assert_eq!(by_snap, by_abs);
    let alias = m.join(".snapshots/before/etc/passwd");
    let by_alias = snapfs(["history", alias.to_str().expect("utf8"), "--json"]).json();
    assert_eq!(by_alias, by_abs);

    // A path deleted since: still found through the mount.
    fs::remove_file(m.join("etc/passwd")).expect("rm");
    let gone = snapfs(["history", file.to_str().expect("utf8"), "--json"]).json();
    assert_eq!(gone["path"], "/etc/passwd", "{gone}");
    assert_eq!(gone["history"][0]["change"], "deleted", "{gone}");

    // The matching store and container may be given; others are refused in one line.
    let same = store.json(&[
        "history",
        file.to_str().expect("utf8"),
        "--container",
        "default",
    ]);
    assert_eq!(same, gone);
    let other = Store::new();
    other
        .cli(&["history", file.to_str().expect("utf8")])
        .assert_one_line_error();
    store
        .cli(&[
            "history",
            file.to_str().expect("utf8"),
            "--container",
            "web",
        ])
        .assert_one_line_error();
    // The snapshot directory itself names no path.
    let snapdir = m.join(".snapshots");
    snapfs(["history", snapdir.to_str().expect("utf8")]).assert_one_line_error();

    // A path outside any mount is still a path from the container's root.
    let plain = store.json(&["history", "/etc/passwd"]);
    assert_eq!(plain, gone);
}

#[test]
fn status_ends_with_one_newline() {
    let store = Store::new();
    for args in [&["status"][..], &["status", "--json"]] {
        let out = store.cli(args);
        let text = out.ok();
        assert!(
            text.ends_with('\n') && !text.ends_with("\n\n"),
            "{}",
            out.describe()
        );
    }
    assert!(store.cli(&["status"]).ok().starts_with("snapfs "));
}
