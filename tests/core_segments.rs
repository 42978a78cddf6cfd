//! The store over the segment layer: a store written before segments (format 1, every block
//! in RocksDB) opens, reads its blocks as they are, moves to this build's format and writes new blocks
//! to segments; fsck checks both kinds; a newer format is refused by name.

#[path = "core/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::*;
use snapfs::kv::rocks::{RocksKv, RocksOptions};
use snapfs::kv::{Batch, Kv, Space};
use snapfs::store::Store;

fn set_format(kv: &dyn Kv, v: u64) {
    let mut b = Batch::new();
    b.put(
        Space::Meta,
        snapfs::keys::setting("format"),
        v.to_be_bytes().to_vec(),
    );
    kv.write(b, true).expect("write format");
}

fn format_of(kv: &dyn Kv) -> u64 {
    let v = kv
        .get(Space::Meta, &snapfs::keys::setting("format"))
        .expect("get")
        .expect("format");
    u64::from_be_bytes(v.try_into().expect("8 bytes"))
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Writes a file, a snapshot and an overwrite the way a store before segments does, into
/// `kv`, which then says it has format `format`: (the file's inode, the snapshot's name).
fn write_the_old_way(kv: Arc<dyn Kv>, format: u64) -> (snapfs::ids::Ino, String) {
    let store = Arc::new(Store::init(kv.clone(), 4096).expect("init"));
    let fs = open_default(store.clone());
    let (ino, fh) = file(&fs, "old");
    fs.write(ino, Some(fh), 0, &pattern(1, 100_000), false)
        .expect("write");
    let id = default_id(&store);
    let snap = store
        .snapshot(&id, Some("before"), None)
        .expect("snapshot")
        .name;
    fs.write(ino, Some(fh), 50_000, &pattern(2, 20_000), false)
        .expect("overwrite");
    fs.fsync().expect("fsync");
    set_format(&*kv, format);
    (ino, snap)
}

/// Opens the store written by [`write_the_old_way`] over the segment layer `kv`: it moves
/// to this build's format, its old blocks read as they are, new ones go to segments, the
/// old snapshot reads the old way, fsck is clean.
fn check_the_old_store_opens(kv: Arc<dyn Kv>, ino: snapfs::ids::Ino, snap: &str) {
    let store = Arc::new(Store::open(kv.clone()).expect("open an older store"));
    assert_eq!(
        format_of(&*kv),
        u64::from(snapfs::store::FORMAT_VERSION),
        "a writable open moves the store to this build's format"
    );
    let fs = open_default(store.clone());
    let mut want = pattern(1, 100_000);
    want[50_000..70_000].copy_from_slice(&pattern(2, 20_000));
    assert_eq!(fs.read(ino, 0, 200_000).expect("read"), want);
    let seg = kv.segments().expect("segments");
    assert_eq!(
        seg.check().expect("check").refs,
        0,
        "nothing moved by opening"
    );
    // New writes go to segments; old blocks beside them still read.
    fs.write(ino, None, 0, &pattern(3, 10_000), false)
        .expect("write");
    fs.fsync().expect("fsync");
    want[..10_000].copy_from_slice(&pattern(3, 10_000));
    assert_eq!(fs.read(ino, 0, 200_000).expect("read"), want);
    let report = seg.check().expect("check");
    assert!(report.refs >= 2, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    // The snapshot taken the old way still reads the old way.
    let id = default_id(&store);
    let s = store
        .snapshots(&id)
        .expect("snapshots")
        .into_iter()
        .find(|s| s.name == snap)
        .expect("snapshot");
    let view = snapfs::fs::Fs::frozen(store.clone(), &id, store.snapshot_chain(&s));
    assert_eq!(
        view.read(ino, 0, 200_000).expect("read"),
        pattern(1, 100_000)
    );
    let r = snapfs::fsck::check(&store).expect("fsck");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn a_store_written_before_segments_opens_reads_and_writes_new_blocks_to_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Written the old way: plain RocksDB, format 1.
    let (ino, snap) = write_the_old_way(
        Arc::new(RocksKv::open(&dir.path().join("db"), &RocksOptions::default()).expect("open")),
        1,
    );
    check_the_old_store_opens(Arc::new(segmented(dir.path())), ino, &snap);
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let kv: Arc<dyn Kv> = Arc::new(segmented(dir.path()));
        Store::init(kv.clone(), 4096).expect("init");
        set_format(&*kv, u64::from(snapfs::store::FORMAT_VERSION) + 1);
    }
    let kv: Arc<dyn Kv> = Arc::new(segmented(dir.path()));
    let err = Store::open(kv).err().expect("refused");
    let (newer, known) = (
        format!("format version {}", snapfs::store::FORMAT_VERSION + 1),
        format!("1 to {}", snapfs::store::FORMAT_VERSION),
    );
    assert!(
        err.to_string().contains(&newer) && err.to_string().contains(&known),
        "{err}"
    );
}

/// A store on object storage written before segments (format 2: every block inside SlateDB)
/// opens with file data in segment objects: old blocks read as they are, new ones go to
/// segments, a snapshot taken the old way reads the old way, fsck is clean.
#[cfg(feature = "slatedb")]
#[test]
fn a_store_on_object_storage_written_before_segments_opens_and_writes_to_segments() {
    use snapfs::kv::slate::{open, Location, SlateOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = Location::Dir(dir.path().join("bucket"));
    let mut opts = SlateOptions {
        version_rule: Some(snapfs::remote::VERSION_RULE),
        ..SlateOptions::default()
    };
    let kv = open(&bucket, "snapfs", &opts).expect("open slatedb without segments");
    assert!(kv.segments().is_none(), "opened with segments");
    // Format 2: blocks of stores on object storage were all inside SlateDB.
    let (ino, snap) = write_the_old_way(kv, 2);
    opts.segment_cache = Some(dir.path().join("segcache"));
    let kv = open(&bucket, "snapfs", &opts).expect("open with segments");
    check_the_old_store_opens(kv, ino, &snap);
}
