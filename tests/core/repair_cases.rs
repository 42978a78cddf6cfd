// `fsck --repair` cases, included by core_fs.rs once per backend (uses its helpers).

/// Writes `value` as the head epoch's version of `base` (with its change-index entry).
fn plant(store: &snapfs::store::Store, epoch: Epoch, base: &[u8], value: Vec<u8>) {
    let mut b = snapfs::kv::Batch::new();
    snapfs::store::put_version(&mut b, snapfs::kv::Space::Meta, base, epoch, value);
    store.kv().write(b, true).expect("plant");
}

fn plant_inode(store: &snapfs::store::Store, epoch: Epoch, ino: Ino, f: impl Fn(&mut snapfs::codec::Inode)) {
    let fs = open_default(std::sync::Arc::new(
        snapfs::store::Store::open(store.kv_arc()).expect("open"),
    ));
    let mut inode = fs.getattr(ino).expect("getattr");
    f(&mut inode);
    plant(store, epoch, &snapfs::keys::inode(ino), snapfs::codec::encode_live(&inode));
}

fn dirent_value(ino: Ino, kind: Kind) -> Vec<u8> {
    snapfs::codec::encode_live(&snapfs::codec::Dirent { ino, kind })
}

fn tree_listing(fs: &Fs) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![(ROOT_INO, String::new())];
    while let Some((dir, path)) = stack.pop() {
        let fh = fs.opendir(dir).expect("opendir");
        let entries = fs.readdir(dir, fh, 0).expect("readdir");
        fs.releasedir(fh);
        for e in entries.iter().skip(2) {
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            match e.kind {
                Kind::Dir => stack.push((e.ino, p.clone())),
                Kind::File => out.push((p.clone(), fs.read(e.ino, 0, 1 << 20).expect("read"))),
                _ => {}
            }
            if e.kind == Kind::Dir {
                out.push((p, b"<dir>".to_vec()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn repair_fixes_planted_head_damage_keeps_every_byte_and_is_idempotent() {
    use snapfs::keys;
    use snapfs::kv::{Batch, Space};
    let t = new_fs();
    write_file(&t, "f", b"linked file");
    let (f_ino, _) = t.lookup(ROOT_INO, b"f").unwrap();
    t.link(f_ino, ROOT_INO, b"g").unwrap();
    write_file(&t, "big", &vec![7u8; 10_000]);
    write_file(&t, "h", b"typed");
    let (d, _) = t.mkdir(ROOT_INO, b"d", 0o755, ME).unwrap();
    let (sub, _) = t.mkdir(d, b"sub", 0o755, ME).unwrap();
    let (_, _, fh) = t.create(sub, b"deep", 0o644, libc::O_RDWR, ME).unwrap();
    t.release(fh).unwrap();
    let store = t.store().clone();
    store.snapshot(t.container(), Some("s"), None).unwrap();
    write_file(&t, "after", b"written after the snapshot");
    let snap = store.find_snapshot(t.container(), "s").unwrap().unwrap();
    let frozen = Fs::frozen(store.clone(), t.container(), store.snapshot_chain(&snap));
    let snap_before = tree_listing(&frozen);
    let head_before = tree_listing(&t);
    assert!(snapfs::fsck::check(&store).unwrap().problems.is_empty());

    // Damage, all written into the head epoch (or the index and epoch table).
    let head = store.head(t.container()).unwrap().epoch;
    let (big, big_attr) = t.lookup(ROOT_INO, b"big").unwrap();
    let (h, _) = t.lookup(ROOT_INO, b"h").unwrap();
    plant(&store, head, &keys::dirent(ROOT_INO, b"ghost"), dirent_value(Ino::new(999_999), Kind::File));
    plant(&store, head, &keys::dirent(ROOT_INO, b"h"), dirent_value(h, Kind::Symlink));
    plant(&store, head, &keys::dirent(ROOT_INO, b"d-again"), dirent_value(d, Kind::Dir));
    plant_inode(&store, head, f_ino, |i| i.nlink = 5);
    plant_inode(&store, head, d, |i| i.nlink = 9);
    plant_inode(&store, head, sub, |i| i.parent = ROOT_INO);
    plant_inode(&store, head, big, |i| i.alloc = 1);
    let mut b = Batch::new();
    // Bytes past the size of `big` (block 100), with its index entry.
    snapfs::store::put_version(
        &mut b,
        Space::Data,
        &keys::block(big_attr.data_id, 100),
        head,
        snapfs::codec::encode_block(b"never readable"),
    );
    // A version without its change-index entry, and an entry without its version.
    b.put(
        Space::Meta,
        keys::versioned(&keys::xattr(ROOT_INO, b"user.x"), head),
        snapfs::codec::encode_live(&b"v".to_vec()),
    );
    b.put(
        Space::Meta,
        keys::change(head, Space::Meta, &keys::inode(Ino::new(424_242))),
        10u64.to_be_bytes().to_vec(),
    );
    // An epoch nothing references.
    b.put(
        Space::Meta,
        keys::epoch(Epoch::new(1 << 40)),
        snapfs::codec::encode_plain(&snapfs::store::EpochRecord {
            parent: None,
            kind: snapfs::store::EpochKind::Frozen,
        }),
    );
    store.kv().write(b, true).unwrap();
    drop((frozen, store));

    // Reopen (the store caches metadata) and look.
    let t = reopen(t);
    let store = t.store().clone();
    let damaged = snapfs::fsck::check(&store).unwrap();
    let all = damaged.problems.join("\n");
    for expect in [
        "\"ghost\"",
        "entry says Symlink",
        "reached twice",
        "nlink Some(5) but 2 entries",
        "has nlink 9",
        "records parent",
        "past its size",
        "no change-index entry",
        "have no version",
        "referenced by nothing",
    ] {
        assert!(all.contains(expect), "missing {expect:?} in:\n{all}");
    }

    let repaired = snapfs::fsck::repair(&store).unwrap();
    assert!(
        repaired.problems.is_empty(),
        "left after repair: {:#?}\nrepaired: {:#?}",
        repaired.problems,
        repaired.repaired
    );
    assert!(repaired.repaired.len() >= 9, "{:#?}", repaired.repaired);
    // Every byte that was readable is still readable; only the planted names are gone.
    assert_eq!(tree_listing(&t), head_before);
    let (_, f_attr) = t.lookup(ROOT_INO, b"f").unwrap();
    assert_eq!(f_attr.nlink, 2);
    let (_, big_attr) = t.lookup(ROOT_INO, b"big").unwrap();
    assert_eq!((big_attr.size, big_attr.alloc), (10_000, 10_000));
    // Growing `big` shows zeros, not the dropped bytes.
    t.setattr(
        big,
        &SetAttr {
            size: Some(500_000),
            ..Default::default()
        },
        ME,
    )
    .unwrap();
    assert!(t.read(big, 409_600, 100).unwrap().iter().all(|b| *b == 0));
    let snap = store.find_snapshot(t.container(), "s").unwrap().unwrap();
    let frozen = Fs::frozen(store.clone(), t.container(), store.snapshot_chain(&snap));
    assert_eq!(tree_listing(&frozen), snap_before);
    drop((frozen, store));

    // Nothing left to do, also after a reopen.
    let t = reopen(t);
    let again = snapfs::fsck::repair(t.store()).unwrap();
    assert!(again.problems.is_empty(), "{:#?}", again.problems);
    assert!(again.repaired.is_empty(), "{:#?}", again.repaired);
}

#[test]
fn repair_never_changes_a_snapshot_and_leaves_bad_checksums_reported() {
    use snapfs::keys;
    use snapfs::kv::{Batch, Space};
    let t = new_fs();
    write_file(&t, "f", b"in the snapshot");
    write_file(&t, "bad", &vec![3u8; 9000]);
    let (f_ino, _) = t.lookup(ROOT_INO, b"f").unwrap();
    let (bad, bad_attr) = t.lookup(ROOT_INO, b"bad").unwrap();
    let store = t.store().clone();
    let snap = store.snapshot(t.container(), Some("s"), None).unwrap();
    // Damage inside the frozen epoch: a wrong link count.
    plant_inode(&store, snap.record.epoch, f_ino, |i| i.nlink = 3);
    // A flipped bit in a block of `bad` (also frozen, visible from the head).
    let key = keys::versioned(&keys::block(bad_attr.data_id, 1), snap.record.epoch);
    let mut value = store.kv().get(Space::Data, &key).unwrap().expect("block 1");
    let last = value.len() - 1;
    value[last] ^= 1;
    let mut b = Batch::new();
    b.put(Space::Data, key.clone(), value.clone());
    store.kv().write(b, true).unwrap();
    drop(store);

    let t = reopen(t);
    let store = t.store().clone();
    let report = snapfs::fsck::repair(&store).unwrap();
    let left = report.problems.join("\n");
    // The head got its own fix for the link count (a new version in the head epoch) ...
    assert!(
        report.repaired.iter().any(|r| r.contains(&format!("inode {f_ino} to 1"))),
        "{:#?}",
        report.repaired
    );
    // ... while the snapshot still reports it, untouched, and the bad block is reported for
    // both views and never rewritten.
    assert!(
        left.contains(&format!("(alias s) of default: inode {f_ino} has nlink Some(3)")),
        "{left}"
    );
    assert!(left.contains("checksum"), "{left}");
    assert_eq!(store.kv().get(Space::Data, &key).unwrap(), Some(value));
    assert_eq!(errno(t.read(bad, 4096, 10)), libc::EIO);
    assert_eq!(t.read(f_ino, 0, 100).unwrap(), b"in the snapshot");
    assert_eq!(t.getattr(f_ino).unwrap().nlink, 1);
}

#[test]
fn fsck_check_writes_nothing_and_leaves_orphans_to_the_next_open() {
    let t = new_fs();
    let (ino, fh) = file(&t, "tmp");
    t.write(ino, Some(fh), 0, b"open, unlinked", false).unwrap();
    t.unlink(ROOT_INO, b"tmp").unwrap();
    // A crash with the file still open: its orphan record stays. Open the store without the
    // filesystem (which would purge it) and check.
    let mut t = t;
    let kv = t.store().kv_arc();
    t.fs = None; // closes the filesystem; `t` keeps the backend (and its directory)
    let store = std::sync::Arc::new(snapfs::store::Store::open(kv.clone()).unwrap());
    let count = |store: &snapfs::store::Store| {
        let mut n = 0;
        store
            .kv()
            .scan(
                snapfs::kv::Space::Meta,
                &[snapfs::keys::TAG_ORPHAN],
                &[snapfs::keys::TAG_ORPHAN + 1],
                snapfs::kv::Dir::Forward,
                &mut |_, _| {
                    n += 1;
                    true
                },
            )
            .unwrap();
        n
    };
    assert_eq!(count(&store), 1);
    let report = snapfs::fsck::check(&store).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(count(&store), 1, "fsck (check only) purged the orphan");
    let fs = open_default(store.clone());
    assert_eq!(count(&store), 0, "opening the head purges it");
    assert_eq!(errno(fs.getattr(ino)), libc::ENOENT);
    drop((fs, store, kv, t));
}
