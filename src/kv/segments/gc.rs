//! Garbage of the segment layer: segments with no live bytes are deleted once `horizon` has
//! passed and no read view older than that moment is open; files no record names (a crash
//! between creating a segment and its first batch) go after `horizon` too; sealed segments
//! that are mostly dead, or small, are repacked: each entry whose key still references it is
//! written again through the normal write path (one batch per ~4 MiB, under the state lock,
//! so no write can slip in between the check and the move).

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::format::{self, EntryHeader};
use super::{seg_key, SegRecord, SegmentedKv};
use crate::kv::{Batch, KvError, KvResult, Space};

/// Bytes of a segment read (and moved) per batch of a repack.
const REPACK_CHUNK: u64 = 4 << 20;

impl SegmentedKv {
    /// One round of garbage collection: deletions, orphans and (when `idle` or the garbage is
    /// over a quarter of the segments) repacks of up to `budget` bytes.
    pub(super) fn collect(&self, idle: bool, budget: u64) -> KvResult<()> {
        // A reader (a host following the writer) never deletes: what it does not know of
        // may be the writer's newest segment.
        if self.inner.status().is_some_and(|s| s.read_only()) {
            return Ok(());
        }
        self.delete_empty()?;
        let due = {
            let mut last = self.orphans_checked.lock();
            let due = last.is_none_or(|t| t.elapsed() >= self.opts.horizon);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            // A file that cannot be removed now stays an orphan until a later round; it
            // holds up neither the other orphans nor the repacks.
            if let Err(e) = self.delete_orphans() {
                log::warn!("segment garbage collection: {e}");
            }
        }
        let (len, live) = self.segment_bytes();
        if idle || len.saturating_sub(live) > len / 4 {
            self.repack(budget)?;
        }
        Ok(())
    }

    /// Deletes the sealed segments with no live bytes since at least `horizon` before the
    /// oldest open read view: their records first, in one batch under the state lock, then
    /// their files, with the lock let go. Removing a file takes long (~12 ms for 64 MiB on
    /// this VM's ext4: its extents are freed and discarded), and a drained 10 GiB file is
    /// 160 of them: under the lock, every append waited ~2 s. A file whose removal fails, or
    /// that a crash leaves, has no record: it is an orphan, which [`Self::delete_orphans`]
    /// removes on its next round.
    fn delete_empty(&self) -> KvResult<()> {
        let oldest = self.oldest_view();
        let now = Instant::now();
        let gone: Vec<u64> = {
            let mut st = self.state.lock();
            let open = st.open.as_ref().map(|o| o.seg);
            let gone: Vec<u64> = st
                .segs
                .iter()
                .filter(|(seg, info)| {
                    Some(**seg) != open
                        && info.rec.sealed
                        && info.rec.live == 0
                        && info.empty_since.is_some_and(|t| {
                            now.duration_since(t) >= self.opts.horizon
                                && oldest.is_none_or(|o| o > t)
                        })
                })
                .map(|(seg, _)| *seg)
                .collect();
            if gone.is_empty() {
                return Ok(());
            }
            let mut b = Batch::new();
            for seg in &gone {
                b.delete(Space::Segments, seg_key(*seg));
            }
            self.inner.write(b, false)?;
            for seg in &gone {
                st.segs.remove(seg);
                st.unsynced.remove(seg);
                st.dirty.remove(seg);
            }
            self.refresh_totals(&st);
            gone
        };
        for seg in gone {
            match self.store.remove(seg) {
                Ok(()) => {
                    self.deleted.fetch_add(1, Ordering::Relaxed);
                    log::debug!("segment {seg:016x} deleted (no live bytes)");
                }
                Err(e) => log::warn!(
                    "segment {seg:016x} has no live bytes and no record, but its file stays \
                     until the next sweep of orphans: {e}"
                ),
            }
        }
        Ok(())
    }

    /// Files of segments no record names, older than the horizon (ids of the open segment
    /// and of records are never orphans).
    pub(super) fn orphans(&self, older_than_horizon: bool) -> KvResult<Vec<(u64, u64)>> {
        let listed = self
            .store
            .list()
            .map_err(|e| super::io_err("listing segments", e))?;
        let st = self.state.lock();
        let open = st.open.as_ref().map(|o| o.seg);
        let now = SystemTime::now();
        Ok(listed
            .into_iter()
            .filter(|l| Some(l.seg) != open && !st.segs.contains_key(&l.seg))
            .filter(|l| {
                !older_than_horizon
                    || now
                        .duration_since(l.modified)
                        .is_ok_and(|age| age >= self.opts.horizon)
            })
            .map(|l| (l.seg, l.len))
            .collect())
    }

    pub(super) fn delete_orphans(&self) -> KvResult<u64> {
        let mut n = 0;
        let mut failed = None;
        for (seg, len) in self.orphans(true)? {
            match self.remove_unrecorded(seg, len, "no record names it") {
                Ok(()) => n += 1,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Deletes segment `seg` (`len` bytes), which no record names, saying `why`.
    pub(super) fn remove_unrecorded(&self, seg: u64, len: u64, why: &str) -> KvResult<()> {
        log::info!("deleting segment {seg:016x} ({len} bytes): {why}");
        self.store
            .remove(seg)
            .map_err(|e| super::io_err(&format!("deleting segment {seg:016x}"), e))?;
        self.deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Repacks candidate segments, least live first, up to `budget` bytes.
    fn repack(&self, budget: u64) -> KvResult<()> {
        let mut candidates: Vec<(u64, SegRecord)> = {
            let st = self.state.lock();
            let open = st.open.as_ref().map(|o| o.seg);
            st.segs
                .iter()
                .filter(|(seg, i)| {
                    Some(**seg) != open
                        && i.rec.sealed
                        && i.rec.live > 0
                        && ((i.rec.live as f64) < i.rec.len as f64 * self.opts.repack_live_below
                            || i.rec.len < self.opts.repack_smaller_than)
                })
                .map(|(seg, i)| (*seg, i.rec))
                .collect()
        };
        if candidates.len() == 1 && candidates[0].1.len < self.opts.repack_smaller_than {
            // One small segment alone: moving it would only make another small one.
            let live_fraction = candidates[0].1.live as f64 / candidates[0].1.len as f64;
            if live_fraction >= self.opts.repack_live_below {
                return Ok(());
            }
        }
        candidates.sort_by(|a, b| {
            let fa = a.1.live as f64 / a.1.len.max(1) as f64;
            let fb = b.1.live as f64 / b.1.len.max(1) as f64;
            fa.total_cmp(&fb)
        });
        let mut spent = 0u64;
        for (seg, rec) in candidates {
            if spent >= budget || self.stop.load(Ordering::SeqCst) {
                break;
            }
            spent += rec.len;
            self.repack_one(seg, rec.len)?;
        }
        Ok(())
    }

    /// Moves the live entries of segment `seg` (`len` bytes) into the open segment.
    pub(super) fn repack_one(&self, seg: u64, len: u64) -> KvResult<()> {
        let header = self
            .store
            .read_at(seg, 0, format::FILE_HEADER_LEN as usize)
            .map_err(|e| super::io_err(&format!("reading segment {seg:016x}"), e))?;
        if !format::check_file_header(&header, seg) {
            log::warn!("segment {seg:016x} has a bad header: not repacked");
            return Ok(());
        }
        let mut off = format::FILE_HEADER_LEN;
        let mut moved = 0u64;
        while off < len {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let want = REPACK_CHUNK.min(len - off);
            let buf = self
                .store
                .read_at(seg, off, want as usize)
                .map_err(|e| super::io_err(&format!("reading segment {seg:016x}"), e))?;
            // Entries wholly inside the chunk: (key, value, value offset).
            let mut entries = Vec::new();
            let mut at = 0usize;
            loop {
                let rest = &buf[at..];
                let Some(h) = EntryHeader::parse(rest) else {
                    if rest.len() >= format::ENTRY_HEADER_LEN as usize {
                        log::warn!(
                            "segment {seg:016x}: no entry at {}; repack stops",
                            off + at as u64
                        );
                        return Ok(());
                    }
                    break;
                };
                let total = h.total() as usize;
                if rest.len() < total {
                    break;
                }
                let key_end = format::ENTRY_HEADER_LEN as usize + h.key_len as usize;
                let (key, value) = (
                    &rest[format::ENTRY_HEADER_LEN as usize..key_end],
                    &rest[key_end..total],
                );
                if crc32fast::hash(key) != h.key_crc || crc32fast::hash(value) != h.value_crc {
                    log::warn!(
                        "segment {seg:016x}: damaged entry at {}; repack stops",
                        off + at as u64
                    );
                    return Ok(());
                }
                entries.push((
                    key.to_vec(),
                    value.to_vec(),
                    off + at as u64 + key_end as u64,
                ));
                at += total;
            }
            if at == 0 {
                // An entry larger than the chunk: read it whole.
                let h = EntryHeader::parse(&buf)
                    .ok_or_else(|| KvError::Io(format!("segment {seg:016x}: no entry at {off}")))?;
                let whole = self
                    .store
                    .read_at(seg, off, h.total() as usize)
                    .map_err(|e| super::io_err(&format!("reading segment {seg:016x}"), e))?;
                let key_end = format::ENTRY_HEADER_LEN as usize + h.key_len as usize;
                entries.push((
                    whole[format::ENTRY_HEADER_LEN as usize..key_end].to_vec(),
                    whole[key_end..].to_vec(),
                    off + key_end as u64,
                ));
                at = whole.len();
            }
            off += at as u64;
            let mut st = self.state.lock();
            let mut b = Batch::new();
            for (key, value, value_off) in entries {
                for holder in self.holders(&key, seg, value_off)? {
                    moved += value.len() as u64;
                    b.put(Space::Data, holder, value.clone());
                }
            }
            if !b.is_empty() {
                self.write_locked(&mut st, b, false)?;
            }
        }
        log::debug!("segment {seg:016x} repacked: {moved} live bytes moved");
        Ok(())
    }
}
