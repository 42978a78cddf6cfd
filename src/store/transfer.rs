//! Sending a snapshot to another store and receiving one (`snapfs send` / `receive`): the
//! stream's records are the versioned keys (inodes, entries, xattrs, gone markers, back
//! links, blocks) with the value the sent snapshot sees.
//!
//! - A **full** stream of snapshot B carries every key the epochs of B's chain wrote.
//! - An **incremental** stream from A to B carries every key written by an epoch in exactly
//!   one of the two chains (the change index: what changed, never the tree), with B's value,
//!   or a tombstone where B has none and A has one.
//!
//! Keys keep their inode numbers and data ids: a received tree lives in epochs of its own, so
//! ids need only be unique along its chain, and the receiver's id counter is raised above the
//! stream's. The receiver writes the records into a new epoch P (frozen, parent: the base
//! snapshot's epoch), a chunk per batch, under a receive record (0x0d) that marks P as work
//! in progress; the last batch names the snapshot, moves (or creates) the container's head
//! on top of P and drops the record, so a snapshot appears whole or not at all. A receive that
//! fails retires P; one cut by a crash is retired when the store opens next.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::snapshot::{check_alias, SnapshotInfo, SnapshotRecord};
use super::{put_version, resolve, ContainerRecord, EpochKind, EpochRecord, Store, StoreError};
use crate::codec::{self, Dirent, Inode, Kind, Ts, Version};
use crate::ids::{ContainerId, Epoch};
use crate::keys;
use crate::kv::{Batch, Dir, KvRead, Space};
use crate::stream::{
    BaseRef, Header, Record, SnapshotMeta, StreamError, StreamReader, StreamWriter, Totals,
};

/// A receive in progress (key 0x0d, by epoch).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceiveRecord {
    /// The container it goes into (its name: it may not exist yet).
    pub container: String,
    pub snapshot: String,
    pub started: Ts,
}

/// What a send wrote.
#[derive(Debug, Clone)]
pub struct Sent {
    pub header: Header,
    pub totals: Totals,
}

/// What a receive brought.
#[derive(Debug, Clone)]
pub struct Received {
    pub container: ContainerRecord,
    pub snapshot: SnapshotInfo,
    pub totals: Totals,
    /// Snapshots a rollback deleted.
    pub rolled_back: Vec<String>,
}

impl From<StreamError> for StoreError {
    fn from(e: StreamError) -> Self {
        // An I/O error on the stream (a sender or receiver gone) is the stream's fault, not
        // the store's: the receive is refused like a truncated stream.
        StoreError::BadStream(e.to_string())
    }
}

/// The versioned tables a stream may carry, per space.
fn sendable(space: Space, key: &[u8]) -> bool {
    match (space, key.first()) {
        (Space::Meta, Some(&t)) => (keys::TAG_INODE..=keys::TAG_LINK).contains(&t),
        (Space::Data, Some(&t)) => t == keys::TAG_BLOCK,
        _ => false,
    }
}

fn bad(why: impl Into<String>) -> StoreError {
    StoreError::BadStream(why.into())
}

impl Store {
    /// Writes snapshot `key` of `container` to `out` as a stream: full, or incremental from
    /// snapshot `from` (which must be older than `key`'s).
    pub fn send(
        &self,
        container: &ContainerId,
        key: &str,
        from: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<Sent, StoreError> {
        let crec = self.require_container(container)?;
        let snap = self.require_snapshot(container, key)?;
        let base = match from {
            Some(f) => {
                let b = self.require_snapshot(container, f)?;
                if b.record.epoch >= snap.record.epoch {
                    return Err(StoreError::Invalid(format!(
                        "snapshot {f:?} is not older than {key:?}: the base of an incremental stream must be"
                    )));
                }
                Some(b)
            }
            None => None,
        };
        // Reclaim moves versions between epochs: the chains, the read view and the set of
        // keys are taken while it is held off; the view then reads that moment's state.
        let paused = self.pause_reclaim();
        let view = self.kv.read_view();
        let chain = self.chain(snap.record.epoch);
        let base_chain = base.as_ref().map(|b| self.chain(b.record.epoch));
        let epochs: Vec<Epoch> = match &base_chain {
            Some(bc) => crate::fs::only_one(bc, &chain),
            None => chain.members().to_vec(),
        };
        let touched = touched_keys(&*view, &epochs)?;
        drop(paused);
        let header = Header {
            block_size: self.block_size,
            next_id: self.next_id(),
            container: crec.name.clone(),
            snapshot: meta_of(&snap),
            base: base.as_ref().map(|b| BaseRef {
                name: b.name.clone(),
                created_at: b.record.created_at,
            }),
            usage: self.usage(snap.record.epoch)?,
        };
        let mut w = StreamWriter::new(out, &header)?;
        for (space, base_key) in &touched {
            let value: Vec<u8> = match resolve(&*view, *space, base_key, &chain)? {
                Some(v) if !(base_chain.is_none() && codec::is_tombstone(&v)) => v,
                Some(_) => continue,
                // B has no version: the receiver must stop seeing A's, if A had one.
                None => match &base_chain {
                    Some(bc) => match resolve(&*view, *space, base_key, bc)? {
                        Some(old) if !codec::is_tombstone(&old) => codec::tombstone(),
                        _ => continue,
                    },
                    None => continue,
                },
            };
            w.record(*space, base_key, &value)?;
        }
        let (totals, _) = w.finish()?;
        Ok(Sent { header, totals })
    }

    /// Receives a stream into container `name`: a full stream creates it; an incremental one
    /// goes on top of its latest snapshot, which must be the stream's base (with `rollback`,
    /// later snapshots are deleted and writes to the live tree since the base dropped).
    pub fn receive(
        &self,
        input: &mut dyn Read,
        name: &str,
        rollback: bool,
    ) -> Result<Received, StoreError> {
        self.receive_with(input, name, rollback, &mut |_| Ok(()))
    }

    /// [`Store::receive`], calling `before_commit` (with the existing target's id) once the
    /// records are in and before the last batch: the caller's last check (the service's: not
    /// mounted), whose locks it may keep until this returns.
    pub fn receive_with(
        &self,
        input: &mut dyn Read,
        name: &str,
        rollback: bool,
        before_commit: &mut dyn FnMut(Option<&ContainerId>) -> Result<(), StoreError>,
    ) -> Result<Received, StoreError> {
        super::check_container_name(name)?;
        let (mut reader, header) = StreamReader::open(input)?;
        if header.block_size != self.block_size {
            return Err(bad(format!(
                "the stream's blocks are {} bytes, this store's {}: stores must share a block size",
                header.block_size, self.block_size
            )));
        }
        check_alias_opt(&header.snapshot.alias)?;
        if !valid_name(header.snapshot.name.as_bytes()) {
            return Err(bad(format!(
                "snapshot name {:?} cannot name a directory",
                header.snapshot.name
            )));
        }
        let paused = self.pause_reclaim();
        let plan = self.plan_receive(name, &header, rollback)?;
        // The pending epoch and its receive record.
        let pending = {
            let _g = self.write_lock();
            let mut b = Batch::new();
            let p = self.alloc_epoch(&mut b);
            let rec = EpochRecord {
                parent: plan.base.as_ref().map(|s| s.record.epoch),
                kind: EpochKind::Frozen,
            };
            b.put(Space::Meta, keys::epoch(p), codec::encode_plain(&rec));
            let receiving = ReceiveRecord {
                container: name.to_string(),
                snapshot: header.snapshot.name.clone(),
                started: Ts::now(),
            };
            b.put(
                Space::Meta,
                keys::receive(p),
                codec::encode_plain(&receiving),
            );
            self.kv.write(b, false)?;
            self.catalog.edit_tree(|t| t.insert(p, rec));
            p
        };
        // Reclaim is held off while records go into the pending epoch (a prune against it
        // must see it whole); the commit only adds records about it.
        let applied = self.apply_records(&mut reader, &header, &plan, pending);
        drop(paused);
        let result = applied
            .and_then(|applied| {
                before_commit(plan.existing.as_ref().map(|c| &c.id))?;
                Ok(applied)
            })
            .and_then(|applied| {
                self.commit_receive(name, &header, plan, pending, applied, &reader)
            });
        if result.is_err() {
            if let Err(e) = self.abandon_receive(pending) {
                log::error!("receive into epoch {pending}: cannot retire it: {e}");
            }
        }
        result
    }

    /// Checks the target before anything is written.
    fn plan_receive(
        &self,
        name: &str,
        header: &Header,
        rollback: bool,
    ) -> Result<ReceivePlan, StoreError> {
        let Some(crec) = self.container_by_name(name)? else {
            if let Some(b) = &header.base {
                return Err(StoreError::Conflict(format!(
                    "the stream is incremental from snapshot {:?}: container {name:?} must exist and hold it",
                    b.name
                )));
            }
            return Ok(ReceivePlan {
                existing: None,
                base: None,
                later: Vec::new(),
            });
        };
        let Some(base_ref) = &header.base else {
            return Err(StoreError::ContainerExists(name.to_string()));
        };
        let snaps = self.snapshots(&crec.id)?;
        let base = snaps
            .iter()
            .find(|s| s.name == base_ref.name && s.record.created_at == base_ref.created_at)
            .cloned()
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "container {name:?} has no snapshot {:?} (created {}): the stream's base",
                    base_ref.name,
                    crate::timefmt::rfc3339(base_ref.created_at)
                ))
            })?;
        let (later, kept): (Vec<SnapshotInfo>, Vec<SnapshotInfo>) = snaps
            .into_iter()
            .partition(|s| s.record.epoch > base.record.epoch);
        // The very snapshot is there already (received before): say so first.
        if later.iter().any(|s| {
            s.name == header.snapshot.name && s.record.created_at == header.snapshot.created_at
        }) {
            return Err(StoreError::Conflict(format!(
                "container {name:?} already has snapshot {:?}",
                header.snapshot.name
            )));
        }
        if !rollback {
            if let Some(s) = later.first() {
                return Err(StoreError::Conflict(format!(
                    "container {name:?} has snapshot {:?}, newer than the stream's base {:?}: receive with rollback to delete it",
                    s.name, base.name
                )));
            }
            if self.has_own_versions(crec.head)? {
                return Err(StoreError::Conflict(format!(
                    "container {name:?} was written since snapshot {:?}: receive with rollback to drop those writes",
                    base.name
                )));
            }
        }
        // Without a rollback there are no later snapshots by now; with one, they go (their
        // names too).
        if kept.iter().any(|s| s.name == header.snapshot.name) {
            return Err(StoreError::Conflict(format!(
                "container {name:?} already has snapshot {:?}",
                header.snapshot.name
            )));
        }
        Ok(ReceivePlan {
            existing: Some(crec),
            base: Some(base),
            later,
        })
    }

    /// Whether epoch `e` wrote anything (one step of its change index).
    fn has_own_versions(&self, e: Epoch) -> Result<bool, StoreError> {
        let start = keys::epoch_changes(e);
        let end = crate::kv::prefix_end(&start);
        let mut any = false;
        self.kv
            .scan(Space::Meta, &start, &end, Dir::Forward, &mut |_, _| {
                any = true;
                false
            })?;
        Ok(any)
    }

    /// Writes every chunk's records into `pending`, one batch per chunk.
    fn apply_records(
        &self,
        reader: &mut StreamReader<&mut dyn Read>,
        header: &Header,
        plan: &ReceivePlan,
        pending: Epoch,
    ) -> Result<Applied, StoreError> {
        let base_chain = plan.base.as_ref().map(|s| self.chain(s.record.epoch));
        let mut applied = Applied {
            usage: match &plan.base {
                Some(s) => self.usage(s.record.epoch)? as i128,
                None => 0,
            },
            max_id: 0,
        };
        let mut last: Option<(Space, Vec<u8>)> = None;
        while let Some(records) = reader.next_chunk()? {
            let mut b = Batch::new();
            for r in records {
                let here = (r.space, r.key);
                if last.as_ref().is_some_and(|l| order(l) >= order(&here)) {
                    return Err(bad("records out of order or repeated"));
                }
                let r = Record {
                    space: here.0,
                    key: here.1,
                    value: r.value,
                };
                self.check_record(&r, &mut applied)?;
                if r.space == Space::Meta && keys::split_inode(&r.key).is_some() {
                    let new = file_alloc(&r.value)?;
                    let old = match &base_chain {
                        Some(bc) => match resolve(self.kv.as_ref(), Space::Meta, &r.key, bc)? {
                            Some(v) => file_alloc(&v)?,
                            None => 0,
                        },
                        None => 0,
                    };
                    applied.usage += new as i128 - old as i128;
                }
                put_version(&mut b, r.space, &r.key, pending, r.value);
                last = Some((r.space, r.key));
            }
            self.kv.write(b, false)?;
        }
        if header.next_id < applied.max_id.saturating_add(1) {
            return Err(bad(format!(
                "the stream holds id {} but says its ids stay below {}",
                applied.max_id, header.next_id
            )));
        }
        Ok(applied)
    }

    /// Refuses a record that is not a versioned key of a table a tree holds, or whose value
    /// does not decode; notes the ids it names.
    fn check_record(&self, r: &Record, applied: &mut Applied) -> Result<(), StoreError> {
        if !sendable(r.space, &r.key) {
            return Err(bad(format!(
                "a record outside the tables a tree holds (key starting {:02x?})",
                r.key.first()
            )));
        }
        let mut id = |n: u64| applied.max_id = applied.max_id.max(n);
        let key_ok = match (r.space, r.key[0]) {
            (Space::Data, _) => match keys::split_block(&r.key) {
                Some((d, _)) if r.key.len() == 17 => {
                    id(d.get());
                    match codec::decode_block(&r.value) {
                        Ok(Version::Live(bytes)) if bytes.len() > self.block_size as usize => {
                            return Err(bad("a block larger than the block size"));
                        }
                        Ok(_) => {}
                        Err(e) => return Err(bad(format!("block: {e}"))),
                    }
                    true
                }
                _ => false,
            },
            (_, keys::TAG_INODE) => match keys::split_inode(&r.key) {
                Some(ino) if r.key.len() == 9 => {
                    id(ino.get());
                    match codec::decode::<Inode>(&r.value) {
                        Ok(Version::Live(i)) => id(i.data_id.get()),
                        Ok(Version::Tombstone) => {}
                        Err(e) => return Err(bad(format!("inode: {e}"))),
                    }
                    true
                }
                _ => false,
            },
            (_, keys::TAG_DIRENT) => match keys::split_dirent_name(&r.key) {
                Some((dir, name)) if valid_name(name) => {
                    id(dir.get());
                    match codec::decode::<Dirent>(&r.value) {
                        Ok(Version::Live(d)) => id(d.ino.get()),
                        Ok(Version::Tombstone) => {}
                        Err(e) => return Err(bad(format!("directory entry: {e}"))),
                    }
                    true
                }
                _ => false,
            },
            (_, keys::TAG_XATTR) => match (keys::split_xattr(&r.key), keys::name_of(&r.key)) {
                (Some(ino), Some(name)) if !name.is_empty() && !name.contains(&0) => {
                    id(ino.get());
                    true
                }
                _ => false,
            },
            (_, keys::TAG_DATA_GONE) => match keys::split_data_gone(&r.key) {
                Some(d) if r.key.len() == 9 => {
                    id(d.get());
                    true
                }
                _ => false,
            },
            (_, keys::TAG_LINK) => match keys::split_link(&r.key) {
                Some((ino, dir, name)) if valid_name(name) => {
                    id(ino.get());
                    id(dir.get());
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !key_ok {
            return Err(bad("a record with a malformed key"));
        }
        // Every value carries the format byte and a kind (blocks, inodes and entries were
        // decoded above).
        if !matches!(r.value.as_slice(), [codec::VALUE_VERSION, 0 | 1, ..]) {
            return Err(bad("a record with a malformed value"));
        }
        Ok(())
    }

    /// The last batch: the snapshot record, the container's head on top of it, the id
    /// counter, and the receive record gone.
    fn commit_receive(
        &self,
        name: &str,
        header: &Header,
        plan: ReceivePlan,
        pending: Epoch,
        applied: Applied,
        reader: &StreamReader<&mut dyn Read>,
    ) -> Result<Received, StoreError> {
        let usage = u64::try_from(applied.usage)
            .map_err(|_| bad("the stream's files would use a negative number of bytes"))?;
        let _g = self.write_lock();
        let mut b = Batch::new();
        let head = self.alloc_epoch(&mut b);
        let (crec, old_head) = match &plan.existing {
            Some(c) => {
                // The target may have changed while the records came in.
                let now = self.require_live(&c.id)?;
                let base_gone = match &plan.base {
                    Some(b) => self.snapshot_by_name(&c.id, &b.name)?.is_none(),
                    None => false,
                };
                if now.head != c.head || base_gone {
                    return Err(StoreError::Conflict(format!(
                        "container {name:?} changed during the receive (restored, snapshotted or its base deleted)"
                    )));
                }
                if let Some(limit) = self.quota(&c.id)?.bytes {
                    if usage > limit {
                        return Err(StoreError::OverQuota { usage, limit });
                    }
                }
                let mut crec = now;
                crec.head = head;
                self.put_container(&mut b, &crec);
                self.retire(&mut b, c.head)?;
                (crec, Some(c.head))
            }
            None => (self.new_container_record(&mut b, name, None, head)?, None),
        };
        let mut rolled_back = Vec::new();
        let mut touched = vec![pending, head];
        for s in &plan.later {
            self.delete_snapshot_record(&mut b, s);
            self.retire(&mut b, s.record.epoch)?;
            touched.push(s.record.epoch);
            rolled_back.push(s.name.clone());
        }
        let meta = &header.snapshot;
        if let Some(a) = &meta.alias {
            let freed: Vec<&str> = plan.later.iter().map(|s| s.name.as_str()).collect();
            if let Some(owner) = self.snapshot_by_alias(&crec.id, a)? {
                if !freed.contains(&owner.name.as_str()) {
                    return Err(StoreError::AliasTaken(a.clone()));
                }
            }
        }
        let snapshot = SnapshotInfo {
            container: crec.id.clone(),
            name: meta.name.clone(),
            record: SnapshotRecord {
                epoch: pending,
                alias: meta.alias.clone(),
                created_at: meta.created_at,
                expires_at: meta.expires_at,
                last_used_at: meta.last_used_at,
            },
        };
        self.put_snapshot(&mut b, &snapshot, None);
        b.put(
            Space::Meta,
            keys::epoch(head),
            codec::encode_plain(&EpochRecord {
                parent: Some(pending),
                kind: EpochKind::Head {
                    container: crec.id.clone(),
                },
            }),
        );
        self.put_usage(&mut b, pending, usage);
        self.put_usage(&mut b, head, usage);
        self.raise_next_id(&mut b, header.next_id.max(applied.max_id.saturating_add(1)));
        b.delete(Space::Meta, keys::receive(pending));
        self.kv.write(b, true)?;
        self.note_usage(pending, usage);
        self.note_usage(head, usage);
        if let Some(old) = old_head {
            touched.push(old);
        }
        for s in &plan.later {
            self.count_snapshots(&crec.id, false, s.record.created_at);
        }
        self.count_snapshots(&crec.id, true, snapshot.record.created_at);
        self.reload_epochs(&touched)?;
        self.set_head(&crec.id, head);
        Ok(Received {
            container: crec,
            snapshot,
            totals: reader.totals(),
            rolled_back,
        })
    }

    /// Retires the epoch of a receive that did not complete and drops its record: reclaim
    /// then frees what it had written.
    pub(super) fn abandon_receive(&self, pending: Epoch) -> Result<(), StoreError> {
        let _g = self.write_lock();
        let mut b = Batch::new();
        if self.epoch(pending).is_some() {
            self.retire(&mut b, pending)?;
        }
        b.delete(Space::Meta, keys::receive(pending));
        self.kv.write(b, true)?;
        self.reload_epochs(&[pending])?;
        Ok(())
    }

    /// Receives a crash cut short (their records), retired at open.
    pub fn abandon_stale_receives(&self) -> Result<(), StoreError> {
        for (e, rec) in self.receives()? {
            log::warn!(
                "a receive of snapshot {:?} into container {:?} (started {}) did not complete: its epoch {e} is retired",
                rec.snapshot,
                rec.container,
                crate::timefmt::rfc3339(rec.started)
            );
            self.abandon_receive(e)?;
        }
        Ok(())
    }

    /// Receives in progress, by pending epoch.
    pub fn receives(&self) -> Result<Vec<(Epoch, ReceiveRecord)>, StoreError> {
        let start = [keys::TAG_RECEIVE];
        let end = [keys::TAG_RECEIVE + 1];
        let mut out = Vec::new();
        let mut err = None;
        self.kv
            .scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, v| {
                match (
                    keys::split_receive(k),
                    codec::decode_plain::<ReceiveRecord>(v),
                ) {
                    (Some(e), Ok(r)) => out.push((e, r)),
                    (_, Err(e)) => {
                        err = Some(e);
                        return false;
                    }
                    (None, _) => {}
                }
                true
            })?;
        match err {
            Some(e) => Err(StoreError::Fs(e.into())),
            None => Ok(out),
        }
    }
}

/// What a receive checked before writing.
struct ReceivePlan {
    existing: Option<ContainerRecord>,
    base: Option<SnapshotInfo>,
    /// Snapshots of the target newer than the base (deleted by a rollback).
    later: Vec<SnapshotInfo>,
}

struct Applied {
    /// File data bytes of the received tree.
    usage: i128,
    /// Largest inode or data id in the stream.
    max_id: u64,
}

fn order(r: &(Space, Vec<u8>)) -> (u8, &[u8]) {
    let s = match r.0 {
        Space::Meta => 0,
        Space::Data => 1,
    };
    (s, &r.1)
}

/// A directory-entry or link name: 1-255 bytes, no `/` or NUL, not `.` or `..`.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
}

/// File data bytes an inode value accounts for (0 for others and tombstones).
fn file_alloc(v: &[u8]) -> Result<u64, StoreError> {
    match codec::decode::<Inode>(v) {
        Ok(Version::Live(i)) if i.kind == Kind::File => Ok(i.alloc),
        Ok(_) => Ok(0),
        Err(e) => Err(bad(format!("inode: {e}"))),
    }
}

fn check_alias_opt(alias: &Option<String>) -> Result<(), StoreError> {
    match alias {
        Some(a) => check_alias(a).map_err(|e| bad(e.to_string())),
        None => Ok(()),
    }
}

fn meta_of(s: &SnapshotInfo) -> SnapshotMeta {
    SnapshotMeta {
        name: s.name.clone(),
        alias: s.record.alias.clone(),
        created_at: s.record.created_at,
        expires_at: s.record.expires_at,
        last_used_at: s.record.last_used_at,
    }
}

/// Every versioned key (space, base) the `epochs` wrote, from their change index, sorted.
fn touched_keys(
    view: &dyn KvRead,
    epochs: &[Epoch],
) -> Result<BTreeSet<(Space, Vec<u8>)>, StoreError> {
    let mut out = BTreeSet::new();
    for &e in epochs {
        for space in Space::ALL {
            let start = keys::change_prefix(e, space);
            let end = crate::kv::prefix_end(&start);
            view.scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
                if let Some((_, sp, base)) = keys::split_change(k) {
                    if sendable(sp, base) {
                        out.insert((sp, base.to_vec()));
                    }
                }
                true
            })?;
        }
    }
    Ok(out)
}
