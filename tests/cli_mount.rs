//! Standard mounting through the `mount.fuse.snapfs` helper: `mount -t fuse.snapfs
//! STORE:CONTAINER DIR [-o ...]`, an fstab line (a temporary fstab given to `mount -T`, never
//! /etc/fstab), plain `umount DIR`, and the helper's own argument handling.
//!
//! The `mount(8)` tests need `/sbin/mount.fuse.snapfs` linked to the binary under test, which
//! `scripts/test.sh` installs (`install_mount_helper` in scripts/common.sh).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{is_mounted, mount_source, require_fuse, run, snapfs_bin, wait_until, Output, Store};

/// Panics (never skips) unless /sbin/mount.fuse.snapfs runs the binary under test.
fn require_helper() {
    require_fuse();
    let helper = Path::new("/sbin/mount.fuse.snapfs");
    let target = fs::canonicalize(helper).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run scripts/test.sh, or `source scripts/common.sh && \
             install_mount_helper`",
            helper.display()
        )
    });
    let me = fs::canonicalize(snapfs_bin()).expect("canonical test binary");
    assert_eq!(
        target,
        me,
        "{} points at another binary: run `source scripts/common.sh && install_mount_helper`",
        helper.display()
    );
}

fn source(store: &Store, container: &str) -> String {
    format!("{}:{container}", store.path().display())
}

/// `mount ARGS` (util-linux).
fn mount(args: &[&str]) -> Output {
    run(Command::new("mount").args(args).current_dir("/"))
}

fn umount(mnt: &Path) -> Output {
    run(Command::new("umount").arg(mnt).current_dir("/"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    v.sort();
    v
}

/// Success with nothing printed.
#[track_caller]
fn silent_ok(out: &Output) {
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stdout.trim().is_empty() && out.stderr.trim().is_empty(),
        "printed something: {}",
        out.describe()
    );
}

#[test]
fn mount_t_write_plain_umount_remount() {
    require_helper();
    let store = Store::new();
    let mnt = store.mountpoint("mnt");
    let src = source(&store, "default");

    silent_ok(&mount(&["-t", "fuse.snapfs", &src, s(&mnt)]));
    assert!(is_mounted(&mnt));
    assert_eq!(mount_source(&mnt).as_deref(), Some(src.as_str()));
    let proc_mounts = fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    assert!(
        proc_mounts
            .lines()
            .any(|l| l.split(' ').next() == Some(src.as_str())),
        "{src} not in /proc/mounts"
    );
    fs::create_dir(mnt.join("dir")).expect("mkdir");
    fs::write(mnt.join("dir/file"), "persisted").expect("write");
    let pid = store.daemon_pid().expect("daemon pid");

    // Plain util-linux umount: the daemon notices, forgets the mount and (started on
    // demand, now idle) exits.
    let out = umount(&mnt);
    assert!(out.status.success(), "{}", out.describe());
    assert!(!is_mounted(&mnt));
    assert!(
        wait_until(Duration::from_secs(30), || !common::alive(pid)),
        "daemon {pid} did not notice the umount"
    );
    assert!(store.daemon_pid().is_none(), "pid file left behind");

    // Remount: the data is there.
    silent_ok(&mount(&["-t", "fuse.snapfs", &src, s(&mnt)]));
    assert_eq!(
        fs::read_to_string(mnt.join("dir/file")).expect("read"),
        "persisted"
    );
    // `.snapshots` is hidden by default.
    assert_eq!(listing(&mnt), ["dir"]);
    let v = store.json(&["containers", "show", "default"]);
    assert_eq!(v["status"], "running");
    assert_eq!(v["mountpoint"], s(&mnt));

    // Plain umount, then the API sees it stopped (same or a fresh daemon).
    let out = umount(&mnt);
    assert!(out.status.success(), "{}", out.describe());
    assert!(wait_until(Duration::from_secs(30), || store
        .daemon_pid()
        .is_none()));
    let v = store.json(&["containers", "show", "default"]);
    assert_eq!(v["status"], "stopped");
}

#[test]
fn mount_t_with_options_and_a_new_container() {
    require_helper();
    let store = Store::new();
    let mnt = store.mountpoint("web");
    let src = source(&store, "web");
    silent_ok(&mount(&[
        "-t",
        "fuse.snapfs",
        "-o",
        "rw,defaults,nofail,_netdev,noatime,x-systemd.automount,snapdir=visible,admin_uid=1000",
        &src,
        s(&mnt),
    ]));
    assert_eq!(mount_source(&mnt).as_deref(), Some(src.as_str()));
    assert_eq!(listing(&mnt), [".snapshots"]);
    // The container was created on first mount.
    let v = store.json(&["containers", "show", "web"]);
    assert_eq!(v["status"], "running");

    // A second container of the same store beside it, through the same daemon.
    let mnt2 = store.mountpoint("default");
    silent_ok(&mount(&[
        "-t",
        "fuse.snapfs",
        &source(&store, "default"),
        s(&mnt2),
    ]));
    fs::write(mnt.join("w"), "web").expect("write");
    assert!(!mnt2.join("w").exists());

    // A snapshot taken through the CLI shows in the visible .snapshots directory.
    store
        .cli(&["snapshots", "create", "--container", "web", "--alias", "s1"])
        .ok();
    let snaps = listing(&mnt.join(".snapshots"));
    assert!(snaps.contains(&"s1".to_string()), "{snaps:?}");

    assert!(umount(&mnt2).status.success());
    assert!(umount(&mnt).status.success());
    assert!(!is_mounted(&mnt) && !is_mounted(&mnt2));
}

#[test]
fn fstab_line_in_a_temporary_fstab() {
    require_helper();
    let store = Store::new();
    let mnt = store.mountpoint("fstab-mnt");
    let fstab: PathBuf = store.path().with_file_name("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} fuse.snapfs defaults,noauto,nofail,_netdev,snapdir=visible 0 0\n",
            source(&store, "default"),
            s(&mnt)
        ),
    )
    .expect("write fstab");
    // `mount DIR` with the line looked up in the given fstab.
    silent_ok(&mount(&["-T", s(&fstab), s(&mnt)]));
    assert_eq!(
        mount_source(&mnt).as_deref(),
        Some(source(&store, "default").as_str())
    );
    assert_eq!(listing(&mnt), [".snapshots"]);
    fs::write(mnt.join("f"), "x").expect("write");
    let out = umount(&mnt);
    assert!(out.status.success(), "{}", out.describe());
    assert!(!is_mounted(&mnt));
    assert!(wait_until(Duration::from_secs(30), || store
        .daemon_pid()
        .is_none()));
    silent_ok(&mount(&["-T", s(&fstab), s(&mnt)]));
    assert_eq!(fs::read_to_string(mnt.join("f")).expect("read"), "x");
    assert!(umount(&mnt).status.success());
}

#[test]
fn helper_by_subcommand_and_by_name() {
    require_fuse();
    let store = Store::new();

    // `snapfs mount-helper SOURCE DIR -o ...`.
    let mnt = store.mountpoint("a");
    silent_ok(&run(Command::new(snapfs_bin())
        .args(["mount-helper", &source(&store, "default"), s(&mnt)])
        .args(["-o", "rw,snapdir=visible"])
        .current_dir("/")));
    assert_eq!(listing(&mnt), [".snapshots"]);
    assert_eq!(
        mount_source(&mnt).as_deref(),
        Some(source(&store, "default").as_str())
    );

    // The binary run under the name mount.fuse.snapfs, with the flags mount(8) adds.
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("mount.fuse.snapfs");
    std::os::unix::fs::symlink(snapfs_bin(), &link).expect("symlink");
    let mnt2 = store.mountpoint("b");
    silent_ok(&run(Command::new(&link)
        .args([&source(&store, "other"), s(&mnt2), "-n", "-o", "rw"])
        .args(["-t", "fuse.snapfs"])
        .current_dir("/")));
    assert_eq!(listing(&mnt2), Vec::<String>::new());
    assert_eq!(
        mount_source(&mnt2).as_deref(),
        Some(source(&store, "other").as_str())
    );
    // `-f` (fake) mounts nothing.
    let mnt3 = store.mountpoint("c");
    silent_ok(&run(Command::new(&link)
        .args(["-f", &source(&store, "default"), s(&mnt3)])
        .current_dir("/")));
    assert!(!is_mounted(&mnt3));

    common::snapfs(["umount", s(&mnt)]).ok();
    common::snapfs(["umount", s(&mnt2)]).ok();
}

#[test]
fn helper_misuse_is_one_line_and_mounts_nothing() {
    require_fuse();
    let store = Store::new();
    let mnt = store.mountpoint("m");
    let src = source(&store, "default");
    let missing_store = store.path().with_file_name("nope");
    let bad_src = format!("{}:default", missing_store.display());
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec![&src],
        vec!["no-colon", s(&mnt)],
        vec!["/store:", s(&mnt)],
        vec![&src, s(&mnt), "-o", "bogus"],
        vec![&src, s(&mnt), "-o", "ro"],
        vec![&src, s(&mnt), "-o", "snapdir=maybe"],
        vec![&src, s(&mnt), "-o", "admin_uid=root"],
        vec![&src, s(&mnt), "-o"],
        vec![&src, s(&mnt), "-t", "ext4"],
        vec![&src, s(&mnt), "extra"],
        vec![&bad_src, s(&mnt)],
        vec![&src, "/no/such/mountpoint"],
    ];
    for args in &cases {
        let out = run(Command::new(snapfs_bin())
            .arg("mount-helper")
            .args(args)
            .current_dir("/"));
        out.one_line_error();
        assert!(!is_mounted(&mnt), "{args:?} mounted something");
    }
    assert!(!missing_store.exists());
}

#[test]
fn mount_t_failures_leave_nothing_mounted() {
    require_helper();
    let store = Store::new();
    let mnt = store.mountpoint("m");
    let src = source(&store, "default");
    for (opts, source) in [
        ("bogus_option", src.clone()),
        ("ro", src.clone()),
        (
            "rw",
            format!("{}:default", store.path().with_file_name("nope").display()),
        ),
    ] {
        let out = mount(&["-t", "fuse.snapfs", "-o", opts, &source, s(&mnt)]);
        assert!(!out.status.success(), "{}", out.describe());
        assert!(out.stderr.contains("snapfs: error: "), "{}", out.describe());
        assert!(!is_mounted(&mnt));
    }
}
