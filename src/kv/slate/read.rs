//! Reads of a store on object storage: the live database of a writer merged with its
//! write-behind buffer, a reader's database, or a snapshot of either.

use std::cmp::Ordering;
use std::iter::Peekable;
use std::sync::Arc;

use slatedb::bytes::Bytes;
use slatedb::config::ScanOptions;
use slatedb::{Db, DbReader, DbSnapshot, IterationOrder, KeyValue};

use super::super::overlay::{next_of, Overlay, Value, View};
use super::{common_prefix, full_key, slate_err, READ_AHEAD};
use crate::kv::{Dir, KvError, KvRead, KvResult, Pair, Space, Visit};

/// What reads go through: the live database or one of its snapshots.
pub(super) enum Source<'a> {
    Db(&'a Db),
    Reader(&'a DbReader),
    Snapshot(Arc<DbSnapshot>),
}

/// Reads of one source, blocking on the backend's runtime; on the live database of a
/// writer, merged with the write-behind buffer.
pub(super) struct Reader<'a> {
    pub(super) rt: &'a tokio::runtime::Runtime,
    pub(super) src: Source<'a>,
    pub(super) overlay: Option<&'a Overlay>,
}

/// The buffer's entries over a database iterator, in iteration order: the buffer wins on a
/// key both have, and its deletions hide the database's value.
struct Merged<'v, I: Iterator<Item = (&'v [u8], &'v Value)>> {
    buffered: Peekable<I>,
    it: slatedb::DbIterator,
    head: Option<KeyValue>,
    /// `head` was handed out: the iterator moves on at the next call, not before (a
    /// lookup that needs one entry reads no further).
    moved: bool,
    desc: bool,
}

impl<'v, I: Iterator<Item = (&'v [u8], &'v Value)>> Merged<'v, I> {
    fn new(buffered: I, it: slatedb::DbIterator, desc: bool) -> Self {
        Merged {
            buffered: buffered.peekable(),
            it,
            head: None,
            moved: true,
            desc,
        }
    }

    /// The next live entry, its key with the space's tag.
    async fn next(&mut self) -> Result<Option<(Bytes, Bytes)>, slatedb::Error> {
        loop {
            if std::mem::take(&mut self.moved) {
                self.head = self.it.next().await?;
            }
            let buffered = self.buffered.peek().map(|(k, _)| *k);
            let db = self.head.as_ref().map(|kv| kv.key.as_ref());
            let Some(o) = next_of(buffered, db, self.desc) else {
                return Ok(None);
            };
            if o != Ordering::Less {
                // The database's entry goes out, or is shadowed by the buffer's.
                self.moved = true;
                if o == Ordering::Greater {
                    return Ok(self.head.take().map(|kv| (kv.key, kv.value)));
                }
            }
            if let Some((k, Some(v))) = self.buffered.next() {
                return Ok(Some((Bytes::copy_from_slice(k), v.clone())));
            }
        }
    }
}

impl KvRead for Reader<'_> {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        let key = full_key(space, key);
        if let Some(v) = self.overlay.and_then(|o| o.get(&key)) {
            return Ok(v.map(|b| b.to_vec()));
        }
        let v = self
            .rt
            .block_on(async {
                match &self.src {
                    Source::Db(db) => db.get(&key).await,
                    Source::Reader(r) => r.get(&key).await,
                    Source::Snapshot(s) => s.get(&key).await,
                }
            })
            .map_err(slate_err)?;
        Ok(v.map(|b| b.to_vec()))
    }

    /// The greatest key in `[lower, key]`: the first live item of a bounded descending
    /// scan, read in one call (one block at a time, through the block cache: it is a point
    /// lookup).
    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        let end = crate::kv::successor(key); // the range includes `key`
        if lower >= end.as_slice() {
            return Ok(None);
        }
        let (lo, hi) = (full_key(space, lower), full_key(space, &end));
        let opts = ScanOptions::new()
            .with_order(IterationOrder::Descending)
            .with_cache_blocks(true);
        let first = self
            .rt
            .block_on(async {
                let (view, it) = self.open(&lo, &hi, &opts).await?;
                let mut merged = Merged::new(view.range(&lo, &hi, true), it, true);
                let first = merged.next().await;
                first
            })
            .map_err(slate_err)?;
        Ok(first.map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        if start >= end {
            return Ok(());
        }
        let (lo, hi) = (full_key(space, start), full_key(space, end));
        let desc = dir == Dir::Reverse;
        let order = if desc {
            IterationOrder::Descending
        } else {
            IterationOrder::Ascending
        };
        let opts = ScanOptions::new()
            .with_order(order)
            .with_read_ahead_bytes(READ_AHEAD)
            .with_cache_blocks(true);
        let (view, it) = self
            .rt
            .block_on(self.open(&lo, &hi, &opts))
            .map_err(slate_err)?;
        let mut merged = Merged::new(view.range(&lo, &hi, desc), it, desc);
        // `f` runs outside the runtime: it may read and write this store itself.
        while let Some((k, v)) = self.rt.block_on(merged.next()).map_err(slate_err)? {
            if !f(&k[1..], &v) {
                break;
            }
        }
        Ok(())
    }
}

impl Reader<'_> {
    /// The write-behind buffer's layers (none for a snapshot or a reader) and a database
    /// iterator over `[lo, hi)` that are consistent: no layer reached the database between
    /// the two (see [`super::super::overlay`]; it starts over when one did).
    async fn open(
        &self,
        lo: &[u8],
        hi: &[u8],
        opts: &ScanOptions,
    ) -> Result<(View, slatedb::DbIterator), slatedb::Error> {
        let Some(o) = self.overlay else {
            return Ok((View::default(), self.iter(lo, hi, opts).await?));
        };
        loop {
            let (view, stamp) = o.capture();
            let it = self.iter(lo, hi, opts).await?;
            if o.unchanged(stamp) {
                return Ok((view, it));
            }
        }
    }

    async fn iter(
        &self,
        lo: &[u8],
        hi: &[u8],
        opts: &ScanOptions,
    ) -> Result<slatedb::DbIterator, slatedb::Error> {
        // A prefix scan of the same range: it lets the filters skip tables.
        let n = common_prefix(lo, hi);
        let prefix = &lo[..n];
        let sub = lo[n..].to_vec()..hi[n..].to_vec();
        match &self.src {
            Source::Db(db) => db.scan_prefix_with_options(prefix, sub, opts).await,
            Source::Reader(r) => r.scan_prefix_with_options(prefix, sub, opts).await,
            Source::Snapshot(s) => s.scan_prefix_with_options(prefix, sub, opts).await,
        }
    }
}

/// A view that fails every read (a snapshot could not be taken).
pub(super) struct Failed(pub(super) String);

impl KvRead for Failed {
    fn get(&self, _: Space, _: &[u8]) -> KvResult<Option<Vec<u8>>> {
        Err(KvError::Io(self.0.clone()))
    }
    fn seek_for_prev(&self, _: Space, _: &[u8], _: &[u8]) -> KvResult<Option<Pair>> {
        Err(KvError::Io(self.0.clone()))
    }
    fn scan(&self, _: Space, _: &[u8], _: &[u8], _: Dir, _: Visit) -> KvResult<()> {
        Err(KvError::Io(self.0.clone()))
    }
}
