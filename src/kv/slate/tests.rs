//! Unit tests of the SlateDB backend.

use super::*;
use crate::kv::slate::test_store::Hooked;

fn full(space: Space, k: &[u8]) -> Vec<u8> {
    full_key(space, k)
}

/// A rule of the opener's shape: data keys `b'v' | 4 bytes | epoch` are versioned (base 5).
const RULE: VersionRule = VersionRule {
    name: "test-rule",
    base_len: |space, k| {
        (space == Space::Data && k.first() == Some(&b'v') && k.len() >= 5).then_some(5)
    },
};

/// The filters' prefix is the opener's base of the key without its space tag, plus the
/// tag; keys of the other space, or without a base, have none. (The real rule is tested
/// with the key schema in `keys.rs`.)
#[test]
fn the_filter_prefix_is_the_rules_base_after_the_space_tag() {
    let k = full(Space::Data, b"vabcd\0\0\0\0\0\0\0\x07");
    assert_eq!(base_len(&RULE, &k), Some(6));
    assert_eq!(base_len(&RULE, &full(Space::Data, b"vabcd")), Some(6));
    assert_eq!(base_len(&RULE, &full(Space::Data, b"vab")), None);
    assert_eq!(base_len(&RULE, &full(Space::Meta, b"vabcd")), None);
    assert_eq!(
        base_len(&RULE, &[9, b'v', 1, 2, 3, 4]),
        None,
        "no such space tag"
    );
    assert_eq!(base_len(&RULE, b""), None);
}

/// A sync behind a backlog that takes the object store several timeouts to take, one
/// write at a time, waits for it: the fsync timeout is for an object store that takes
/// nothing (down), not for a slow one.
#[test]
fn a_slow_object_store_is_waited_for() {
    let timeout = Duration::from_millis(300);
    // How much of the backlog is still unsent when the sync starts depends on the machine's
    // speed: a run whose sync did not outlast the timeout proves nothing, so it is done
    // again with more data behind the sync (twice as much each time).
    let mut took = Vec::new();
    for n in [160u32, 320, 640] {
        let t = slow_sync(n, timeout);
        if t > timeout {
            return;
        }
        took.push((n, t));
    }
    panic!("no sync outlasted the {timeout:?} timeout (writes, time): {took:?}: the test proves nothing");
}

/// `n` writes of 16 KiB to an object store that takes 200 ms per request, past a 2 MiB
/// backlog, then a sync with a 300 ms fsync timeout: it must succeed, and every write must
/// read back. Returns how long the sync took.
fn slow_sync(n: u32, timeout: Duration) -> Duration {
    let store: Arc<dyn ObjectStore> = Arc::new(slatedb::object_store::memory::InMemory::new());
    let opts = SlateOptions {
        backlog_bytes: 2 << 20,
        fsync_timeout: Some(timeout),
        ..SlateOptions::default()
    };
    let delay = Duration::from_millis(200);
    let slow = Hooked::new(store, move |_| Box::pin(tokio::time::sleep(delay)));
    let kv = SlateKv::open_with(Arc::new(slow), "slow", &opts).expect("open");
    for i in 0..n {
        let mut b = Batch::new();
        b.put(Space::Data, i.to_be_bytes().to_vec(), vec![7; 16 << 10]);
        kv.write(b, false).expect("write");
    }
    let t = Instant::now();
    kv.sync().expect("a slow object store failed the sync");
    let took = t.elapsed();
    for i in 0..n {
        let v = kv.get(Space::Data, &i.to_be_bytes()).expect("get");
        assert_eq!(v.map(|v| v.len()), Some(16 << 10));
    }
    took
}

#[test]
fn common_prefix_of_bounds() {
    assert_eq!(common_prefix(b"abc1", b"abc2"), 3);
    assert_eq!(common_prefix(b"ab", b"abc"), 2);
    assert_eq!(common_prefix(b"", b"x"), 0);
}
