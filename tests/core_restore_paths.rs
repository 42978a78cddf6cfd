//! Restoring some paths from a snapshot (`Fs::restore_paths`): what comes back, what stays,
//! hard links across the restored path, files moved out of it since, recreated parents,
//! revived data ids that reclaim must keep after the snapshots are deleted, and errors.
//! Every scenario ends with fsck clean.

#[path = "core/harness.rs"]
mod harness;

use snapfs::ids::{ContainerId, Ino};
use std::sync::Arc;

use harness::*;
use snapfs::fs::{Fs, SetAttr, ROOT_INO};
use snapfs::store::{SnapshotInfo, Store};

fn cid(store: &Store) -> ContainerId {
    store
        .container_by_name("default")
        .expect("lookup")
        .expect("container")
        .id
}

fn snap(fs: &Fs) -> SnapshotInfo {
    fs.store()
        .snapshot(&cid(fs.store()), None, None)
        .expect("snapshot")
}

/// The inode at `path` (absolute, `/`-separated), if any.
fn at(fs: &Fs, path: &str) -> Option<Ino> {
    let mut ino = ROOT_INO;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs.lookup(ino, c.as_bytes()).ok()?.0;
    }
    Some(ino)
}

fn dir(fs: &Fs, path: &str) -> Ino {
    at(fs, path).unwrap_or_else(|| panic!("no directory {path}"))
}

fn mkdirs(fs: &Fs, path: &str) -> Ino {
    let mut ino = ROOT_INO;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = match fs.lookup(ino, c.as_bytes()) {
            Ok((i, _)) => i,
            Err(_) => fs.mkdir(ino, c.as_bytes(), 0o755, ME).expect("mkdir").0,
        };
    }
    ino
}

fn put(fs: &Fs, path: &str, data: &[u8]) -> Ino {
    let (parent, name) = path.rsplit_once('/').expect("absolute path");
    let d = mkdirs(fs, parent);
    let ino = match fs.lookup(d, name.as_bytes()) {
        Ok((i, _)) => i,
        Err(_) => {
            let (i, _, fh) = fs
                .create(d, name.as_bytes(), 0o644, libc::O_RDWR, ME)
                .expect("create");
            fs.release(fh).expect("release");
            i
        }
    };
    let set = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(ino, &set, ME).expect("truncate");
    fs.write(ino, None, 0, data, false).expect("write");
    ino
}

fn get(fs: &Fs, path: &str) -> Option<Vec<u8>> {
    at(fs, path).map(|i| fs.read(i, 0, 1 << 24).expect("read"))
}

fn names(fs: &Fs, path: &str) -> Vec<String> {
    let d = dir(fs, path);
    let fh = fs.opendir(d).expect("opendir");
    let v = fs
        .readdir(d, fh, 0)
        .expect("readdir")
        .iter()
        .skip(2)
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    fs.releasedir(fh);
    v
}

fn restore(fs: &Fs, s: &SnapshotInfo, paths: &[&str]) -> snapfs::fs::PathRestore {
    let raw: Vec<Vec<u8>> = paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    fs.restore_paths(s, &raw).expect("restore paths")
}

fn fsck_clean(store: &Arc<Store>) {
    let report = snapfs::fsck::check(store).expect("fsck");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
}

/// Deletes every snapshot and reclaims until nothing is left to do.
fn drop_all_snapshots(fs: &Fs) {
    let store = fs.store();
    for s in store.snapshots(&cid(store)).expect("list") {
        store.delete_snapshot(&cid(store), &s.name).expect("delete");
    }
    store.reclaim().expect("reclaim");
}

#[test]
fn restores_only_the_named_paths() {
    let t = make(mem_backend());
    put(&t, "/etc/nginx/nginx.conf", b"good config");
    put(&t, "/etc/nginx/sites/a", b"site a");
    put(&t, "/etc/hosts", b"hosts v1");
    put(&t, "/app/db", &vec![7u8; 100_000]);
    let s = snap(&t);
    put(&t, "/etc/nginx/nginx.conf", b"broken");
    t.unlink(dir(&t, "/etc/nginx/sites"), b"a").expect("unlink");
    put(&t, "/etc/nginx/sites/b", b"new site");
    put(&t, "/etc/hosts", b"hosts v2");
    put(&t, "/app/db", b"truncated and rewritten");
    put(&t, "/app/new", b"kept");

    let r = restore(&t, &s, &["/etc/nginx", "/app/db"]);
    assert!(r.restored >= 5, "{r:?}");
    assert_eq!(
        get(&t, "/etc/nginx/nginx.conf").as_deref(),
        Some(&b"good config"[..])
    );
    assert_eq!(names(&t, "/etc/nginx/sites"), vec!["a"]);
    assert_eq!(
        get(&t, "/etc/nginx/sites/a").as_deref(),
        Some(&b"site a"[..])
    );
    assert_eq!(get(&t, "/app/db"), Some(vec![7u8; 100_000]));
    // Everything else stays as it is.
    assert_eq!(get(&t, "/etc/hosts").as_deref(), Some(&b"hosts v2"[..]));
    assert_eq!(get(&t, "/app/new").as_deref(), Some(&b"kept"[..]));
    // Link counts of the directories follow their entries.
    let nginx = t.getattr(dir(&t, "/etc/nginx")).expect("attr");
    assert_eq!(nginx.nlink, 3);
    // The snapshot records its use.
    let used = t
        .store()
        .find_snapshot(&cid(t.store()), &s.name)
        .expect("find")
        .expect("snapshot");
    assert!(used.record.last_used_at.is_some());
    fsck_clean(t.store());
}

#[test]
fn a_path_the_snapshot_lacks_is_deleted_and_missing_parents_come_back() {
    let t = make(mem_backend());
    put(&t, "/a/b/c/f", b"deep");
    put(&t, "/a/b/other", b"other");
    let s = snap(&t);
    put(&t, "/new/thing", b"x");
    // rm -rf /a/b
    let b = dir(&t, "/a/b");
    let c = dir(&t, "/a/b/c");
    t.unlink(c, b"f").expect("unlink");
    t.rmdir(b, b"c").expect("rmdir");
    t.unlink(b, b"other").expect("unlink");
    t.rmdir(dir(&t, "/a"), b"b").expect("rmdir");

    restore(&t, &s, &["/a/b/c/f", "/new"]);
    assert_eq!(get(&t, "/a/b/c/f").as_deref(), Some(&b"deep"[..]));
    // Only what is on the path is recreated.
    assert_eq!(names(&t, "/a/b"), vec!["c"]);
    assert!(at(&t, "/new").is_none());
    assert_eq!(t.getattr(dir(&t, "/a")).expect("attr").nlink, 3);
    fsck_clean(t.store());

    // A path in neither tree changes nothing; a file where a parent should be is refused.
    restore(&t, &s, &["/nowhere/at/all"]);
    put(&t, "/plain", b"file");
    let err = t
        .restore_paths(&s, &[b"/plain/x".to_vec()])
        .expect_err("parent is a file");
    assert_eq!(err.errno(), libc::ENOTDIR);
    assert_eq!(
        t.restore_paths(&s, &[b"/".to_vec()])
            .expect_err("root")
            .errno(),
        libc::EINVAL
    );
    assert_eq!(
        t.restore_paths(&s, &[b"relative".to_vec()])
            .expect_err("relative")
            .errno(),
        libc::EINVAL
    );
    fsck_clean(t.store());
}

#[test]
fn hard_links_across_the_path_stay_links() {
    let t = make(mem_backend());
    let ino = put(&t, "/p/f", b"original");
    let q = mkdirs(&t, "/q");
    t.link(ino, q, b"g").expect("link");
    let s = snap(&t);
    put(&t, "/q/g", b"changed through the other name");
    restore(&t, &s, &["/p"]);
    assert_eq!(at(&t, "/p/f"), Some(ino));
    assert_eq!(at(&t, "/q/g"), Some(ino));
    assert_eq!(get(&t, "/q/g").as_deref(), Some(&b"original"[..]));
    assert_eq!(t.getattr(ino).expect("attr").nlink, 2);
    fsck_clean(t.store());
}

#[test]
fn a_file_moved_out_since_comes_back_as_a_copy() {
    let t = make(mem_backend());
    let ino = put(&t, "/p/f", b"at snapshot time");
    put(&t, "/p/sub/g", b"in a subdirectory");
    let s = snap(&t);
    let q = mkdirs(&t, "/q");
    t.rename(dir(&t, "/p"), b"f", q, b"f", 0).expect("mv");
    t.rename(dir(&t, "/p"), b"sub", q, b"sub", 0).expect("mv");
    put(&t, "/q/f", b"moved and changed");

    restore(&t, &s, &["/p"]);
    assert_eq!(get(&t, "/p/f").as_deref(), Some(&b"at snapshot time"[..]));
    assert_eq!(
        get(&t, "/p/sub/g").as_deref(),
        Some(&b"in a subdirectory"[..])
    );
    // The moved ones stay where they went, untouched and independent.
    assert_eq!(at(&t, "/q/f"), Some(ino));
    assert_eq!(get(&t, "/q/f").as_deref(), Some(&b"moved and changed"[..]));
    assert_eq!(
        get(&t, "/q/sub/g").as_deref(),
        Some(&b"in a subdirectory"[..])
    );
    let copy = at(&t, "/p/f").expect("restored");
    assert_ne!(copy, ino);
    t.write(copy, None, 0, b"AT", false).expect("write");
    assert_eq!(get(&t, "/q/f").as_deref(), Some(&b"moved and changed"[..]));
    put(&t, "/q/sub/g", b"changed in q");
    assert_eq!(
        get(&t, "/p/sub/g").as_deref(),
        Some(&b"in a subdirectory"[..])
    );
    assert_eq!(t.getattr(ino).expect("attr").nlink, 1);
    fsck_clean(t.store());
}

#[test]
fn revived_data_survives_deleting_every_snapshot() {
    for backend in [mem_backend(), rocks_backend()] {
        let t = make(backend);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        put(&t, "/keep/big", &big);
        put(&t, "/keep/gone", b"deleted later");
        let s = snap(&t);
        // Between the snapshot and now: a snapshot that rewrites a block, then truncation
        // to zero (a new data id: the old one is marked gone) and a deletion (freed).
        let ino = at(&t, "/keep/big").expect("big");
        t.write(ino, None, 4096, b"between", false).expect("write");
        let _mid = snap(&t);
        put(&t, "/keep/big", b"short");
        t.unlink(dir(&t, "/keep"), b"gone").expect("unlink");
        let _later = snap(&t);
        put(&t, "/keep/big", b"shorter");

        restore(&t, &s, &["/keep"]);
        assert_eq!(get(&t, "/keep/big"), Some(big.clone()));
        assert_eq!(
            get(&t, "/keep/gone").as_deref(),
            Some(&b"deleted later"[..])
        );
        fsck_clean(t.store());
        // Reclaim must keep what the head now reads, whatever is deleted.
        drop_all_snapshots(&t);
        assert_eq!(get(&t, "/keep/big"), Some(big.clone()));
        assert_eq!(
            get(&t, "/keep/gone").as_deref(),
            Some(&b"deleted later"[..])
        );
        fsck_clean(t.store());
        let t = reopen(t);
        assert_eq!(get(&t, "/keep/big"), Some(big.clone()));
        // And freeing it again frees it.
        t.unlink(dir(&t, "/keep"), b"big").expect("unlink");
        let _ = snap(&t);
        drop_all_snapshots(&t);
        fsck_clean(t.store());
    }
}

/// The simplest case reclaim must get right: the snapshot after the truncation marks the
/// old data id gone; the restore revives it below that snapshot; deleting the restored-from
/// snapshot prunes it against the marking one, which must not drop the revived blocks.
#[test]
fn a_prune_against_the_marking_snapshot_keeps_revived_blocks() {
    let t = make(mem_backend());
    let big: Vec<u8> = (0..400_000u32).map(|i| (i % 241) as u8).collect();
    put(&t, "/big", &big);
    let s = snap(&t);
    put(&t, "/big", b"small now");
    let _marking = snap(&t);
    restore(&t, &s, &["/big"]);
    t.store()
        .delete_snapshot(&cid(t.store()), &s.name)
        .expect("delete");
    t.store().reclaim().expect("reclaim");
    assert_eq!(get(&t, "/big"), Some(big));
    fsck_clean(t.store());
}

#[test]
fn unchanged_data_is_shared_not_copied() {
    let t = make(mem_backend());
    let big = vec![9u8; 4 << 20];
    put(&t, "/data/blob", &big);
    let s = snap(&t);
    t.unlink(dir(&t, "/data"), b"blob").expect("unlink");
    let before = t.store().live_bytes().expect("bytes");
    restore(&t, &s, &["/data/blob"]);
    let after = t.store().live_bytes().expect("bytes");
    assert!(
        after < before + 64 * 1024,
        "restoring an unchanged 4 MiB file wrote {} bytes",
        after.saturating_sub(before)
    );
    assert_eq!(get(&t, "/data/blob"), Some(big));
    fsck_clean(t.store());
}

#[test]
fn extended_attributes_and_metadata_come_back() {
    let t = make(mem_backend());
    let ino = put(&t, "/f", b"x");
    t.setxattr(ino, b"user.a", b"1", 0).expect("setxattr");
    let set = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    t.setattr(ino, &set, ME).expect("chmod");
    let s = snap(&t);
    t.setxattr(ino, b"user.a", b"2", 0).expect("setxattr");
    t.setxattr(ino, b"user.b", b"new", 0).expect("setxattr");
    let set = SetAttr {
        mode: Some(0o644),
        ..Default::default()
    };
    t.setattr(ino, &set, ME).expect("chmod");
    restore(&t, &s, &["/f"]);
    assert_eq!(t.getxattr(ino, b"user.a").expect("a"), b"1");
    assert!(t.getxattr(ino, b"user.b").is_err());
    assert_eq!(t.getattr(ino).expect("attr").perm, 0o600);
    fsck_clean(t.store());
}

#[test]
fn an_open_file_removed_by_the_restore_lives_until_closed() {
    let t = make(mem_backend());
    let s = snap(&t);
    let (ino, _, fh) = t
        .create(ROOT_INO, b"scratch", 0o644, libc::O_RDWR, ME)
        .expect("create");
    t.write(ino, None, 0, b"still open", false).expect("write");
    restore(&t, &s, &["/scratch"]);
    assert!(at(&t, "/scratch").is_none());
    assert_eq!(
        t.read(ino, 0, 100).expect("read open orphan"),
        b"still open"
    );
    t.release(fh).expect("release");
    assert!(t.getattr(ino).is_err());
    fsck_clean(t.store());
}
