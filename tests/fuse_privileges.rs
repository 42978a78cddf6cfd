//! Privileges through a real mount: the daemon, not the kernel, drops setuid/setgid bits and
//! file capabilities on write, truncate, fallocate and chown (FUSE_HANDLE_KILLPRIV_V2, asked
//! for so that the kernel stops looking up `security.capability` before every write). Each
//! expectation below is what ext4 does on this kernel.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::{chmod, mode_of, q, sh_as, Mount, USER_A};
use nix::unistd::{chown, Gid, Uid};
use rustix::fs::{getxattr, setxattr, XattrFlags};

const CAP: &str = "security.capability";

/// A valid `vfs_cap_data` (revision 2, effective, cap_net_raw permitted): what `setcap
/// cap_net_raw+ep` writes.
const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn set_cap(p: &Path) {
    setxattr(p, CAP, &CAP_NET_RAW_EP, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {CAP} on {}: {e}", p.display()));
}

fn has_cap(p: &Path) -> bool {
    let mut buf = [0u8; 64];
    match getxattr(p, CAP, &mut buf) {
        Ok(n) => {
            assert_eq!(&buf[..n], &CAP_NET_RAW_EP, "capability value");
            true
        }
        Err(rustix::io::Errno::NODATA) => false,
        Err(e) => panic!("getxattr {CAP} on {}: {e}", p.display()),
    }
}

fn append_as_root(p: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("append to {}: {e}", p.display()));
}

#[test]
fn writes_drop_setid_bits_as_the_kernel_would() {
    let mut m = Mount::new();
    let d = m.join("shared");
    common::mkdir_mode(&d, 0o777);
    // Another user's write: setuid goes, setgid only together with group execute.
    let f = d.join("f");
    fs::write(&f, b"a").expect("write");
    for (before, after) in [(0o6777, 0o0777), (0o6747, 0o2747), (0o2777, 0o0777)] {
        chmod(&f, before);
        sh_as(USER_A, USER_A, &format!("printf b >> {}", q(&f))).assert_success();
        assert_eq!(mode_of(&f) & 0o7777, after, "others' write on {before:o}");
    }
    // Root (CAP_FSETID) keeps them, write after write (the kernel caches "nothing to drop").
    chmod(&f, 0o6755);
    for _ in 0..3 {
        append_as_root(&f, b"c");
    }
    assert_eq!(
        mode_of(&f) & 0o7777,
        0o6755,
        "root's writes keep setid bits"
    );
    // ... and then another user's write still drops them.
    chmod(&f, 0o6777);
    sh_as(USER_A, USER_A, &format!("printf d >> {}", q(&f))).assert_success();
    assert_eq!(mode_of(&f) & 0o7777, 0o0777, "others' write after root's");
    assert_eq!(fs::read(&f).expect("read"), b"abbbcccd");
    m.remount();
    assert_eq!(mode_of(&f) & 0o7777, 0o0777, "after remount");
}

#[test]
fn truncate_and_fallocate_drop_setid_bits_unless_root() {
    let m = Mount::new();
    let d = m.join("shared");
    common::mkdir_mode(&d, 0o777);
    let f = d.join("f");
    fs::write(&f, b"0123456789").expect("write");
    chmod(&f, 0o6777);
    sh_as(0, 0, &format!("truncate -s 5 {}", q(&f))).assert_success();
    assert_eq!(mode_of(&f) & 0o7777, 0o6777, "root's truncate keeps them");
    sh_as(USER_A, USER_A, &format!("truncate -s 3 {}", q(&f))).assert_success();
    assert_eq!(mode_of(&f) & 0o7777, 0o0777, "others' truncate drops them");
    chmod(&f, 0o6777);
    sh_as(USER_A, USER_A, &format!("fallocate -l 8192 {}", q(&f))).assert_success();
    assert_eq!(mode_of(&f) & 0o7777, 0o0777, "others' fallocate drops them");
    assert_eq!(fs::metadata(&f).expect("stat").len(), 8192);
    assert_eq!(&fs::read(&f).expect("read")[..4], b"012\0");
}

#[test]
fn chown_drops_setid_bits_even_by_root_but_not_on_directories() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    chmod(&f, 0o6745);
    chown(&f, Some(Uid::from_raw(USER_A)), None).expect("chown");
    assert_eq!(
        mode_of(&f) & 0o7777,
        0o2745,
        "setgid without group execute stays"
    );
    let d = m.join("d");
    fs::create_dir(&d).expect("mkdir");
    chmod(&d, 0o2775);
    chown(&d, Some(Uid::from_raw(USER_A)), Some(Gid::from_raw(USER_A))).expect("chown dir");
    assert_eq!(mode_of(&d) & 0o7777, 0o2775, "a directory keeps setgid");
}

#[test]
fn file_capabilities_go_on_write_truncate_and_chown_but_stay_on_chmod_and_read() {
    let mut m = Mount::new();
    let f = m.join("ping");
    fs::write(&f, b"\x7fELF").expect("write");
    set_cap(&f);
    assert!(has_cap(&f), "capability set");
    chmod(&f, 0o755);
    assert_eq!(fs::read(&f).expect("read"), b"\x7fELF");
    assert!(has_cap(&f), "chmod and read keep capabilities");
    m.remount();
    assert!(has_cap(&f), "capability survives a remount");

    append_as_root(&f, b"!");
    assert!(!has_cap(&f), "a write by root drops capabilities");
    // Dropped for good: the next writes find nothing to drop and the file reads right.
    append_as_root(&f, b"?");
    assert_eq!(fs::read(&f).expect("read"), b"\x7fELF!?");

    set_cap(&f);
    sh_as(0, 0, &format!("truncate -s 4 {}", q(&f))).assert_success();
    assert!(!has_cap(&f), "truncate drops capabilities");

    set_cap(&f);
    chown(&f, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).expect("chown");
    assert!(!has_cap(&f), "chown drops capabilities");

    m.remount();
    assert!(!has_cap(&f), "still gone after a remount");
    assert_eq!(fs::read(&f).expect("read"), b"\x7fELF");
}
