//! Reads of the segment layer: a stored value is itself or a reference, followed and checked
//! against its CRC. A scan of the data space reads its values in windows of up to 8 MiB: the
//! references first, then their bytes with the fewest reads (sorted by segment and offset,
//! neighbours within 64 KiB merged into one read of up to 4 MiB; a sequentially written file
//! is one read per window), several reads at once when the bytes are scattered (a file
//! rewritten at random places lives in many segments).

use std::time::Duration;

use super::format::{self, Ref, Stored};
use super::{io_err, SegmentedKv, ViewGuard};
use crate::kv::{Dir, KvError, KvRead, KvResult, Pair, Space, Visit};

/// Bytes of values a data scan reads ahead of its visitor.
const WINDOW: u64 = 8 << 20;
/// References this close in a segment are read in one go...
const MERGE_GAP: u64 = 64 << 10;
/// ...up to this many bytes per read.
const MERGE_MAX: u64 = 4 << 20;
/// Reads in flight at once for scattered bytes.
const PARALLEL: usize = 8;
/// How long a reader on another host waits for segment bytes its references point to.
const PART_WAIT: Duration = Duration::from_secs(5);

/// A run of references read with one pread: segment, start, end, the references (with the
/// caller's index).
type Run<'a> = (u64, u64, u64, Vec<&'a (usize, Ref)>);
/// Values read, with the caller's index.
type Indexed = Vec<(usize, Vec<u8>)>;

impl SegmentedKv {
    /// The value a stored form stands for: itself, or the bytes its reference points to
    /// (checked against the reference's CRC: damaged bytes are never returned).
    pub(super) fn load(&self, raw: Vec<u8>) -> KvResult<Vec<u8>> {
        match format::parse(&raw) {
            Stored::Inline(v) if v.len() == raw.len() => Ok(raw),
            Stored::Inline(v) => Ok(v.to_vec()),
            Stored::Ref(r) => self.read_ref(&r),
            Stored::Bad => Err(KvError::Io("malformed segment reference".into())),
        }
    }

    pub(super) fn read_ref(&self, r: &Ref) -> KvResult<Vec<u8>> {
        let bytes = self
            .seg_read(r.seg, r.off, r.len as usize)
            .map_err(|e| io_err(&format!("reading segment {:016x} at {}", r.seg, r.off), e))?;
        let crc = crc32fast::hash(&bytes);
        if crc != r.crc {
            return Err(KvError::Io(format!(
                "segment {:016x}: checksum mismatch at offset {} ({} bytes)",
                r.seg, r.off, r.len
            )));
        }
        Ok(bytes)
    }

    /// Calls `f` with each pair of `window` in order (values read through their references),
    /// emptying it; returns false if `f` asked to stop.
    pub(super) fn deliver(&self, window: &mut Vec<(Vec<u8>, Vec<u8>)>, f: Visit) -> KvResult<bool> {
        let refs: Vec<(usize, Ref)> = window
            .iter()
            .enumerate()
            .filter_map(|(i, (_, raw))| match format::parse(raw) {
                Stored::Ref(r) => Some((i, r)),
                _ => None,
            })
            .collect();
        let mut values: Vec<Option<Vec<u8>>> = vec![None; window.len()];
        for (i, v) in self.read_many(&refs)? {
            values[i] = Some(v);
        }
        let mut go_on = true;
        for (i, (k, raw)) in window.iter().enumerate() {
            let ok = match (&values[i], format::parse(raw)) {
                (Some(v), _) => f(k, v),
                (None, Stored::Inline(v)) => f(k, v),
                (None, _) => return Err(KvError::Io("malformed segment reference".into())),
            };
            if !ok {
                go_on = false;
                break;
            }
        }
        window.clear();
        Ok(go_on)
    }

    /// The bytes of many references (tagged with the caller's index), each checked.
    fn read_many(&self, refs: &[(usize, Ref)]) -> KvResult<Indexed> {
        let mut sorted: Vec<&(usize, Ref)> = refs.iter().collect();
        sorted.sort_by_key(|(_, r)| (r.seg, r.off));
        // Runs of references read with one pread: (segment, start, end, members).
        let mut runs: Vec<Run<'_>> = Vec::new();
        for item in sorted {
            let r = &item.1;
            match runs.last_mut() {
                Some((seg, s, e, members))
                    if *seg == r.seg
                        && r.off >= *e
                        && r.off - *e <= MERGE_GAP
                        && r.end() - *s <= MERGE_MAX =>
                {
                    *e = r.end();
                    members.push(item);
                }
                _ => runs.push((r.seg, r.off, r.end(), vec![item])),
            }
        }
        let read_run = |(seg, s, e, members): &Run<'_>| {
            let buf = self.dir_read(*seg, *s, (*e - *s) as usize)?;
            let mut out = Vec::with_capacity(members.len());
            for (i, r) in members {
                let at = (r.off - *s) as usize;
                let bytes = &buf[at..at + r.len as usize];
                self.check_crc(r, bytes)?;
                out.push((*i, bytes.to_vec()));
            }
            Ok::<_, KvError>(out)
        };
        if runs.len() < PARALLEL {
            let mut out = Vec::with_capacity(refs.len());
            for run in &runs {
                out.extend(read_run(run)?);
            }
            return Ok(out);
        }
        let per = runs.len().div_ceil(PARALLEL);
        let results: Vec<KvResult<Indexed>> = std::thread::scope(|scope| {
            let handles: Vec<_> = runs
                .chunks(per)
                .map(|chunk| {
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        for run in chunk {
                            out.extend(read_run(run)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(KvError::Io("a segment reader panicked".into())))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(refs.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    fn dir_read(&self, seg: u64, off: u64, len: usize) -> KvResult<Vec<u8>> {
        self.seg_read(seg, off, len)
            .map_err(|e| super::io_err(&format!("reading segment {seg:016x} at {off}"), e))
    }

    /// `len` bytes of segment `seg` at `off`. Bytes past what the segment store holds may be
    /// in tail journal records still: a host that did not append them (a reader following
    /// the writer on object storage) finds them there, the rest in the store.
    ///
    /// A reader also waits up to [`PART_WAIT`] for bytes in neither: the writer's fsync
    /// uploads a long tail beside its log write, so a reference can arrive a moment before
    /// its part (`SegmentOptions::upload_beside_log`).
    fn seg_read(&self, seg: u64, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut waited = Duration::ZERO;
        let mut pause = Duration::from_millis(10);
        loop {
            match self.seg_read_once(seg, off, len) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::UnexpectedEof
                        && waited < PART_WAIT
                        && self.inner.status().is_some_and(|s| s.read_only()) =>
                {
                    std::thread::sleep(pause);
                    waited += pause;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                r => return r,
            }
        }
    }

    fn seg_read_once(&self, seg: u64, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
        match self.store.read_at(seg, off, len) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.read_with_journal(seg, off, len).map_err(|j| {
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{e}; {j}"))
                })
            }
            r => r,
        }
    }

    fn read_with_journal(&self, seg: u64, off: u64, len: usize) -> Result<Vec<u8>, String> {
        let end = off + len as u64;
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        self.inner
            .scan(
                Space::Segments,
                &super::journal_key(seg, 0),
                &super::journal_key(seg, end),
                Dir::Forward,
                &mut |k, v| {
                    if let Some((_, at)) = super::split_journal_key(k) {
                        if at + v.len() as u64 > off {
                            records.push((at, v.to_vec()));
                        }
                    }
                    true
                },
            )
            .map_err(|e| format!("reading its tail journal: {e}"))?;
        let mut buf = vec![0u8; len];
        // Covered ranges, relative to `off`.
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for (at, bytes) in &records {
            let a = (*at).max(off);
            let b = (at + bytes.len() as u64).min(end);
            if a >= b {
                continue;
            }
            let (ra, rb) = ((a - off) as usize, (b - off) as usize);
            let from = (a - at) as usize;
            buf[ra..rb].copy_from_slice(&bytes[from..from + (rb - ra)]);
            covered.push((ra, rb));
        }
        covered.sort_unstable();
        // The gaps come from the store (uploaded meanwhile, or before the records).
        let mut at = 0usize;
        let mut gaps = Vec::new();
        for (a, b) in covered {
            if a > at {
                gaps.push((at, a));
            }
            at = at.max(b);
        }
        if at < len {
            gaps.push((at, len));
        }
        for (a, b) in gaps {
            let got = self
                .store
                .read_at(seg, off + a as u64, b - a)
                .map_err(|e| {
                    format!(
                        "bytes {}..{} in neither: {e}",
                        off + a as u64,
                        off + b as u64
                    )
                })?;
            buf[a..b].copy_from_slice(&got);
        }
        Ok(buf)
    }

    fn check_crc(&self, r: &Ref, bytes: &[u8]) -> KvResult<()> {
        if crc32fast::hash(bytes) != r.crc {
            return Err(KvError::Io(format!(
                "segment {:016x}: checksum mismatch at offset {} ({} bytes)",
                r.seg, r.off, r.len
            )));
        }
        Ok(())
    }
}

/// Reads through references of an inner read (the live store or a view).
fn get_via(
    kv: &SegmentedKv,
    r: &dyn KvRead,
    space: Space,
    key: &[u8],
) -> KvResult<Option<Vec<u8>>> {
    match r.get(space, key)? {
        Some(raw) if space == Space::Data => kv.load(raw).map(Some),
        other => Ok(other),
    }
}

fn seek_via(
    kv: &SegmentedKv,
    r: &dyn KvRead,
    space: Space,
    lower: &[u8],
    key: &[u8],
) -> KvResult<Option<Pair>> {
    match r.seek_for_prev(space, lower, key)? {
        Some((k, raw)) if space == Space::Data => Ok(Some((k, kv.load(raw)?))),
        other => Ok(other),
    }
}

fn scan_via(
    kv: &SegmentedKv,
    r: &dyn KvRead,
    space: Space,
    start: &[u8],
    end: &[u8],
    dir: Dir,
    f: Visit,
) -> KvResult<()> {
    if space != Space::Data {
        return r.scan(space, start, end, dir, f);
    }
    // Values are read in windows: the references of up to WINDOW bytes first, then their
    // bytes in as few reads as they allow (see `read_many`), then the visitor.
    let mut window: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut bytes = 0u64;
    let mut stopped = false;
    let mut err = None;
    r.scan(space, start, end, dir, &mut |k, raw| {
        bytes += match format::parse(raw) {
            Stored::Ref(re) => re.len as u64,
            _ => raw.len() as u64,
        };
        window.push((k.to_vec(), raw.to_vec()));
        if bytes < WINDOW {
            return true;
        }
        bytes = 0;
        match kv.deliver(&mut window, f) {
            Ok(go_on) => {
                stopped = !go_on;
                go_on
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    if !stopped {
        kv.deliver(&mut window, f)?;
    }
    Ok(())
}

impl KvRead for SegmentedKv {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        get_via(self, &*self.inner, space, key)
    }

    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        seek_via(self, &*self.inner, space, lower, key)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        scan_via(self, &*self.inner, space, start, end, dir, f)
    }

    /// From the references: no segment read.
    fn any_key_in(&self, space: Space, start: &[u8], end: &[u8]) -> KvResult<bool> {
        self.inner.any_key_in(space, start, end)
    }
}

/// A read view: the inner store's view, registered so that GC keeps the segments it may read.
pub(super) struct SegView<'a> {
    pub(super) kv: &'a SegmentedKv,
    pub(super) inner: Box<dyn KvRead + 'a>,
    pub(super) _guard: ViewGuard<'a>,
}

impl KvRead for SegView<'_> {
    fn get(&self, space: Space, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        get_via(self.kv, &*self.inner, space, key)
    }

    fn seek_for_prev(&self, space: Space, lower: &[u8], key: &[u8]) -> KvResult<Option<Pair>> {
        seek_via(self.kv, &*self.inner, space, lower, key)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], dir: Dir, f: Visit) -> KvResult<()> {
        scan_via(self.kv, &*self.inner, space, start, end, dir, f)
    }

    /// From the references: no segment read.
    fn any_key_in(&self, space: Space, start: &[u8], end: &[u8]) -> KvResult<bool> {
        self.inner.any_key_in(space, start, end)
    }
}
