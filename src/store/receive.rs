//! Receiving a snapshot stream (see `transfer.rs` for what the records are): into a pending
//! epoch under a receive record, one batch per chunk, named and attached in one last batch.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::snapshot::{check_alias, SnapshotInfo, SnapshotRecord};
use super::transfer::ResumeToken;
use super::transfer::{bad, sendable};
use super::{put_version, resolve, ContainerRecord, EpochKind, EpochRecord, Store, StoreError};
use crate::codec::{self, Dirent, Inode, Kind, Ts, Version};
use crate::ids::{ContainerId, Epoch};
use crate::keys;
use crate::kv::{Batch, Dir, Space};
use crate::stream::{
    space_byte, BaseRef, Header, Progress, Record, StreamError, StreamReader, Totals,
};

/// A receive in progress (key 0x0d, by pending epoch): what it receives, and how far it got
/// (rewritten with every chunk's batch, so it always matches what the epoch holds).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceiveRecord {
    /// The container it goes into (its name: it may not exist yet).
    pub container: String,
    pub snapshot: String,
    pub created_at: Ts,
    pub base: Option<BaseRef>,
    pub rollback: bool,
    pub started: Ts,
    /// The last key written (space byte, key); `None` before the first chunk.
    pub after: Option<(u8, Vec<u8>)>,
    /// File data bytes of the tree so far (the base's, moved by the inodes received).
    pub usage: i64,
    /// Largest inode or data id received.
    pub max_id: u64,
    pub records: u64,
    pub bytes: u64,
}

impl ReceiveRecord {
    /// What a sender needs to continue this receive (once it holds a key).
    pub fn token(&self) -> Option<ResumeToken> {
        self.after.as_ref().map(|after| ResumeToken {
            snapshot: self.snapshot.clone(),
            created_at: self.created_at,
            base: self.base.as_ref().map(|b| b.name.clone()),
            after: after.clone(),
        })
    }
}

/// Why applying records stopped.
enum Stop {
    /// The stream ended early or its transport failed: what is in can be resumed.
    Cut(StreamError),
    Failed(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e)
    }
}

impl From<crate::error::FsError> for Stop {
    fn from(e: crate::error::FsError) -> Self {
        Stop::Failed(e.into())
    }
}

impl From<crate::kv::KvError> for Stop {
    fn from(e: crate::kv::KvError) -> Self {
        Stop::Failed(e.into())
    }
}

/// A container name claimed by a running receive; released on drop.
struct Claim<'a> {
    store: &'a Store,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store.receiving.lock().remove(&self.name);
    }
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

impl Store {
    /// Receives a stream into container `name`: a full stream creates it; an incremental one
    /// goes on top of its latest snapshot, which must be the stream's base (with `rollback`,
    /// later snapshots are deleted and writes to the live tree since the base dropped).
    pub fn receive(
        &self,
        input: &mut dyn Read,
        name: &str,
        rollback: bool,
    ) -> Result<Received, StoreError> {
        self.receive_with(input, name, rollback, &Progress::default(), &mut |_| Ok(()))
    }

    /// [`Store::receive`], calling `before_commit` (with the existing target's id) once the
    /// records are in and before the last batch: the caller's last check (the service's: not
    /// mounted), whose locks it may keep until this returns.
    pub fn receive_with(
        &self,
        input: &mut dyn Read,
        name: &str,
        rollback: bool,
        progress: &Progress,
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
        if !keys::valid_name(header.snapshot.name.as_bytes()) {
            return Err(bad(format!(
                "snapshot name {:?} cannot name a directory",
                header.snapshot.name
            )));
        }
        let _claim = self.claim_receive(name)?;
        let paused = self.pause_reclaim();
        let (pending, mut state, plan) = match (&header.resume_after, self.receive_into(name)?) {
            (Some(after), Some((p, rec))) => {
                if rec.snapshot != header.snapshot.name
                    || rec.created_at != header.snapshot.created_at
                    || rec.base != header.base
                {
                    return Err(StoreError::Conflict(format!(
                        "the receive into {name:?} waiting to be resumed is of snapshot {:?}, the stream of {:?}",
                        rec.snapshot, header.snapshot.name
                    )));
                }
                if rec.after.as_ref() != Some(after) {
                    return Err(StoreError::Conflict(format!(
                        "the stream resumes after another key than the receive into {name:?} holds: ask it for its resume token again"
                    )));
                }
                let plan = self.plan_receive(name, &header, rec.rollback)?;
                (p, rec, plan)
            }
            (Some(_), None) => {
                return Err(StoreError::Conflict(format!(
                    "no receive into {name:?} waits to be resumed (it completed or was aborted): send the whole stream again"
                )))
            }
            (None, pending) => {
                let plan = self.plan_receive(name, &header, rollback)?;
                if let Some((p, rec)) = pending {
                    log::info!(
                        "a new stream into {name:?} replaces the cut receive of snapshot {:?}",
                        rec.snapshot
                    );
                    self.abandon_receive(p)?;
                }
                let (p, rec) = self.start_receive(name, &header, rollback, &plan)?;
                (p, rec, plan)
            }
        };
        // Reclaim is held off while records go into the pending epoch (a prune against it
        // must see it whole); the commit only adds records about it.
        progress.add(state.bytes);
        progress.set_total(state.bytes + header.total_bytes);
        let applied = self
            .apply_records(&mut reader, &header, &plan, pending, &mut state, progress)
            .and_then(|()| {
                // A version 1 sender did not send revived data ids' blocks whole.
                if reader.format() >= 2 {
                    self.drop_stale_blocks(&plan, pending)?;
                }
                Ok(())
            });
        drop(paused);
        let result = match applied {
            Ok(()) => before_commit(plan.existing.as_ref().map(|c| &c.id))
                .and_then(|()| self.commit_receive(name, &header, plan, pending, &state)),
            Err(Stop::Cut(e)) => match state.token() {
                Some(token) => {
                    log::warn!(
                        "receive of snapshot {:?} into {name:?} cut after {} records: {e}",
                        state.snapshot,
                        state.records
                    );
                    return Err(StoreError::BadStream(format!(
                        "{e}; the {} records received are kept: resume with token {}",
                        state.records,
                        token.encode()
                    )));
                }
                None => Err(e.into()),
            },
            Err(Stop::Failed(e)) => Err(e),
        };
        if result.is_err() {
            if let Err(e) = self.abandon_receive(pending) {
                log::error!("receive into epoch {pending}: cannot retire it: {e}");
            }
        }
        result
    }

    /// Marks `name` as being received into (one receive per container at a time).
    fn claim_receive(&self, name: &str) -> Result<Claim<'_>, StoreError> {
        if !self.receiving.lock().insert(name.to_string()) {
            return Err(StoreError::Conflict(format!(
                "a receive into {name:?} is running"
            )));
        }
        Ok(Claim {
            store: self,
            name: name.to_string(),
        })
    }

    /// The pending epoch and receive record of a new receive.
    fn start_receive(
        &self,
        name: &str,
        header: &Header,
        rollback: bool,
        plan: &ReceivePlan,
    ) -> Result<(Epoch, ReceiveRecord), StoreError> {
        let _g = self.write_lock();
        let mut b = Batch::new();
        let p = self.alloc_epoch(&mut b);
        let rec = EpochRecord {
            parent: plan.base.as_ref().map(|s| s.record.epoch),
            kind: EpochKind::Frozen,
        };
        b.put(Space::Meta, keys::epoch(p), codec::encode_plain(&rec));
        let state = ReceiveRecord {
            container: name.to_string(),
            snapshot: header.snapshot.name.clone(),
            created_at: header.snapshot.created_at,
            base: header.base.clone(),
            rollback,
            started: Ts::now(),
            after: None,
            usage: match &plan.base {
                Some(s) => i64::try_from(self.usage(s.record.epoch)?).unwrap_or(i64::MAX),
                None => 0,
            },
            max_id: 0,
            records: 0,
            bytes: 0,
        };
        b.put(Space::Meta, keys::receive(p), codec::encode_plain(&state));
        self.kv.write(b, true)?;
        self.catalog.edit_tree(|t| t.insert(p, rec));
        Ok((p, state))
    }

    /// The receive into container `name` waiting to be resumed, if any.
    pub fn receive_into(&self, name: &str) -> Result<Option<(Epoch, ReceiveRecord)>, StoreError> {
        Ok(self
            .receives()?
            .into_iter()
            .find(|(_, r)| r.container == name))
    }

    /// Drops the cut receive into `name` (its epoch is reclaimed). Refused while one runs.
    pub fn abort_receive(&self, name: &str) -> Result<ReceiveRecord, StoreError> {
        let _claim = self.claim_receive(name)?;
        let Some((p, rec)) = self.receive_into(name)? else {
            return Err(StoreError::NoReceive(name.to_string()));
        };
        self.abandon_receive(p)?;
        Ok(rec)
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
            let written = keys::epoch_changes(crec.head);
            if self
                .kv
                .any_key_in(Space::Meta, &written, &crate::kv::prefix_end(&written))?
            {
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

    /// Writes every chunk's records into `pending`, one batch per chunk, with the receive
    /// record brought up to date in the same batch.
    fn apply_records(
        &self,
        reader: &mut StreamReader<&mut dyn Read>,
        header: &Header,
        plan: &ReceivePlan,
        pending: Epoch,
        state: &mut ReceiveRecord,
        progress: &Progress,
    ) -> Result<(), Stop> {
        let base_chain = plan.base.as_ref().map(|s| self.chain(s.record.epoch));
        loop {
            let records = match reader.next_chunk() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e @ (StreamError::Truncated(_) | StreamError::Io(_))) => {
                    return Err(Stop::Cut(e))
                }
                Err(e) => return Err(Stop::Failed(e.into())),
            };
            let mut b = Batch::new();
            let mut next = state.clone();
            for r in records {
                let here = (space_byte(r.space), r.key);
                if next.after.as_ref().is_some_and(|l| l >= &here) {
                    return Err(bad(
                        "records out of order, repeated, or not after the resume point",
                    )
                    .into());
                }
                let r = Record {
                    space: r.space,
                    key: here.1,
                    value: r.value,
                };
                if let Some(new) = self.check_record(&r, &mut next.max_id)? {
                    let old = match &base_chain {
                        Some(bc) => match resolve(self.kv.as_ref(), Space::Meta, &r.key, bc)? {
                            Some(v) => file_alloc(&v)?,
                            None => 0,
                        },
                        None => 0,
                    };
                    next.usage = next
                        .usage
                        .saturating_add(new as i64)
                        .saturating_sub(old as i64);
                }
                next.records += 1;
                next.bytes += (r.key.len() + r.value.len()) as u64;
                put_version(&mut b, r.space, &r.key, pending, r.value);
                next.after = Some((here.0, r.key));
            }
            b.put(
                Space::Meta,
                keys::receive(pending),
                codec::encode_plain(&next),
            );
            // Durable per chunk (one sync per ~4 MiB): what the receive record says is in
            // survives a crash or power loss of the receiver on either backend, so a resume
            // token never names records that are gone.
            self.kv.write(b, true)?;
            progress.add(next.bytes - state.bytes);
            *state = next;
        }
        if header.next_id < state.max_id.saturating_add(1) {
            return Err(bad(format!(
                "the stream holds id {} but says its ids stay below {}",
                state.max_id, header.next_id
            ))
            .into());
        }
        Ok(())
    }

    /// Once every record is in: for each data id the base sees as gone (a live marker) and
    /// the stream revives (a tombstone of the marker), a tombstone in `pending` for every
    /// block the base sees of it and the stream did not carry. The sender sends such a data
    /// id's blocks whole (`transfer.rs`, `add_revived_blocks`): what the base holds of a dead
    /// data id may be what reclaim has dropped on either side since. Idempotent (only keys
    /// `pending` has no version of), so a resumed receive simply does it again.
    fn drop_stale_blocks(&self, plan: &ReceivePlan, pending: Epoch) -> Result<(), StoreError> {
        let Some(base) = &plan.base else {
            return Ok(());
        };
        let kv = self.kv.as_ref();
        let bc = self.chain(base.record.epoch);
        let start = keys::change(pending, Space::Meta, &[keys::TAG_DATA_GONE]);
        let end = crate::kv::prefix_end(&start);
        let mut markers = Vec::new();
        kv.scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
            if let Some(d) = keys::split_change(k).and_then(|(_, _, b)| keys::split_data_gone(b)) {
                markers.push(d);
            }
            true
        })?;
        let live = |v: Option<Vec<u8>>| v.is_some_and(|v| !codec::is_tombstone(&v));
        for d in markers {
            let gone = keys::data_gone(d);
            if live(kv.get(Space::Meta, &keys::versioned(&gone, pending))?)
                || !live(resolve(kv, Space::Meta, &gone, &bc)?)
            {
                continue;
            }
            let start = keys::block_prefix(d);
            let end = crate::kv::prefix_end(&start);
            let mut stale = Vec::new();
            super::scan_visible(kv, Space::Data, &start, &end, &bc, &mut |base, v| {
                if !codec::is_tombstone(v) {
                    stale.push(base.to_vec());
                }
                true
            })?;
            for part in stale.chunks(STALE_BATCH) {
                let mut b = Batch::new();
                for base in part {
                    if kv
                        .get(Space::Data, &keys::versioned(base, pending))?
                        .is_none()
                    {
                        put_version(&mut b, Space::Data, base, pending, codec::tombstone());
                    }
                }
                if !b.is_empty() {
                    self.kv.write(b, false)?;
                }
            }
        }
        Ok(())
    }

    /// Refuses a record that is not a versioned key of a table a tree holds, or whose value
    /// does not decode; notes the ids it names. For an inode: the file data bytes it
    /// accounts for (0 for others and tombstones).
    fn check_record(&self, r: &Record, max_id: &mut u64) -> Result<Option<u64>, StoreError> {
        if !sendable(r.space, &r.key) {
            return Err(bad(format!(
                "a record outside the tables a tree holds (key starting {:02x?})",
                r.key.first()
            )));
        }
        let mut id = |n: u64| *max_id = (*max_id).max(n);
        let mut alloc = None;
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
                    alloc = Some(match codec::decode::<Inode>(&r.value) {
                        Ok(Version::Live(i)) => {
                            id(i.data_id.get());
                            if i.kind == Kind::File {
                                i.alloc
                            } else {
                                0
                            }
                        }
                        Ok(Version::Tombstone) => 0,
                        Err(e) => return Err(bad(format!("inode: {e}"))),
                    });
                    true
                }
                _ => false,
            },
            (_, keys::TAG_DIRENT) => match keys::split_dirent_name(&r.key) {
                Some((dir, name)) if keys::valid_name(name) => {
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
                Some((ino, dir, name)) if keys::valid_name(name) => {
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
        Ok(alloc)
    }

    /// The last batch: the snapshot record, the container's head on top of it, the id
    /// counter, and the receive record gone.
    fn commit_receive(
        &self,
        name: &str,
        header: &Header,
        plan: ReceivePlan,
        pending: Epoch,
        state: &ReceiveRecord,
    ) -> Result<Received, StoreError> {
        let usage = u64::try_from(state.usage)
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
        self.raise_next_id(&mut b, header.next_id.max(state.max_id.saturating_add(1)));
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
            totals: Totals {
                records: state.records,
                chunks: 0,
                bytes: state.bytes,
            },
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

    /// At a daemon's start: receives a crash cut short stay to be resumed once they hold a
    /// key; one cut before its first chunk has nothing to resume and is retired.
    pub fn abandon_stale_receives(&self) -> Result<(), StoreError> {
        for (e, rec) in self.receives()? {
            if rec.after.is_some() {
                log::info!(
                    "the receive of snapshot {:?} into container {:?} (started {}) was cut after {} records: it can be resumed (GET /api/v1/containers/{}/receive gives its token) or aborted",
                    rec.snapshot,
                    rec.container,
                    crate::timefmt::rfc3339(rec.started),
                    rec.records,
                    rec.container
                );
                continue;
            }
            log::warn!(
                "a receive of snapshot {:?} into container {:?} (started {}) was cut before its first records: its epoch {e} is retired",
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

/// Tombstones of stale blocks written per batch (`Store::drop_stale_blocks`).
const STALE_BATCH: usize = 4096;

/// What a receive checked before writing.
struct ReceivePlan {
    existing: Option<ContainerRecord>,
    base: Option<SnapshotInfo>,
    /// Snapshots of the target newer than the base (deleted by a rollback).
    later: Vec<SnapshotInfo>,
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
