//! The snapshots of a container runtime (containerd's snapshotter API), kept in the store so
//! that they outlive the daemon and containerd.
//!
//! Each runtime snapshot has an opaque key (containerd passes `namespace/seq/key`) and one of
//! three kinds: *committed* (an image layer: a snapfs snapshot, frozen), *active* (a writable
//! container whose head starts from its parent's epoch) and *view* (the same, mounted
//! read-only). The record names the snapfs objects that hold its tree; a child index
//! (`keys::runtime_child`) answers "has it children?" without a scan of every record.
//!
//! The records are written after the objects they name exist and deleted before those
//! objects go, so a crash in between leaves only objects no record names, which the
//! snapshotter's cleanup removes (see `service/snapshotter/mod.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::codec::{self, Ts};
use crate::error::FsResult;
use crate::ids::{ContainerId, Epoch};
use crate::keys;
use crate::kv::{Batch, Dir, Space};

/// The kind of a runtime snapshot (containerd's `Kind`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    View,
    Active,
    Committed,
}

/// What the store keeps of one runtime snapshot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    pub kind: RuntimeKind,
    /// The committed snapshot it starts from (its key).
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    /// The container holding its tree: the live one of an active snapshot or view, the
    /// (deleted) one whose snapshot a committed snapshot is.
    pub container: ContainerId,
    /// Committed: the name of the snapfs snapshot holding its tree.
    pub snapshot: Option<String>,
}

impl Store {
    /// The runtime snapshot with key `key`.
    pub fn runtime_snapshot(&self, key: &str) -> FsResult<Option<RuntimeSnapshot>> {
        match self.kv.get(Space::Meta, &keys::runtime_snapshot(key))? {
            Some(v) => Ok(Some(codec::decode_plain(&v)?)),
            None => Ok(None),
        }
    }

    /// Every runtime snapshot, by key.
    pub fn runtime_snapshots(&self) -> FsResult<Vec<(String, RuntimeSnapshot)>> {
        let mut out = Vec::new();
        let mut err = None;
        self.kv.scan(
            Space::Meta,
            &[keys::TAG_RUNTIME_SNAPSHOT],
            &[keys::TAG_RUNTIME_SNAPSHOT + 1],
            Dir::Forward,
            &mut |k, v| {
                let decoded = codec::decode_plain::<RuntimeSnapshot>(v);
                match (keys::split_runtime_snapshot(k), decoded) {
                    (Some(key), Ok(rec)) => out.push((key.to_string(), rec)),
                    (None, _) => {
                        err = Some(crate::error::FsError::Corrupt(
                            "a runtime snapshot key is not UTF-8".into(),
                        ))
                    }
                    (_, Err(e)) => err = Some(e.into()),
                }
                err.is_none()
            },
        )?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Does any runtime snapshot start from `key`?
    pub fn runtime_has_children(&self, key: &str) -> FsResult<bool> {
        let start = keys::runtime_children(key);
        let end = crate::kv::prefix_end(&start);
        Ok(self.kv.any_key_in(Space::Meta, &start, &end)?)
    }

    /// The raw keys of the child index.
    fn child_index_keys(&self) -> FsResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.kv.scan(
            Space::Meta,
            &[keys::TAG_RUNTIME_CHILD],
            &[keys::TAG_RUNTIME_CHILD + 1],
            Dir::Forward,
            &mut |k, _| {
                out.push(k.to_vec());
                true
            },
        )?;
        Ok(out)
    }

    /// Every entry of the child index: (parent, child).
    pub fn runtime_child_index(&self) -> FsResult<Vec<(String, String)>> {
        self.child_index_keys()?
            .iter()
            .map(|k| match keys::split_runtime_child(k) {
                Some((p, c)) => Ok((p.to_string(), c.to_string())),
                None => Err(crate::error::FsError::Corrupt(
                    "a malformed runtime child index key".into(),
                )),
            })
            .collect()
    }

    /// Rebuilds the child index from the records (`fsck --repair`), in one batch; malformed
    /// keys go too.
    pub fn rebuild_runtime_children(&self) -> FsResult<()> {
        let mut b = Batch::new();
        for k in self.child_index_keys()? {
            b.delete(Space::Meta, k);
        }
        for (key, rec) in self.runtime_snapshots()? {
            if let Some(p) = &rec.parent {
                b.put(Space::Meta, keys::runtime_child(p, &key), Vec::new());
            }
        }
        self.kv.write(b, true)?;
        Ok(())
    }

    /// Writes the records in `put` (key, record) and deletes those of `delete`, in one batch
    /// with their child index entries. Synced.
    pub fn write_runtime_snapshots(
        &self,
        put: &[(&str, &RuntimeSnapshot)],
        delete: &[(&str, &RuntimeSnapshot)],
    ) -> FsResult<()> {
        let mut b = Batch::new();
        for (key, rec) in delete {
            b.delete(Space::Meta, keys::runtime_snapshot(key));
            if let Some(p) = &rec.parent {
                b.delete(Space::Meta, keys::runtime_child(p, key));
            }
        }
        for (key, rec) in put {
            b.put(
                Space::Meta,
                keys::runtime_snapshot(key),
                codec::encode_plain(rec),
            );
            if let Some(p) = &rec.parent {
                b.put(Space::Meta, keys::runtime_child(p, key), Vec::new());
            }
        }
        self.kv.write(b, true)?;
        Ok(())
    }

    /// What the tree at `top` holds on its own above the tree at `base` (None: everything):
    /// the bytes of the versions its epochs wrote (data and metadata) and how many inodes
    /// they wrote. O(1) once known: each epoch's figures are computed from its change index
    /// once (under the write lock, so no write batch slips between the count and the cache)
    /// and a head's are then kept by every write batch; reclaim forgets what it moves.
    pub fn own_usage(&self, top: Epoch, base: Option<Epoch>) -> FsResult<(u64, u64)> {
        let below = base.map(|b| self.chain(b));
        let _g = self.write_lock();
        let mut own = super::Own::default();
        for &e in self.chain(top).members() {
            if below.as_ref().is_some_and(|c| c.contains(e)) {
                continue;
            }
            let o = self.cached_own(e)?;
            own.bytes = own.bytes.saturating_add(o.bytes);
            own.inodes = own.inodes.saturating_add(o.inodes);
        }
        Ok((own.bytes, own.inodes))
    }
}
