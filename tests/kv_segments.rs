//! The segment layer (`kv::segments`) beyond the conformance suite: live counters stay exact
//! under random batches and reopening, empty segments go once no read view can need them,
//! repacks move live entries, a power loss of unsynced segment bytes is found at open (never
//! served as garbage), and the check finds a planted bad reference and an orphan.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use snapfs::kv::segments::{SegmentOptions, SegmentedKv};
use snapfs::kv::{Batch, Dir, Kv, KvRead, Space};

#[macro_use]
mod kv_common;

use kv_common::*;

fn open_with(dir: &Path, opts: SegmentOptions) -> SegmentedKv {
    let rocks = open_rocks(&dir.join("db"));
    SegmentedKv::open(Box::new(rocks), &dir.join("segments"), opts).expect("open segments")
}

fn open(dir: &Path) -> SegmentedKv {
    open_with(dir, small_segment_options())
}

/// A store in `dir` holding keys `a0`..`a9` (values `value(i, 1000)`), synced.
fn open_with_ten_values(dir: &Path) -> SegmentedKv {
    let kv = open(dir);
    for i in 0..10u8 {
        put(&kv, Space::Data, &[b'a', i], &value(i as u64, 1000));
    }
    kv.sync().expect("sync");
    kv
}

fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

fn scan_data(kv: &dyn KvRead) -> Vec<(Vec<u8>, Vec<u8>)> {
    scan_all(kv, Space::Data, &[], &[0xff; 8], Dir::Forward)
}

#[test]
fn live_counters_stay_exact_under_random_batches_and_reopens() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut model = std::collections::BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..4 {
        let kv = open(dir.path());
        for _ in 0..150 {
            let mut b = Batch::new();
            for _ in 0..rng.gen_range(1..8) {
                let key = vec![b'k', rng.gen_range(0..40u8)];
                if rng.gen_bool(0.25) {
                    b.delete(Space::Data, key.clone());
                    model.remove(&key);
                } else {
                    // Inline and segment values, the same key more than once per batch.
                    let len = [0usize, 4, 8, 9, 100, 3000][rng.gen_range(0..6)];
                    let v = value(rng.gen(), len);
                    b.put(Space::Data, key.clone(), v.clone());
                    model.insert(key, v);
                }
            }
            kv.write(b, rng.gen_bool(0.1)).expect("write");
        }
        assert_segments_clean(&kv);
        let got: std::collections::BTreeMap<_, _> = scan_data(&kv).into_iter().collect();
        assert_eq!(got, model, "round {round}");
        if round % 2 == 1 {
            kv.maintenance()
                .expect("maintenance")
                .compact(Space::Data)
                .expect("collect");
            assert_segments_clean(&kv);
        }
    }
    let kv = open(dir.path());
    let got: std::collections::BTreeMap<_, _> = scan_data(&kv).into_iter().collect();
    assert_eq!(got, model, "after the last reopen");
    assert_segments_clean(&kv);
}

/// A batch of many puts over keys that exist, interleaved with versions of other epochs,
/// read ahead in scans (`SegmentedKv::prefetch`, `kv::read_keys`): the live counters
/// stay exact, and so do they for puts over a span that holds nothing, for a span half
/// new, and for a batch of deletes.
#[test]
fn puts_over_many_keys_keep_the_counters_exact_whatever_their_span_holds() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let kv = open(dir.path());
    let key = |i: u8, e: u8| vec![b'k', i, e];
    let batch_of = |keys: &mut dyn Iterator<Item = Vec<u8>>, seed: u64| {
        let mut b = Batch::new();
        for (n, k) in keys.enumerate() {
            b.put(Space::Data, k, value(seed + n as u64, 5000));
        }
        b
    };
    // Five versions of each of 20 bases.
    let mut all = (0..20u8).flat_map(|i| (1..=5u8).map(move |e| key(i, e)));
    kv.write(batch_of(&mut all, 0), false).expect("write");
    assert_segments_clean(&kv);
    // Every base's epoch-3 version again: 20 keys among 100 (the scan stops part-way).
    kv.write(batch_of(&mut (0..20u8).map(|i| key(i, 3)), 1000), false)
        .expect("overwrite");
    assert_segments_clean(&kv);
    // Keys that hold nothing yet, then a batch half over existing keys, half new.
    kv.write(batch_of(&mut (0..20u8).map(|i| key(i, 9)), 2000), false)
        .expect("new keys");
    assert_segments_clean(&kv);
    let mut half = (10..30u8).map(|i| key(i, 9));
    kv.write(batch_of(&mut half, 3000), false)
        .expect("half new");
    assert_segments_clean(&kv);
    assert_eq!(scan_data(&kv).len(), 100 + 30);
    // Many deletes in one batch (an unlink of a large file), some of keys that hold
    // nothing, read ahead the same way.
    let mut b = Batch::new();
    for i in 0..40u8 {
        b.delete(Space::Data, key(i, 9));
    }
    for i in 0..20u8 {
        b.delete(Space::Data, key(i, 2));
    }
    kv.write(b, false).expect("deletes");
    assert_segments_clean(&kv);
    assert_eq!(scan_data(&kv).len(), 100 + 30 - 30 - 20);
}

#[test]
fn empty_segments_go_only_when_no_older_read_view_is_open() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let kv = open(dir.path());
    let m = kv.maintenance().expect("maintenance");
    for i in 0..40u8 {
        put(&kv, Space::Data, &[b'a', i], &value(i as u64, 4000));
    }
    let first = segment_files(dir.path());
    assert!(first.len() >= 2, "160 KB in 64 KiB segments: {first:?}");
    let view = kv.read_view();
    for i in 0..40u8 {
        del(&kv, Space::Data, &[b'a', i]);
    }
    // Something new, so that every old segment is sealed.
    for i in 0..20u8 {
        put(&kv, Space::Data, &[b'b', i], &value(100 + i as u64, 4000));
    }
    m.compact(Space::Data).expect("collect");
    for p in &first {
        assert!(p.exists(), "{p:?} deleted under an open read view");
    }
    assert_eq!(get(&*view, Space::Data, &[b'a', 3]), Some(value(3, 4000)));
    drop(view);
    m.compact(Space::Data).expect("collect");
    let now = segment_files(dir.path());
    let sealed_before: Vec<_> = first[..first.len() - 1].to_vec();
    for p in &sealed_before {
        assert!(
            !now.contains(p),
            "{p:?} has no live bytes and no reader: still there"
        );
    }
    assert_segments_clean(&kv);
    for i in 0..20u8 {
        assert_eq!(
            get(&kv, Space::Data, &[b'b', i]),
            Some(value(100 + i as u64, 4000))
        );
    }
}

#[test]
fn the_horizon_keeps_an_empty_segment_a_while() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let opts = SegmentOptions {
        horizon: Duration::from_secs(3600),
        ..small_segment_options()
    };
    let kv = open_with(dir.path(), opts);
    for i in 0..40u8 {
        put(&kv, Space::Data, &[b'a', i], &value(i as u64, 4000));
    }
    let first = segment_files(dir.path());
    for i in 0..40u8 {
        del(&kv, Space::Data, &[b'a', i]);
    }
    for i in 0..20u8 {
        put(&kv, Space::Data, &[b'b', i], &value(i as u64, 4000));
    }
    kv.maintenance()
        .expect("maintenance")
        .compact(Space::Data)
        .expect("collect");
    for p in &first {
        assert!(p.exists(), "{p:?} deleted before the horizon");
    }
}

#[test]
fn repack_moves_the_live_entries_of_mostly_dead_segments() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let kv = open(dir.path());
    for i in 0..60u8 {
        put(&kv, Space::Data, &[b'a', i], &value(i as u64, 3000));
    }
    let first = segment_files(dir.path());
    // Four of five die: every old segment is mostly dead.
    for i in (0..60u8).filter(|i| i % 5 != 0) {
        del(&kv, Space::Data, &[b'a', i]);
    }
    let (len_before, live_before) = kv.segment_bytes();
    assert!(
        live_before * 3 < len_before,
        "{live_before} live of {len_before}"
    );
    let m = kv.maintenance().expect("maintenance");
    m.compact(Space::Data).expect("repack");
    m.compact(Space::Data)
        .expect("delete what the repack emptied");
    let now = segment_files(dir.path());
    for p in &first[..first.len() - 1] {
        assert!(!now.contains(p), "{p:?} was not repacked away");
    }
    for i in 0..60u8 {
        let want = (i % 5 == 0).then(|| value(i as u64, 3000));
        assert_eq!(get(&kv, Space::Data, &[b'a', i]), want, "key {i}");
    }
    let (len_after, live_after) = kv.segment_bytes();
    assert_eq!(live_after, live_before);
    // What is left: the segment that was open (never repacked) holding the moved entries.
    assert!(
        len_after < len_before * 2 / 3,
        "{len_after} bytes of segments left of {len_before}"
    );
    assert_segments_clean(&kv);
    drop(kv);
    let kv = open(dir.path());
    assert_segments_clean(&kv);
    assert_eq!(get(&kv, Space::Data, &[b'a', 10]), Some(value(10, 3000)));
}

/// Opens a store whose last unsynced segment bytes were lost (`damage` does to the segment
/// file what a power loss may: cut it, or leave garbage), with the inner store's batches
/// intact (its log reached the disk first): the references to lost bytes are found at open
/// and deleted; nothing reads garbage; synced values stay. With `all_lost` every unsynced
/// value is gone, else those whose bytes happen to be intact may stay.
fn power_loss_case(all_lost: bool, damage: &dyn Fn(&Path, u64)) {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let opts = SegmentOptions {
        sync_bytes: u64::MAX,
        segment_bytes: 1 << 30,
        ..small_segment_options()
    };
    let synced_len;
    {
        let kv = open_with(dir.path(), opts.clone());
        for i in 0..10u8 {
            put(&kv, Space::Data, &[b's', i], &value(i as u64, 2000));
        }
        kv.sync().expect("sync");
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1);
        synced_len = std::fs::metadata(&files[0]).expect("stat").len();
        // Unsynced: new keys, and overwrites of synced ones.
        for i in 0..10u8 {
            put(&kv, Space::Data, &[b'u', i], &value(50 + i as u64, 2000));
        }
        for i in 0..3u8 {
            put(&kv, Space::Data, &[b's', i], &value(90 + i as u64, 2000));
        }
        // The inner store's log survives (flushed); the segment's unsynced tail does not.
        kv.maintenance().expect("maintenance");
        drop(kv);
        damage(&segment_files(dir.path())[0], synced_len);
    }
    let kv = open_with(dir.path(), opts);
    let mut lost = 0;
    for (key, want) in (0..10u8)
        .map(|i| (vec![b'u', i], value(50 + i as u64, 2000)))
        .chain((0..3u8).map(|i| (vec![b's', i], value(90 + i as u64, 2000))))
    {
        // Lost (an overwrite at the same key is lost with its bytes) or whole: never garbage.
        match get(&kv, Space::Data, &key) {
            None => lost += 1,
            Some(v) => assert!(!all_lost && v == want, "key {key:?} reads garbage"),
        }
    }
    assert!(lost > 0);
    for i in 3..10u8 {
        assert_eq!(
            get(&kv, Space::Data, &[b's', i]),
            Some(value(i as u64, 2000))
        );
    }
    assert_segments_clean(&kv);
    // And the store goes on: new writes, reopen.
    put(&kv, Space::Data, b"new", &value(1234, 2000));
    drop(kv);
    let kv = open(dir.path());
    assert_eq!(get(&kv, Space::Data, b"new"), Some(value(1234, 2000)));
    assert_segments_clean(&kv);
}

#[test]
fn power_loss_that_cut_the_segment_is_found_at_open() {
    power_loss_case(true, &|file, synced| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .expect("open");
        f.set_len(synced).expect("truncate");
    });
}

#[test]
fn power_loss_that_left_zeros_in_the_segment_is_found_at_open() {
    power_loss_case(true, &|file, synced| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .expect("open");
        let len = f.metadata().expect("stat").len();
        f.write_all_at(&vec![0u8; (len - synced) as usize], synced)
            .expect("zero the tail");
    });
}

#[test]
fn power_loss_of_one_page_in_the_middle_of_the_tail_is_found_at_open() {
    power_loss_case(false, &|file, synced| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .expect("open");
        // A page of the unsynced part never reached the disk; the pages after it did.
        f.write_all_at(&[0u8; 4096], synced + 8192)
            .expect("zero a page");
    });
}

#[test]
fn check_finds_a_planted_bad_reference_and_an_orphan_and_repair_deletes_the_orphan() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let kv = open_with_ten_values(dir.path());
    let check = kv.segments().expect("segments");
    assert!(check.check().expect("check").is_clean());
    // A flipped byte in the middle of a value, and a file no record names.
    let file = segment_files(dir.path())[0].clone();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&file)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 2000).expect("read");
    f.write_all_at(&[b[0] ^ 0x40], 2000).expect("flip");
    let orphan = dir.path().join("segments").join("00000000000fffff.seg");
    std::fs::write(&orphan, b"SNFSSEG1junk").expect("plant orphan");
    check_finds_the_planted_damage(&kv, 0xfffff, &|| !orphan.exists());
}

#[test]
fn a_segment_created_by_a_writer_killed_before_recording_it_goes_at_open() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let kv = open_with_ten_values(dir.path());
    let before = segment_files(dir.path());
    drop(kv);
    // What a kill between creating a segment and the batch that records it leaves: a file
    // past the recorded next id that no record names (a header, nothing else).
    let left = dir.path().join("segments").join("00000000000000ff.seg");
    std::fs::write(&left, b"SNFSSEG1\0\0\0\0\0\0\0\0").expect("plant");
    let kv = open(dir.path());
    assert!(!left.exists(), "the unrecorded segment is still there");
    assert_eq!(segment_files(dir.path()), before);
    let report = kv.segments().expect("segments").check().expect("check");
    assert!(report.is_clean(), "{report:?}");
    for i in 0..10u8 {
        assert_eq!(
            get(&kv, Space::Data, &[b'a', i]),
            Some(value(i as u64, 1000))
        );
    }
    // New segments take ids past the deleted one's (a cache elsewhere may have seen it).
    for i in 0..10u8 {
        put(&kv, Space::Data, &[b'b', i], &value(100 + i as u64, 1000));
    }
    kv.sync().expect("sync");
    let new: Vec<PathBuf> = segment_files(dir.path())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!new.is_empty());
    assert!(new.iter().all(|p| *p > left), "{new:?}");
}

/// The check of `kv`, where one value's bytes have a flipped bit and an orphan segment
/// `orphan` of 12 bytes was planted: both are found, the damaged value is an error to read
/// (never garbage), repair deletes the orphan (`orphan_gone` says it went) and keeps
/// reporting the bad reference.
fn check_finds_the_planted_damage(kv: &dyn Kv, orphan: u64, orphan_gone: &dyn Fn() -> bool) {
    let check = kv.segments().expect("segments");
    let report = check.check().expect("check");
    assert_eq!(report.bad_refs.len(), 1, "{report:?}");
    assert!(report.bad_refs[0].1.contains("checksum"), "{report:?}");
    assert_eq!(report.orphans, vec![(orphan, 12)]);
    let bad_key = report.bad_refs[0].0.clone();
    assert!(kv.get(Space::Data, &bad_key).is_err());
    check.repair(&report).expect("repair");
    assert!(orphan_gone(), "orphan older than the (zero) horizon kept");
    let after = check.check().expect("check");
    assert!(after.orphans.is_empty(), "{after:?}");
    assert_eq!(
        after.bad_refs.len(),
        1,
        "a bad reference is reported, not dropped"
    );
}

#[test]
fn an_fsync_of_a_short_tail_journals_it_and_open_writes_it_back() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let opts = SegmentOptions {
        sync_bytes: u64::MAX,
        segment_bytes: 1 << 30,
        journal_max: 1 << 20,
        ..small_segment_options()
    };
    {
        let kv = open_with(dir.path(), opts.clone());
        for i in 0..10u8 {
            put(&kv, Space::Data, &[b's', i], &value(i as u64, 2000));
            if i % 3 == 0 {
                kv.sync().expect("sync");
            }
        }
        kv.sync().expect("sync");
        drop(kv);
        // Nothing of the segment was fdatasynced: a power loss may take all of it but the
        // header (written and synced when the segment was created).
        let file = segment_files(dir.path())[0].clone();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open");
        f.set_len(16).expect("cut to the header");
    }
    let kv = open_with(dir.path(), opts);
    for i in 0..10u8 {
        assert_eq!(
            get(&kv, Space::Data, &[b's', i]),
            Some(value(i as u64, 2000)),
            "fsynced key s{i}"
        );
    }
    assert_segments_clean(&kv);
    // The records are gone once written back.
    let mut journal = 0;
    kv.scan(Space::Segments, &[2], &[3], Dir::Forward, &mut |_, _| {
        journal += 1;
        true
    })
    .expect("scan");
    assert_eq!(journal, 0, "journal records left after open");
}

/// The test rule: a data key `v` + 4-byte id + epoch has the 5-byte base `v` + id.
fn test_base(space: Space, k: &[u8]) -> Option<usize> {
    (space == Space::Data && k.first() == Some(&b'v') && k.len() >= 5).then_some(5)
}

#[test]
fn a_move_between_keys_of_one_base_keeps_its_bytes_and_repack_finds_the_new_holder() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let opts = SegmentOptions {
        base_len: Some(test_base),
        ..small_segment_options()
    };
    let kv = open_with(dir.path(), opts.clone());
    let key = |id: u8, epoch: u8| vec![b'v', 0, 0, 0, id, epoch];
    for id in 0..30u8 {
        put(&kv, Space::Data, &key(id, 1), &value(id as u64, 3000));
    }
    let (len0, live0) = kv.segment_bytes();
    let first = segment_files(dir.path())[0].clone();
    // Reclaim's move: the same bytes under epoch 2, epoch 1's version dropped; in either
    // order within the batch. Plus one put whose bytes differ (a real write).
    let mut b = Batch::new();
    for id in 0..30u8 {
        if id % 2 == 0 {
            b.put(Space::Data, key(id, 2), value(id as u64, 3000));
            b.delete(Space::Data, key(id, 1));
        } else {
            b.delete(Space::Data, key(id, 1));
            b.put(Space::Data, key(id, 2), value(id as u64, 3000));
        }
    }
    b.put(Space::Data, key(0, 3), value(999, 3000));
    kv.write(b, false).expect("move");
    let (len1, live1) = kv.segment_bytes();
    assert_eq!(live1, live0 + 3000, "live bytes: the moves add nothing");
    assert!(
        len1 - len0 < 4000,
        "the moves appended {} bytes",
        len1 - len0
    );
    // Not a move: other base, or bytes that differ.
    let mut b = Batch::new();
    b.put(Space::Data, key(1, 4), value(1, 3000));
    b.delete(Space::Data, key(2, 2));
    kv.write(b, false).expect("copy");
    let (len2, _) = kv.segment_bytes();
    assert!(len2 - len1 >= 3000, "a put under another base shared bytes");
    assert_segments_clean(&kv);
    // Kill most of the old segments' entries, then repack: the moved references are found
    // under their new keys.
    for id in 3..30u8 {
        del(&kv, Space::Data, &key(id, 2));
    }
    for i in 0..40u8 {
        put(
            &kv,
            Space::Data,
            &key(100 + i, 1),
            &value(500 + i as u64, 3000),
        );
    }
    let m = kv.maintenance().expect("maintenance");
    m.compact(Space::Data).expect("repack");
    m.compact(Space::Data).expect("delete");
    assert!(
        !first.exists(),
        "the first segment still holds live bytes: its moved references were not repacked"
    );
    assert_segments_clean(&kv);
    assert_eq!(get(&kv, Space::Data, &key(0, 2)), Some(value(0, 3000)));
    assert_eq!(get(&kv, Space::Data, &key(1, 2)), Some(value(1, 3000)));
    assert_eq!(get(&kv, Space::Data, &key(1, 4)), Some(value(1, 3000)));
    assert_eq!(get(&kv, Space::Data, &key(0, 3)), Some(value(999, 3000)));
    assert_eq!(get(&kv, Space::Data, &key(2, 2)), None);
    drop(kv);
    let kv = open_with(dir.path(), opts);
    assert_segments_clean(&kv);
    assert_eq!(get(&kv, Space::Data, &key(0, 2)), Some(value(0, 3000)));
}

#[test]
fn sealed_segments_sync_in_the_background_and_an_fsync_waits_for_none_left() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let kv = open(dir.path());
    for i in 0..200u8 {
        put(&kv, Space::Data, &[b'a', i], &value(i as u64, 3000));
    }
    assert!(segment_files(dir.path()).len() > 5);
    // Whatever the background thread has done by now, an fsync leaves nothing unsynced
    // that a reference points to (the open segment's short tail may be journaled instead).
    kv.sync().expect("sync");
    let left = kv.unsynced_bytes();
    assert!(
        left <= kv.options().journal_max,
        "{left} bytes unsynced after an fsync"
    );
    // The background syncs complete and are recorded by the next batch.
    std::thread::sleep(Duration::from_millis(300));
    put(&kv, Space::Data, b"z", &value(1, 10));
    kv.maintenance()
        .expect("maintenance")
        .flush_buffers()
        .expect("flush");
    assert_eq!(kv.unsynced_bytes(), 0);
    drop(kv);
    let kv = open(dir.path());
    assert_eq!(kv.unsynced_bytes(), 0);
    for i in 0..200u8 {
        assert_eq!(
            get(&kv, Space::Data, &[b'a', i]),
            Some(value(i as u64, 3000))
        );
    }
    assert_segments_clean(&kv);
}

/// The same on object storage (segment objects in a local directory standing in for the
/// bucket): a flipped byte in a part object and an orphan segment object planted while the
/// store was closed (a new process discards its cache, so the check reads the objects).
#[cfg(feature = "slatedb")]
#[test]
fn check_on_object_storage_finds_a_planted_bad_reference_and_an_orphan() {
    use snapfs::kv::slate::SlateKv;
    let dir = tempfile::TempDir::new().expect("tempdir");
    let bucket = dir.path().join("bucket");
    let open = || {
        let kv = SlateKv::open(local_bucket(&bucket), "db").expect("open slatedb");
        open_slate_segmented(kv, &dir.path().join("segcache"))
    };
    {
        let kv = open();
        for i in 0..10u8 {
            put(&kv, Space::Data, &[b'a', i], &value(i as u64, 1000));
        }
        kv.sync().expect("sync");
        assert!(kv
            .segments()
            .expect("segments")
            .check()
            .expect("check")
            .is_clean());
    }
    // The short tail went to the database as a journal record; opening again writes it
    // into its segment (one more part).
    drop(open());
    // The parts: bucket/db/segments/<segment>/<offset>. Flip a byte of a value.
    let segs = bucket.join("db/segments");
    let mut parts: Vec<PathBuf> = walk(&segs);
    parts.sort();
    assert!(
        !parts.is_empty(),
        "no segment objects under {}",
        segs.display()
    );
    let (part, at) = parts
        .iter()
        .find_map(|p| {
            let len = std::fs::metadata(p).expect("stat").len();
            (len > 2000).then(|| (p.clone(), 2000u64))
        })
        .expect("a part holding values");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&part)
        .expect("open part");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    f.write_all_at(&[b[0] ^ 0x40], at).expect("flip");
    // Id 0, which no segment takes: one past the recorded next id would be a segment whose
    // writer died before recording it, which opening deletes (tested above).
    let orphan = segs.join("0000000000000000");
    std::fs::create_dir_all(&orphan).expect("mkdir");
    std::fs::write(orphan.join("0000000000000000"), b"SNFSSEG1junk").expect("plant orphan");

    let kv = open();
    check_finds_the_planted_damage(&kv, 0, &|| walk(&orphan).is_empty());
}

/// A local directory standing in for a bucket (created), as an object store.
#[cfg(feature = "slatedb")]
fn local_bucket(dir: &Path) -> std::sync::Arc<dyn slatedb::object_store::ObjectStore> {
    std::fs::create_dir_all(dir).expect("bucket");
    std::sync::Arc::new(
        slatedb::object_store::local::LocalFileSystem::new_with_prefix(dir)
            .expect("local object store"),
    )
}

/// Every file under `dir` (none when it does not exist).
#[cfg(feature = "slatedb")]
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A reader following the writer on object storage reads values whose bytes the writer made
/// durable as tail journal records only (short fsyncs, then idle: no part uploaded yet),
/// and, once the writer uploaded them and dropped the records, from the segment objects.
#[cfg(feature = "slatedb")]
#[test]
fn a_reader_on_object_storage_reads_bytes_still_in_tail_journal_records() {
    use snapfs::kv::slate::{SlateKv, SlateOptions};
    use snapfs::kv::Maintenance as _;
    let dir = tempfile::TempDir::new().expect("tempdir");
    let bucket = dir.path().join("bucket");
    let os = || local_bucket(&bucket);
    let writer = open_slate_segmented(
        SlateKv::open(os(), "db").expect("open writer"),
        &dir.path().join("w-cache"),
    );
    for i in 0..4u8 {
        put(
            &writer,
            Space::Data,
            &[b'j', i],
            &value(100 + i as u64, 1_000),
        );
        writer.sync().expect("sync");
    }
    let parts = walk(&bucket.join("db/segments"));
    let stored: u64 = parts
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();
    assert!(
        stored < 1_000,
        "the short tails were uploaded ({stored} bytes)"
    );
    let opts = SlateOptions {
        read_only: true,
        ..SlateOptions::default()
    };
    // A reader host (its own, empty cache) reads every value.
    let read_all = || {
        let reader = open_slate_segmented(
            SlateKv::open_with(os(), "db", &opts).expect("open reader"),
            &dir.path().join("r-cache"),
        );
        for i in 0..4u8 {
            assert_eq!(
                reader.get(Space::Data, &[b'j', i]).expect("reader get"),
                Some(value(100 + i as u64, 1_000)),
                "value {i} through the reader"
            );
        }
    };
    read_all();
    // The writer uploads the tail and drops the records: a new reader reads the objects.
    writer.flush_buffers().expect("flush");
    read_all();
}
