//! Snapshot streams (`Store::send` / `Store::receive`): full and incremental streams between
//! two stores give trees equal, path by path, to the sender's snapshots (attributes, contents,
//! holes, xattrs, hard links, symlinks, devices, non-UTF-8 names), over random histories with
//! restores, deletes and reclaim in between; bad streams and wrong bases change nothing.

#[path = "core/harness.rs"]
mod harness;
#[path = "core/treeops.rs"]
mod treeops;

use std::collections::BTreeMap;
use std::sync::Arc;

use harness::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use snapfs::codec::{Inode, Kind};
use snapfs::fs::{Fs, SetAttr, ROOT_INO};
use snapfs::store::{SnapshotInfo, Store, StoreError};
use treeops::*;

/// What one path of a tree holds.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    ino: Ino,
    inode: Inode,
    content: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The whole tree, by path.
fn tree(fs: &Fs) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(ROOT_INO, b"/".to_vec())];
    while let Some((ino, path)) = stack.pop() {
        let inode = fs.getattr(ino).expect("getattr");
        let content = match inode.kind {
            Kind::File => fs.read(ino, 0, inode.size as u32).expect("read"),
            Kind::Dir => {
                let fh = fs.opendir(ino).expect("opendir");
                let entries = fs.readdir(ino, fh, 0).expect("readdir");
                fs.releasedir(fh);
                for e in entries.iter().skip(2) {
                    let mut p = path.clone();
                    if p.len() > 1 {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&e.name);
                    stack.push((e.ino, p));
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        let names = fs.listxattr(ino).unwrap_or_default();
        let xattrs = names
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| (n.to_vec(), fs.getxattr(ino, n).expect("getxattr")))
            .collect();
        out.insert(
            path,
            Entry {
                ino,
                inode,
                content,
                xattrs,
            },
        );
    }
    out
}

fn snapshot_tree(store: &Arc<Store>, s: &SnapshotInfo) -> BTreeMap<Vec<u8>, Entry> {
    let fs = Fs::frozen(store.clone(), &s.container, store.snapshot_chain(s));
    tree(&fs)
}

fn send(store: &Store, snap: &str, from: Option<&str>) -> Vec<u8> {
    let id = default_id(store);
    let mut out = Vec::new();
    store.send(&id, snap, from, &mut out).expect("send");
    out
}

fn receive(store: &Store, bytes: &[u8], name: &str) -> Result<snapfs::store::Received, StoreError> {
    store.receive(&mut &bytes[..], name, false)
}

fn new_store() -> Arc<Store> {
    Arc::new(Store::init(mem_backend().kv(), 4096).expect("init"))
}

fn assert_fsck_clean(store: &Arc<Store>) {
    store.reclaim().expect("reclaim");
    let r = snapfs::fsck::check(store).expect("fsck");
    assert!(r.problems.is_empty(), "fsck: {:?}", r.problems);
}

/// Everything a tree can hold, in the default container of `store`.
fn fill(store: &Arc<Store>) {
    let fs = open_default(store.clone());
    let d = fs.mkdir(ROOT_INO, b"dir", 0o750, ME).expect("mkdir").0;
    let (f, _, fh) = fs
        .create(d, b"file", 0o640, libc::O_RDWR, ME)
        .expect("create");
    fs.write(f, None, 0, &vec![7u8; 10_000], false)
        .expect("write");
    // A hole: bytes at 100 KiB only.
    fs.write(f, None, 100 << 10, b"tail", false).expect("write");
    fs.release(fh).expect("release");
    fs.link(f, ROOT_INO, b"hardlink").expect("link");
    fs.symlink(d, b"sym", b"../hardlink", ME).expect("symlink");
    fs.mknod(ROOT_INO, b"fifo", libc::S_IFIFO | 0o600, 0, ME)
        .expect("mkfifo");
    fs.mknod(ROOT_INO, b"chr", libc::S_IFCHR | 0o600, 0x0103, ME)
        .expect("mknod");
    fs.setxattr(f, b"user.tag", b"value", 0).expect("setxattr");
    fs.setxattr(d, b"trusted.big", &vec![1u8; 3000], 0)
        .expect("setxattr");
    let long = vec![b'x'; 255];
    fs.create(ROOT_INO, &long, 0o600, libc::O_RDWR, ME)
        .expect("long name");
    fs.create(ROOT_INO, b"caf\xe9-\xff", 0o600, libc::O_RDWR, ME)
        .expect("non-utf8 name");
    let set = SetAttr {
        uid: Some(1234),
        gid: Some(5678),
        ..Default::default()
    };
    fs.setattr(f, &set, ME).expect("chown");
}

#[test]
fn full_and_incremental_streams_reproduce_every_snapshot() {
    let (_da, _db) = (mem_backend(), mem_backend());
    reproduce(
        Arc::new(Store::init(_da.kv(), 4096).expect("init")),
        Arc::new(Store::init(_db.kv(), 4096).expect("init")),
    );
}

#[test]
fn full_and_incremental_streams_reproduce_every_snapshot_on_rocksdb() {
    let (_da, _db) = (rocks_backend(), rocks_backend());
    reproduce(
        Arc::new(Store::init(_da.kv(), 4096).expect("init")),
        Arc::new(Store::init(_db.kv(), 4096).expect("init")),
    );
}

/// Embedded to object storage (SlateDB on a directory standing in for a bucket) and back.
#[cfg(feature = "slatedb")]
#[test]
fn streams_go_between_backends_both_ways() {
    let (_da, _db) = (rocks_backend(), slate_backend());
    reproduce(
        Arc::new(Store::init(_da.kv(), 4096).expect("init")),
        Arc::new(Store::init(_db.kv(), 4096).expect("init")),
    );
    let (_dc, _dd) = (slate_backend(), rocks_backend());
    reproduce(
        Arc::new(Store::init(_dc.kv(), 4096).expect("init")),
        Arc::new(Store::init(_dd.kv(), 4096).expect("init")),
    );
}

fn reproduce(a: Arc<Store>, b: Arc<Store>) {
    let id = default_id(&a);
    fill(&a);
    let s1 = a.snapshot(&id, Some("first"), None).expect("snapshot");
    // Changes: delete, rename, truncate, overwrite, xattr removal, new hard link.
    let fs = open_default(a.clone());
    fs.unlink(ROOT_INO, b"fifo").expect("unlink");
    let d = fs.lookup(ROOT_INO, b"dir").expect("dir").0;
    fs.rename(d, b"sym", ROOT_INO, b"sym2", 0).expect("rename");
    let f = fs.lookup(d, b"file").expect("file").0;
    let set = SetAttr {
        size: Some(5000),
        ..Default::default()
    };
    fs.setattr(f, &set, ME).expect("truncate");
    fs.write(f, None, 2000, b"changed", false).expect("write");
    fs.removexattr(f, b"user.tag").expect("removexattr");
    fs.rmdir(ROOT_INO, b"nothing").expect_err("no such dir");
    drop(fs);
    let s2 = a.snapshot(&id, None, None).expect("snapshot");

    let full = send(&a, &s1.name, None);
    let got = receive(&b, &full, "copy").expect("receive full");
    assert_eq!(got.snapshot.name, s1.name);
    assert_eq!(got.snapshot.record.alias.as_deref(), Some("first"));
    assert_eq!(got.snapshot.record.created_at, s1.record.created_at);
    assert_eq!(snapshot_tree(&b, &got.snapshot), snapshot_tree(&a, &s1));
    // The received container's live tree is the snapshot.
    let head = Fs::new(b.clone(), &got.container.id).expect("head");
    assert_eq!(tree(&head), snapshot_tree(&a, &s1));
    drop(head);

    let inc = send(&a, &s2.name, Some(&s1.name));
    assert!(
        inc.len() < full.len(),
        "incremental {} vs full {}",
        inc.len(),
        full.len()
    );
    let got2 = receive(&b, &inc, "copy").expect("receive incremental");
    assert_eq!(snapshot_tree(&b, &got2.snapshot), snapshot_tree(&a, &s2));
    // The first snapshot is still there, unchanged.
    assert_eq!(snapshot_tree(&b, &got.snapshot), snapshot_tree(&a, &s1));
    assert_eq!(b.snapshots(&got.container.id).expect("list").len(), 2);
    // Same stream again: already there.
    let err = receive(&b, &inc, "copy").expect_err("twice");
    assert!(err.to_string().contains("already has snapshot"), "{err}");
    // The received copy is a normal container: written, snapshotted, mounted by Fs.
    let head = Fs::new(b.clone(), &got.container.id).expect("head");
    let (n, _, fh) = head
        .create(ROOT_INO, b"new-on-copy", 0o644, libc::O_RDWR, ME)
        .expect("create on the copy");
    head.write(n, None, 0, b"hello", false).expect("write");
    head.release(fh).expect("release");
    drop(head);
    b.snapshot(&got.container.id, None, None)
        .expect("snapshot the copy");
    assert_fsck_clean(&a);
    assert_fsck_clean(&b);
}

#[test]
fn random_histories_send_incrementally_in_order() {
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = new_store();
        let id = default_id(&a);
        let b = new_store();
        let mut copies = 0;
        for round in 0..6 {
            for _ in 0..25 {
                random_step(&a, &mut rng, true);
            }
            let s = a.snapshot(&id, None, None).expect("snapshot");
            // As a sync would: the newest snapshot of the copy the sender still has is the
            // base (later ones are rolled back); none left: a full stream to a new copy.
            let copy = format!("copy{copies}");
            let base = match b.container_by_name(&copy).expect("lookup") {
                Some(c) => {
                    let mut theirs = b.snapshots(&c.id).expect("list");
                    theirs.sort_by_key(|s| s.record.epoch);
                    theirs
                        .iter()
                        .rev()
                        .find(|r| a.find_snapshot(&id, &r.name).expect("find").is_some())
                        .map(|r| r.name.clone())
                }
                None => None,
            };
            let copy = if base.is_none() && b.container_by_name(&copy).expect("lookup").is_some() {
                copies += 1;
                format!("copy{copies}")
            } else {
                copy
            };
            let bytes = send(&a, &s.name, base.as_deref());
            let got = b
                .receive(&mut &bytes[..], &copy, true)
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
            assert_eq!(
                snapshot_tree(&b, &got.snapshot),
                snapshot_tree(&a, &s),
                "seed {seed} round {round}"
            );
            // Every snapshot received so far still matches its original (the sender's
            // older ones may have been deleted since).
            let cid = got.container.id.clone();
            for r in b.snapshots(&cid).expect("list") {
                if let Some(orig) = a.find_snapshot(&id, &r.name).expect("find") {
                    assert_eq!(
                        snapshot_tree(&b, &r),
                        snapshot_tree(&a, &orig),
                        "seed {seed} round {round} snapshot {}",
                        r.name
                    );
                }
            }
            let head = Fs::new(b.clone(), &cid).expect("head");
            assert_eq!(
                tree(&head),
                snapshot_tree(&a, &s),
                "seed {seed} round {round} head"
            );
        }
        assert_fsck_clean(&a);
        assert_fsck_clean(&b);
    }
}

#[test]
fn bad_streams_change_nothing_visible() {
    let a = new_store();
    let id = default_id(&a);
    fill(&a);
    let s1 = a.snapshot(&id, None, None).expect("snapshot");
    let full = send(&a, &s1.name, None);
    let b = new_store();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", full[..full.len() - 10].to_vec()),
        ("cut in the middle", full[..full.len() / 2].to_vec()),
        ("corrupted", {
            let mut x = full.clone();
            let at = x.len() / 2;
            x[at] ^= 0x40;
            x
        }),
        ("empty", Vec::new()),
        ("foreign", b"#!/bin/sh\necho not a stream\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let err = receive(&b, &bytes, "copy").expect_err(what);
        assert!(matches!(err, StoreError::BadStream(_)), "{what}: {err}");
        assert!(
            b.container_by_name("copy").expect("lookup").is_none(),
            "{what}: a container appeared"
        );
        // A cut stream keeps what came (resumable) once a chunk is in; anything else
        // leaves nothing behind.
        let pending = b.receives().expect("receives");
        if err.to_string().contains("resume with token") {
            assert_eq!(pending.len(), 1, "{what}");
            b.abort_receive("copy").expect("abort");
        }
        assert!(b.receives().expect("receives").is_empty(), "{what}");
    }
    // Nothing of the failed receives survives reclaim, and the store is clean.
    assert_fsck_clean(&b);
    let live = b.live_bytes().expect("live");
    let fresh = new_store().live_bytes().expect("live");
    assert_eq!(live, fresh, "every failed receive's versions are reclaimed");
    // The good stream still goes in afterwards.
    receive(&b, &full, "copy").expect("receive");
}

#[test]
fn an_incremental_stream_needs_its_base_as_the_latest_snapshot() {
    let a = new_store();
    let id = default_id(&a);
    fill(&a);
    let s1 = a.snapshot(&id, None, None).expect("s1");
    let fs = open_default(a.clone());
    file(&fs, "two");
    drop(fs);
    let s2 = a.snapshot(&id, None, None).expect("s2");
    let b = new_store();
    let inc = send(&a, &s2.name, Some(&s1.name));
    // No container, or no base: refused.
    let err = receive(&b, &inc, "copy").expect_err("no container");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    receive(&b, &send(&a, &s1.name, None), "copy").expect("full");
    // A full stream onto an existing container: refused.
    let err = receive(&b, &send(&a, &s1.name, None), "copy").expect_err("exists");
    assert!(matches!(err, StoreError::ContainerExists(_)), "{err}");
    // The copy was written since the base: refused without rollback.
    let cid = b
        .container_by_name("copy")
        .expect("lookup")
        .expect("copy")
        .id;
    let head = Fs::new(b.clone(), &cid).expect("head");
    file(&head, "local");
    drop(head);
    let err = receive(&b, &inc, "copy").expect_err("written");
    assert!(err.to_string().contains("written since"), "{err}");
    // A newer local snapshot: refused without rollback.
    let local = b.snapshot(&cid, None, None).expect("local snapshot");
    let err = receive(&b, &inc, "copy").expect_err("newer snapshot");
    assert!(
        err.to_string().contains("newer than the stream's base"),
        "{err}"
    );
    // With rollback: the local snapshot and writes go, the stream's snapshot comes.
    let got = b.receive(&mut &inc[..], "copy", true).expect("rollback");
    assert_eq!(got.rolled_back, vec![local.name.clone()]);
    assert_eq!(snapshot_tree(&b, &got.snapshot), snapshot_tree(&a, &s2));
    let head = Fs::new(b.clone(), &cid).expect("head");
    assert!(head.lookup(ROOT_INO, b"local").is_err());
    drop(head);
    // A store of another block size cannot take the stream.
    let c = Arc::new(Store::init(mem_backend().kv(), 16384).expect("init"));
    let err = receive(&c, &send(&a, &s1.name, None), "copy").expect_err("block size");
    assert!(err.to_string().contains("block size"), "{err}");
    assert_fsck_clean(&b);
}

/// The token in a cut receive's error.
fn token_of(err: &StoreError) -> snapfs::store::ResumeToken {
    let text = err.to_string();
    let word = text
        .rsplit("resume with token ")
        .next()
        .expect("a token in the error");
    snapfs::store::ResumeToken::decode(word).expect("token decodes")
}

#[test]
fn a_cut_receive_resumes_from_its_last_chunk_even_after_a_reopen() {
    let (_da, db) = (rocks_backend(), rocks_backend());
    let a = Arc::new(Store::init(_da.kv(), 4096).expect("init"));
    let id = default_id(&a);
    fill(&a);
    let fs = open_default(a.clone());
    let (big, _, fh) = fs
        .create(ROOT_INO, b"big", 0o644, libc::O_RDWR, ME)
        .expect("create");
    let data: Vec<u8> = (0..14u32 << 20).map(|i| (i % 251) as u8).collect();
    fs.write(big, None, 0, &data, false).expect("write");
    fs.release(fh).expect("release");
    drop(fs);
    let s1 = a.snapshot(&id, None, None).expect("snapshot");
    let full = send(&a, &s1.name, None);
    assert!(full.len() > 12 << 20);
    let mut b = Arc::new(Store::init(db.kv(), 4096).expect("init"));
    // Cut inside the third chunk: the first two are in.
    let err = receive(&b, &full[..9 << 20], "copy").expect_err("cut");
    let token = token_of(&err);
    assert_eq!(token.snapshot, s1.name);
    let pending = b.receive_into("copy").expect("pending").expect("kept");
    assert!(pending.1.records > 0);
    // Another cut of the resumed stream, then the receiver's store is reopened.
    let mut rest = Vec::new();
    a.send_resumed(&id, &token, &mut rest, &Default::default())
        .expect("resume send");
    assert!(
        rest.len() < full.len() - (6 << 20),
        "a resumed stream skips what is in"
    );
    let err = receive(&b, &rest[..rest.len() - 1000], "copy").expect_err("cut again");
    let first = token;
    let token = token_of(&err);
    assert_ne!(first, token);
    drop(b);
    b = Arc::new(Store::open(db.kv()).expect("reopen"));
    b.abandon_stale_receives().expect("start-up tidy");
    let mut rest = Vec::new();
    a.send_resumed(&id, &token, &mut rest, &Default::default())
        .expect("resume send");
    // A stale token (an older point) is refused; the right one completes the receive.
    let mut stale = Vec::new();
    a.send_resumed(&id, &first, &mut stale, &Default::default())
        .expect("stale send");
    let err = receive(&b, &stale, "copy").expect_err("stale");
    assert!(err.to_string().contains("another key"), "{err}");
    let got = receive(&b, &rest, "copy").expect("resumed receive");
    assert_eq!(snapshot_tree(&b, &got.snapshot), snapshot_tree(&a, &s1));
    assert!(b.receives().expect("receives").is_empty());
    let again = receive(&b, &rest, "copy").expect_err("nothing to resume");
    assert!(again.to_string().contains("waits to be resumed"), "{again}");
    assert_fsck_clean(&b);
}

/// How a data id the base sees as gone comes back in the snapshot sent from that base.
#[derive(Clone, Copy, Debug)]
enum Revival {
    /// A full restore of an older snapshot that still has the file: another branch.
    Branch,
    /// A path restore of the file from an older snapshot (its old data id, revived).
    PathRestore,
}

/// File `big` holds "P" in snapshot s1 and "R" in s2 (one block more), and is truncated to
/// zero (its data id gone) in s3; the receiver gets all three. The sender then deletes s2
/// and reclaims: s2's blocks of the dead data id are dropped (s3 marked it gone), so the
/// sender's s3 no longer sees them where the receiver's still does. The file then comes back
/// with its old data id and is grown by a block (growing clears nothing); s4 is sent from
/// s3. The stream must carry the data id's blocks whole and the receiver must drop the ones
/// its base holds beyond them: before, the receiver's s4 read s2's "R" where s1 had "P",
/// and s2's second block past the old end.
fn revived_data_arrives_whole(how: Revival) {
    let a = new_store();
    let id = default_id(&a);
    let b = new_store();
    let fs = open_default(a.clone());
    let (f, _, fh) = fs
        .create(ROOT_INO, b"big", 0o644, libc::O_RDWR, ME)
        .expect("create");
    fs.release(fh).expect("release");
    fs.write(f, None, 0, &vec![b'P'; 4096], false)
        .expect("write");
    let s1 = a.snapshot(&id, None, None).expect("s1");
    fs.write(f, None, 0, &vec![b'R'; 8192], false)
        .expect("write");
    let s2 = a.snapshot(&id, None, None).expect("s2");
    let zero = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(f, &zero, ME).expect("truncate");
    let s3 = a.snapshot(&id, None, None).expect("s3");
    for (s, from) in [(&s1, None), (&s2, Some(&s1)), (&s3, Some(&s2))] {
        let bytes = send(&a, &s.name, from.map(|f| f.name.as_str()));
        b.receive(&mut &bytes[..], "mirror", false)
            .expect("receive");
    }
    a.delete_snapshot(&id, &s2.name).expect("delete s2");
    let stats = a.reclaim().expect("reclaim");
    assert!(stats.versions_dropped >= 2, "{how:?}: {stats:?}");
    let fs = match how {
        Revival::Branch => {
            drop(fs);
            a.restore(&id, &s1.name).expect("restore");
            open_default(a.clone())
        }
        Revival::PathRestore => {
            fs.restore_paths(&s1, &[b"/big".to_vec()])
                .expect("restore big");
            fs
        }
    };
    let (f, _) = fs.lookup(ROOT_INO, b"big").expect("big");
    let grow = SetAttr {
        size: Some(8192),
        ..Default::default()
    };
    fs.setattr(f, &grow, ME).expect("grow");
    let s4 = a.snapshot(&id, None, None).expect("s4");
    let mut want = vec![b'P'; 4096];
    want.resize(8192, 0);
    assert_eq!(fs.read(f, 0, 8192).expect("read"), want, "{how:?}: sender");
    let bytes = send(&a, &s4.name, Some(&s3.name));
    let got = b
        .receive(&mut &bytes[..], "mirror", false)
        .expect("receive s4");
    let mirrored = snapshot_tree(&b, &got.snapshot);
    assert_eq!(
        mirrored[&b"/big".to_vec()].content,
        want,
        "{how:?}: receiver"
    );
    assert_eq!(mirrored, snapshot_tree(&a, &s4), "{how:?}");
    let head = Fs::new(b.clone(), &got.container.id).expect("head");
    assert_eq!(tree(&head), mirrored, "{how:?}: receiver's head");
    assert_fsck_clean(&a);
    assert_fsck_clean(&b);
}

#[test]
fn data_revived_on_another_branch_arrives_whole() {
    revived_data_arrives_whole(Revival::Branch);
}

#[test]
fn data_revived_by_a_path_restore_arrives_whole() {
    revived_data_arrives_whole(Revival::PathRestore);
}
