//! Unit tests of segment objects.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slatedb::object_store::ObjectStore;

use super::{ObjectSegments, CHUNK, PREFETCH_AFTER};
use crate::kv::segments::{file_header, SegmentStore, SegmentedKv};
use crate::kv::slate::test_store::Hooked;
use crate::kv::slate::{segment_options, segmented, SlateKv, SlateOptions};
use crate::kv::{Batch, Kv, KvRead, KvResult, Space};

/// Objects in files under `dir/bucket`.
fn local_bucket(dir: &std::path::Path) -> (std::path::PathBuf, Arc<dyn ObjectStore>) {
    let bucket = dir.join("bucket");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let os = slatedb::object_store::local::LocalFileSystem::new_with_prefix(&bucket)
        .expect("local object store");
    (bucket, Arc::new(os))
}

/// Segment 7 holding `data` after its header, uploaded by a writer (cache in `cache`) that
/// then goes away.
fn upload_segment_7(os: &Arc<dyn ObjectStore>, cache: &std::path::Path, data: &[u8]) {
    let header = file_header(7).len() as u64;
    let w = ObjectSegments::open(os.clone(), "db", cache, 1 << 30, None).expect("open a writer");
    w.create(7).expect("create");
    w.append(7, header, data).expect("append");
    w.sync(7, header + data.len() as u64).expect("upload");
}

/// Reads that miss in `PREFETCH_AFTER` different chunks bring the whole segment into
/// the cache (another process's, empty at open), with the same bytes.
#[test]
fn broad_reads_fetch_the_whole_segment_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, os) = local_bucket(dir.path());
    let data: Vec<u8> = (0..(8 * CHUNK) as usize).map(|i| (i % 251) as u8).collect();
    let header = file_header(7).len() as u64;
    upload_segment_7(&os, &dir.path().join("w"), &data);
    let r = ObjectSegments::open(os, "db", &dir.path().join("r"), 1 << 30, None)
        .expect("open reader side");
    for i in 0..PREFETCH_AFTER as u64 {
        let off = header + i * CHUNK + 100;
        let got = r.read_at(7, off, 4096).expect("read");
        let at = (off - header) as usize;
        assert_eq!(got, data[at..at + 4096]);
    }
    let whole = header + data.len() as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while r.cached_bytes() < whole {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {whole} bytes cached",
            r.cached_bytes()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let at = 6 * CHUNK as usize + 12345;
    assert_eq!(
        r.read_at(7, header + at as u64, 1000).expect("read"),
        data[at..at + 1000]
    );
}

/// A part missing before one that went up (parts go up four at a time; the writer crashed
/// meanwhile): the next writer restores the tail journal's bytes for that range into the
/// hole, and reads them back; bytes in the rest of the hole read as missing, never as
/// zeros.
#[test]
fn restored_journal_bytes_fill_a_hole_between_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bucket, os) = local_bucket(dir.path());
    let data: Vec<u8> = (0..(12 * CHUNK) as usize)
        .map(|i| (i % 253) as u8)
        .collect();
    let header = file_header(7).len() as u64;
    upload_segment_7(&os, &dir.path().join("w"), &data);
    // The second of the three data parts never went up.
    let hole = header + 4 * CHUNK;
    let part = bucket.join(format!("db/segments/{:016x}/{hole:016x}", 7));
    std::fs::remove_file(&part).expect("the part at 4 MiB exists");
    let next = ObjectSegments::open(os, "db", &dir.path().join("n"), 1 << 30, None)
        .expect("open the next writer");
    // A journal record of 64 KiB inside the hole, and one that straddles the first part's
    // end (its first half is stored already).
    let (a, len) = (hole + 100_000, 64 << 10);
    let piece =
        |at: u64, n: usize| data[(at - header) as usize..(at - header) as usize + n].to_vec();
    next.append(7, a, &piece(a, len))
        .expect("restore into the hole");
    let b = hole - 32_768;
    next.append(7, b, &piece(b, 65_536))
        .expect("restore across the hole's start");
    next.sync(7, a + len as u64).expect("sync after restoring");
    assert_eq!(
        next.read_at(7, a, len).expect("read restored"),
        piece(a, len)
    );
    assert_eq!(
        next.read_at(7, b, 65_536).expect("read across"),
        piece(b, 65_536)
    );
    let after = header + 8 * CHUNK + 5;
    assert_eq!(
        next.read_at(7, after, 1000).expect("read past the hole"),
        piece(after, 1000)
    );
    let lost = next
        .read_at(7, hole + 200_000, 4096)
        .expect_err("bytes nobody restored are missing, not zeros");
    assert_eq!(lost.kind(), std::io::ErrorKind::UnexpectedEof, "{lost}");
}

/// Counts the log (WAL) PUTs that started; holds segment parts (not headers) until a log
/// PUT started after `mark` (set to the count as an fsync starts), or, with `hold`, until
/// released.
#[derive(Default)]
struct Rounds {
    wal_puts: std::sync::atomic::AtomicU64,
    mark: std::sync::atomic::AtomicU64,
    /// Parts that saw a log PUT start while they waited, and parts that gave up waiting.
    beside: std::sync::atomic::AtomicU64,
    alone: std::sync::atomic::AtomicU64,
    hold: std::sync::atomic::AtomicBool,
}

impl Rounds {
    /// The object store `os` behind this hook.
    fn store(self: &Arc<Self>, os: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        let me = self.clone();
        Arc::new(Hooked::new(os, move |path| {
            let me = me.clone();
            let path = path.to_string();
            Box::pin(async move {
                if path.contains("/wal/") {
                    me.wal_puts.fetch_add(1, SeqCst);
                    return;
                }
                let is_part = path.contains("/segments/")
                    && path
                        .rsplit('/')
                        .next()
                        .is_some_and(|o| !o.trim_start_matches('0').is_empty());
                if !is_part {
                    return;
                }
                // Held parts wait longer than the tests wait for anything.
                let held_until = Instant::now() + Duration::from_secs(60);
                while me.hold.load(SeqCst) && Instant::now() < held_until {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let before = me.mark.load(SeqCst);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if me.wal_puts.load(SeqCst) > before {
                        me.beside.fetch_add(1, SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                me.alone.fetch_add(1, SeqCst);
            })
        }))
    }
}

/// The writer's store in `os` with its segments cached in `cache`.
fn writer(os: Arc<dyn ObjectStore>, cache: &std::path::Path) -> SegmentedKv {
    let kv = SlateKv::open_with(os, "db", &SlateOptions::default()).expect("open the writer");
    segmented(kv, cache, 1 << 30, segment_options()).expect("segments")
}

fn long_value(seed: u8) -> Vec<u8> {
    (0..(1usize << 20))
        .map(|i| (i % 241) as u8 ^ seed)
        .collect()
}

/// An fsync whose tail is too long for a journal record (1 MiB) is one round of PUTs: its
/// part goes up beside the log write, not before it (each part PUT here waits for a log
/// PUT of the fsync to start; in two rounds none would, and the part gives up after 10 s).
#[test]
fn an_fsync_uploads_a_long_tail_beside_its_log_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rounds = Arc::new(Rounds::default());
    let os: Arc<dyn ObjectStore> = Arc::new(slatedb::object_store::memory::InMemory::new());
    let kv = writer(rounds.store(os), &dir.path().join("cache"));
    for i in 0..3u8 {
        let mut b = Batch::new();
        b.put(Space::Data, vec![b'k', i], long_value(i));
        kv.write(b, false).expect("write");
        rounds.mark.store(rounds.wal_puts.load(SeqCst), SeqCst);
        kv.sync().expect("fsync");
    }
    assert_eq!(
        rounds.alone.load(SeqCst),
        0,
        "parts uploaded before the log write"
    );
    assert!(
        rounds.beside.load(SeqCst) >= 3,
        "no part went up beside the log"
    );
    for i in 0..3u8 {
        let got = kv.get(Space::Data, &[b'k', i]).expect("read");
        assert!(got == Some(long_value(i)), "value {i} did not read back");
    }
}

/// A writer on a fresh in-memory bucket whose part uploads the returned `Rounds` can hold
/// back, the bucket itself, and a raw reader of the database (it sees references as they
/// reach the bucket).
fn held_writer(dir: &std::path::Path) -> (Arc<Rounds>, Arc<dyn ObjectStore>, SegmentedKv, SlateKv) {
    let rounds = Arc::new(Rounds::default());
    let os: Arc<dyn ObjectStore> = Arc::new(slatedb::object_store::memory::InMemory::new());
    let kv = writer(rounds.store(os.clone()), &dir.join("w"));
    // The database exists before a reader opens.
    kv.sync().expect("first sync");
    let raw = SlateKv::open_with(os.clone(), "db", &read_only()).expect("open a raw reader");
    (rounds, os, kv, raw)
}

fn read_only() -> SlateOptions {
    SlateOptions {
        read_only: true,
        ..SlateOptions::default()
    }
}

/// Starts an fsync of `k` = `value` on `kv` with its parts held back, and waits until its
/// log write reached the bucket (`raw` sees the reference).
fn fsync_held<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    rounds: &Rounds,
    kv: &'s SegmentedKv,
    raw: &SlateKv,
    value: Vec<u8>,
) -> std::thread::ScopedJoinHandle<'s, KvResult<()>> {
    rounds.hold.store(true, SeqCst);
    let fsync = s.spawn(move || {
        let mut b = Batch::new();
        b.put(Space::Data, b"k".to_vec(), value);
        kv.write(b, true)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw.get(Space::Data, b"k").expect("raw read").is_none() {
        assert!(
            Instant::now() < deadline,
            "the log write never reached the bucket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fsync
}

/// A reader on another host that finds a reference whose part is still on its way (the
/// writer's fsync uploads it beside the log write) waits for it instead of failing.
#[test]
fn a_reader_waits_for_a_part_uploaded_beside_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rounds, os, kv, raw) = held_writer(dir.path());
    let reader = segmented(
        SlateKv::open_with(os, "db", &read_only()).expect("open a reader"),
        &dir.path().join("r"),
        1 << 30,
        segment_options(),
    )
    .expect("reader's segments");
    std::thread::scope(|s| {
        let fsync = fsync_held(s, &rounds, &kv, &raw, long_value(9));
        // Released once the reader (which follows the log every second) can see it too.
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(2500));
            rounds.hold.store(false, SeqCst);
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let held = rounds.hold.load(SeqCst);
            let got = reader
                .get(Space::Data, b"k")
                .expect("the reader waits for the part");
            if let Some(v) = got {
                assert!(v == long_value(9), "the reader read other bytes");
                assert!(
                    held,
                    "the reader saw the reference only after its part: proves nothing"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the reader never saw the reference"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        fsync.join().expect("fsync thread").expect("fsync");
    });
}

/// A takeover while an fsync's part is on its way (its log write already in the bucket):
/// the new writer closes the segment where its stored bytes end and drops the reference
/// (the key reads as absent, never as other bytes); the old writer's part, arriving
/// afterwards, is refused, so its fsync fails instead of reporting bytes nobody will read.
#[test]
fn a_takeover_refuses_the_old_writers_late_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rounds, os, old, raw) = held_writer(dir.path());
    std::thread::scope(|s| {
        let fsync = fsync_held(s, &rounds, &old, &raw, long_value(3));
        let new = writer(os.clone(), &dir.path().join("new"));
        rounds.hold.store(false, SeqCst);
        let late = fsync.join().expect("fsync thread");
        assert!(
            late.is_err(),
            "the old writer's fsync succeeded after the takeover"
        );
        assert_eq!(
            new.get(Space::Data, b"k")
                .expect("the new writer reads the key"),
            None,
            "a reference to a part that never arrived was kept"
        );
        // The new writer writes on (in a fresh segment) and reads its own bytes.
        let mut b = Batch::new();
        b.put(Space::Data, b"k".to_vec(), long_value(4));
        new.write(b, true).expect("the new writer's fsync");
        assert!(new.get(Space::Data, b"k").expect("read") == Some(long_value(4)));
    });
}
