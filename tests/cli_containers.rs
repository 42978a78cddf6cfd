//! `snapfs containers create|list|show|copy|delete|start|stop`: tables, `--json` (the API's
//! `data`), naming by id or name, mounts made by `start`, delete of a running container
//! (refused, or `--force`), and misuse as one stderr line.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::time::Duration;

use common::cli::table;
use common::{alive, is_mounted, mount_source, require_fuse, snapfs, wait_until, Store};
use serde_json::Value;

const CONTAINER_KEYS: [&str; 9] = [
    "id",
    "name",
    "project_id",
    "status",
    "mountpoint",
    "created_at",
    "deleted_at",
    "bytes_used",
    "snapshot_count",
];

fn assert_container(v: &Value) {
    for k in CONTAINER_KEYS {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["containers"]
        .as_array()
        .expect("containers array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[test]
fn create_list_show() {
    let store = Store::new();
    let web = store.json(&["containers", "create", "web", "--project", "p1"]);
    assert_container(&web);
    assert_eq!(web["name"], "web");
    assert_eq!(web["project_id"], "p1");
    assert_eq!(web["status"], "stopped");
    let id = web["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 24);

    // Table output of create.
    let out = store.cli(&["containers", "create", "db"]);
    let (header, rows) = table(out.ok());
    assert_eq!(
        header,
        [
            "ID",
            "NAME",
            "PROJECT",
            "STATUS",
            "SNAPSHOTS",
            "USED",
            "CREATED",
            "MOUNTPOINT"
        ]
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1], "db");
    assert_eq!(rows[0][2], "-");
    assert_eq!(rows[0][3], "stopped");

    let list = store.json(&["containers", "list"]);
    assert_eq!(list["containers"].as_array().expect("array").len(), 3);
    assert_eq!(by_name(&list, "web")["id"], id.as_str());
    by_name(&list, "default");

    let out = store.cli(&["containers", "list"]);
    let (header, rows) = table(out.ok());
    assert_eq!(header[0], "ID");
    assert_eq!(rows.len(), 3, "{}", out.describe());
    let mut names: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    names.sort();
    assert_eq!(names, ["db", "default", "web"]);

    // Show by name and by id: the same container.
    let a = store.json(&["containers", "show", "web"]);
    let b = store.json(&["containers", "show", &id]);
    assert_eq!(a, b);
    assert_eq!(a, web);
    let out = store.cli(&["containers", "show", "web"]);
    let text = out.ok();
    assert!(text
        .lines()
        .any(|l| l.starts_with("ID") && l.ends_with(&id)));
    assert!(text
        .lines()
        .any(|l| l.starts_with("STATUS") && l.ends_with("stopped")));
    assert!(text
        .lines()
        .any(|l| l.starts_with("PROJECT") && l.ends_with("p1")));
}

#[test]
fn copy_current_tree_and_snapshot() {
    require_fuse();
    let store = Store::new();
    let mnt = store.mountpoint("src");
    let m = mnt.to_str().expect("utf8");
    store
        .cli(&["containers", "start", "default", "--mountpoint", m])
        .ok();
    fs::write(mnt.join("f"), "old").expect("write");
    store
        .cli(&[
            "snapshots",
            "create",
            "--container",
            "default",
            "--alias",
            "base",
        ])
        .ok();
    fs::write(mnt.join("f"), "new").expect("write");
    store.cli(&["containers", "stop", "default"]).ok();

    let c1 = store.json(&["containers", "copy", "default", "--name", "now"]);
    assert_container(&c1);
    assert_eq!(c1["name"], "now");
    assert_eq!(c1["status"], "stopped");
    let out = store.cli(&[
        "containers",
        "copy",
        "default",
        "--name",
        "then",
        "--snapshot",
        "base",
        "--project",
        "p9",
    ]);
    let (_, rows) = table(out.ok());
    assert_eq!(rows[0][1], "then");
    assert_eq!(rows[0][2], "p9");

    // last_used_at of the copied snapshot is set.
    let list = store.json(&["snapshots", "list", "--container", "default"]);
    assert!(list["snapshots"][0]["last_used_at"].is_string(), "{list}");

    let m1 = store.mountpoint("now");
    let m2 = store.mountpoint("then");
    store
        .cli(&[
            "containers",
            "start",
            "now",
            "--mountpoint",
            m1.to_str().expect("utf8"),
        ])
        .ok();
    store
        .cli(&[
            "containers",
            "start",
            "then",
            "--mountpoint",
            m2.to_str().expect("utf8"),
        ])
        .ok();
    assert_eq!(fs::read_to_string(m1.join("f")).expect("read"), "new");
    assert_eq!(fs::read_to_string(m2.join("f")).expect("read"), "old");
    // Independent.
    fs::write(m1.join("f"), "diverged").expect("write");
    assert_eq!(fs::read_to_string(m2.join("f")).expect("read"), "old");
    store.cli(&["containers", "stop", "now"]).ok();
    store.cli(&["containers", "stop", "then"]).ok();
}

#[test]
fn start_show_stop() {
    require_fuse();
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let m = mnt.to_str().expect("utf8");
    let started = store.json(&[
        "containers",
        "start",
        "default",
        "--mountpoint",
        m,
        "--snapdir",
        "visible",
    ]);
    assert_eq!(started["status"], "running");
    assert_eq!(started["mountpoint"], m);
    assert!(is_mounted(&mnt));
    let source = mount_source(&mnt).expect("source");
    assert_eq!(source, format!("{}:default", store.path().display()));
    let listing: Vec<String> = fs::read_dir(&mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    assert!(listing.contains(&".snapshots".to_string()), "{listing:?}");
    fs::write(mnt.join("data"), vec![7u8; 100_000]).expect("write");

    let out = store.cli(&["containers", "show", "default"]);
    let text = out.ok();
    assert!(
        text.lines()
            .any(|l| l.starts_with("MOUNTPOINT") && l.ends_with(m)),
        "{text}"
    );
    assert!(text
        .lines()
        .any(|l| l.starts_with("STATUS") && l.ends_with("running")));

    // Starting twice, or another container on the same mountpoint, is refused.
    store
        .cli(&["containers", "start", "default", "--mountpoint", m])
        .one_line_error();
    store.cli(&["containers", "create", "other"]).ok();
    store
        .cli(&["containers", "start", "other", "--mountpoint", m])
        .one_line_error();

    let pid = store.daemon_pid().expect("daemon pid");
    let out = store.cli(&["containers", "stop", "default"]);
    let (_, rows) = table(out.ok());
    assert_eq!(rows[0][3], "stopped");
    assert!(!is_mounted(&mnt));
    // The on-demand daemon exits with its last mount; stop waited for it.
    assert!(!alive(pid), "daemon {pid} still running after stop");

    // Data persisted; `start` with a relative path is made absolute.
    let v = store.json(&["containers", "show", "default"]);
    assert_eq!(v["status"], "stopped");
    assert!(v["mountpoint"].is_null());
    assert!(v["bytes_used"].as_u64().expect("bytes") >= 100_000, "{v}");
    let out = common::run(
        std::process::Command::new(common::snapfs_bin())
            .args(["containers", "start", "default", "--mountpoint", "mnt"])
            .arg("--store")
            .arg(store.path())
            .current_dir(mnt.parent().expect("parent")),
    );
    out.ok();
    assert_eq!(fs::read(mnt.join("data")).expect("read").len(), 100_000);
    // Stopping a stopped container is fine (no-op); `snapfs umount` works on `start` mounts.
    common::snapfs(["umount", m]).ok();
    assert!(!is_mounted(&mnt));
    assert!(wait_until(Duration::from_secs(30), || store
        .daemon_pid()
        .is_none()));
    store.cli(&["containers", "stop", "default"]).ok();
}

#[test]
fn delete_keeps_snapshots() {
    let store = Store::new();
    let c = store.json(&["containers", "create", "tmp"]);
    let id = c["id"].as_str().expect("id").to_string();
    store
        .cli(&[
            "snapshots",
            "create",
            "--container",
            "tmp",
            "--alias",
            "last",
        ])
        .ok();
    let d = store.json(&["containers", "delete", "tmp"]);
    assert_eq!(d["status"], "deleted");
    assert!(d["deleted_at"].is_string());
    // Gone by name, still there by id, with its snapshots.
    store.cli(&["containers", "show", "tmp"]).one_line_error();
    let v = store.json(&["containers", "show", &id]);
    assert_eq!(v["status"], "deleted");
    let out = store.cli(&["containers", "show", &id]);
    assert!(out
        .ok()
        .lines()
        .any(|l| l.starts_with("DELETED") && !l.ends_with('-')));
    let list = store.json(&["snapshots", "list", "--container", &id]);
    assert_eq!(list["snapshots"][0]["alias"], "last");
    // And copyable.
    let copy = store.json(&[
        "containers",
        "copy",
        &id,
        "--name",
        "revived",
        "--snapshot",
        "last",
    ]);
    assert_eq!(copy["status"], "stopped");
    // Table output of delete; the name is free again.
    let out = store.cli(&["containers", "delete", "revived"]);
    let (_, rows) = table(out.ok());
    assert_eq!(rows[0][3], "deleted");
    store.cli(&["containers", "create", "revived"]).ok();
}

#[test]
fn delete_running_container_needs_force() {
    require_fuse();
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let m = mnt.to_str().expect("utf8");
    let id = store.json(&["containers", "start", "default", "--mountpoint", m])["id"]
        .as_str()
        .expect("id")
        .to_string();
    fs::write(mnt.join("f"), "kept").expect("write");
    store
        .cli(&[
            "snapshots",
            "create",
            "--container",
            "default",
            "--alias",
            "last",
        ])
        .ok();

    let out = store.cli(&["containers", "delete", "default"]);
    let line = out.one_line_error();
    assert!(
        line.contains("is running") && line.contains("--force"),
        "{line:?}"
    );
    assert!(is_mounted(&mnt), "a refused delete unmounted the container");
    assert_eq!(fs::read_to_string(mnt.join("f")).expect("read"), "kept");
    assert_eq!(
        store.json(&["containers", "show", "default"])["status"],
        "running"
    );

    let pid = store.daemon_pid().expect("daemon pid");
    let d = store.json(&["containers", "delete", "default", "--force"]);
    assert_eq!(d["status"], "deleted", "{d}");
    assert!(!is_mounted(&mnt), "still mounted after delete --force");
    // The on-demand daemon exits with its last mount; delete waited for it.
    assert!(
        !alive(pid),
        "daemon {pid} still running after delete --force"
    );
    let list = store.json(&["snapshots", "list", "--container", &id]);
    assert_eq!(list["snapshots"][0]["alias"], "last", "{list}");
    // --force on a stopped container is a plain delete.
    store.cli(&["containers", "create", "idle"]).ok();
    let d = store.json(&["containers", "delete", "idle", "--force"]);
    assert_eq!(d["status"], "deleted", "{d}");
}

#[test]
fn misuse_is_one_stderr_line() {
    let store = Store::new();
    store.cli(&["containers", "create", "web"]).ok();
    store
        .cli(&["snapshots", "create", "--container", "web", "--alias", "s1"])
        .ok();
    let missing_dir = store.path().with_file_name("no-such-dir");
    let missing = missing_dir.to_str().expect("utf8");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["containers", "show", "nope"], "not found"),
        (vec!["containers", "delete", "nope"], "not found"),
        (vec!["containers", "stop", "nope"], "not found"),
        (
            vec!["containers", "copy", "nope", "--name", "x"],
            "not found",
        ),
        (
            vec![
                "containers",
                "copy",
                "web",
                "--name",
                "x",
                "--snapshot",
                "nope",
            ],
            "not found",
        ),
        (vec!["containers", "copy", "web", "--name", "web"], ""),
        (vec!["containers", "copy", "web"], "--name"),
        (vec!["containers", "create", "web"], ""),
        (vec!["containers", "create", "a/b"], ""),
        (vec!["containers", "create", ""], ""),
        (vec!["containers", "create"], "NAME"),
        (vec!["containers", "show"], "CONTAINER"),
        (vec!["containers", "start", "web"], "--mountpoint"),
        (
            vec!["containers", "start", "web", "--mountpoint", missing],
            "",
        ),
        (
            vec!["containers", "start", "nope", "--mountpoint", "/tmp"],
            "not found",
        ),
        (
            vec![
                "containers",
                "start",
                "web",
                "--mountpoint",
                "/tmp",
                "--snapdir",
                "sideways",
            ],
            "",
        ),
        (vec!["containers"], "subcommand"),
        (vec!["containers", "list", "extra"], ""),
    ];
    for (args, needle) in &cases {
        let line = store.cli(args).one_line_error().to_string();
        assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
    }
    let list = store.json(&["containers", "list"]);
    let mut names: Vec<&str> = list["containers"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    names.sort();
    assert_eq!(names, ["default", "web"]);
    assert!(!missing_dir.exists());
}

#[test]
fn start_over_a_dead_mount_cleans_it_up() {
    require_fuse();
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let m = mnt.to_str().expect("utf8");
    // A daemon without a supervisor: its mounts die with it.
    let sp = store.path().as_os_str();
    common::snapfs_env(
        &[
            OsStr::new("containers"),
            OsStr::new("start"),
            OsStr::new("default"),
            OsStr::new("--mountpoint"),
            mnt.as_os_str(),
            OsStr::new("--store"),
            sp,
        ],
        &[("SNAPFS_SUPERVISOR".to_string(), Some("0".to_string()))],
    )
    .ok();
    fs::write(mnt.join("f"), "kept").expect("write");
    store
        .cli(&["snapshots", "create", "--container", "default"])
        .ok();
    // Kill the daemon: the mount is left dead (ENOTCONN).
    let pid = store.daemon_pid().expect("daemon pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the daemon");
    assert!(wait_until(Duration::from_secs(30), || !alive(pid)));
    let out = store.cli(&["containers", "start", "default", "--mountpoint", m]);
    out.ok();
    assert_eq!(fs::read_to_string(mnt.join("f")).expect("read"), "kept");
    store.cli(&["containers", "stop", "default"]).ok();
    assert!(!is_mounted(&mnt));
}

#[test]
fn fsck_reports_damage_exit_1_and_repair_fixes_it_exit_0() {
    use snapfs::kv::{Batch, Space};
    let store = Store::new();
    let clean = snapfs(["fsck", store.path().to_str().unwrap()]);
    assert!(clean.status.success(), "{}", clean.describe());
    {
        // Plant a directory entry to an inode that does not exist, in the head.
        let st = snapfs::storedir::open_store(store.path()).expect("open store");
        let id = st.container_by_name("default").unwrap().unwrap().id;
        let head = st.head(&id).unwrap().epoch;
        let mut b = Batch::new();
        snapfs::store::put_version(
            &mut b,
            Space::Meta,
            &snapfs::keys::dirent(snapfs::fs::ROOT_INO, b"ghost"),
            head,
            snapfs::codec::encode_live(&snapfs::codec::Dirent {
                ino: snapfs::ids::Ino::new(77_777),
                kind: snapfs::codec::Kind::File,
            }),
        );
        // With its back link, as every entry has one: the damage is the missing inode.
        snapfs::store::put_version(
            &mut b,
            Space::Meta,
            &snapfs::keys::link(
                snapfs::ids::Ino::new(77_777),
                snapfs::fs::ROOT_INO,
                b"ghost",
            ),
            head,
            snapfs::codec::encode_live(&()),
        );
        st.kv().write(b, true).unwrap();
    }
    let p = store.path().to_str().unwrap();
    let bad = snapfs(["fsck", p]);
    assert_eq!(bad.status.code(), Some(1), "{}", bad.describe());
    assert!(bad.stdout.contains("problem: ") && bad.stdout.contains("\"ghost\""));
    assert_eq!(
        bad.stderr.trim(),
        format!("snapfs: error: 1 problems found in {p}")
    );
    let fixed = snapfs(["fsck", "--repair", p]);
    assert!(fixed.status.success(), "{}", fixed.describe());
    assert!(
        fixed.stdout.contains("repaired: container default (")
            && fixed
                .stdout
                .contains("remove entry \"ghost\" from directory 1")
            && fixed.stdout.contains("0 problems left after 1 repairs"),
        "{}",
        fixed.describe()
    );
    let again = snapfs(["fsck", p]);
    assert!(again.status.success(), "{}", again.describe());
}

/// fsck draws a progress bar on a terminal (here a pseudo-terminal from `script`), and
/// nothing of it when its output goes elsewhere.
#[test]
fn fsck_shows_progress_only_on_a_terminal() {
    let store = Store::new();
    let p = store.path().to_str().expect("utf8").to_string();
    let piped = snapfs(["fsck", &p]);
    let all = format!("{}{}", piped.stdout, piped.stderr);
    assert!(!all.contains("checking trees"), "{all}");
    let out = std::process::Command::new("script")
        .args([
            "-q",
            "-e",
            "-c",
            &format!("{} fsck {p}", common::snapfs_bin()),
            "/dev/null",
        ])
        .output()
        .expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("checking trees"),
        "no progress on a terminal: {text:?}"
    );
}

#[test]
fn a_killed_daemon_is_replaced_and_its_mount_goes_on() {
    require_fuse();
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let m = mnt.to_str().expect("utf8");
    // The default daemon runs under its supervisor.
    store
        .cli(&["containers", "start", "default", "--mountpoint", m])
        .ok();
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(mnt.join("f"))
        .expect("open");
    f.write_all(b"before ").expect("write");
    let pid = store.daemon_pid().expect("daemon pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the daemon");
    // The same open file and the same mount, served by the next daemon.
    f.write_all(b"after").expect("write after the kill");
    f.sync_all().expect("fsync after the kill");
    assert_eq!(
        fs::read_to_string(mnt.join("f")).expect("read"),
        "before after"
    );
    let next = store.daemon_pid().expect("daemon pid");
    assert_ne!(next, pid, "the pid file names the new daemon");
    let out = store.cli(&["status"]);
    let status = out.ok();
    assert!(
        status.contains("supervisor pid") && status.contains("1 taken over at start"),
        "status says the mount was taken over: {status}"
    );
    drop(f);
    store.cli(&["containers", "stop", "default"]).ok();
    assert!(!is_mounted(&mnt));
}
