//! Conformance suite for the [`Kv`] backends.
//!
//! Every check in `suite` is a plain function taking `&dyn Kv`; the `conformance!` macro runs
//! each one against a fresh `MemKv` (module `mem`) and a fresh `RocksKv` in a temporary
//! directory (module `rocks`), so both backends are held to exactly the same behaviour.
//! Backend-specific tests (persistence, locking, disk usage) are in `kv_backends.rs`.

use std::collections::BTreeMap;
use std::ops::Bound;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use snapfs::kv::mem::MemKv;
use snapfs::kv::{prefix_end, Batch, Dir, Kv, KvRead, Space};

#[macro_use]
mod kv_common;

use kv_common::*;

// ---------------------------------------------------------------------------------------------
// The shared suite
// ---------------------------------------------------------------------------------------------

mod suite {
    use super::*;

    pub fn get_missing_key_returns_none(kv: &dyn Kv) {
        for space in Space::ALL {
            assert_eq!(get(kv, space, b"nope"), None);
        }
    }

    pub fn put_then_get_returns_value(kv: &dyn Kv) {
        put(kv, Space::Meta, b"k", b"meta-value");
        put(kv, Space::Data, b"k", b"data-value");
        assert_eq!(
            get(kv, Space::Meta, b"k").as_deref(),
            Some(&b"meta-value"[..])
        );
        assert_eq!(
            get(kv, Space::Data, b"k").as_deref(),
            Some(&b"data-value"[..])
        );
    }

    pub fn put_existing_key_overwrites_value(kv: &dyn Kv) {
        put(kv, Space::Meta, b"k", b"one");
        put(kv, Space::Meta, b"k", b"two");
        assert_eq!(get(kv, Space::Meta, b"k").as_deref(), Some(&b"two"[..]));
        assert_eq!(
            scan_all(kv, Space::Meta, b"", b"\xff", Dir::Forward).len(),
            1
        );
    }

    pub fn put_binary_and_empty_keys_roundtrip(kv: &dyn Kv) {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"", b"empty key"),
            (b"\x00", b""),
            (b"\x00\x00", b"\x00\xff"),
            (b"\xff", b"ff"),
            (b"\xff\xff\xff", b"fff"),
        ];
        for space in Space::ALL {
            for (k, v) in cases {
                put(kv, space, k, v);
            }
            for (k, v) in cases {
                assert_eq!(get(kv, space, k).as_deref(), Some(v), "key {k:?}");
            }
            // memcmp order: "" < 00 < 00 00 < ff < ff ff ff
            let all = scan_all(kv, space, b"", &[0xff; 8], Dir::Forward);
            assert_eq!(
                all,
                cases.iter().map(|(k, v)| kv_pair(k, v)).collect::<Pairs>()
            );
        }
    }

    pub fn put_large_data_value_roundtrips(kv: &dyn Kv) {
        let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
        put(kv, Space::Data, b"block/1", &big);
        put(kv, Space::Data, b"block/2", b"small");
        assert_eq!(get(kv, Space::Data, b"block/1").as_deref(), Some(&big[..]));
        kv.sync().expect("sync");
        compact(kv, Space::Data);
        assert_eq!(get(kv, Space::Data, b"block/1").as_deref(), Some(&big[..]));
        let all = scan_all(
            kv,
            Space::Data,
            b"block/",
            &prefix_end(b"block/"),
            Dir::Reverse,
        );
        assert_eq!(
            all,
            vec![kv_pair(b"block/2", b"small"), kv_pair(b"block/1", &big)]
        );
    }

    pub fn delete_existing_key_removes_it(kv: &dyn Kv) {
        put(kv, Space::Meta, b"a", b"1");
        put(kv, Space::Meta, b"b", b"2");
        del(kv, Space::Meta, b"a");
        assert_eq!(get(kv, Space::Meta, b"a"), None);
        assert_eq!(get(kv, Space::Meta, b"b").as_deref(), Some(&b"2"[..]));
        assert_eq!(
            keys(&scan_all(kv, Space::Meta, b"", b"z", Dir::Forward)),
            vec![b"b".to_vec()]
        );
        assert_eq!(sfp(kv, Space::Meta, b"a", b"a"), None);
    }

    pub fn delete_missing_key_is_noop(kv: &dyn Kv) {
        del(kv, Space::Data, b"ghost");
        assert_eq!(get(kv, Space::Data, b"ghost"), None);
        assert!(scan_all(kv, Space::Data, b"", b"\xff", Dir::Forward).is_empty());
    }

    pub fn write_empty_batch_succeeds(kv: &dyn Kv) {
        kv.write(Batch::new(), false).expect("empty non-durable");
        kv.write(Batch::new(), true).expect("empty durable");
        kv.sync().expect("sync");
        assert!(scan_all(kv, Space::Meta, b"", b"\xff", Dir::Forward).is_empty());
    }

    pub fn write_durable_batch_is_visible(kv: &dyn Kv) {
        let mut b = Batch::new();
        b.put(Space::Meta, b"m".to_vec(), b"1".to_vec());
        b.put(Space::Data, b"d".to_vec(), vec![9; 5000]);
        kv.write(b, true).expect("durable write");
        assert_eq!(get(kv, Space::Meta, b"m").as_deref(), Some(&b"1"[..]));
        assert_eq!(get(kv, Space::Data, b"d"), Some(vec![9; 5000]));
    }

    pub fn write_batch_same_key_last_op_wins(kv: &dyn Kv) {
        put(kv, Space::Meta, b"existing", b"old");
        let mut b = Batch::new();
        b.put(Space::Meta, b"put-put".to_vec(), b"first".to_vec());
        b.put(Space::Meta, b"put-put".to_vec(), b"second".to_vec());
        b.put(Space::Meta, b"put-del".to_vec(), b"gone".to_vec());
        b.delete(Space::Meta, b"put-del".to_vec());
        b.delete(Space::Meta, b"del-put".to_vec());
        b.put(Space::Meta, b"del-put".to_vec(), b"back".to_vec());
        b.delete(Space::Meta, b"existing".to_vec());
        b.put(Space::Meta, b"existing".to_vec(), b"new".to_vec());
        b.delete(Space::Meta, b"existing".to_vec());
        kv.write(b, false).expect("write");
        assert_eq!(
            get(kv, Space::Meta, b"put-put").as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(get(kv, Space::Meta, b"put-del"), None);
        assert_eq!(
            get(kv, Space::Meta, b"del-put").as_deref(),
            Some(&b"back"[..])
        );
        assert_eq!(get(kv, Space::Meta, b"existing"), None);
    }

    pub fn write_batch_spans_both_spaces(kv: &dyn Kv) {
        let mut b = Batch::new();
        for i in 0u8..10 {
            b.put(Space::Meta, vec![b'm', i], vec![i]);
            b.put(Space::Data, vec![b'd', i], vec![i; 100]);
        }
        let extra = {
            let mut e = Batch::new();
            e.delete(Space::Meta, vec![b'm', 0]);
            e
        };
        b.extend(extra);
        kv.write(b, false).expect("write");
        assert_eq!(scan_all(kv, Space::Meta, b"m", b"n", Dir::Forward).len(), 9);
        assert_eq!(
            scan_all(kv, Space::Data, b"d", b"e", Dir::Forward).len(),
            10
        );
    }

    /// A batch is atomic for readers: a concurrent reader sees all of it or none of it.
    pub fn write_batch_concurrent_reader_sees_all_or_nothing(kv: &dyn Kv) {
        const ROUNDS: u64 = 300;
        let mut b = Batch::new();
        b.put(Space::Meta, b"a".to_vec(), 0u64.to_be_bytes().to_vec());
        b.put(Space::Data, b"b".to_vec(), 0u64.to_be_bytes().to_vec());
        kv.write(b, false).expect("init");
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=ROUNDS {
                    let mut b = Batch::new();
                    b.put(Space::Meta, b"a".to_vec(), i.to_be_bytes().to_vec());
                    b.put(Space::Data, b"b".to_vec(), i.to_be_bytes().to_vec());
                    kv.write(b, false).expect("write");
                }
            });
            let mut last = 0;
            while last < ROUNDS {
                let view = kv.read_view();
                let a = get(&*view, Space::Meta, b"a").expect("a present");
                let b = get(&*view, Space::Data, b"b").expect("b present");
                assert_eq!(a, b, "view saw half a batch");
                let n = u64::from_be_bytes(a.try_into().expect("8 bytes"));
                assert!(n >= last, "view went back in time");
                last = n;
            }
        });
    }

    /// A live scan (no read view) sees each batch whole, in both directions, while batches
    /// keep coming that each move a marker key (delete the last one, put a new one) and set
    /// a counter: a scan sees exactly one marker, with the counter's value. (The object-store
    /// backend merges its write-behind buffer with the database here.)
    pub fn scan_concurrent_with_writes_sees_whole_batches(kv: &dyn Kv) {
        const ROUNDS: u64 = 3000;
        let marker = |i: u64| format!("x{i:08}").into_bytes();
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut b = Batch::new();
        b.put(Space::Data, b"c".to_vec(), 0u64.to_be_bytes().to_vec());
        b.put(Space::Data, marker(0), 0u64.to_be_bytes().to_vec());
        kv.write(b, false).expect("init");
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=ROUNDS {
                    let mut b = Batch::new();
                    b.put(Space::Data, b"c".to_vec(), i.to_be_bytes().to_vec());
                    b.delete(Space::Data, marker(i - 1));
                    b.put(Space::Data, marker(i), i.to_be_bytes().to_vec());
                    kv.write(b, false).expect("write");
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let mut scans = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || scans < 10 {
                scans += 1;
                let dir = if scans.is_multiple_of(2) {
                    Dir::Forward
                } else {
                    Dir::Reverse
                };
                let got = scan_all(kv, Space::Data, b"", b"\xff", dir);
                assert_eq!(got.len(), 2, "scan saw parts of two batches: {got:?}");
                assert_eq!(got[0].1, got[1].1, "scan mixed two batches: {got:?}");
                let top = sfp(kv, Space::Data, b"", b"\xff").expect("a marker");
                assert!(top.0.starts_with(b"x"), "{top:?}");
            }
        });
        let end = scan_all(kv, Space::Data, b"", b"\xff", Dir::Forward);
        let last = ROUNDS.to_be_bytes().to_vec();
        assert_eq!(
            end,
            vec![(b"c".to_vec(), last.clone()), (marker(ROUNDS), last)]
        );
    }

    pub fn spaces_same_key_are_independent(kv: &dyn Kv) {
        put(kv, Space::Meta, b"shared", b"meta");
        assert_eq!(get(kv, Space::Data, b"shared"), None);
        put(kv, Space::Data, b"shared", b"data");
        put(kv, Space::Data, b"only-data", b"x");
        del(kv, Space::Meta, b"shared");
        assert_eq!(get(kv, Space::Meta, b"shared"), None);
        assert_eq!(
            get(kv, Space::Data, b"shared").as_deref(),
            Some(&b"data"[..])
        );
        assert!(scan_all(kv, Space::Meta, b"", b"\xff", Dir::Forward).is_empty());
        assert_eq!(
            keys(&scan_all(kv, Space::Data, b"", b"\xff", Dir::Forward)),
            vec![b"only-data".to_vec(), b"shared".to_vec()]
        );
        assert_eq!(sfp(kv, Space::Meta, b"", b"\xff"), None);
        put(kv, Space::Meta, b"a", b"meta-a");
        assert_eq!(
            sfp(kv, Space::Data, b"", b"zzz"),
            Some(kv_pair(b"shared", b"data"))
        );
        compact(kv, Space::Meta);
        assert_eq!(
            get(kv, Space::Data, b"shared").as_deref(),
            Some(&b"data"[..])
        );
    }

    fn fill_abc(kv: &dyn Kv) {
        for k in [&b"a"[..], b"b", b"ba", b"bb", b"c", b"d"] {
            put(kv, Space::Meta, k, k);
        }
    }

    pub fn scan_forward_bounded_visits_in_order_end_exclusive(kv: &dyn Kv) {
        fill_abc(kv);
        assert_eq!(
            keys(&scan_all(kv, Space::Meta, b"b", b"c", Dir::Forward)),
            vec![b"b".to_vec(), b"ba".to_vec(), b"bb".to_vec()]
        );
        // Start bound is inclusive even when it is not an existing key.
        assert_eq!(
            keys(&scan_all(kv, Space::Meta, b"b\x00", b"d", Dir::Forward)),
            vec![b"ba".to_vec(), b"bb".to_vec(), b"c".to_vec()]
        );
        let all = scan_all(kv, Space::Meta, b"", b"\xff", Dir::Forward);
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|(k, v)| k == v));
    }

    pub fn scan_reverse_bounded_visits_in_reverse_order(kv: &dyn Kv) {
        fill_abc(kv);
        assert_eq!(
            keys(&scan_all(kv, Space::Meta, b"b", b"c", Dir::Reverse)),
            vec![b"bb".to_vec(), b"ba".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            keys(&scan_all(kv, Space::Meta, b"a", b"d", Dir::Reverse)),
            vec![
                b"c".to_vec(),
                b"bb".to_vec(),
                b"ba".to_vec(),
                b"b".to_vec(),
                b"a".to_vec()
            ]
        );
        // End bound excluded in reverse too, start included.
        assert_eq!(
            keys(&scan_all(kv, Space::Meta, b"c", b"d", Dir::Reverse)),
            vec![b"c".to_vec()]
        );
    }

    pub fn scan_callback_false_stops_early(kv: &dyn Kv) {
        fill_abc(kv);
        assert_eq!(
            keys(&scan_limit(kv, Space::Meta, b"", b"z", Dir::Forward, 2)),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            keys(&scan_limit(kv, Space::Meta, b"", b"z", Dir::Reverse, 2)),
            vec![b"d".to_vec(), b"c".to_vec()]
        );
        let mut calls = 0;
        kv.scan(Space::Meta, b"", b"z", Dir::Forward, &mut |_, _| {
            calls += 1;
            false
        })
        .expect("scan");
        assert_eq!(calls, 1);
    }

    pub fn scan_empty_or_inverted_range_visits_nothing(kv: &dyn Kv) {
        fill_abc(kv);
        for dir in [Dir::Forward, Dir::Reverse] {
            assert!(scan_all(kv, Space::Meta, b"b", b"b", dir).is_empty());
            assert!(scan_all(kv, Space::Meta, b"c", b"b", dir).is_empty());
            assert!(scan_all(kv, Space::Meta, b"e", b"z", dir).is_empty());
            assert!(scan_all(kv, Space::Meta, b"", b"", dir).is_empty());
            assert!(scan_all(kv, Space::Meta, b"bc", b"bz", dir).is_empty());
            assert!(scan_all(kv, Space::Data, b"", b"\xff", dir).is_empty());
        }
    }

    pub fn scan_prefix_end_covers_exactly_the_prefix(kv: &dyn Kv) {
        for k in [
            &b"p"[..],
            b"p\x00",
            b"p\xff",
            b"p\xff\xff",
            b"q",
            b"\xff",
            b"\xff\x01",
            b"\xff\xff",
        ] {
            put(kv, Space::Meta, k, b"");
        }
        assert_eq!(
            keys(&scan_all(
                kv,
                Space::Meta,
                b"p",
                &prefix_end(b"p"),
                Dir::Forward
            )),
            vec![
                b"p".to_vec(),
                b"p\x00".to_vec(),
                b"p\xff".to_vec(),
                b"p\xff\xff".to_vec()
            ]
        );
        assert_eq!(
            keys(&scan_all(
                kv,
                Space::Meta,
                b"p\xff",
                &prefix_end(b"p\xff"),
                Dir::Reverse
            )),
            vec![b"p\xff\xff".to_vec(), b"p\xff".to_vec()]
        );
        // All-0xff prefix: the bound runs to the end of the space.
        assert_eq!(
            keys(&scan_all(
                kv,
                Space::Meta,
                b"\xff",
                &prefix_end(b"\xff"),
                Dir::Forward
            )),
            vec![b"\xff".to_vec(), b"\xff\x01".to_vec(), b"\xff\xff".to_vec()]
        );
    }

    /// The callback may write to the store it is scanning without deadlocking.
    pub fn scan_callback_writes_do_not_deadlock(kv: &dyn Kv) {
        fill_abc(kv);
        let mut seen = 0;
        kv.scan(Space::Meta, b"a", b"c", Dir::Forward, &mut |k, _| {
            let mut b = Batch::new();
            b.put(Space::Data, k.to_vec(), b"copied".to_vec());
            kv.write(b, false).expect("write inside scan");
            seen += 1;
            true
        })
        .expect("scan");
        assert_eq!(seen, 4);
        assert_eq!(
            scan_all(kv, Space::Data, b"", b"\xff", Dir::Forward).len(),
            4
        );
    }

    pub fn seek_for_prev_exact_key_returns_it(kv: &dyn Kv) {
        fill_abc(kv);
        assert_eq!(
            sfp(kv, Space::Meta, b"", b"ba"),
            Some(kv_pair(b"ba", b"ba"))
        );
        assert_eq!(
            sfp(kv, Space::Meta, b"ba", b"ba"),
            Some(kv_pair(b"ba", b"ba"))
        );
        assert_eq!(sfp(kv, Space::Meta, b"", b""), None);
        put(kv, Space::Meta, b"", b"root");
        assert_eq!(sfp(kv, Space::Meta, b"", b""), Some(kv_pair(b"", b"root")));
    }

    pub fn seek_for_prev_between_keys_returns_previous(kv: &dyn Kv) {
        fill_abc(kv);
        assert_eq!(
            sfp(kv, Space::Meta, b"", b"b\x00"),
            Some(kv_pair(b"b", b"b"))
        );
        assert_eq!(
            sfp(kv, Space::Meta, b"", b"bz"),
            Some(kv_pair(b"bb", b"bb"))
        );
        assert_eq!(sfp(kv, Space::Meta, b"", b"zzz"), Some(kv_pair(b"d", b"d")));
        assert_eq!(
            sfp(kv, Space::Meta, b"a", b"a\xff\xff"),
            Some(kv_pair(b"a", b"a"))
        );
    }

    pub fn seek_for_prev_below_lower_bound_returns_none(kv: &dyn Kv) {
        fill_abc(kv);
        // Greatest key <= "bz" is "bb", but it is below lower = "bc".
        assert_eq!(sfp(kv, Space::Meta, b"bc", b"bz"), None);
        // Nothing at all at or below key.
        assert_eq!(sfp(kv, Space::Meta, b"", b"\x00"), None);
        // Inverted bounds.
        assert_eq!(sfp(kv, Space::Meta, b"c", b"b"), None);
        // Lower bound equal to the found key is fine.
        assert_eq!(
            sfp(kv, Space::Meta, b"bb", b"bz"),
            Some(kv_pair(b"bb", b"bb"))
        );
        // Other space is empty.
        assert_eq!(sfp(kv, Space::Data, b"", b"zzz"), None);
    }

    pub fn seek_for_prev_versioned_keys_finds_newest_at_or_below_epoch(kv: &dyn Kv) {
        // id 1: epochs 1, 5, 9; id 2: epochs 3, 7, 256, 1<<40; id 3: epoch 0; id 4: none.
        let versions: [(u64, &[u64]); 3] = [(1, &[1, 5, 9]), (2, &[3, 7, 256, 1 << 40]), (3, &[0])];
        for space in Space::ALL {
            for (id, epochs) in versions {
                for &e in epochs {
                    put(kv, space, &versioned(id, e), format!("{id}@{e}").as_bytes());
                }
            }
            let newest = |id: u64, at: u64| {
                sfp(kv, space, &versioned(id, 0), &versioned(id, at))
                    .map(|(_, v)| String::from_utf8(v).expect("utf8"))
            };
            assert_eq!(newest(1, 0), None);
            assert_eq!(newest(1, 1).as_deref(), Some("1@1"));
            assert_eq!(newest(1, 4).as_deref(), Some("1@1"));
            assert_eq!(newest(1, 5).as_deref(), Some("1@5"));
            assert_eq!(newest(1, 8).as_deref(), Some("1@5"));
            assert_eq!(newest(1, u64::MAX).as_deref(), Some("1@9"));
            // Never crosses into id 1's versions when id 2 has none at or below the epoch.
            assert_eq!(newest(2, 2), None);
            assert_eq!(newest(2, 3).as_deref(), Some("2@3"));
            // Big-endian epochs: 255 < 256 < 1<<40 bytewise too.
            assert_eq!(newest(2, 255).as_deref(), Some("2@7"));
            assert_eq!(newest(2, 256).as_deref(), Some("2@256"));
            assert_eq!(newest(2, (1 << 40) - 1).as_deref(), Some("2@256"));
            // Never crosses into id 3's versions from above.
            assert_eq!(newest(2, u64::MAX).as_deref(), Some("2@1099511627776"));
            assert_eq!(newest(3, 0).as_deref(), Some("3@0"));
            assert_eq!(newest(3, u64::MAX).as_deref(), Some("3@0"));
            assert_eq!(newest(4, u64::MAX), None);
            assert_eq!(newest(0, u64::MAX), None);
        }
    }

    /// `any_key_in` answers for `[start, end)` exactly, values large (in segments) or small,
    /// on the store and on a read view, and a deleted key no longer counts.
    pub fn any_key_in_sees_exactly_the_range(kv: &dyn Kv) {
        let big = vec![7u8; 64 << 10];
        put(kv, Space::Data, b"b", &big);
        put(kv, Space::Data, b"d", b"small");
        put(kv, Space::Meta, b"m", b"meta");
        let any = |r: &dyn KvRead, space, start: &[u8], end: &[u8]| {
            r.any_key_in(space, start, end).expect("any_key_in")
        };
        let view = kv.read_view();
        for r in [kv as &dyn KvRead, &*view] {
            assert!(any(r, Space::Data, b"a", b"c"));
            assert!(any(r, Space::Data, b"b", b"b\0"));
            assert!(!any(r, Space::Data, b"a", b"b"));
            assert!(!any(r, Space::Data, b"b\0", b"d"));
            assert!(any(r, Space::Data, b"c", b"e"));
            assert!(!any(r, Space::Data, b"m", b"n"));
            assert!(any(r, Space::Meta, b"m", b"n"));
        }
        del(kv, Space::Data, b"b");
        assert!(!any(kv, Space::Data, b"a", b"c"));
        assert!(any(&*view, Space::Data, b"a", b"c"));
    }

    /// `read_keys` answers every key asked, present or not: neighbours, keys with many
    /// others between them (the scan seeks on), a run past every stored key, a handful (point
    /// reads), keys of several runs (owners) and lengths, none; whatever makes a run (each
    /// key alone, an owner's keys, all); on the store and on a read view.
    pub fn read_keys_answers_every_key_asked(kv: &dyn Kv) {
        // An owner, then an index: as a file's blocks.
        let key = |o: u32, i: u32| [o.to_be_bytes(), i.to_be_bytes()].concat();
        let mut b = Batch::new();
        for o in 1..4u32 {
            for i in (0..200u32).filter(|i| (i + o) % 3 != 0) {
                b.put(
                    Space::Data,
                    key(o, i),
                    vec![(i % 251) as u8; 100 + (i as usize % 5) * 2000],
                );
            }
        }
        b.put(Space::Data, vec![0, 0, 0, 2, 7], vec![9; 10]);
        kv.write(b, false).expect("write");
        // Owner 1's keys deleted: what lies between owner 0's and owner 2's.
        let mut b = Batch::new();
        for i in 0..200u32 {
            b.delete(Space::Data, key(1, i));
        }
        kv.write(b, false).expect("delete");
        let view = kv.read_view();
        let one =
            |o: u32, r: std::ops::Range<u32>| -> Vec<Vec<u8>> { r.map(|i| key(o, i)).collect() };
        let mut across: Vec<Vec<u8>> = (0..5u32)
            .flat_map(|o| (0..200u32).step_by(17).map(move |i| key(o, i)))
            .collect();
        across.push(vec![0, 0, 0, 2, 7]);
        across.sort();
        let asks: [Vec<Vec<u8>>; 7] = [
            one(2, 10..60),
            across,
            [one(0, 0..8), one(2, 0..8), one(3, 190..260)].concat(),
            one(1, 0..50),
            one(3, 150..260),
            vec![key(2, 3), key(2, 4), key(2, 5)],
            vec![],
        ];
        for r in [kv as &dyn KvRead, &*view] {
            // Runs: every key alone, an owner's keys, all keys.
            type Run = fn(&[u8]) -> &[u8];
            let runs: [Run; 3] = [|k| k, |k| &k[..k.len().saturating_sub(4)], |_| &[]];
            for (n, run) in runs.into_iter().enumerate() {
                for keys in &asks {
                    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
                    let mut got = Vec::new();
                    snapfs::kv::read_keys(r, Space::Data, &refs, run, |k, v| {
                        got.push((k.to_vec(), v.map(|v| v.to_vec())))
                    })
                    .expect("read_keys");
                    let want: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
                        .iter()
                        .map(|k| (k.clone(), get(r, Space::Data, k)))
                        .collect();
                    assert_eq!(got, want, "asked {keys:?}, runs {n}");
                }
            }
        }
    }

    pub fn read_view_later_writes_are_invisible(kv: &dyn Kv) {
        put(kv, Space::Meta, b"keep", b"v1");
        put(kv, Space::Meta, b"gone", b"v1");
        put(kv, Space::Data, b"blk", &[1; 300]);
        let view = kv.read_view();

        put(kv, Space::Meta, b"keep", b"v2");
        put(kv, Space::Meta, b"new", b"v2");
        del(kv, Space::Meta, b"gone");
        put(kv, Space::Data, b"blk", &[2; 300]);
        kv.sync().expect("sync");
        compact(kv, Space::Meta);
        compact(kv, Space::Data);

        assert_eq!(
            get(&*view, Space::Meta, b"keep").as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(
            get(&*view, Space::Meta, b"gone").as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(get(&*view, Space::Meta, b"new"), None);
        assert_eq!(get(&*view, Space::Data, b"blk"), Some(vec![1; 300]));
        assert_eq!(
            scan_all(&*view, Space::Meta, b"", b"\xff", Dir::Forward),
            vec![kv_pair(b"gone", b"v1"), kv_pair(b"keep", b"v1")]
        );
        assert_eq!(
            scan_all(&*view, Space::Meta, b"", b"\xff", Dir::Reverse),
            vec![kv_pair(b"keep", b"v1"), kv_pair(b"gone", b"v1")]
        );
        assert_eq!(
            sfp(&*view, Space::Meta, b"", b"zzz"),
            Some(kv_pair(b"keep", b"v1"))
        );

        // The live store sees the new state.
        assert_eq!(get(kv, Space::Meta, b"keep").as_deref(), Some(&b"v2"[..]));
        assert_eq!(get(kv, Space::Meta, b"gone"), None);
        assert_eq!(get(kv, Space::Data, b"blk"), Some(vec![2; 300]));
        assert_eq!(
            sfp(kv, Space::Meta, b"", b"zzz"),
            Some(kv_pair(b"new", b"v2"))
        );
    }

    pub fn read_view_each_sees_its_own_point_in_time(kv: &dyn Kv) {
        let mut views = Vec::new();
        for i in 0u8..5 {
            put(kv, Space::Meta, b"counter", &[i]);
            put(kv, Space::Meta, &[b'k', i], &[i]);
            views.push(kv.read_view());
        }
        del(kv, Space::Meta, b"counter");
        for (i, view) in (0u8..).zip(views.iter()) {
            assert_eq!(get(&**view, Space::Meta, b"counter"), Some(vec![i]));
            assert_eq!(
                scan_all(&**view, Space::Meta, b"k", b"l", Dir::Forward).len(),
                usize::from(i) + 1
            );
        }
        drop(views);
        assert_eq!(get(kv, Space::Meta, b"counter"), None);
    }

    pub fn compact_after_deletes_preserves_live_keys(kv: &dyn Kv) {
        for i in 0u32..2000 {
            let mut b = Batch::new();
            b.put(Space::Meta, i.to_be_bytes().to_vec(), vec![1; 50]);
            b.put(
                Space::Data,
                i.to_be_bytes().to_vec(),
                vec![(i % 256) as u8; 200],
            );
            kv.write(b, false).expect("write");
        }
        for i in (0u32..2000).filter(|i| i % 3 != 0) {
            let mut b = Batch::new();
            b.delete(Space::Meta, i.to_be_bytes().to_vec());
            b.delete(Space::Data, i.to_be_bytes().to_vec());
            kv.write(b, false).expect("delete");
        }
        for space in Space::ALL {
            compact(kv, space);
        }
        let meta = scan_all(kv, Space::Meta, b"", b"\xff", Dir::Forward);
        let data = scan_all(kv, Space::Data, b"", b"\xff", Dir::Reverse);
        assert_eq!(meta.len(), 667);
        assert_eq!(data.len(), 667);
        for (k, v) in &data {
            let i = u32::from_be_bytes(k.as_slice().try_into().expect("4 bytes"));
            assert_eq!(i % 3, 0);
            assert_eq!(v, &vec![(i % 256) as u8; 200]);
        }
    }

    include!("kv_conformance/model.rs");
}

conformance!(
    get_missing_key_returns_none,
    put_then_get_returns_value,
    put_existing_key_overwrites_value,
    put_binary_and_empty_keys_roundtrip,
    put_large_data_value_roundtrips,
    delete_existing_key_removes_it,
    delete_missing_key_is_noop,
    write_empty_batch_succeeds,
    write_durable_batch_is_visible,
    write_batch_same_key_last_op_wins,
    write_batch_spans_both_spaces,
    write_batch_concurrent_reader_sees_all_or_nothing,
    scan_concurrent_with_writes_sees_whole_batches,
    spaces_same_key_are_independent,
    scan_forward_bounded_visits_in_order_end_exclusive,
    scan_reverse_bounded_visits_in_reverse_order,
    scan_callback_false_stops_early,
    scan_empty_or_inverted_range_visits_nothing,
    scan_prefix_end_covers_exactly_the_prefix,
    scan_callback_writes_do_not_deadlock,
    seek_for_prev_exact_key_returns_it,
    seek_for_prev_between_keys_returns_previous,
    seek_for_prev_below_lower_bound_returns_none,
    seek_for_prev_versioned_keys_finds_newest_at_or_below_epoch,
    any_key_in_sees_exactly_the_range,
    read_keys_answers_every_key_asked,
    read_view_later_writes_are_invisible,
    read_view_each_sees_its_own_point_in_time,
    compact_after_deletes_preserves_live_keys,
    random_ops_match_btreemap_model,
);
