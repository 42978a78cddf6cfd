//! snapfs as containerd's snapshotter, through a real (private) containerd and runc with
//! `ctr`: image import (layers unpacked into snapfs mounts, a whiteout deleting a lower
//! file), containers run on it, two containers from one image sharing the image, usage,
//! a running container snapshotted and restored through the snapfs API, containerd and
//! snapfs restarts, and `images rm` giving the space back.

mod common;

use std::time::Duration;

use common::containerd::{Containerd, SnapfsPlugin, IMAGE};
use serde_json::{json, Value};

/// The snapfs container holding containerd snapshot key `.../ID` (its name ends with ID).
fn container_of(plugin: &SnapfsPlugin, id: &str) -> Value {
    let all = plugin.containers();
    let found: Vec<&Value> = all
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(&format!(".{id}")))
        })
        .collect();
    assert_eq!(found.len(), 1, "container of {id}: {all:?}");
    found[0].clone()
}

/// `ctr snapshots usage KEY`: (size in bytes as printed, inodes). ctr prints sizes in human
/// units; we ask for the raw numbers through the table's columns.
fn usage(c: &Containerd, key: &str) -> (String, u64) {
    let out = c.ctr_ok(&["snapshots", "usage", key]);
    let line = out
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no usage line for {key}: {out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let inodes = cols
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("usage line {line:?}"));
    (cols[1..cols.len() - 1].join(" "), inodes)
}

/// Bytes of a human size as ctr prints it (`1.0 MiB`, `12 kB`, `4.096 kB`, `0 B`).
fn human_bytes(s: &str) -> f64 {
    let (num, unit) = s.split_once(' ').unwrap_or((s, "B"));
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("size {s:?}"));
    let mult = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other:?} in {s:?}"),
    };
    n * mult
}

#[test]
fn images_and_containers_on_snapfs() {
    let mut plugin = SnapfsPlugin::start();
    let image = Containerd::image(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let mut ctrd = Containerd::start("snapfs", &plugin.socket);
    let data_before = plugin.daemon.ok("GET", "/api/v1/df", None)["store"]["data_bytes"]
        .as_u64()
        .expect("data_bytes");

    // Import: each layer is prepared, unpacked into its mount and committed.
    ctrd.import("snapfs", &image).assert_success();
    let ls = ctrd.ctr_ok(&["snapshots", "ls"]);
    let committed = ls.lines().filter(|l| l.contains("Committed")).count();
    assert_eq!(committed, 2, "two committed layers: {ls}");
    assert!(
        plugin.containers().is_empty(),
        "no container stays after an import"
    );

    // `ctr snapshots prepare / rm` on the top layer (the committed key nobody's parent).
    let rows: Vec<Vec<&str>> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let top = rows
        .iter()
        .find(|r| r.len() == 3 && !rows.iter().any(|o| o.get(1) == r.first()))
        .and_then(|r| r.first().copied())
        .unwrap_or_else(|| panic!("no top layer in {ls}"));
    ctrd.ctr_ok(&["snapshots", "prepare", "manual", top]);
    assert_eq!(plugin.containers().len(), 1, "prepare made a container");
    ctrd.ctr_ok(&["snapshots", "rm", "manual"]);
    assert!(
        common::wait_until(Duration::from_secs(20), || plugin.containers().is_empty()),
        "snapshots rm removes it: {:?}",
        plugin.containers()
    );

    // A container: reads both layers (the whiteout applied), writes to its rootfs.
    let out = ctrd.run(
        "snapfs",
        "t1",
        &[
            "/bin/sh",
            "-c",
            "cat /etc/layer1-only /etc/layer2; test ! -e /etc/deleted-by-layer2 && echo gone; \
             echo hi > /tmp/x && cat /tmp/x; wc -c < /data/blob",
        ],
    );
    assert_eq!(
        out.ok(),
        "from layer 1\nfrom layer 2\ngone\nhi\n1048576\n",
        "container output"
    );
    // containerd removes the snapshot of a deleted container in its garbage collection,
    // soon after.
    assert!(
        common::wait_until(Duration::from_secs(20), || plugin.containers().is_empty()),
        "run --rm removes its snapshot: {:?}",
        plugin.containers()
    );

    // Two long-running containers from one image.
    for id in ["c1", "c2"] {
        ctrd.ctr_ok(&[
            "run",
            "-d",
            "--null-io",
            "--snapshotter",
            "snapfs",
            IMAGE,
            id,
            "/bin/sleep",
            "100000",
        ]);
    }
    ctrd.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "w1",
        "c1",
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/root/big bs=65536 count=16 2>/dev/null && sync",
    ]);
    let c1 = container_of(&plugin, "c1");
    let c2 = container_of(&plugin, "c2");
    assert_eq!(c1["status"], "running", "{c1}");
    assert_eq!(c2["status"], "running", "{c2}");
    let (size1, _) = usage(&ctrd, "c1");
    let (size2, inodes2) = usage(&ctrd, "c2");
    let (b1, b2) = (human_bytes(&size1), human_bytes(&size2));
    assert!(
        (1_048_576.0..1_400_000.0).contains(&b1),
        "c1 wrote 1 MiB, usage {size1}"
    );
    assert!(
        b2 < 64.0 * 1024.0,
        "c2 wrote nothing: usage {size2}, {inodes2} inodes (the image is not counted)"
    );
    let tree = ctrd.ctr_ok(&["snapshots", "tree"]);
    assert!(tree.contains("c1") && tree.contains("c2"), "{tree}");

    // The running container's rootfs, snapshotted and restored through the snapfs API.
    let id1 = c1["id"].as_str().expect("id").to_string();
    let snap = plugin.daemon.snapshot(&id1, json!({"alias": "before"}));
    assert_eq!(snap["alias"], "before");
    ctrd.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "w2",
        "c1",
        "/bin/sh",
        "-c",
        "rm /root/big && echo changed > /etc/layer2",
    ]);
    plugin.daemon.ok(
        "PATCH",
        &format!("/api/v1/containers/{id1}/snapshots/before"),
        None,
    );
    let out = ctrd.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "r1",
        "c1",
        "/bin/sh",
        "-c",
        "cat /etc/layer2; wc -c < /root/big",
    ]);
    assert_eq!(out, "from layer 2\n1048576\n", "after the online restore");

    // containerd restarts: the snapshots and running containers are still there.
    ctrd.restart();
    let ls2 = ctrd.ctr_ok(&["snapshots", "ls"]);
    assert_eq!(
        ls2.lines().count(),
        ls.lines().count() + 2,
        "the layers and the two containers' snapshots: {ls2}"
    );
    let out = ctrd.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "r2",
        "c2",
        "/bin/cat",
        "/etc/layer2",
    ]);
    assert_eq!(out, "from layer 2\n");

    // Containers go: their snapshots are removed through the plugin.
    for id in ["c1", "c2"] {
        ctrd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", id]);
    }
    for id in ["c1", "c2"] {
        assert!(
            common::wait_until(Duration::from_secs(20), || ctrd
                .ctr(&["tasks", "delete", id])
                .success()),
            "task {id} not deleted"
        );
        ctrd.ctr_ok(&["containers", "delete", id]);
    }
    assert!(
        common::wait_until(Duration::from_secs(20), || plugin.containers().is_empty()),
        "containers left: {:?}\n--- snapfs ---\n{}\n--- containerd ---\n{}",
        plugin.containers(),
        plugin.daemon.stderr(),
        ctrd.log_tail(40)
    );

    // snapfs restarts: the layers are still there and new containers start from them.
    // containerd's gRPC connection to the plugin reconnects with back-off (grpc-go: 1 s,
    // growing): the first calls after a restart may answer `unavailable`.
    plugin.daemon.restart();
    let mut out = None;
    let ran = common::wait_until(Duration::from_secs(30), || {
        let o = ctrd.run("snapfs", "t2", &["/bin/cat", "/etc/layer1-only"]);
        let done = o.success() || !o.stderr.contains("unavailable");
        out = Some(o);
        done
    });
    let out = out.expect("ran");
    assert!(
        ran,
        "containerd never reached the restarted plugin: {}",
        out.describe()
    );
    assert_eq!(out.ok(), "from layer 1\n");

    // The snapshot taken through the snapfs API is the user's: it outlives c1 (and keeps the
    // image's data alive) until deleted.
    plugin.daemon.ok(
        "DELETE",
        &format!("/api/v1/containers/{id1}/snapshots/before"),
        None,
    );

    // The image goes: every snapshot is removed and the space comes back.
    ctrd.ctr_ok(&["images", "rm", "--sync", IMAGE]);
    assert!(
        common::wait_until(Duration::from_secs(20), || ctrd
            .ctr_ok(&["snapshots", "ls"])
            .lines()
            .count()
            <= 1),
        "snapshots left: {}",
        ctrd.ctr_ok(&["snapshots", "ls"])
    );
    let reclaimed = common::wait_until(Duration::from_secs(60), || {
        let st = plugin.daemon.ok("GET", "/api/v1/status", None);
        st["reclaim"]["retired_epochs"] == 0
    });
    assert!(reclaimed, "reclaim did not finish");
    let data_after = plugin.daemon.ok("GET", "/api/v1/df", None)["store"]["data_bytes"]
        .as_u64()
        .expect("data_bytes");
    assert!(
        data_after <= data_before + 64 * 1024,
        "the image's data is gone: {data_before} bytes before the import, {data_after} after"
    );
}
