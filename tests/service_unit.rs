//! Service management: `snapfs install-unit` writes a unit `systemd-analyze verify` accepts,
//! and `snapfs serve` speaks systemd's notify protocol (READY=1 once its socket answers,
//! STOPPING=1 on SIGTERM) as `Type=notify` needs. (No systemd runs as PID 1 here, so the
//! unit itself is verified, not booted.)

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run, snapfs, snapfs_bin, Store};

#[test]
fn install_unit_writes_a_unit_systemd_accepts() {
    let store = Store::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let units = dir.path().join("units");
    let out = snapfs([
        "install-unit",
        &store.path().to_string_lossy(),
        "--dir",
        &units.to_string_lossy(),
    ]);
    let text = out.ok().to_string();
    let name = format!(
        "snapfs-{}.service",
        store.path().file_name().expect("name").to_string_lossy()
    );
    let unit = units.join(&name);
    let body = std::fs::read_to_string(&unit).expect("unit written");
    assert!(body.contains("Type=notify"), "{body}");
    // Mounts outlive a daemon crash: their descriptors go to the unit's fd store.
    assert!(body.contains("FileDescriptorStoreMax="), "{body}");
    assert!(body.contains(" restart \""), "{body}");
    assert!(
        body.contains(&format!("serve \"{}\"", store.path().display())),
        "{body}"
    );
    assert!(
        text.contains(&format!("systemctl enable --now {name}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("x-systemd.requires={name}")) && text.contains("fuse.snapfs"),
        "{text}"
    );
    let verify = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit));
    assert!(
        verify.success(),
        "systemd-analyze verify: {}",
        verify.describe()
    );
    // Misuse: a relative path, a directory that is not a store.
    snapfs([
        "install-unit",
        "relative",
        "--dir",
        &units.to_string_lossy(),
    ])
    .assert_one_line_error();
    snapfs([
        "install-unit",
        &dir.path().to_string_lossy(),
        "--dir",
        &units.to_string_lossy(),
    ])
    .assert_one_line_error();
}

#[test]
fn serve_notifies_ready_and_stopping() {
    let store = Store::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut child = Command::new(snapfs_bin())
        .arg("serve")
        .arg(store.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means the API answers.
    let out = snapfs([
        "containers",
        "list",
        "--store",
        &store.path().to_string_lossy(),
    ]);
    assert!(out.ok().contains("default"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = child.wait().expect("wait");
    assert!(status.success(), "serve exited with {status}");
}
