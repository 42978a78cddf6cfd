// Dropping privileges on write, truncate, fallocate, copy and chown (the mount takes this over
// from the kernel: FUSE_HANDLE_KILLPRIV_V2). Included by core_fs.rs once per backend.

const CAP: &[u8] = b"security.capability";
const USER: snapfs::fs::Caller = snapfs::fs::Caller {
    uid: 1000,
    gid: 1000,
};

fn set_mode(fs: &Fs, ino: Ino, mode: u32) {
    let set = SetAttr {
        mode: Some(mode),
        ..Default::default()
    };
    fs.setattr(ino, &set, ME).expect("chmod");
}

fn perm(fs: &Fs, ino: Ino) -> u16 {
    fs.getattr(ino).expect("getattr").perm
}

fn has_cap(fs: &Fs, ino: Ino) -> bool {
    let r = fs.getxattr(ino, CAP);
    if r.is_ok() {
        return true;
    }
    assert_eq!(errno(r), libc::ENODATA, "getxattr");
    false
}

#[test]
fn write_with_kill_clears_setuid_and_group_exec_setgid_only() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "f");
    for (before, after) in [
        (0o6755, 0o0755),
        (0o6745, 0o2745),
        (0o4700, 0o0700),
        (0o2710, 0o0710),
        (0o1777, 0o1777),
    ] {
        set_mode(&fs, ino, before);
        fs.write(ino, Some(fh), 0, b"x", true).unwrap();
        assert_eq!(perm(&fs, ino), after, "write with kill on {before:o}");
    }
    // Without the kill flag (the writer has CAP_FSETID) the bits stay.
    set_mode(&fs, ino, 0o6755);
    fs.write(ino, Some(fh), 0, b"y", false).unwrap();
    assert_eq!(perm(&fs, ino), 0o6755);
    // An empty write changes nothing.
    fs.write(ino, Some(fh), 0, b"", true).unwrap();
    assert_eq!(perm(&fs, ino), 0o6755);
}

#[test]
fn capabilities_go_on_write_truncate_fallocate_copy_and_chown_not_chmod() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "bin");
    let (src, sfh) = file(&fs, "src");
    fs.write(src, Some(sfh), 0, b"payload", false).unwrap();
    let cap = || fs.setxattr(ino, CAP, b"\x01\x00\x00\x02\x00\x20\x00\x00", 0).unwrap();

    cap();
    set_mode(&fs, ino, 0o755);
    fs.read(ino, 0, 10).unwrap();
    assert!(has_cap(&fs, ino), "chmod and read keep capabilities");

    fs.write(ino, Some(fh), 0, b"x", false).unwrap();
    assert!(!has_cap(&fs, ino), "a write (even by root) drops capabilities");

    cap();
    let trunc = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(ino, &trunc, ME).unwrap();
    assert!(!has_cap(&fs, ino), "truncate drops capabilities");

    cap();
    fs.fallocate(ino, 0, 4096, 0, false).unwrap();
    assert!(!has_cap(&fs, ino), "fallocate drops capabilities");

    cap();
    assert_eq!(fs.copy_file_range(src, 0, ino, 0, 7, false).unwrap(), 7);
    assert!(!has_cap(&fs, ino), "copy_file_range drops capabilities");
    assert_eq!(fs.read(ino, 0, 7).unwrap(), b"payload");

    cap();
    let chown = SetAttr {
        uid: Some(0),
        ..Default::default()
    };
    fs.setattr(ino, &chown, ME).unwrap();
    assert!(!has_cap(&fs, ino), "chown drops capabilities");
    // Other attributes are untouched.
    let mut names = fs.listxattr(ino).unwrap();
    names.retain(|b| *b != 0);
    assert!(names.is_empty(), "no attributes left: {names:?}");
}

#[test]
fn truncate_chown_fallocate_and_copy_drop_setid_bits_like_the_kernel() {
    let fs = new_fs();
    let (ino, _) = file(&fs, "f");
    let (src, sfh) = file(&fs, "src");
    fs.write(src, Some(sfh), 0, b"abc", false).unwrap();
    let trunc = |size| SetAttr {
        size: Some(size),
        ..Default::default()
    };
    // Root (CAP_FSETID) truncates without losing the bits; anyone else loses them.
    set_mode(&fs, ino, 0o6755);
    fs.setattr(ino, &trunc(10), ME).unwrap();
    assert_eq!(perm(&fs, ino), 0o6755, "root truncate");
    fs.setattr(ino, &trunc(5), USER).unwrap();
    assert_eq!(perm(&fs, ino), 0o0755, "user truncate");
    // chown drops them whoever does it (setgid only with group execute), unless the same
    // request sets a mode.
    set_mode(&fs, ino, 0o6745);
    let chown = SetAttr {
        uid: Some(1000),
        gid: Some(1000),
        ..Default::default()
    };
    fs.setattr(ino, &chown, ME).unwrap();
    assert_eq!(perm(&fs, ino), 0o2745, "chown by root");
    let chown_mode = SetAttr {
        uid: Some(0),
        mode: Some(0o6755),
        ..Default::default()
    };
    fs.setattr(ino, &chown_mode, ME).unwrap();
    assert_eq!(perm(&fs, ino), 0o6755, "explicit mode wins");
    fs.fallocate(ino, 0, 100, 0, true).unwrap();
    assert_eq!(perm(&fs, ino), 0o0755, "fallocate with kill");
    set_mode(&fs, ino, 0o6755);
    fs.copy_file_range(src, 0, ino, 0, 3, true).unwrap();
    assert_eq!(perm(&fs, ino), 0o0755, "copy_file_range with kill");
    // Directories keep setgid on chown (it means "inherit the group").
    let d = fs.mkdir(ROOT_INO, b"d", 0o2775, ME).expect("mkdir").0;
    fs.setattr(d, &chown, ME).unwrap();
    assert_eq!(perm(&fs, d), 0o2775, "directory setgid kept on chown");
}

#[test]
fn cached_attributes_follow_every_change_small_and_large() {
    // Attributes go through the store's metadata cache; values over its size limit are not
    // cached, so a large value replacing a cached small one must evict it.
    let fs = new_fs();
    let (ino, fh) = file(&fs, "f");
    let small = b"s".to_vec();
    let large = vec![b'L'; 10_000];
    for value in [&small, &large, &small, &large] {
        fs.setxattr(ino, b"user.v", value, 0).unwrap();
        assert_eq!(&fs.getxattr(ino, b"user.v").unwrap(), value);
    }
    fs.removexattr(ino, b"user.v").unwrap();
    assert_eq!(errno(fs.getxattr(ino, b"user.v")), libc::ENODATA);
    // A capability looked up (and cached as absent) by a write, then set, then dropped again.
    fs.write(ino, Some(fh), 0, b"x", false).unwrap();
    assert!(!has_cap(&fs, ino));
    fs.setxattr(ino, CAP, b"cap", 0).unwrap();
    assert!(has_cap(&fs, ino), "a cached absence is replaced by the new value");
    fs.write(ino, Some(fh), 0, b"y", false).unwrap();
    assert!(!has_cap(&fs, ino));
}
