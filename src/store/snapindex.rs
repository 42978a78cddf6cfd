//! The indexes beside the snapshot records, kept in the same batches: aliases (`0x07`:
//! container, alias -> name) so that lookups by alias and "is this alias free" are O(1), and
//! expiry times (`0x08`: time, container, name) so that expiry reads only what is due. Plus
//! a kept count of snapshots per container for `.snapshots`' link count.
//!
//! Stores written before an index existed get it built once, when a daemon opens them
//! (`index_snapshots`); `fsck` checks both indexes against the records and `--repair`
//! rebuilds them.

use super::{SnapshotInfo, SnapshotRecord, Store, StoreError};
use crate::codec::{self, Ts};
use crate::error::FsResult;
use crate::keys;
use crate::kv::{Batch, Dir, Space};
use crate::timefmt;

/// One expiry-index entry: when, which container, which snapshot.
pub type Expiring = (Ts, Vec<u8>, String);

/// The setting that says both indexes exist.
const INDEXED: &str = "snapshot_indexes";

impl Store {
    /// The snapshot whose alias is `alias`. O(1).
    pub fn snapshot_by_alias(
        &self,
        container: &[u8],
        alias: &str,
    ) -> FsResult<Option<SnapshotInfo>> {
        match self.kv.get(Space::Meta, &keys::alias(container, alias))? {
            Some(name) => {
                let name = String::from_utf8_lossy(&name).into_owned();
                Ok(self
                    .snapshot_by_name(container, &name)?
                    .filter(|s| s.record.alias.as_deref() == Some(alias)))
            }
            None => Ok(None),
        }
    }

    /// How many snapshots `container` has, and when the newest was taken: O(1) after the
    /// first call per container (the count is kept up to date by snapshot and delete; the
    /// newest is read from the end of the name range: names sort by creation second).
    pub fn snapshot_summary(&self, container: &[u8]) -> FsResult<(u64, Option<Ts>)> {
        let cached = self.snapshot_counts.lock().get(container).copied();
        let count = match cached {
            Some(n) => n,
            None => {
                let _g = self.write_lock();
                let prefix = keys::snapshot_prefix(container);
                let end = crate::kv::prefix_end(&prefix);
                let mut n = 0u64;
                self.kv
                    .scan(Space::Meta, &prefix, &end, Dir::Forward, &mut |_, _| {
                        n += 1;
                        true
                    })?;
                self.snapshot_counts.lock().insert(container.to_vec(), n);
                n
            }
        };
        // The last second's snapshots (`snap-…-HHMMSS`, `-2`, `-3` …): the newest is among them.
        let prefix = keys::snapshot_prefix(container);
        let end = crate::kv::prefix_end(&prefix);
        let mut newest: Option<Ts> = None;
        let mut second: Option<Vec<u8>> = None;
        let mut bad = None;
        self.kv
            .scan(Space::Meta, &prefix, &end, Dir::Reverse, &mut |k, v| {
                let name = &k[prefix.len()..];
                let base = name.get(..timefmt::SNAPSHOT_NAME_LEN).unwrap_or(name);
                match &second {
                    Some(b) if b.as_slice() != base => return false,
                    None => second = Some(base.to_vec()),
                    _ => {}
                }
                match codec::decode_plain::<SnapshotRecord>(v) {
                    Ok(r) => {
                        let t = r.created_at;
                        if newest.is_none_or(|n| (t.secs, t.nsecs) > (n.secs, n.nsecs)) {
                            newest = Some(t);
                        }
                        true
                    }
                    Err(e) => {
                        bad = Some(e);
                        false
                    }
                }
            })?;
        if let Some(e) = bad {
            return Err(e.into());
        }
        Ok((count, newest))
    }

    /// Adjusts the cached snapshot count of `container` (when it is cached).
    pub(super) fn count_snapshots(&self, container: &[u8], delta: i64) {
        if let Some(n) = self.snapshot_counts.lock().get_mut(container) {
            *n = n.saturating_add_signed(delta);
        }
    }

    /// Builds the snapshot indexes of stores written before they existed (once; one batch).
    pub fn index_snapshots(&self) -> FsResult<()> {
        if self.kv.get(Space::Meta, &keys::setting(INDEXED))?.is_some() {
            return Ok(());
        }
        self.rebuild_snapshot_indexes()
    }

    fn indexed(&self) -> FsResult<bool> {
        Ok(self.kv.get(Space::Meta, &keys::setting(INDEXED))?.is_some())
    }

    /// The alias index of `container`: (alias, snapshot name) pairs, sorted; None for a
    /// store written before the index existed and not yet opened by a daemon.
    pub fn alias_index(&self, container: &[u8]) -> FsResult<Option<Vec<(String, String)>>> {
        if !self.indexed()? {
            return Ok(None);
        }
        let prefix = keys::alias_prefix(container);
        let end = crate::kv::prefix_end(&prefix);
        let mut out = Vec::new();
        self.kv
            .scan(Space::Meta, &prefix, &end, Dir::Forward, &mut |k, v| {
                out.push((
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
                true
            })?;
        Ok(Some(out))
    }

    /// Every expiry index entry: (time, container, snapshot name), oldest first; None as for
    /// [`Store::alias_index`].
    pub fn expiry_index(&self) -> FsResult<Option<Vec<Expiring>>> {
        if !self.indexed()? {
            return Ok(None);
        }
        self.expiring_until(None).map(Some)
    }

    /// Snapshots whose expiry is at or before `now` (from the expiry index: O(due)).
    pub fn expired(&self, now: Ts) -> FsResult<Vec<(Vec<u8>, String)>> {
        if !self.indexed()? {
            return Err(crate::error::FsError::Corrupt(
                "snapshot indexes missing (open the store with the daemon)".into(),
            ));
        }
        Ok(self
            .expiring_until(Some(now))?
            .into_iter()
            .map(|(_, c, n)| (c, n))
            .collect())
    }

    fn expiring_until(&self, until: Option<Ts>) -> FsResult<Vec<Expiring>> {
        let start = [keys::TAG_EXPIRY];
        let end = match until {
            // Everything at or before `until`: up to the next nanosecond's prefix.
            Some(t) => keys::expiry_prefix(t.secs, t.nsecs.saturating_add(1)),
            None => vec![keys::TAG_EXPIRY + 1],
        };
        let mut out = Vec::new();
        self.kv
            .scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
                if let Some((secs, nsecs, container, name)) = keys::split_expiry(k) {
                    out.push((
                        Ts { secs, nsecs },
                        container.to_vec(),
                        String::from_utf8_lossy(name).into_owned(),
                    ));
                }
                true
            })?;
        Ok(out)
    }

    /// Writes both indexes anew from the snapshot records (one batch; for `fsck --repair`
    /// and stores written before they existed).
    pub fn rebuild_snapshot_indexes(&self) -> FsResult<()> {
        let _g = self.write_lock();
        let mut b = Batch::new();
        for tag in [keys::TAG_ALIAS, keys::TAG_EXPIRY] {
            self.kv.scan(
                Space::Meta,
                &[tag],
                &[tag + 1],
                Dir::Forward,
                &mut |k, _| {
                    b.delete(Space::Meta, k.to_vec());
                    true
                },
            )?;
        }
        for c in self.containers()? {
            for s in self.snapshots(c.id.as_bytes())? {
                put_indexes(&mut b, &s);
            }
        }
        b.put(Space::Meta, keys::setting(INDEXED), vec![1]);
        self.kv.write(b, true)?;
        Ok(())
    }

    pub(super) fn alias_free(
        &self,
        container: &[u8],
        alias: &str,
        except: &str,
    ) -> Result<(), StoreError> {
        let owner = self.kv.get(Space::Meta, &keys::alias(container, alias))?;
        if owner.is_some_and(|n| n != except.as_bytes()) {
            return Err(StoreError::AliasTaken(alias.to_string()));
        }
        Ok(())
    }

    /// Writes snapshot `s`'s record and its index entries; `old` is the record it replaces
    /// (its index entries that changed go).
    pub(super) fn put_snapshot(
        &self,
        b: &mut Batch,
        s: &SnapshotInfo,
        old: Option<&SnapshotRecord>,
    ) {
        b.put(
            Space::Meta,
            keys::snapshot(&s.container, &s.name),
            codec::encode_plain(&s.record),
        );
        if let Some(old) = old {
            if let Some(a) = &old.alias {
                if s.record.alias.as_ref() != Some(a) {
                    b.delete(Space::Meta, keys::alias(&s.container, a));
                }
            }
            if let Some(t) = old.expires_at {
                if s.record.expires_at != Some(t) {
                    b.delete(
                        Space::Meta,
                        keys::expiry(t.secs, t.nsecs, &s.container, &s.name),
                    );
                }
            }
        }
        put_indexes(b, s);
    }

    /// Removes snapshot `s`'s record and its index entries.
    pub(super) fn delete_snapshot_record(&self, b: &mut Batch, s: &SnapshotInfo) {
        b.delete(Space::Meta, keys::snapshot(&s.container, &s.name));
        if let Some(a) = &s.record.alias {
            b.delete(Space::Meta, keys::alias(&s.container, a));
        }
        if let Some(t) = s.record.expires_at {
            b.delete(
                Space::Meta,
                keys::expiry(t.secs, t.nsecs, &s.container, &s.name),
            );
        }
    }
}

/// The index entries of snapshot `s`.
fn put_indexes(b: &mut Batch, s: &SnapshotInfo) {
    if let Some(a) = &s.record.alias {
        b.put(
            Space::Meta,
            keys::alias(&s.container, a),
            s.name.clone().into_bytes(),
        );
    }
    if let Some(t) = s.record.expires_at {
        b.put(
            Space::Meta,
            keys::expiry(t.secs, t.nsecs, &s.container, &s.name),
            Vec::new(),
        );
    }
}
