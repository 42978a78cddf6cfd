//! Opening the segment layer: the catalog is read, and every segment that was open when the
//! store was last used, or whose background sync had not finished, is checked past its
//! durable length, made durable and sealed.
//!
//! After a crash of the process every appended byte is in the page cache, so the check finds
//! nothing. After a power loss the inner store may keep references to bytes that never
//! reached the disk (the batch's log record was written back before the segment's pages);
//! on object storage, after a crash during an fsync that uploaded its parts beside its log
//! write (`SegmentOptions::upload_beside_log`), references to parts that never went up:
//! entries past `durable` are parsed and their CRCs checked, and from the first damaged one
//! on, every reference into that part of the segment is checked on its own and deleted when
//! its bytes are wrong: the key then reads as its older version (or a hole), as unsynced data
//! may. Finding those references is a scan of the data space, paid only when damage is found.

use std::time::Instant;

use super::format::{self, EntryHeader, Stored};
use std::collections::BTreeMap;

use super::{
    decode_record, encode_record, seg_key, split_journal_key, split_seg_key, SegInfo, SegmentedKv,
    KEY_NEXT_ID,
};
use crate::kv::{Batch, Dir, KvError, KvResult, Space};

/// Far past any key the store writes (keys are short): the end of a whole-space scan.
pub(super) fn space_end() -> Vec<u8> {
    vec![0xff; 4096]
}

impl SegmentedKv {
    pub(super) fn recover(&self) -> KvResult<()> {
        let mut st = self.state.lock();
        let mut next_id = 1u64;
        let mut bad = None;
        // Tail journal records: (segment, offset) -> bytes.
        let mut journal: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
        self.inner.scan(
            Space::Segments,
            &[],
            &space_end(),
            Dir::Forward,
            &mut |k, v| {
                if k == KEY_NEXT_ID {
                    let mut a = [0u8; 8];
                    if v.len() == 8 {
                        a.copy_from_slice(v);
                        next_id = next_id.max(u64::from_be_bytes(a));
                    }
                } else if let Some(at) = split_journal_key(k) {
                    journal.insert(at, v.to_vec());
                } else if let (Some(seg), Some(rec)) = (split_seg_key(k), decode_record(v)) {
                    st.segs.insert(
                        seg,
                        SegInfo {
                            rec,
                            empty_since: None,
                        },
                    );
                } else {
                    bad = Some(k.to_vec());
                    return false;
                }
                true
            },
        )?;
        if let Some(k) = bad {
            return Err(KvError::Io(format!("malformed segment record {k:02x?}")));
        }
        let read_only = self.inner.status().is_some_and(|s| s.read_only());
        let mut fixes = Batch::new();
        if !read_only {
            self.replay_journal(&journal, &mut fixes)?;
        }
        let unsealed: Vec<u64> = st
            .segs
            .iter()
            .filter(|(_, i)| !i.rec.sealed || i.rec.durable < i.rec.len)
            .map(|(s, _)| *s)
            .collect();
        if !read_only {
            for &seg in &unsealed {
                self.store
                    .close_foreign(seg)
                    .map_err(|e| super::io_err(&format!("closing segment {seg:016x}"), e))?;
            }
        }
        let listed = self
            .store
            .list()
            .map_err(|e| super::io_err("listing segments", e))?;
        if !read_only {
            // A segment is created before the batch that records it (and the next id past
            // it): one at or past the recorded next id, with no record, was created by a
            // writer that died before that batch, so no reference can name it.
            for l in listed
                .iter()
                .filter(|l| l.seg >= next_id && !st.segs.contains_key(&l.seg))
            {
                self.remove_unrecorded(
                    l.seg,
                    l.len,
                    "created by a writer that stopped before recording it",
                )?;
            }
        }
        let max_listed = listed.iter().map(|l| l.seg + 1).max().unwrap_or(1);
        let max_rec = st.segs.keys().map(|s| s + 1).max().unwrap_or(1);
        st.next_id = next_id.max(max_listed).max(max_rec);
        for seg in unsealed {
            let Some(rec) = st.segs.get(&seg).map(|i| i.rec) else {
                continue;
            };
            if read_only {
                // A reader mends nothing: the writer's open segment is past `durable` by
                // design (its reads wait for parts in flight), and after a crash the next
                // writer checks it.
                continue;
            }
            let file_len = listed.iter().find(|l| l.seg == seg).map_or(0, |l| l.len);
            if let Some(from) = self.first_damage(seg, rec.durable, rec.len, file_len) {
                log::warn!(
                    "segment {seg:016x} is damaged from offset {from} (bytes not yet durable \
                     were lost: a power loss, or a crash while an fsync uploaded them): \
                     checking the references into it"
                );
                let live = self.drop_damaged_refs(seg, from)?;
                if let Some(info) = st.segs.get_mut(&seg) {
                    info.rec.live = live;
                }
            }
            if file_len > 0 {
                self.store
                    .sync(seg, file_len)
                    .map_err(|e| super::io_err(&format!("syncing segment {seg:016x}"), e))?;
            }
            if let Some(info) = st.segs.get_mut(&seg) {
                info.rec.len = file_len.max(format::FILE_HEADER_LEN);
                info.rec.durable = info.rec.len;
                info.rec.sealed = true;
                fixes.put(Space::Segments, seg_key(seg), encode_record(&info.rec));
            }
        }
        if !read_only && !fixes.is_empty() {
            // The journal's deletions are in `fixes` too: written once the segments are synced.
            fixes.put(
                Space::Segments,
                KEY_NEXT_ID.to_vec(),
                st.next_id.to_be_bytes().to_vec(),
            );
            self.inner.write(fixes, true)?;
        }
        let now = Instant::now();
        for info in st.segs.values_mut() {
            if info.rec.live == 0 {
                info.empty_since = Some(now);
            }
        }
        self.refresh_totals(&st);
        Ok(())
    }

    /// Writes the tail journal's bytes back into their segments (what an fsync made durable
    /// in the inner store's log rather than in the segment), syncs them, and puts the
    /// records' deletion into `fixes`.
    fn replay_journal(
        &self,
        journal: &BTreeMap<(u64, u64), Vec<u8>>,
        fixes: &mut Batch,
    ) -> KvResult<()> {
        // Segment -> where its restored bytes end.
        let mut touched: BTreeMap<u64, u64> = BTreeMap::new();
        let listed: std::collections::BTreeSet<u64> = self
            .store
            .list()
            .map_err(|e| super::io_err("listing segments", e))?
            .into_iter()
            .map(|l| l.seg)
            .collect();
        for (&(seg, off), bytes) in journal {
            fixes.delete(Space::Segments, super::journal_key(seg, off));
            if !listed.contains(&seg) {
                // The segment was deleted after its bytes were synced: nothing to restore.
                continue;
            }
            self.store
                .append(seg, off, bytes)
                .map_err(|e| super::io_err(&format!("restoring segment {seg:016x}"), e))?;
            let end = touched.entry(seg).or_default();
            *end = (*end).max(off + bytes.len() as u64);
        }
        for (seg, end) in touched {
            self.store
                .sync(seg, end)
                .map_err(|e| super::io_err(&format!("syncing segment {seg:016x}"), e))?;
        }
        Ok(())
    }

    /// The offset of the first entry in `[from, to)` of segment `seg` whose bytes are not
    /// intact (the file is `file_len` long), if any.
    fn first_damage(&self, seg: u64, from: u64, to: u64, file_len: u64) -> Option<u64> {
        let mut off = from.max(format::FILE_HEADER_LEN);
        while off < to {
            let Some(total) = self.entry_intact(seg, off, file_len) else {
                return Some(off);
            };
            off += total;
        }
        None
    }

    /// The length of the entry at `off` if it is whole and its CRCs match.
    fn entry_intact(&self, seg: u64, off: u64, file_len: u64) -> Option<u64> {
        if off + format::ENTRY_HEADER_LEN > file_len {
            return None;
        }
        let h = self
            .store
            .read_at(seg, off, format::ENTRY_HEADER_LEN as usize)
            .ok()?;
        let h = EntryHeader::parse(&h)?;
        if off + h.total() > file_len {
            return None;
        }
        let body = self
            .store
            .read_at(
                seg,
                off + format::ENTRY_HEADER_LEN,
                (h.key_len as u64 + h.value_len as u64) as usize,
            )
            .ok()?;
        let (key, value) = body.split_at(h.key_len as usize);
        (crc32fast::hash(key) == h.key_crc && crc32fast::hash(value) == h.value_crc)
            .then_some(h.total())
    }

    /// Deletes every reference into segment `seg` at or past `from` whose bytes do not match
    /// its CRC; returns the live bytes of `seg` that remain.
    fn drop_damaged_refs(&self, seg: u64, from: u64) -> KvResult<u64> {
        let mut live = 0u64;
        let mut damaged = Vec::new();
        self.inner.scan(
            Space::Data,
            &[],
            &space_end(),
            Dir::Forward,
            &mut |k, raw| {
                if let Stored::Ref(r) = format::parse(raw) {
                    if r.seg == seg {
                        if r.end() > from && self.read_ref(&r).is_err() {
                            damaged.push(k.to_vec());
                        } else {
                            live += r.len as u64;
                        }
                    }
                }
                true
            },
        )?;
        log::warn!(
            "segment {seg:016x}: {} reference(s) to bytes lost before they were synced; \
             those keys read as their previous version",
            damaged.len()
        );
        if !damaged.is_empty() {
            let mut b = Batch::new();
            for k in damaged {
                b.delete(Space::Data, k);
            }
            self.inner.write(b, true)?;
        }
        Ok(live)
    }
}
