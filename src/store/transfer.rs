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
//! on top of P and drops the record, so a snapshot appears whole or not at all. A receive whose
//! stream is cut keeps the whole chunks for a resume (`receive.rs`); any other failure
//! retires P.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::snapshot::SnapshotInfo;
use super::{resolve, Store, StoreError};
use crate::codec::{self, Ts};
use crate::ids::{ContainerId, DataId, Epoch};
use crate::keys;
use crate::kv::{Dir, KvRead, Space};
use crate::stream::{
    space_byte, BaseRef, Header, Progress, SnapshotMeta, StreamError, StreamWriter, Totals,
};

/// What a send wrote.
#[derive(Debug, Clone)]
pub struct Sent {
    pub header: Header,
    pub totals: Totals,
}

impl From<StreamError> for StoreError {
    fn from(e: StreamError) -> Self {
        // An I/O error on the stream (a sender or receiver gone) is the stream's fault, not
        // the store's: the receive is refused like a truncated stream.
        StoreError::BadStream(e.to_string())
    }
}

/// The versioned tables a stream may carry, per space.
pub(super) fn sendable(space: Space, key: &[u8]) -> bool {
    match (space, key.first()) {
        (Space::Meta, Some(&t)) => (keys::TAG_INODE..=keys::TAG_LINK).contains(&t),
        (Space::Data, Some(&t)) => t == keys::TAG_BLOCK,
        _ => false,
    }
}

pub(super) fn bad(why: impl Into<String>) -> StoreError {
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
        self.send_after(container, key, from, None, out, &Progress::default())
    }

    /// [`Store::send`], telling `progress` as records go out.
    pub fn send_with(
        &self,
        container: &ContainerId,
        key: &str,
        from: Option<&str>,
        out: &mut dyn Write,
        progress: &Progress,
    ) -> Result<Sent, StoreError> {
        self.send_after(container, key, from, None, out, progress)
    }

    /// Continues the send a receiver's resume token describes: the same snapshot and base,
    /// only the records after the last key the receiver holds.
    pub fn send_resumed(
        &self,
        container: &ContainerId,
        token: &ResumeToken,
        out: &mut dyn Write,
        progress: &Progress,
    ) -> Result<Sent, StoreError> {
        let snap = self.require_snapshot(container, &token.snapshot)?;
        if snap.record.created_at != token.created_at {
            return Err(StoreError::Conflict(format!(
                "snapshot {:?} is not the one the resume token names (taken again since?)",
                token.snapshot
            )));
        }
        self.send_after(
            container,
            &token.snapshot,
            token.base.as_deref(),
            Some(&token.after),
            out,
            progress,
        )
    }

    fn send_after(
        &self,
        container: &ContainerId,
        key: &str,
        from: Option<&str>,
        after: Option<&(u8, Vec<u8>)>,
        out: &mut dyn Write,
        progress: &Progress,
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
            Some(bc) => super::only_one(bc, &chain),
            None => chain.members().to_vec(),
        };
        let mut touched = touched_keys(&*view, &epochs)?;
        drop(paused);
        if let Some(bc) = &base_chain {
            add_revived_blocks(&*view, bc, &chain, &mut touched)?;
        }
        if let Some((space, k)) = after {
            touched
                .retain(|(sp, key), _| (space_byte(*sp), key.as_slice()) > (*space, k.as_slice()));
        }
        let header = Header {
            block_size: self.block_size,
            next_id: self.next_id(),
            container: crec.name.clone(),
            snapshot: meta_of(&snap),
            base: base.as_ref().map(|b| BaseRef {
                name: b.name.clone(),
                created_at: b.record.created_at,
            }),
            total_bytes: touched
                .iter()
                .map(|(k, size)| k.1.len() as u64 + size)
                .sum(),
            resume_after: after.cloned(),
        };
        progress.set_total(header.total_bytes);
        let mut w = StreamWriter::new(out, &header)?;
        for (space, base_key) in touched.keys() {
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
            progress.add((base_key.len() + value.len()) as u64);
        }
        let (totals, _) = w.finish()?;
        Ok(Sent { header, totals })
    }
}

/// Where a cut receive stands, for the sender: which snapshot (name and creation time) from
/// which base, and the last key the receiver holds. Written as one opaque word (base64url of
/// a version byte and postcard).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    pub snapshot: String,
    pub created_at: Ts,
    pub base: Option<String>,
    pub after: (u8, Vec<u8>),
}

const TOKEN_VERSION: u8 = 1;

impl ResumeToken {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let mut bytes = vec![TOKEN_VERSION];
        // Plain structs: postcard cannot fail here.
        bytes.extend(postcard::to_allocvec(self).unwrap_or_default());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<ResumeToken, StoreError> {
        use base64::Engine;
        let invalid =
            || StoreError::Invalid("not a resume token (copy it whole from the receiver)".into());
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| invalid())?;
        match bytes.split_first() {
            Some((&TOKEN_VERSION, body)) => postcard::from_bytes(body).map_err(|_| invalid()),
            _ => Err(invalid()),
        }
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

/// Adds to an incremental stream's keys every block `chain` sees of each data id that
/// `base_chain` sees as gone (a live marker) and `chain` does not (revived by a path restore,
/// or alive on another branch). The base's blocks of such a data id are not worth comparing:
/// reclaim drops the blocks of a dead data id under the marker (`Store::kills`), so the
/// sender's base may no longer see versions the receiver's base still holds, and their
/// keys may be gone from the change index too. The receiver drops whatever else its base
/// sees of such a data id (`receive.rs`, `drop_stale_blocks`), so the snapshot's blocks of it
/// arrive whole. The marker itself is always among the keys: some epoch in exactly one chain
/// wrote the version the base sees or the one the snapshot sees.
fn add_revived_blocks(
    view: &dyn KvRead,
    base_chain: &super::Chain,
    chain: &super::Chain,
    touched: &mut BTreeMap<(Space, Vec<u8>), u64>,
) -> Result<(), StoreError> {
    let live = |v: Option<Vec<u8>>| v.is_some_and(|v| !codec::is_tombstone(&v));
    let markers: Vec<DataId> = touched
        .range(
            (Space::Meta, vec![keys::TAG_DATA_GONE])..(Space::Meta, vec![keys::TAG_DATA_GONE + 1]),
        )
        .filter_map(|((_, k), _)| keys::split_data_gone(k))
        .collect();
    for d in markers {
        let gone = keys::data_gone(d);
        if !live(resolve(view, Space::Meta, &gone, base_chain)?)
            || live(resolve(view, Space::Meta, &gone, chain)?)
        {
            continue;
        }
        let start = keys::block_prefix(d);
        let end = crate::kv::prefix_end(&start);
        super::scan_visible(view, Space::Data, &start, &end, chain, &mut |base, v| {
            if !codec::is_tombstone(v) {
                let e = touched.entry((Space::Data, base.to_vec())).or_insert(0);
                *e = (*e).max(v.len() as u64);
            }
            true
        })?;
    }
    Ok(())
}

/// Every versioned key (space, base) the `epochs` wrote, from their change index, sorted,
/// with the size of its largest version there (for the estimate of a stream's size).
fn touched_keys(
    view: &dyn KvRead,
    epochs: &[Epoch],
) -> Result<BTreeMap<(Space, Vec<u8>), u64>, StoreError> {
    let mut out = BTreeMap::new();
    for &e in epochs {
        for space in Space::ALL {
            let start = keys::change_prefix(e, space);
            let end = crate::kv::prefix_end(&start);
            view.scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, v| {
                if let Some((_, sp, base)) = keys::split_change(k) {
                    if sendable(sp, base) {
                        let size = <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes);
                        let e = out.entry((sp, base.to_vec())).or_insert(0);
                        *e = size.max(*e);
                    }
                }
                true
            })?;
        }
    }
    Ok(out)
}
