#[allow(unused_imports)]
use snapfs::ids::{ContainerId, DataId, Epoch, Ino};
// Core cases, included by core_fs.rs once per backend (`new_fs` comes from the includer).

#[test]
fn write_read_across_blocks_round_trips() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "f");
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(fs.write(ino, Some(fh), 100, &data, false).unwrap(), 20_000);
    let got = fs.read(ino, 0, 30_000).unwrap();
    assert_eq!(got.len(), 20_100);
    assert!(got[..100].iter().all(|b| *b == 0));
    assert_eq!(&got[100..], &data[..]);
    assert_eq!(fs.getattr(ino).unwrap().size, 20_100);
}

#[test]
fn sparse_write_far_offset_keeps_holes_zero_and_unallocated() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "sparse");
    let off = 5u64 << 30;
    fs.write(ino, Some(fh), off, b"tail", false).unwrap();
    let a = fs.getattr(ino).unwrap();
    assert_eq!(a.size, off + 4);
    assert_eq!(a.alloc, 4);
    assert_eq!(fs.read(ino, off - 2, 10).unwrap(), b"\0\0tail");
    assert_eq!(fs.read(ino, 1 << 30, 8).unwrap(), vec![0u8; 8]);
    assert_eq!(fs.lseek(ino, 0, libc::SEEK_DATA).unwrap(), off - off % 4096);
    assert_eq!(fs.lseek(ino, 0, libc::SEEK_HOLE).unwrap(), 0);
}

#[test]
fn truncate_down_then_up_reads_zeros() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "t");
    fs.write(ino, Some(fh), 0, &[7u8; 10_000], false).unwrap();
    let set = |size| SetAttr {
        size: Some(size),
        ..Default::default()
    };
    fs.setattr(ino, &set(5000), ME).unwrap();
    fs.setattr(ino, &set(12_000), ME).unwrap();
    let got = fs.read(ino, 0, 20_000).unwrap();
    assert_eq!(got.len(), 12_000);
    assert!(got[..5000].iter().all(|b| *b == 7));
    assert!(got[5000..].iter().all(|b| *b == 0));
    fs.setattr(ino, &set(0), ME).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().alloc, 0);
    fs.setattr(ino, &set(3), ME).unwrap();
    assert_eq!(fs.read(ino, 0, 10).unwrap(), vec![0u8; 3]);
}

#[test]
fn punch_hole_reads_zeros_and_frees_blocks() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "p");
    fs.write(ino, Some(fh), 0, &[1u8; 16384], false).unwrap();
    fs.fallocate(ino, 1000, 10_000, 0x03, false).unwrap();
    let got = fs.read(ino, 0, 16384).unwrap();
    assert!(got[..1000].iter().all(|b| *b == 1));
    assert!(got[1000..11_000].iter().all(|b| *b == 0));
    assert!(got[11_000..].iter().all(|b| *b == 1));
    assert_eq!(fs.getattr(ino).unwrap().size, 16384);
    assert!(fs.getattr(ino).unwrap().alloc < 16384);
    assert_eq!(errno(fs.fallocate(ino, 0, 10, 0x10, false)), libc::EOPNOTSUPP);
}

/// Multi-block writes into fallocated space: where no block of the write holds a version
/// they skip reading the old blocks; where one does (written in the head, or only in a
/// snapshot's epoch), its bytes around the write are kept.
#[test]
fn writes_into_fallocated_space_keep_what_is_there() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "fa");
    let size = 400_000usize;
    fs.fallocate(ino, 0, size as u64, 0, false).unwrap();
    let mut model = vec![0u8; size];
    let mut put = |fs: &Fs, off: usize, len: usize, byte: u8| {
        let bytes = vec![byte; len];
        fs.write(ino, Some(fh), off as u64, &bytes, false).unwrap();
        model[off..off + len].copy_from_slice(&bytes);
    };
    // Before a snapshot: a few bytes in block 1 (16 KiB blocks), before the big write.
    put(&fs, 17_000, 2_000, 1);
    fs.store().snapshot(fs.container(), Some("s"), None).unwrap();
    // In the head: a few bytes in block 5, after its end.
    put(&fs, 95_000, 1_000, 2);
    // Blocks 1-5, partly covering the first and the last: both hold bytes to keep.
    put(&fs, 20_000, 70_000, 3);
    // Blocks 7-10 hold nothing: a hole in fallocated space, partly covered at both ends.
    put(&fs, 120_000, 50_000, 4);
    // Blocks 12-20: nothing but the last, which holds a byte written in the head after it.
    put(&fs, 331_000, 1, 5);
    put(&fs, 200_000, 130_001, 6);
    assert_eq!(fs.getattr(ino).unwrap().size, size as u64);
    let got = fs.read(ino, 0, size as u32).unwrap();
    assert_eq!(got.len(), size);
    let first_diff = got.iter().zip(&model).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "first byte that differs");
}

#[test]
fn mkdir_rmdir_tracks_parent_nlink_and_refuses_non_empty() {
    let fs = new_fs();
    let (d, _) = fs.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap();
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
    fs.mkdir(d, b"sub", 0o755, ME).unwrap();
    assert_eq!(fs.getattr(d).unwrap().nlink, 3);
    assert_eq!(errno(fs.rmdir(ROOT_INO, b"d")), libc::ENOTEMPTY);
    fs.rmdir(d, b"sub").unwrap();
    fs.rmdir(ROOT_INO, b"d").unwrap();
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 2);
    assert_eq!(errno(fs.lookup(ROOT_INO, b"d")), libc::ENOENT);
}

#[test]
fn rename_dir_across_parents_moves_nlink() {
    let fs = new_fs();
    let (a, _) = fs.mkdir(ROOT_INO, b"a", 0o755, ME).unwrap();
    let (b, _) = fs.mkdir(ROOT_INO, b"b", 0o755, ME).unwrap();
    let (c, _) = fs.mkdir(a, b"c", 0o755, ME).unwrap();
    fs.rename(a, b"c", b, b"c2", 0).unwrap();
    assert_eq!(fs.getattr(a).unwrap().nlink, 2);
    assert_eq!(fs.getattr(b).unwrap().nlink, 3);
    assert_eq!(fs.lookup(c, b"..").unwrap().0, b);
    // Into itself: refused.
    assert_eq!(errno(fs.rename(ROOT_INO, b"b", c, b"x", 0)), libc::EINVAL);
}

#[test]
fn rename_replace_and_flags_follow_posix() {
    let fs = new_fs();
    let (x, _) = file(&fs, "x");
    let (y, _) = file(&fs, "y");
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"x", ROOT_INO, b"y", 1)),
        libc::EEXIST
    );
    fs.rename(ROOT_INO, b"x", ROOT_INO, b"y", 2).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"x").unwrap().0, y);
    assert_eq!(fs.lookup(ROOT_INO, b"y").unwrap().0, x);
    fs.rename(ROOT_INO, b"x", ROOT_INO, b"y", 0).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"y").unwrap().0, y);
    assert_eq!(errno(fs.lookup(ROOT_INO, b"x")), libc::ENOENT);
    // x's inode was still open: it lives with nlink 0.
    assert_eq!(fs.getattr(x).unwrap().nlink, 0);
    let (d, _) = fs.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap();
    fs.mkdir(d, b"inner", 0o755, ME).unwrap();
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"y", ROOT_INO, b"d", 0)),
        libc::EISDIR
    );
    fs.mkdir(ROOT_INO, b"e", 0o755, ME).unwrap();
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"e", ROOT_INO, b"d", 0)),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"e", ROOT_INO, b"y", 0)),
        libc::ENOTDIR
    );
}

#[test]
fn unlinked_open_file_lives_until_release() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "tmp");
    fs.write(ino, Some(fh), 0, b"still here", false).unwrap();
    fs.unlink(ROOT_INO, b"tmp").unwrap();
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0);
    assert_eq!(fs.read(ino, 0, 100).unwrap(), b"still here");
    fs.release(fh).unwrap();
    assert_eq!(errno(fs.getattr(ino)), libc::ENOENT);
}

/// Keys under `prefix` in `space` (any epoch).
fn keys_under(fs: &Fs, space: snapfs::kv::Space, prefix: &[u8]) -> usize {
    let end = snapfs::kv::prefix_end(prefix);
    let mut n = 0;
    fs.store()
        .kv()
        .scan(space, prefix, &end, snapfs::kv::Dir::Forward, &mut |_, _| {
            n += 1;
            true
        })
        .expect("scan");
    n
}

#[test]
fn release_racing_unlink_frees_inode_exactly_once() {
    // Unlink and the last release run at once: exactly one of them frees the inode. Neither
    // would leave its blocks and its orphan record behind; both, or a release that is not
    // the last, would free it under a handle still open.
    use snapfs::keys;
    use snapfs::kv::Space;
    let t = new_fs();
    let fs: &Fs = &t;
    let orphans = keys::orphan_prefix(fs.container());
    for round in 0..200u32 {
        let name = format!("race{round}");
        let (ino, fh) = file(fs, &name);
        fs.write(ino, Some(fh), 0, b"payload", false).unwrap();
        let fh2 = fs.open(ino, libc::O_RDONLY).unwrap();
        // Every other round a third handle outlives the race.
        let kept = (round % 2 == 0).then(|| fs.open(ino, libc::O_RDONLY).unwrap());
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                fs.release(fh).unwrap();
                fs.release(fh2).unwrap();
            });
            s.spawn(|| {
                start.wait();
                fs.unlink(ROOT_INO, name.as_bytes()).unwrap();
            });
        });
        if let Some(kept) = kept {
            assert_eq!(fs.getattr(ino).unwrap().nlink, 0, "round {round}");
            assert_eq!(fs.read(ino, 0, 100).unwrap(), b"payload", "round {round}");
            assert_eq!(keys_under(fs, Space::Meta, &orphans), 1, "round {round}");
            fs.release(kept).unwrap();
        }
        assert_eq!(errno(fs.getattr(ino)), libc::ENOENT, "round {round}: not freed");
        assert_eq!(keys_under(fs, Space::Meta, &orphans), 0, "round {round}");
        let blocks = keys::block_prefix(DataId::new(ino.get())); // a new file's data id is its inode number
        assert_eq!(keys_under(fs, Space::Data, &blocks), 0, "round {round}");
    }
    let report = snapfs::fsck::check(fs.store()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn orphan_left_by_crash_is_purged_on_open() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "tmp");
    fs.write(ino, Some(fh), 0, b"x", false).unwrap();
    fs.unlink(ROOT_INO, b"tmp").unwrap();
    let fs = reopen(fs); // never released
    assert_eq!(errno(fs.getattr(ino)), libc::ENOENT);
}

#[test]
fn hard_links_count_and_survive_unlink() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "a");
    fs.write(ino, Some(fh), 0, b"data", false).unwrap();
    fs.release(fh).unwrap();
    fs.link(ino, ROOT_INO, b"b").unwrap();
    assert_eq!(fs.getattr(ino).unwrap().nlink, 2);
    fs.unlink(ROOT_INO, b"a").unwrap();
    assert_eq!(fs.getattr(ino).unwrap().nlink, 1);
    assert_eq!(fs.read(ino, 0, 10).unwrap(), b"data");
}

#[test]
fn xattr_flags_and_errors() {
    let fs = new_fs();
    let (ino, _) = file(&fs, "x");
    assert_eq!(errno(fs.getxattr(ino, b"user.a")), libc::ENODATA);
    assert_eq!(errno(fs.setxattr(ino, b"user.a", b"1", 2)), libc::ENODATA);
    fs.setxattr(ino, b"user.a", b"1", 1).unwrap();
    assert_eq!(errno(fs.setxattr(ino, b"user.a", b"2", 1)), libc::EEXIST);
    fs.setxattr(ino, b"user.a", b"2", 2).unwrap();
    fs.setxattr(ino, b"user.b", b"", 0).unwrap();
    assert_eq!(fs.getxattr(ino, b"user.a").unwrap(), b"2");
    assert_eq!(fs.listxattr(ino).unwrap(), b"user.a\0user.b\0");
    fs.removexattr(ino, b"user.a").unwrap();
    assert_eq!(errno(fs.removexattr(ino, b"user.a")), libc::ENODATA);
    assert_eq!(fs.listxattr(ino).unwrap(), b"user.b\0");
    assert_eq!(
        errno(fs.setxattr(ino, b"user.big", &vec![0u8; 65537], 0)),
        libc::E2BIG
    );
}

#[test]
fn names_are_bytes_and_limited_to_255() {
    let fs = new_fs();
    let odd = [0xffu8, 0xfe, b'a'];
    fs.mkdir(ROOT_INO, &odd, 0o755, ME).unwrap();
    assert!(fs.lookup(ROOT_INO, &odd).is_ok());
    let long = vec![b'n'; 255];
    fs.mknod(ROOT_INO, &long, libc::S_IFREG | 0o644, 0, ME)
        .unwrap();
    assert_eq!(
        errno(fs.mknod(ROOT_INO, &[b'n'; 256], libc::S_IFREG | 0o644, 0, ME)),
        libc::ENAMETOOLONG
    );
    let fh = fs.opendir(ROOT_INO).unwrap();
    let names: Vec<Vec<u8>> = fs
        .readdir(ROOT_INO, fh, 0)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert!(names.contains(&odd.to_vec()) && names.contains(&long));
}

#[test]
fn special_nodes_keep_type_and_rdev() {
    let fs = new_fs();
    let cases = [
        (libc::S_IFIFO, Kind::Fifo, 0),
        (libc::S_IFCHR, Kind::CharDev, 0),
        (libc::S_IFBLK, Kind::BlockDev, (8 << 8) | 1),
        (libc::S_IFSOCK, Kind::Socket, 0),
    ];
    for (i, (mode, kind, rdev)) in cases.into_iter().enumerate() {
        let name = format!("n{i}");
        let (ino, _) = fs
            .mknod(ROOT_INO, name.as_bytes(), mode | 0o600, rdev, ME)
            .unwrap();
        let a = fs.getattr(ino).unwrap();
        assert_eq!((a.kind, a.rdev), (kind, rdev));
    }
}

#[test]
fn data_survives_reopen() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "keep");
    fs.write(ino, Some(fh), 0, b"persist me", false).unwrap();
    fs.release(fh).unwrap();
    let fs = reopen(fs);
    let (i2, _) = fs.lookup(ROOT_INO, b"keep").unwrap();
    assert_eq!(i2, ino);
    assert_eq!(fs.read(ino, 0, 100).unwrap(), b"persist me");
    // New ids never collide with old ones after reopen.
    let (n, _) = file(&fs, "new");
    assert!(n > ino);
}

#[test]
fn append_handle_writes_at_end() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "log");
    fs.write(ino, Some(fh), 0, b"one,", false).unwrap();
    let afh = fs.open(ino, libc::O_WRONLY | libc::O_APPEND).unwrap();
    fs.write(ino, Some(afh), 0, b"two", false).unwrap();
    assert_eq!(fs.read(ino, 0, 100).unwrap(), b"one,two");
}

/// Under the kernel's writeback cache the kernel owns mtime and ctime: it stamps them when
/// a page is dirtied and sends them in a SETATTR that may be served before the write-back of
/// the page itself. A write-back arriving after that SETATTR must keep the kernel's times
/// (a snapshot once held the later arrival time instead of what `stat` had shown), while a
/// plain write stamps its own.
#[test]
fn written_back_pages_keep_the_times_the_kernel_sent() {
    use snapfs::codec::Ts;
    use snapfs::fs::TimeSet;
    let fs = new_fs();
    let (ino, fh) = file(&fs, "f");
    let at = |secs| Ts { secs, nsecs: 7 };
    let times = SetAttr {
        mtime: Some(TimeSet::At(at(1_000))),
        ctime: Some(at(2_000)),
        ..Default::default()
    };
    fs.setattr(ino, &times, ME).unwrap();
    assert_eq!(fs.write_back(ino, Some(fh), 0, &[1u8; 9000], false).unwrap(), 9000);
    let a = fs.getattr(ino).unwrap();
    assert_eq!((a.size, a.mtime, a.ctime), (9000, at(1_000), at(2_000)));
    assert_eq!(fs.read(ino, 0, 9000).unwrap(), vec![1u8; 9000]);
    fs.write(ino, Some(fh), 0, b"x", false).unwrap();
    let a = fs.getattr(ino).unwrap();
    assert!(a.mtime.secs > 2_000 && a.ctime == a.mtime, "a plain write stamps: {a:?}");
}

#[test]
fn write_past_max_size_is_efbig() {
    let fs = new_fs();
    let (ino, fh) = file(&fs, "big");
    assert_eq!(
        errno(fs.write(ino, Some(fh), u64::MAX - 2, b"abc", false)),
        libc::EFBIG
    );
    assert_eq!(fs.getattr(ino).unwrap().size, 0);
}

/// Random writes, truncates and punches against a Vec<u8> model, with reopen.
#[test]
fn random_file_ops_match_model() {
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut fs = new_fs();
        let (ino, fh) = file(&fs, "m");
        fs.release(fh).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for step in 0..300 {
            match rng.gen_range(0..10) {
                0..=5 => {
                    let off = rng.gen_range(0..40_000usize);
                    let len = rng.gen_range(1..9000usize);
                    let byte = rng.gen::<u8>() | 1;
                    fs.write(ino, None, off as u64, &vec![byte; len], false)
                        .unwrap();
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                    }
                    model[off..off + len].fill(byte);
                }
                6 => {
                    let size = rng.gen_range(0..45_000usize);
                    let set = SetAttr {
                        size: Some(size as u64),
                        ..Default::default()
                    };
                    fs.setattr(ino, &set, ME).unwrap();
                    model.resize(size, 0);
                }
                7 => {
                    let off = rng.gen_range(0..40_000usize);
                    let len = rng.gen_range(1..12_000usize);
                    fs.fallocate(ino, off as u64, len as u64, 0x03, false).unwrap();
                    let end = (off + len).min(model.len());
                    if off < end {
                        model[off..end].fill(0);
                    }
                }
                8 => fs = reopen(fs),
                _ => {
                    let off = rng.gen_range(0..45_000u64);
                    let len = rng.gen_range(0..20_000u32);
                    let got = fs.read(ino, off, len).unwrap();
                    let lo = (off as usize).min(model.len());
                    let hi = (off as usize + len as usize).min(model.len());
                    assert_eq!(got, &model[lo..hi], "seed {seed} step {step}");
                }
            }
            let a = fs.getattr(ino).unwrap();
            assert_eq!(a.size, model.len() as u64, "seed {seed} step {step}");
            let nonzero_blocks = model
                .chunks(4096)
                .filter(|c| c.iter().any(|b| *b != 0))
                .count();
            assert!(
                a.alloc <= (nonzero_blocks * 4096) as u64,
                "seed {seed} step {step}"
            );
        }
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), model, "seed {seed}");
    }
}

fn read_file(fs: &Fs, name: &str) -> Vec<u8> {
    let (ino, _) = fs.lookup(ROOT_INO, name.as_bytes()).expect("lookup");
    fs.read(ino, 0, 1 << 20).expect("read")
}

fn write_file(fs: &Fs, name: &str, data: &[u8]) {
    let ino = match fs.lookup(ROOT_INO, name.as_bytes()) {
        Ok((ino, _)) => ino,
        Err(_) => file(fs, name).0,
    };
    let set = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(ino, &set, ME).expect("truncate");
    fs.write(ino, None, 0, data, false).expect("write");
}

#[test]
fn restore_brings_back_old_tree_and_keeps_later_snapshots() {
    let fs = new_fs();
    let store = fs.store().clone();
    write_file(&fs, "f", b"v1");
    let s1 = store.snapshot(fs.container(), Some("first"), None).unwrap();
    write_file(&fs, "f", b"v2");
    fs.mkdir(ROOT_INO, b"later", 0o755, ME).unwrap();
    let s2 = store.snapshot(fs.container(), None, None).unwrap();
    assert_ne!(s1.name, s2.name);
    write_file(&fs, "f", b"v3");
    store.restore(fs.container(), "first").unwrap();
    assert_eq!(read_file(&fs, "f"), b"v1");
    assert_eq!(errno(fs.lookup(ROOT_INO, b"later")), libc::ENOENT);
    // The later snapshot is still there and restorable.
    store.restore(fs.container(), &s2.name).unwrap();
    assert_eq!(read_file(&fs, "f"), b"v2");
    assert!(fs.lookup(ROOT_INO, b"later").is_ok());
    let names: Vec<String> = store
        .snapshots(fs.container())
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec![s1.name.clone(), s2.name.clone()]);
    let s1 = store.find_snapshot(fs.container(), "first").unwrap().unwrap();
    assert!(s1.record.last_used_at.is_some());
}

#[test]
fn snapshot_survives_reopen_and_head_keeps_writing() {
    let fs = new_fs();
    write_file(&fs, "f", b"before");
    fs.store().snapshot(fs.container(), Some("a"), None).unwrap();
    write_file(&fs, "f", b"after");
    let fs = reopen(fs);
    assert_eq!(read_file(&fs, "f"), b"after");
    fs.store().restore(fs.container(), "a").unwrap();
    assert_eq!(read_file(&fs, "f"), b"before");
}

#[test]
fn copy_container_is_independent() {
    let fs = new_fs();
    let store = fs.store().clone();
    write_file(&fs, "f", b"shared");
    store.snapshot(fs.container(), Some("base"), None).unwrap();
    let rec = store
        .copy_container(fs.container(), Some("base"), "clone", None)
        .unwrap();
    let clone = Fs::new(store.clone(), &rec.id).unwrap();
    assert_eq!(read_file(&clone, "f"), b"shared");
    write_file(&clone, "f", b"clone's");
    write_file(&fs, "f", b"origin's");
    assert_eq!(read_file(&clone, "f"), b"clone's");
    assert_eq!(read_file(&fs, "f"), b"origin's");
    // Copy of the current tree (no snapshot named).
    let rec = store.copy_container(fs.container(), None, "now", None).unwrap();
    let now = Fs::new(store.clone(), &rec.id).unwrap();
    assert_eq!(read_file(&now, "f"), b"origin's");
    write_file(&fs, "f", b"moved on");
    assert_eq!(read_file(&now, "f"), b"origin's");
}

#[test]
fn snapshot_names_are_unique_and_aliases_checked() {
    let fs = new_fs();
    let store = fs.store().clone();
    let a = store.snapshot(fs.container(), Some("x"), None).unwrap();
    let b = store.snapshot(fs.container(), None, None).unwrap();
    assert_ne!(a.name, b.name);
    assert!(a.name.starts_with("snap-"));
    for bad in ["", ".", "..", "a/b", "snap-1", &"y".repeat(101)] {
        assert!(store.snapshot(fs.container(), Some(bad), None).is_err(), "{bad:?}");
    }
    assert!(store.snapshot(fs.container(), Some("x"), None).is_err());
    store.set_alias(fs.container(), &b.name, Some("y")).unwrap();
    assert!(store.set_alias(fs.container(), &a.name, Some("y")).is_err());
    store.delete_snapshot(fs.container(), "x").unwrap();
    assert!(store.find_snapshot(fs.container(), &a.name).unwrap().is_none());
    assert_eq!(store.snapshots(fs.container()).unwrap().len(), 1);
}

#[test]
fn snapshot_size_counts_what_its_epoch_wrote() {
    let fs = new_fs();
    let store = fs.store().clone();
    write_file(&fs, "big", &vec![1u8; 100_000]);
    let s1 = store.snapshot(fs.container(), None, None).unwrap();
    write_file(&fs, "small", b"abc");
    let s2 = store.snapshot(fs.container(), None, None).unwrap();
    let z1 = store.epoch_size(s1.record.epoch).unwrap();
    let z2 = store.epoch_size(s2.record.epoch).unwrap();
    assert!(z1 >= 100_000, "{z1}");
    assert!(z2 < 2_000, "{z2}");
}

#[test]
fn reclaim_of_deleted_snapshot_frees_its_blocks_and_keeps_views() {
    let fs = new_fs();
    let store = fs.store().clone();
    write_file(&fs, "f", &vec![3u8; 50_000]);
    let s1 = store.snapshot(fs.container(), None, None).unwrap();
    write_file(&fs, "f", &vec![4u8; 50_000]);
    let s2 = store.snapshot(fs.container(), None, None).unwrap();
    write_file(&fs, "g", b"head only");
    store.delete_snapshot(fs.container(), &s1.name).unwrap();
    let stats = store.reclaim().unwrap();
    // s2 rewrote every block of f: s1's blocks were shadowed and are gone (s1 itself is
    // merged away or stays pruned in the chain, whichever side is smaller).
    assert!(stats.bytes_dropped >= 50_000, "{stats:?}");
    assert_eq!(read_file(&fs, "f"), vec![4u8; 50_000]);
    assert_eq!(read_file(&fs, "g"), b"head only");
    store.restore(fs.container(), &s2.name).unwrap();
    assert_eq!(read_file(&fs, "f"), vec![4u8; 50_000]);
    assert_eq!(errno(fs.lookup(ROOT_INO, b"g")), libc::ENOENT);
    // The head retired by the restore is a leaf: reclaimed whole.
    let stats = store.reclaim().unwrap();
    assert_eq!(stats.epochs_removed, 1);
    drop(store);
    let fs = reopen(fs);
    assert_eq!(read_file(&fs, "f"), vec![4u8; 50_000]);
}

#[test]
fn deleted_container_keeps_snapshots_for_copy_and_frees_its_name() {
    let fs = new_fs();
    let store = fs.store().clone();
    let src = store.create_container("src", Some("proj")).unwrap();
    let view = Fs::new(store.clone(), &src.id).unwrap();
    write_file(&view, "f", b"from src");
    let snap = store.snapshot(&src.id, Some("keep"), None).unwrap();
    let deleted = store.delete_container(&src.id).unwrap();
    assert!(deleted.deleted_at.is_some());
    assert!(view.getattr(ROOT_INO).is_err(), "a deleted container's head is gone");
    assert!(store.snapshot(&src.id, None, None).is_err());
    assert_eq!(store.snapshots(&src.id).unwrap().len(), 1);
    // The name is free again; the old record is still found by id.
    let again = store.create_container("src", None).unwrap();
    assert_ne!(again.id, src.id);
    assert_eq!(
        store.find_container(src.id.as_str()).unwrap().unwrap().deleted_at,
        deleted.deleted_at
    );
    let copy = store
        .copy_container(&src.id, Some(&snap.name), "revived", Some("p2"))
        .unwrap();
    let revived = Fs::new(store.clone(), &copy.id).unwrap();
    assert_eq!(read_file(&revived, "f"), b"from src");
    assert_eq!(copy.project_id.as_deref(), Some("p2"));
    store.reclaim().unwrap();
    assert_eq!(read_file(&revived, "f"), b"from src");
    assert!(store.copy_container(&src.id, None, "x", None).is_err());
}

#[test]
fn fsck_clean_store_then_reports_planted_corruption() {
    use snapfs::codec::{encode_live, Dirent};
    use snapfs::keys;
    use snapfs::kv::{Batch, Space};
    let fs = new_fs();
    write_file(&fs, "f", b"data");
    fs.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap();
    let store = fs.store().clone();
    store.snapshot(fs.container(), Some("s"), None).unwrap();
    let clean = snapfs::fsck::check(&store).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(clean.views, 2);
    // A directory entry to an inode that does not exist, written with its change index.
    let head = store.head(fs.container()).unwrap().epoch;
    let mut b = Batch::new();
    snapfs::store::put_version(
        &mut b,
        Space::Meta,
        &keys::dirent(ROOT_INO, b"ghost"),
        head,
        encode_live(&Dirent {
            ino: Ino::new(999_999),
            kind: Kind::File,
        }),
    );
    // And a version with no change-index entry.
    b.put(
        Space::Meta,
        keys::versioned(&keys::xattr(ROOT_INO, b"user.x"), head),
        encode_live(&b"v".to_vec()),
    );
    store.kv().write(b, true).unwrap();
    let report = snapfs::fsck::check(&store).unwrap();
    let all = report.problems.join("\n");
    assert!(all.contains("\"ghost\""), "{all}");
    assert!(all.contains("no change-index entry"), "{all}");
}

#[test]
fn corrupted_block_reads_eio_never_wrong_bytes_and_fsck_reports_it() {
    use snapfs::keys;
    use snapfs::kv::{Batch, Space};
    let fs = new_fs();
    write_file(&fs, "f", &vec![9u8; 10_000]);
    let (ino, attr) = fs.lookup(ROOT_INO, b"f").unwrap();
    let store = fs.store().clone();
    let head = store.head(fs.container()).unwrap().epoch;
    let key = keys::versioned(&keys::block(attr.data_id, 1), head);
    let mut value = store.kv().get(Space::Data, &key).unwrap().expect("block 1");
    let last = value.len() - 1;
    value[last] ^= 0x40; // flip one bit of the stored bytes
    let mut b = Batch::new();
    b.put(Space::Data, key, value);
    store.kv().write(b, true).unwrap();
    // Block 0 still reads; anything touching block 1 is EIO.
    assert_eq!(fs.read(ino, 0, 4096).unwrap(), vec![9u8; 4096]);
    assert_eq!(errno(fs.read(ino, 4096, 100)), libc::EIO);
    assert_eq!(errno(fs.read(ino, 0, 10_000)), libc::EIO);
    let report = snapfs::fsck::check(&store).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("checksum")),
        "{:?}",
        report.problems
    );
}
