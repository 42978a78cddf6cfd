//! Uploads of segment parts: in order, four at a time; each part written once, and refused
//! when another writer closed its segment there (a takeover, `close_segment`).

use std::io;
use std::os::unix::fs::FileExt;

use futures_util::StreamExt;
use slatedb::object_store::{self, ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use super::{other, ObjectSegments, PARTS_IN_FLIGHT, PART_MAX};

impl ObjectSegments {
    /// PUTs one part, if no object has its name yet (a part is written once: after a
    /// takeover the new writer closes the segment with an empty part where its stored bytes
    /// end, see `close_tail`, and a part of the old writer arriving later is refused, so its
    /// fsync fails instead of reporting bytes the new writer will never read). Without a
    /// timeout the client's own retries decide; with one, failed attempts are retried until
    /// it has passed, then the sync fails (the part stays pending and goes up with the next
    /// one). A refused part is an `AlreadyExists` error.
    pub(super) async fn put_part(&self, seg: u64, start: u64, bytes: Vec<u8>) -> io::Result<()> {
        let path = self.part_path(seg, start);
        let len = bytes.len() as u64;
        let payload = PutPayload::from(bytes);
        let started = std::time::Instant::now();
        let mut last = String::from("no answer");
        loop {
            let left = self
                .put_timeout
                .map(|t| t.saturating_sub(started.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            let put = self
                .os
                .put_opts(&path, payload.clone(), PutMode::Create.into());
            let r = match left {
                Some(l) => match tokio::time::timeout(l, put).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => put.await,
            };
            match r {
                Ok(_) => return Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    return self.check_existing(seg, start, &path, len).await;
                }
                Err(e) if left.is_none() => return Err(other(e)),
                Err(e) => last = crate::kv::slate::brief(&e),
            }
            let pause = std::time::Duration::from_millis(200);
            tokio::time::sleep(left.map_or(pause, |l| pause.min(l))).await;
        }
        let t = self.put_timeout.unwrap_or_default();
        log::error!(
            "sync: the object store took no write for {t:?} (segment {seg:016x}: {last}); \
             the writes stay queued and are retried"
        );
        Err(other(format!("the object store took no write for {t:?}")))
    }

    /// A part that exists already: this writer's own (an attempt whose answer was lost),
    /// or another writer's (this store was taken over).
    async fn check_existing(
        &self,
        seg: u64,
        start: u64,
        path: &object_store::path::Path,
        len: u64,
    ) -> io::Result<()> {
        let meta = self.os.head(path).await.map_err(other)?;
        if meta.size == len {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "segment {seg:016x}: another writer closed it at offset {start} (this store \
                 was taken over)"
            ),
        ))
    }

    /// Uploads every appended byte of the segments up to `seg` (in order) not up yet: the
    /// bytes of a segment as parts of at most `PART_MAX`, `PARTS_IN_FLIGHT` at a time;
    /// "uploaded" moves over the parts that went up without a gap before them.
    pub(super) fn upload_through(&self, seg: u64) -> io::Result<()> {
        let _one = self.uploading.lock();
        loop {
            // The first segment (by id) with bytes to upload.
            let next = {
                let st = self.st.lock();
                st.segs
                    .iter()
                    .filter(|(s, i)| **s <= seg && i.appended > i.uploaded)
                    .min_by_key(|(s, _)| **s)
                    .map(|(s, i)| (*s, i.uploaded, i.appended, i.file.clone()))
            };
            let Some((s, from, to, file)) = next else {
                return Ok(());
            };
            let file = file.ok_or_else(|| other("segment cache file missing"))?;
            let mut pieces = Vec::new();
            let mut at = from;
            while at < to {
                let end = (at + PART_MAX).min(to);
                pieces.push((at, end));
                at = end;
            }
            let results: Vec<io::Result<()>> = self.rt.block_on(
                futures_util::stream::iter(pieces.iter().copied())
                    .map(|(a, b)| {
                        let file = file.clone();
                        async move {
                            let mut buf = vec![0u8; (b - a) as usize];
                            file.read_exact_at(&mut buf, a)?;
                            self.put_part(s, a, buf).await
                        }
                    })
                    .buffered(PARTS_IN_FLIGHT)
                    .collect(),
            );
            let mut st = self.st.lock();
            let mut first_err = None;
            if let Some(i) = st.segs.get_mut(&s) {
                for ((a, b), r) in pieces.into_iter().zip(results) {
                    match r {
                        Ok(()) => {
                            i.parts.insert(a, b);
                            if first_err.is_none() {
                                i.uploaded = i.uploaded.max(b);
                            }
                        }
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
    }

    /// Bytes of a segment another process created, restored after it stopped (its tail
    /// journal records): each range of them that no part holds goes up at once as a part of
    /// its own. Parts went up four at a time, so a crash can leave a part missing before
    /// one that is there: what is restored fills such holes too.
    pub(super) fn restore(&self, seg: u64, off: u64, bytes: &[u8]) -> io::Result<()> {
        let end = off + bytes.len() as u64;
        let listed = self.st.lock().segs.get(&seg).is_some_and(|s| s.listed);
        if !listed {
            self.list_parts(seg)?;
        }
        let mut at = off;
        let mut tries = 0;
        loop {
            let hole = self.st.lock().segs.get(&seg).and_then(|s| s.gap(at, end));
            let Some((from, to)) = hole else {
                return Ok(());
            };
            let piece = bytes[(from - off) as usize..(to - off) as usize].to_vec();
            match self.rt.block_on(self.put_part(seg, from, piece)) {
                Ok(()) => {
                    self.note_part(seg, from, to);
                    at = to;
                }
                // A part of the writer before arrived there meanwhile: look again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10 => {
                    tries += 1;
                    self.list_parts(seg)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes segment `seg`, which another process was appending to: an empty part goes
    /// where the bytes it stored end (the first byte no part holds), so that no part it
    /// still had in flight there can land afterwards (see `put_part`). A part that arrived
    /// first is looked for again.
    pub(super) fn close_segment(&self, seg: u64) -> io::Result<()> {
        for _ in 0..10 {
            self.list_parts(seg)?;
            let at = {
                let st = self.st.lock();
                st.segs
                    .get(&seg)
                    .and_then(|s| s.gap(0, u64::MAX))
                    .map_or(0, |(at, _)| at)
            };
            match self.rt.block_on(self.put_part(seg, at, Vec::new())) {
                Ok(()) => {
                    self.note_part(seg, at, at);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(other(format!(
            "segment {seg:016x}: parts kept arriving while it was being closed"
        )))
    }

    /// Part [from, to) of `seg` is in the object store.
    fn note_part(&self, seg: u64, from: u64, to: u64) {
        self.st
            .lock()
            .segs
            .entry(seg)
            .or_default()
            .parts
            .insert(from, to);
    }
}
