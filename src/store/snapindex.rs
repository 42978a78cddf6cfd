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
use crate::ids::ContainerId;
use crate::keys;
use crate::kv::{Batch, Dir, Space};
use crate::timefmt;

/// One expiry-index entry: when, which container, which snapshot.
pub type Expiring = (Ts, ContainerId, String);

/// What `.snapshots` shows of a container's snapshots: how many, and when the newest was
/// taken (`newest: None` = not known, read again on the next call).
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapSummary {
    count: u64,
    newest: Option<Option<Ts>>,
}

/// The later of `a` (if any) and `b`.
fn later(a: Option<Ts>, b: Ts) -> Ts {
    match a {
        Some(a) if (a.secs, a.nsecs) >= (b.secs, b.nsecs) => a,
        _ => b,
    }
}

/// The setting that says both indexes exist.
const INDEXED: &str = "snapshot_indexes";

impl Store {
    /// The snapshot whose alias is `alias`. O(1).
    pub fn snapshot_by_alias(
        &self,
        container: &ContainerId,
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

    /// How many snapshots `container` has, and when the newest was taken. Kept in memory
    /// (snapshot and delete update it), so `.snapshots`' attributes, asked for on every
    /// access below it, cost no read; filled on first use by counting the records, and the
    /// newest found again after it was deleted from the last second's names (names sort by
    /// creation second).
    pub fn snapshot_summary(&self, container: &ContainerId) -> FsResult<(u64, Option<Ts>)> {
        if let Some(SnapSummary {
            count,
            newest: Some(newest),
        }) = self
            .catalog
            .snapshot_summaries
            .lock()
            .get(container)
            .copied()
        {
            return Ok((count, newest));
        }
        let _g = self.write_lock();
        let count = match self.catalog.snapshot_summaries.lock().get(container) {
            Some(s) => s.count,
            None => {
                let mut n = 0u64;
                self.scan_snapshot_records(container, Dir::Forward, &mut |_, _| {
                    n += 1;
                    true
                })?;
                n
            }
        };
        let mut newest: Option<Ts> = None;
        let mut second: Option<Vec<u8>> = None;
        self.scan_snapshot_records(container, Dir::Reverse, &mut |name, r| {
            let base = name.get(..timefmt::SNAPSHOT_NAME_LEN).unwrap_or(name);
            match &second {
                Some(b) if b.as_slice() != base => return false,
                None => second = Some(base.to_vec()),
                _ => {}
            }
            newest = Some(later(newest, r.created_at));
            true
        })?;
        self.catalog.snapshot_summaries.lock().insert(
            container.clone(),
            SnapSummary {
                count,
                newest: Some(newest),
            },
        );
        Ok((count, newest))
    }

    /// Keeps the summary of `container` (when it is kept) after snapshot `created` was
    /// taken (`added`) or deleted.
    pub(super) fn count_snapshots(&self, container: &ContainerId, added: bool, created: Ts) {
        if let Some(s) = self.catalog.snapshot_summaries.lock().get_mut(container) {
            if added {
                s.count += 1;
                s.newest = s.newest.map(|n| Some(later(n, created)));
            } else {
                s.count = s.count.saturating_sub(1);
                if s.newest == Some(Some(created)) {
                    s.newest = None; // found again on the next call
                }
            }
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
    pub fn alias_index(&self, container: &ContainerId) -> FsResult<Option<Vec<(String, String)>>> {
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
    pub fn expired(&self, now: Ts) -> FsResult<Vec<(ContainerId, String)>> {
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
                        container,
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
            for s in self.snapshots(&c.id)? {
                put_indexes(&mut b, &s);
            }
        }
        b.put(Space::Meta, keys::setting(INDEXED), vec![1]);
        self.kv.write(b, true)?;
        Ok(())
    }

    pub(super) fn alias_free(
        &self,
        container: &ContainerId,
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
