//! Special files through a real kernel mount: FIFOs, character and block devices
//! (including 0:0 and the largest Linux numbers), and unix sockets.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use common::{expect_errno, mode_of, Mount};
use nix::errno::Errno;
use nix::sys::stat::{major, makedev, minor, mknod, Mode, SFlag};

fn mknod_dev(p: &Path, kind: SFlag, mode: u32, maj: u64, min: u64) {
    mknod(p, kind, Mode::from_bits_truncate(mode), makedev(maj, min))
        .unwrap_or_else(|e| panic!("mknod {} {maj}:{min}: {e}", p.display()));
}

fn rdev_of(p: &Path) -> (u64, u64) {
    let rdev = fs::symlink_metadata(p).expect("lstat").rdev();
    (major(rdev), minor(rdev))
}

#[test]
fn mknod_fifo_creates_fifo_that_passes_data() {
    let m = Mount::new();
    let p = m.join("fifo");
    mknod(&p, SFlag::S_IFIFO, Mode::from_bits_truncate(0o644), 0).expect("mknod fifo");
    let md = fs::symlink_metadata(&p).expect("lstat");
    assert!(md.file_type().is_fifo(), "not a fifo: {:o}", md.mode());
    assert_eq!(md.len(), 0);
    // O_RDWR on a FIFO does not block on Linux: the pipe lives in the kernel.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc_o_nonblock())
        .open(&p)
        .expect("open fifo");
    f.write_all(b"ping").expect("write fifo");
    let mut buf = [0u8; 4];
    f.read_exact(&mut buf).expect("read fifo");
    assert_eq!(&buf, b"ping");
    nix::unistd::mkfifo(&m.join("fifo2"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
    assert_eq!(mode_of(&m.join("fifo2")) & 0o7777, 0o600 & !common::umask());
    expect_errno(
        nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)),
        Errno::EEXIST,
        "mkfifo over existing",
    );
}

fn libc_o_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

#[test]
fn mknod_char_device_keeps_rdev() {
    let m = Mount::new();
    let p = m.join("null");
    mknod_dev(&p, SFlag::S_IFCHR, 0o666, 1, 3);
    let md = fs::symlink_metadata(&p).expect("lstat");
    assert!(
        md.file_type().is_char_device(),
        "not a char device: {:o}",
        md.mode()
    );
    assert_eq!(rdev_of(&p), (1, 3));
    assert_eq!(md.mode() & 0o7777, 0o666 & !common::umask());
}

#[test]
fn mknod_char_device_0_0_roundtrips() {
    // 0:0 character devices are overlayfs whiteouts: they must survive as such.
    let mut m = Mount::new();
    let p = m.join("whiteout");
    mknod_dev(&p, SFlag::S_IFCHR, 0o000, 0, 0);
    let md = fs::symlink_metadata(&p).expect("lstat");
    assert!(
        md.file_type().is_char_device(),
        "not a char device: {:o}",
        md.mode()
    );
    assert_eq!(md.rdev(), 0);
    m.remount();
    let md = fs::symlink_metadata(&p).expect("lstat after remount");
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), 0);
}

#[test]
fn mknod_block_device_keeps_rdev() {
    let m = Mount::new();
    let p = m.join("sda1");
    mknod_dev(&p, SFlag::S_IFBLK, 0o660, 8, 1);
    let md = fs::symlink_metadata(&p).expect("lstat");
    assert!(
        md.file_type().is_block_device(),
        "not a block device: {:o}",
        md.mode()
    );
    assert_eq!(rdev_of(&p), (8, 1));
    assert_eq!(md.mode() & 0o7777, 0o660 & !common::umask());
    assert_eq!(md.len(), 0);
}

#[test]
fn mknod_large_device_numbers_roundtrip() {
    let mut m = Mount::new();
    // Linux device numbers: 12-bit major, 20-bit minor.
    let cases = [
        ("c-max", SFlag::S_IFCHR, 4095, 1_048_575),
        ("c-wide-minor", SFlag::S_IFCHR, 259, 65_537),
        ("b-nvme", SFlag::S_IFBLK, 259, 3),
        ("b-wide", SFlag::S_IFBLK, 1024, 300_000),
    ];
    for (name, kind, maj, min) in cases {
        mknod_dev(&m.join(name), kind, 0o640, maj, min);
        assert_eq!(rdev_of(&m.join(name)), (maj, min), "{name}");
    }
    m.remount();
    for (name, kind, maj, min) in cases {
        let md = fs::symlink_metadata(m.join(name)).expect("lstat");
        let is_kind = if kind == SFlag::S_IFCHR {
            md.file_type().is_char_device()
        } else {
            md.file_type().is_block_device()
        };
        assert!(is_kind, "{name} kind after remount: {:o}", md.mode());
        assert_eq!(rdev_of(&m.join(name)), (maj, min), "{name} after remount");
    }
}

#[test]
fn unix_socket_bind_creates_socket_that_connects() {
    let m = Mount::new();
    let p = m.join("app.sock");
    let listener = UnixListener::bind(&p).expect("bind unix socket in mount");
    let md = fs::symlink_metadata(&p).expect("lstat");
    assert!(md.file_type().is_socket(), "not a socket: {:o}", md.mode());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("server read");
        s.write_all(&buf).expect("server echo");
    });
    let mut c = UnixStream::connect(&p).expect("connect through mount path");
    c.write_all(b"hello").expect("client write");
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).expect("client read");
    assert_eq!(&buf, b"hello");
    server.join().expect("server thread");
    fs::remove_file(&p).expect("unlink socket");
    expect_errno(fs::symlink_metadata(&p), Errno::ENOENT, "socket gone");
}

#[test]
fn mknod_socket_node_persists() {
    let mut m = Mount::new();
    let p = m.join("s");
    mknod(&p, SFlag::S_IFSOCK, Mode::from_bits_truncate(0o755), 0).expect("mknod socket");
    m.remount();
    let md = fs::symlink_metadata(&p).expect("lstat");
    assert!(
        md.file_type().is_socket(),
        "not a socket after remount: {:o}",
        md.mode()
    );
    assert_eq!(md.mode() & 0o7777, 0o755 & !common::umask());
}

#[test]
fn mknod_regular_file_creates_empty_file() {
    let m = Mount::new();
    let p = m.join("r");
    mknod(&p, SFlag::S_IFREG, Mode::from_bits_truncate(0o640), 0).expect("mknod S_IFREG");
    let md = fs::symlink_metadata(&p).expect("lstat");
    assert!(md.is_file());
    assert_eq!(md.len(), 0);
    assert_eq!(md.mode() & 0o7777, 0o640 & !common::umask());
    fs::write(&p, b"data").expect("write");
    assert_eq!(fs::read(&p).expect("read"), b"data");
    expect_errno(
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            makedev(1, 3),
        ),
        Errno::EEXIST,
        "mknod over existing",
    );
}
