//! Unit tests of the SlateDB backend.

use super::*;
use crate::ids::{DataId, Epoch, Ino};
use crate::keys;

fn full(space: Space, k: &[u8]) -> Vec<u8> {
    full_key(space, k)
}

/// The filters' prefix is a versioned key's base, the same for every version of it and
/// for a scan bounded within it; other keys have none.
#[test]
fn the_filter_prefix_is_the_versioned_base() {
    let block = keys::block(DataId::new(7), 3);
    for e in [0, 1, u64::MAX] {
        let k = full(Space::Data, &keys::versioned(&block, Epoch::new(e)));
        assert_eq!(base_len(&k), Some(1 + block.len()));
    }
    let inode = keys::inode(Ino::new(0x0100));
    let k = full(Space::Meta, &keys::versioned(&inode, Epoch::new(9)));
    assert_eq!(base_len(&k), Some(1 + inode.len()));
    // A parent number with zero bytes: the name's terminator is found after it.
    let dirent = keys::dirent(Ino::new(0x0100), b"name");
    let k = full(Space::Meta, &keys::versioned(&dirent, Epoch::new(9)));
    assert_eq!(base_len(&k), Some(1 + dirent.len()));
    assert_eq!(&k[..1 + dirent.len()], &full(Space::Meta, &dirent)[..]);
    // A scan prefix shorter than a base has no filter prefix.
    assert_eq!(
        base_len(&full(Space::Data, &keys::block_prefix(DataId::new(7)))),
        None
    );
    assert_eq!(
        base_len(&full(Space::Meta, &keys::dirent_prefix(Ino::new(1)))),
        None
    );
    // Unversioned keys, and block keys in the wrong space, have none.
    assert_eq!(base_len(&full(Space::Meta, &keys::setting("x"))), None);
    assert_eq!(base_len(&full(Space::Meta, &block)), None);
    assert_eq!(base_len(b""), None);
}

/// An object store whose every write takes `delay`.
#[derive(Debug)]
struct Slow {
    inner: Arc<dyn ObjectStore>,
    delay: Duration,
}

impl std::fmt::Display for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slow({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Slow {
    async fn put_opts(
        &self,
        location: &slatedb::object_store::path::Path,
        payload: slatedb::object_store::PutPayload,
        opts: slatedb::object_store::PutOptions,
    ) -> slatedb::object_store::Result<slatedb::object_store::PutResult> {
        tokio::time::sleep(self.delay).await;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &slatedb::object_store::path::Path,
        opts: slatedb::object_store::PutMultipartOptions,
    ) -> slatedb::object_store::Result<Box<dyn slatedb::object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &slatedb::object_store::path::Path,
        options: slatedb::object_store::GetOptions,
    ) -> slatedb::object_store::Result<slatedb::object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<
            'static,
            slatedb::object_store::Result<slatedb::object_store::path::Path>,
        >,
    ) -> futures_util::stream::BoxStream<
        'static,
        slatedb::object_store::Result<slatedb::object_store::path::Path>,
    > {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&slatedb::object_store::path::Path>,
    ) -> futures_util::stream::BoxStream<
        'static,
        slatedb::object_store::Result<slatedb::object_store::ObjectMeta>,
    > {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&slatedb::object_store::path::Path>,
    ) -> slatedb::object_store::Result<slatedb::object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &slatedb::object_store::path::Path,
        to: &slatedb::object_store::path::Path,
        options: slatedb::object_store::CopyOptions,
    ) -> slatedb::object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A sync behind a backlog that takes the object store several timeouts to take, one
/// write at a time, waits for it: the fsync timeout is for an object store that takes
/// nothing (down), not for a slow one.
#[test]
fn a_slow_object_store_is_waited_for() {
    let store: Arc<dyn ObjectStore> = Arc::new(slatedb::object_store::memory::InMemory::new());
    let timeout = Duration::from_millis(300);
    let opts = SlateOptions {
        backlog_bytes: 2 << 20,
        fsync_timeout: Some(timeout),
        ..SlateOptions::default()
    };
    let slow = Slow {
        inner: store,
        delay: Duration::from_millis(200),
    };
    let kv = SlateKv::open_with(Arc::new(slow), "slow", &opts).expect("open");
    const N: u32 = 160; // 2.5 MiB: past the backlog, the last ones wait in the buffer
    for i in 0..N {
        let mut b = Batch::new();
        b.put(Space::Data, i.to_be_bytes().to_vec(), vec![7; 16 << 10]);
        kv.write(b, false).expect("write");
    }
    let t = Instant::now();
    kv.sync().expect("a slow object store failed the sync");
    assert!(
        t.elapsed() > timeout,
        "the sync took {:?}, less than the timeout: the test proves nothing",
        t.elapsed()
    );
    for i in 0..N {
        let v = kv.get(Space::Data, &i.to_be_bytes()).expect("get");
        assert_eq!(v.map(|v| v.len()), Some(16 << 10));
    }
}

#[test]
fn common_prefix_of_bounds() {
    assert_eq!(common_prefix(b"abc1", b"abc2"), 3);
    assert_eq!(common_prefix(b"ab", b"abc"), 2);
    assert_eq!(common_prefix(b"", b"x"), 0);
}
