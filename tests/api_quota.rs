//! Quotas through the API, the CLI and a real mount: `df` shows the quota, writes past it
//! fail with EDQUOT while other containers keep writing, freeing files makes room, a
//! restore that would exceed it is refused, and the limits can be changed and removed.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::api::*;
use serde_json::json;

const MIB: u64 = 1 << 20;

/// Writes `len` bytes to `p` and syncs; the error (EDQUOT may come at write or at fsync,
/// since the kernel caches writes) or Ok.
fn write_synced(p: &Path, len: usize) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(p)?;
    f.write_all(&vec![0x5a; len])?;
    f.sync_all()
}

fn df(p: &Path) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    let f = st.fragment_size();
    (st.blocks() * f, st.blocks_available() * f)
}

#[test]
fn quota_through_a_mount() {
    let d = Daemon::start();
    let c = d.ok(
        "POST",
        "/api/v1/containers",
        Some(&json!({"name": "q", "quota_bytes": 4 * MIB})),
    );
    assert_eq!(c["quota_bytes"], 4 * MIB);
    assert!(c["quota_including_snapshots_bytes"].is_null());
    assert_eq!(c["live_bytes"], 0);
    d.create_container("free", None);
    let mnt = d.mount("q", "m");
    let other = d.mount("free", "o");

    let (size, avail) = df(&mnt);
    assert_eq!(size, 4 * MIB, "df shows the quota as the size");
    assert!(avail <= 4 * MIB && avail > 3 * MIB, "avail {avail}");

    write_synced(&mnt.join("a"), 3 * MIB as usize).expect("within the quota");
    assert_eq!(d.container("q")["live_bytes"], 3 * MIB);
    let (_, avail) = df(&mnt);
    assert!(avail <= MIB, "avail {avail} after 3 MiB of 4");

    let err = write_synced(&mnt.join("b"), 2 * MIB as usize).expect_err("past the quota");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    // The other container is not limited.
    write_synced(&other.join("big"), 8 * MIB as usize).expect("other container");
    // Freeing room: the same write fits again.
    fs::remove_file(mnt.join("a")).expect("rm");
    fs::remove_file(mnt.join("b")).ok();
    write_synced(&mnt.join("b"), 2 * MIB as usize).expect("room again");

    // A restore to a tree over the quota is refused; raising the quota lets it through.
    d.ok(
        "PATCH",
        "/api/v1/containers/q",
        Some(&json!({"quota_bytes": 10 * MIB})),
    );
    write_synced(&mnt.join("c"), 6 * MIB as usize).expect("within the raised quota");
    d.snapshot("q", json!({"alias": "big"}));
    fs::remove_file(mnt.join("c")).expect("rm");
    // The kernel closes a file (RELEASE) in the background: until it has, the unlinked file
    // still holds its 6 MiB, and restoring /c revives it for free (within any quota).
    // Wait until its data is gone, so that the path restore below has to bring it back.
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            d.container("q")["live_bytes"].as_u64().unwrap_or(u64::MAX) <= 2 * MIB
        }),
        "the removed file's data stayed: {}",
        d.container("q")
    );
    d.ok(
        "PATCH",
        "/api/v1/containers/q",
        Some(&json!({"quota_bytes": 4 * MIB})),
    );
    d.call("PATCH", "/api/v1/containers/q/snapshots/big", None)
        .expect_error(409);
    assert!(
        !mnt.join("c").exists(),
        "a refused restore changed the tree"
    );
    let r = d.call(
        "PATCH",
        "/api/v1/containers/q/snapshots/big",
        Some(&json!({"paths": ["/c"]})),
    );
    r.expect_error(409);
    // Removing the limit.
    let c = d.ok(
        "PATCH",
        "/api/v1/containers/q",
        Some(&json!({"quota_bytes": null})),
    );
    assert!(c["quota_bytes"].is_null());
    d.ok("PATCH", "/api/v1/containers/q/snapshots/big", None);
    assert_eq!(
        fs::metadata(mnt.join("c")).expect("restored").len(),
        6 * MIB
    );
    let (size, _) = df(&mnt);
    assert!(size > 10 * MIB, "without a quota df shows the disk");
    // Bad input.
    d.call(
        "PATCH",
        "/api/v1/containers/q",
        Some(&json!({"quota_bytes": -1})),
    )
    .expect_error(400);
    d.call("PATCH", "/api/v1/containers/q", Some(&json!({})))
        .expect_error(400);
    d.call("PATCH", "/api/v1/containers/q", Some(&json!({"quota": 5})))
        .expect_error(400);
    d.call(
        "PATCH",
        "/api/v1/containers/nope",
        Some(&json!({"quota_bytes": 5})),
    )
    .expect_error(404);
    d.unmount("q", &mnt);
    d.unmount("free", &other);
}

#[test]
fn quota_from_the_cli() {
    let d = Daemon::start();
    let store = d.store().to_str().expect("utf8").to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::snapfs_bin())
            .args(args)
            .args(["--store", &store])
            .output()
            .expect("run snapfs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["containers", "create", "cq", "--quota", "10M", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["quota_bytes"], 10 * MIB);
    let (ok, out, err) = run(&[
        "containers",
        "set",
        "cq",
        "--quota",
        "none",
        "--quota-including-snapshots",
        "1G",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("QUOTA WITH SNAPSHOTS") && out.contains("1.0 GiB"),
        "{out}"
    );
    let (ok, _, err) = run(&["containers", "set", "cq", "--quota", "lots"]);
    assert!(!ok && err.contains("is not a size"), "{err}");
    let (ok, _, err) = run(&["containers", "set", "cq"]);
    assert!(!ok && err.contains("nothing to set"), "{err}");
}

#[test]
fn space_report_through_the_api_and_the_cli() {
    let d = Daemon::start();
    d.create_container("s", None);
    let mnt = d.mount("s", "m");
    write_synced(&mnt.join("a"), MIB as usize).expect("write");
    d.snapshot("s", json!({"alias": "one"}));
    write_synced(&mnt.join("a"), MIB as usize).expect("rewrite");
    d.snapshot("s", json!({"alias": "two"}));
    let df = d.ok("GET", "/api/v1/df?container=s", None);
    let st = &df["store"];
    assert!(st["disk_bytes"].as_u64().unwrap_or(0) > 0, "{df}");
    assert!(st["data_bytes"].as_u64().unwrap_or(0) >= 2 * MIB, "{df}");
    let c = &df["containers"][0];
    assert_eq!(c["name"], "s");
    assert_eq!(c["live_bytes"], MIB);
    assert!(c["snapshots_bytes"].as_u64().unwrap_or(0) >= 2 * MIB, "{c}");
    let snaps = c["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 2);
    // Newest first: "two" is followed only by the live tree, which rewrote nothing since;
    // "one" holds the first version of the file, which "two" replaced.
    assert_eq!(snaps[0]["alias"], "two");
    assert!(
        snaps[0]["freed_if_deleted"].as_u64().unwrap_or(u64::MAX) < 64 * 1024,
        "{c}"
    );
    let one = snaps[1]["freed_if_deleted"].as_u64().unwrap_or(0);
    assert!((MIB..2 * MIB).contains(&one), "{c}");
    // The container detail has the same figures (but no per-snapshot list).
    let detail = d.container("s");
    assert_eq!(detail["snapshots_bytes"], c["snapshots_bytes"]);
    assert_eq!(detail["bytes_used"], c["bytes_used"]);
    // The CLI prints it.
    let out = std::process::Command::new(common::snapfs_bin())
        .args(["df", "--container", "s", "--store"])
        .arg(d.store())
        .output()
        .expect("run snapfs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("store: ") && text.contains("FREED IF DELETED"),
        "{text}"
    );
    assert!(text.contains("one") && text.contains("two"), "{text}");
    d.call("GET", "/api/v1/df?container=nope", None)
        .expect_error(404);
    d.unmount("s", &mnt);
}
