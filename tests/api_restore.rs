//! Restore through the REST API, seen through a FUSE mount started by the API: the tree
//! switches in place, paths show the snapshot, and descriptors on the old tree go stale.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::api::*;
use nix::errno::Errno;
use serde_json::json;

fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Container `r` mounted, with `file` = v1 and `keep`; snapshot `before`; then `file` = v2,
/// plus `newfile` and `newdir/inner`.
fn setup(d: &Daemon) -> (std::path::PathBuf, serde_json::Value) {
    d.create_container("r", None);
    let mnt = d.mount("r", "m");
    fs::write(mnt.join("file"), b"v1").expect("write v1");
    fs::write(mnt.join("keep"), b"kept").expect("write keep");
    let s = d.snapshot("r", json!({"alias": "before"}));
    assert!(s["last_used_at"].is_null());
    fs::write(mnt.join("file"), b"v2 is longer than v1").expect("write v2");
    fs::write(mnt.join("newfile"), b"new").expect("write newfile");
    fs::create_dir(mnt.join("newdir")).expect("mkdir");
    fs::write(mnt.join("newdir/inner"), b"inner").expect("write inner");
    assert_eq!(ls(&mnt), ["file", "keep", "newdir", "newfile"]);
    (mnt, s)
}

#[test]
fn restore_mounted_container_shows_snapshot_tree() {
    let d = Daemon::start();
    let (mnt, s) = setup(&d);
    let t0 = now_ms();
    let data = d.ok("PATCH", "/api/v1/containers/r/snapshots/before", None);
    assert_eq!(data["snapshot"]["name"], s["name"]);
    let used = time_field(&data["snapshot"], "last_used_at").expect("last_used_at set");
    assert!(used >= t0 - 1000 && used <= now_ms() + 1000, "{data}");
    assert_eq!(
        d.snapshots("r")[0]["last_used_at"],
        data["snapshot"]["last_used_at"]
    );

    assert_eq!(
        read(&mnt.join("file")),
        b"v1",
        "path shows the snapshot's content"
    );
    assert_eq!(read(&mnt.join("keep")), b"kept");
    assert_eq!(ls(&mnt), ["file", "keep"], "new file and dir must be gone");
    for gone in ["newfile", "newdir", "newdir/inner"] {
        let e = fs::metadata(mnt.join(gone)).expect_err(gone);
        assert_eq!(e.kind(), ErrorKind::NotFound, "{gone}: {e}");
    }
    // The restored tree is writable and the container is still running.
    fs::write(mnt.join("file"), b"v3").expect("write after restore");
    assert_eq!(read(&mnt.join("file")), b"v3");
    fs::create_dir(mnt.join("newdir")).expect("mkdir again");
    assert_eq!(d.container("r")["status"], "running");
    // The snapshot still holds v1.
    assert_eq!(read(&mnt.join(".snapshots/before/file")), b"v1");
    d.unmount("r", &mnt);
}

#[test]
fn restore_mounted_container_old_descriptor_fails_stale() {
    let d = Daemon::start();
    let (mnt, _) = setup(&d);
    let f: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("file"))
        .expect("open file");
    let mut buf = vec![0u8; 64];
    let n = f.read_at(&mut buf, 0).expect("read before restore");
    assert_eq!(&buf[..n], b"v2 is longer than v1");
    let new_f = File::open(mnt.join("newfile")).expect("open newfile");

    d.ok("PATCH", "/api/v1/containers/r/snapshots/before", None);

    let allowed = [Errno::ESTALE as i32, Errno::EIO as i32];
    let mut problems = Vec::new();
    let mut buf = vec![0u8; 64];
    match f.read_at(&mut buf, 0) {
        Ok(n) => problems.push(format!(
            "read through the old descriptor returned {:?} (expected ESTALE or EIO)",
            String::from_utf8_lossy(&buf[..n])
        )),
        Err(e) if allowed.contains(&e.raw_os_error().unwrap_or(0)) => {}
        Err(e) => problems.push(format!("read through the old descriptor: {e}")),
    }
    match f.write_at(b"XX", 0) {
        Ok(n) => problems.push(format!(
            "write of {n} bytes through the old descriptor succeeded"
        )),
        Err(e) if allowed.contains(&e.raw_os_error().unwrap_or(0)) => {}
        Err(e) => problems.push(format!("write through the old descriptor: {e}")),
    }
    match new_f.read_at(&mut buf, 0) {
        Ok(n) => problems.push(format!(
            "read of the removed newfile through its old descriptor returned {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
        Err(e) if allowed.contains(&e.raw_os_error().unwrap_or(0)) => {}
        Err(e) => problems.push(format!("read of newfile's old descriptor: {e}")),
    }
    // Whatever the descriptors did, the path shows v1 (no write leaked into the new tree).
    let now = read(&mnt.join("file"));
    if now != b"v1" {
        problems.push(format!(
            "after using the old descriptor, file reads {:?}",
            String::from_utf8_lossy(&now)
        ));
    }
    drop(f);
    drop(new_f);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    d.unmount("r", &mnt);
}

#[test]
fn restore_stopped_container_then_start_shows_snapshot() {
    let d = Daemon::start();
    let (mnt, s) = setup(&d);
    d.unmount("r", &mnt);
    assert_eq!(d.container("r")["status"], "stopped");
    let data = d.ok(
        "PATCH",
        &format!(
            "/api/v1/containers/r/snapshots/{}",
            s["name"].as_str().expect("name")
        ),
        Some(&json!({})),
    );
    assert!(data["snapshot"]["last_used_at"].is_string(), "{data}");
    let mnt2 = d.mount("r", "m2");
    assert_eq!(read(&mnt2.join("file")), b"v1");
    assert_eq!(ls(&mnt2), ["file", "keep"]);
    d.unmount("r", &mnt2);
}

#[test]
fn restore_keeps_later_snapshots_and_can_go_forward() {
    let d = Daemon::start();
    d.create_container("fw", None);
    let mnt = d.mount("fw", "m");
    fs::write(mnt.join("f"), b"one").expect("write");
    let s1 = d.snapshot("fw", json!({"alias": "one"}));
    fs::write(mnt.join("f"), b"two").expect("write");
    fs::write(mnt.join("g"), b"g").expect("write");
    let s2 = d.snapshot("fw", json!({"alias": "two"}));
    d.ok("PATCH", "/api/v1/containers/fw/snapshots/one", None);
    assert_eq!(read(&mnt.join("f")), b"one");
    assert_eq!(ls(&mnt), ["f"]);
    let names: Vec<String> = d
        .snapshots("fw")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(
        names,
        [
            s2["name"].as_str().expect("n"),
            s1["name"].as_str().expect("n")
        ]
    );
    assert_eq!(read(&mnt.join(".snapshots/two/f")), b"two");
    d.ok("PATCH", "/api/v1/containers/fw/snapshots/two", None);
    assert_eq!(read(&mnt.join("f")), b"two");
    assert_eq!(ls(&mnt), ["f", "g"]);
    let list = d.snapshots("fw");
    assert!(
        list.iter().all(|s| s["last_used_at"].is_string()),
        "{list:?}"
    );
    d.unmount("fw", &mnt);
}

#[test]
fn snapshot_of_mounted_container_contains_every_returned_write() {
    let d = Daemon::start();
    d.create_container("w", None);
    let mnt = d.mount("w", "m");
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(mnt.join("data"), &data).expect("write data (no fsync)");
    let s = d.snapshot("w", json!({}));
    let name = s["name"].as_str().expect("name").to_string();
    fs::write(mnt.join("data"), b"overwritten").expect("overwrite");
    let snap_view = read(&mnt.join(".snapshots").join(&name).join("data"));
    assert!(
        snap_view == data,
        "snapshot view of data differs ({} bytes)",
        snap_view.len()
    );
    d.ok(
        "PATCH",
        &format!("/api/v1/containers/w/snapshots/{name}"),
        None,
    );
    let restored = read(&mnt.join("data"));
    assert!(
        restored == data,
        "restored data differs ({} bytes)",
        restored.len()
    );
    d.unmount("w", &mnt);
}

#[test]
fn restore_then_delete_snapshot_keeps_restored_data_after_reclaim() {
    let d = Daemon::start();
    d.create_container("rc", None);
    let mnt = d.mount("rc", "m");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(mnt.join("data"), &data).expect("write");
    fs::create_dir(mnt.join("d")).expect("mkdir");
    fs::write(mnt.join("d/small"), b"small").expect("write");
    let s = d.snapshot("rc", json!({}));
    fs::write(mnt.join("data"), b"replaced").expect("overwrite");
    fs::remove_file(mnt.join("d/small")).expect("rm");
    let name = s["name"].as_str().expect("name");
    d.ok(
        "PATCH",
        &format!("/api/v1/containers/rc/snapshots/{name}"),
        None,
    );
    d.ok(
        "DELETE",
        &format!("/api/v1/containers/rc/snapshots/{name}"),
        None,
    );
    assert!(d.snapshots("rc").is_empty());
    // The background worker reclaims every second; the restored tree must survive it.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    d.unmount("rc", &mnt);
    let m2 = d.mount("rc", "m2");
    assert!(
        read(&m2.join("data")) == data,
        "restored data lost after reclaim"
    );
    assert_eq!(read(&m2.join("d/small")), b"small");
    d.unmount("rc", &m2);
}

/// Names that do not exist are cached by the kernel too (negative entries): a name that was
/// looked up and missing before a restore must be there when the restored tree has it, at the
/// root and below.
#[test]
fn restore_brings_back_names_the_kernel_cached_as_missing() {
    let d = Daemon::start();
    d.create_container("n", None);
    let mnt = d.mount("n", "m");
    fs::create_dir(mnt.join("dir")).expect("mkdir");
    fs::write(mnt.join("top"), b"top").expect("write top");
    fs::write(mnt.join("dir/inner"), b"inner").expect("write inner");
    d.snapshot("n", json!({"alias": "full"}));
    fs::remove_file(mnt.join("top")).expect("rm top");
    fs::remove_file(mnt.join("dir/inner")).expect("rm inner");
    fs::remove_dir(mnt.join("dir")).expect("rmdir");
    // Cache the absence of every name (twice: the second lookup is the cached one).
    for _ in 0..2 {
        for p in ["top", "dir", "dir/inner"] {
            assert_eq!(
                fs::metadata(mnt.join(p)).expect_err(p).kind(),
                ErrorKind::NotFound
            );
        }
    }
    d.ok("PATCH", "/api/v1/containers/n/snapshots/full", None);
    assert_eq!(read(&mnt.join("top")), b"top");
    assert_eq!(read(&mnt.join("dir/inner")), b"inner");
    assert_eq!(ls(&mnt), ["dir", "top"]);
    d.unmount("n", &mnt);
}

/// The kernel keeps pages and listings across opens (FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR): what
/// it cached of the old tree must never show after an online restore or a snapshot deletion.
#[test]
fn restore_after_cached_reads_and_listings_serves_only_the_restored_tree() {
    let d = Daemon::start();
    let (mnt, _) = setup(&d);
    fs::create_dir(mnt.join("dir")).expect("mkdir dir");
    fs::write(mnt.join("dir/a"), b"a").expect("write dir/a");
    let s2 = d.snapshot("r", json!({"alias": "after"}));
    fs::write(mnt.join("dir/b"), b"b").expect("write dir/b");
    // Cache everything: file pages (read twice, closed), and the listings.
    for _ in 0..2 {
        assert_eq!(read(&mnt.join("file")), b"v2 is longer than v1");
        assert_eq!(
            read(&mnt.join(".snapshots/after/file")),
            b"v2 is longer than v1"
        );
        assert_eq!(ls(&mnt.join("dir")), ["a", "b"]);
        assert_eq!(ls(&mnt.join(".snapshots/after/dir")), ["a"]);
    }
    d.ok("PATCH", "/api/v1/containers/r/snapshots/before", None);
    assert_eq!(read(&mnt.join("file")), b"v1");
    assert_eq!(ls(&mnt), ["file", "keep"]);
    assert!(fs::metadata(mnt.join("dir")).is_err(), "dir is gone");
    // Forward again: the listing is the snapshot's, not the cached one with `b`.
    d.ok("PATCH", "/api/v1/containers/r/snapshots/after", None);
    assert_eq!(ls(&mnt.join("dir")), ["a"]);
    assert_eq!(read(&mnt.join("file")), b"v2 is longer than v1");
    // A snapshot view's cached pages go with the snapshot: an open descriptor fails.
    let f = File::open(mnt.join(".snapshots/after/file")).expect("open in snapshot");
    let mut buf = [0u8; 64];
    assert!(f.read_at(&mut buf, 0).is_ok());
    let name = s2["name"].as_str().expect("name").to_string();
    d.ok(
        "DELETE",
        &format!("/api/v1/containers/r/snapshots/{name}"),
        None,
    );
    let err = f
        .read_at(&mut buf, 0)
        .expect_err("read of a deleted snapshot's file");
    assert!(
        [
            Errno::ESTALE as i32,
            Errno::EIO as i32,
            Errno::ENOENT as i32
        ]
        .contains(&err.raw_os_error().unwrap_or(0)),
        "{err}"
    );
    drop(f);
    d.unmount("r", &mnt);
}

/// Unmounts (lazily) on drop: a mount the test put inside a snapfs mount.
struct Submount(std::path::PathBuf);

impl Drop for Submount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// What a container runtime mounts inside a rootfs (/proc, /dev, a bind-mounted /etc/hosts)
/// stays mounted across an online restore, also in a directory whose entries changed; the
/// files that differ are the snapshot's, unchanged descriptors keep working.
#[test]
fn restore_keeps_mounts_inside_the_container() {
    let d = Daemon::start();
    d.create_container("r", None);
    let mnt = d.mount("r", "m");
    fs::create_dir_all(mnt.join("proc")).expect("mkdir proc");
    fs::create_dir_all(mnt.join("etc")).expect("mkdir etc");
    fs::write(mnt.join("etc/hosts"), b"image hosts\n").expect("write hosts");
    fs::write(mnt.join("etc/conf"), b"v1").expect("write conf");
    fs::write(mnt.join("bin"), b"binary").expect("write bin");
    d.snapshot("r", json!({"alias": "before"}));
    // The runtime's mounts: a tmpfs on /proc, a file bound over /etc/hosts.
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("hosts"), b"runtime hosts\n").expect("write bind source");
    nix::mount::mount(
        Some("tmpfs"),
        &mnt.join("proc"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount tmpfs on proc");
    let _proc = Submount(mnt.join("proc"));
    fs::write(mnt.join("proc/marker"), b"in tmpfs").expect("write in tmpfs");
    nix::mount::mount(
        Some(&tmp.path().join("hosts")),
        &mnt.join("etc/hosts"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind hosts");
    let _hosts = Submount(mnt.join("etc/hosts"));
    // Changes after the snapshot, in the same directories.
    fs::write(mnt.join("etc/conf"), b"v2").expect("write conf v2");
    fs::write(mnt.join("etc/new"), b"new").expect("write etc/new");
    let bin = File::open(mnt.join("bin")).expect("open unchanged file");
    let conf = File::open(mnt.join("etc/conf")).expect("open changed file");

    d.ok("PATCH", "/api/v1/containers/r/snapshots/before", None);

    assert!(
        common::is_mounted(&mnt.join("proc")),
        "tmpfs on proc was detached"
    );
    assert!(
        common::is_mounted(&mnt.join("etc/hosts")),
        "bind on etc/hosts was detached"
    );
    assert_eq!(read(&mnt.join("proc/marker")), b"in tmpfs");
    assert_eq!(read(&mnt.join("etc/hosts")), b"runtime hosts\n");
    assert_eq!(
        read(&mnt.join("etc/conf")),
        b"v1",
        "the changed file is the snapshot's"
    );
    assert!(
        fs::metadata(mnt.join("etc/new")).is_err(),
        "etc/new is gone"
    );
    let mut buf = [0u8; 16];
    let n = bin
        .read_at(&mut buf, 0)
        .expect("an unchanged file's descriptor keeps working");
    assert_eq!(&buf[..n], b"binary");
    let err = conf
        .read_at(&mut buf, 0)
        .expect_err("a changed file's descriptor goes stale");
    assert!(
        [Errno::ESTALE as i32, Errno::EIO as i32].contains(&err.raw_os_error().unwrap_or(0)),
        "{err}"
    );
    drop((bin, conf, _hosts, _proc));
    d.unmount("r", &mnt);
}
