//! Extended attributes through a real kernel mount (syscalls via rustix, and the
//! `getfattr`/`setfattr` tools from the `attr` package).

mod common;

use std::fs;
use std::path::Path;

use common::{expect_errno, q, sh, Mount};
use nix::errno::Errno;
use rustix::fs::{
    getxattr, getxattr_query, lgetxattr, listxattr, listxattr_query, llistxattr, lsetxattr,
    removexattr, setxattr, XattrFlags,
};

fn get(p: &Path, name: &str) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let n = getxattr(p, name, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf)
}

fn list(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 70_000];
    let n = listxattr(p, &mut buf[..]).expect("listxattr");
    let mut v: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).expect("utf8 name"))
        .collect();
    v.sort();
    v
}

fn set(p: &Path, name: &str, value: &[u8]) {
    setxattr(p, name, value, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
}

#[test]
fn xattr_set_get_list_remove_roundtrips() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    assert!(list(&f).is_empty(), "new file has no xattrs");
    set(&f, "user.one", b"first value");
    set(&f, "user.two", b"");
    set(&f, "user.bin", &[0, 1, 2, 0, 255, 0]);
    assert_eq!(get(&f, "user.one").expect("get one"), b"first value");
    assert_eq!(get(&f, "user.two").expect("get empty value"), b"");
    assert_eq!(
        get(&f, "user.bin").expect("get binary"),
        [0, 1, 2, 0, 255, 0]
    );
    assert_eq!(list(&f), ["user.bin", "user.one", "user.two"]);
    set(&f, "user.one", b"replaced");
    assert_eq!(get(&f, "user.one").expect("get replaced"), b"replaced");
    removexattr(&f, "user.one").expect("removexattr");
    expect_errno(get(&f, "user.one"), Errno::ENODATA, "get removed");
    assert_eq!(list(&f), ["user.bin", "user.two"]);
    expect_errno(
        removexattr(&f, "user.one"),
        Errno::ENODATA,
        "remove missing",
    );
    // The file's data is untouched.
    assert_eq!(fs::read(&f).expect("read"), b"x");
}

#[test]
fn xattr_missing_name_fails_enodata() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    expect_errno(get(&f, "user.nothing"), Errno::ENODATA, "get missing");
    set(&f, "user.some", b"1");
    expect_errno(
        get(&f, "user.nothing"),
        Errno::ENODATA,
        "get missing among others",
    );
    expect_errno(
        getxattr_query(&f, "user.nothing"),
        Errno::ENODATA,
        "size query of missing",
    );
}

#[test]
fn xattr_create_flag_on_existing_fails_eexist() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    setxattr(&f, "user.k", b"v1", XattrFlags::CREATE).expect("XATTR_CREATE new");
    expect_errno(
        setxattr(&f, "user.k", b"v2", XattrFlags::CREATE),
        Errno::EEXIST,
        "XATTR_CREATE existing",
    );
    assert_eq!(get(&f, "user.k").expect("get"), b"v1", "value unchanged");
}

#[test]
fn xattr_replace_flag_on_missing_fails_enodata() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    expect_errno(
        setxattr(&f, "user.k", b"v", XattrFlags::REPLACE),
        Errno::ENODATA,
        "XATTR_REPLACE missing",
    );
    expect_errno(get(&f, "user.k"), Errno::ENODATA, "nothing created");
    set(&f, "user.k", b"v1");
    setxattr(&f, "user.k", b"v2", XattrFlags::REPLACE).expect("XATTR_REPLACE existing");
    assert_eq!(get(&f, "user.k").expect("get"), b"v2");
}

#[test]
fn xattr_small_buffer_fails_erange() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    set(&f, "user.ten", b"0123456789");
    set(&f, "user.other", b"z");
    assert_eq!(getxattr_query(&f, "user.ten").expect("size query"), 10);
    let mut small = [0u8; 9];
    expect_errno(
        getxattr(&f, "user.ten", &mut small[..]),
        Errno::ERANGE,
        "getxattr 9-byte buffer",
    );
    let mut exact = [0u8; 10];
    assert_eq!(
        getxattr(&f, "user.ten", &mut exact[..]).expect("exact buffer"),
        10
    );
    assert_eq!(&exact, b"0123456789");
    let needed = listxattr_query(&f).expect("list size query");
    assert_eq!(needed, "user.ten\0user.other\0".len());
    let mut lsmall = vec![0u8; needed - 1];
    expect_errno(
        listxattr(&f, &mut lsmall[..]),
        Errno::ERANGE,
        "listxattr small buffer",
    );
}

#[test]
fn xattr_large_value_and_many_names_roundtrip() {
    let mut m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    let big = common::random_bytes(77, 65_536);
    set(&f, "user.big", &big);
    let long_name = format!("user.{}", "n".repeat(250));
    set(&f, &long_name, b"long name");
    for i in 0..100 {
        set(
            &f,
            &format!("user.k{i:03}"),
            format!("value {i}").as_bytes(),
        );
    }
    let check = |f: &Path| {
        assert_eq!(get(f, "user.big").expect("get big"), big, "64 KiB value");
        assert_eq!(get(f, &long_name).expect("get long name"), b"long name");
        let names = list(f);
        assert_eq!(names.len(), 102, "names listed");
        for i in 0..100 {
            assert_eq!(
                get(f, &format!("user.k{i:03}")).expect("get k"),
                format!("value {i}").as_bytes()
            );
        }
    };
    check(&f);
    m.remount();
    check(&f);
}

#[test]
fn xattr_on_directory_and_trusted_namespace_roundtrip() {
    let mut m = Mount::new();
    let d = m.join("d");
    fs::create_dir(&d).expect("mkdir");
    set(&d, "user.dir", b"on a dir");
    set(&d, "trusted.overlay.opaque", b"y");
    std::os::unix::fs::symlink("d", m.join("l")).expect("symlink");
    // trusted.* may be set on a symlink itself (user.* may not, by kernel rule).
    lsetxattr(
        m.join("l"),
        "trusted.link",
        b"on the link",
        XattrFlags::empty(),
    )
    .expect("lsetxattr");
    m.remount();
    assert_eq!(get(&d, "user.dir").expect("get"), b"on a dir");
    assert_eq!(
        get(&d, "trusted.overlay.opaque").expect("get trusted"),
        b"y"
    );
    let mut buf = [0u8; 100];
    let n = lgetxattr(m.join("l"), "trusted.link", &mut buf[..]).expect("lgetxattr");
    assert_eq!(&buf[..n], b"on the link");
    let n = llistxattr(m.join("l"), &mut buf[..]).expect("llistxattr");
    assert_eq!(&buf[..n], b"trusted.link\0");
    // Through the link, the directory's attributes are seen.
    assert_eq!(
        get(&m.join("l"), "user.dir").expect("get via link"),
        b"on a dir"
    );
}

#[test]
fn xattr_follows_the_inode_across_rename_and_link() {
    let m = Mount::new();
    let f = m.join("f");
    fs::write(&f, b"x").expect("write");
    set(&f, "user.tag", b"kept");
    fs::rename(&f, m.join("g")).expect("rename");
    assert_eq!(
        get(&m.join("g"), "user.tag").expect("get after rename"),
        b"kept"
    );
    fs::hard_link(m.join("g"), m.join("h")).expect("link");
    set(&m.join("h"), "user.tag", b"via h");
    assert_eq!(
        get(&m.join("g"), "user.tag").expect("get via other link"),
        b"via h"
    );
    // A new file with the old name starts clean.
    fs::write(&f, b"y").expect("write");
    assert!(list(&f).is_empty(), "recreated file inherited xattrs");
}

#[test]
fn xattr_setfattr_getfattr_tools_roundtrip() {
    let m = Mount::new();
    let f = m.join("tool file");
    fs::write(&f, b"x").expect("write");
    sh(
        m.path(),
        &format!("setfattr -n user.cli -v hello {}", q(&f)),
    )
    .assert_success();
    sh(
        m.path(),
        &format!("setfattr -n user.hex -v 0x00ff10 {}", q(&f)),
    )
    .assert_success();
    let out = sh(
        m.path(),
        &format!("getfattr --only-values -n user.cli {}", q(&f)),
    );
    assert_eq!(out.assert_success().stdout, "hello");
    assert_eq!(get(&f, "user.hex").expect("get hex"), [0x00, 0xff, 0x10]);
    let out = sh(
        m.path(),
        &format!("getfattr -d -m - --absolute-names {}", q(&f)),
    );
    let text = &out.assert_success().stdout;
    assert!(
        text.contains("user.cli=\"hello\""),
        "getfattr -d output: {text}"
    );
    assert!(
        text.contains("user.hex=0sAP8Q"),
        "getfattr -d output: {text}"
    );
    sh(m.path(), &format!("setfattr -x user.cli {}", q(&f))).assert_success();
    let out = sh(m.path(), &format!("getfattr -n user.cli {}", q(&f)));
    assert!(!out.success());
    assert!(
        out.stderr.contains("No such attribute"),
        "expected ENODATA: {}",
        out.describe()
    );
}
