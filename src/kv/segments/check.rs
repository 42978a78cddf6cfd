//! `fsck`'s side of the segment layer: every reference checked against its segment (a record
//! and a file exist, the range is inside the file, the bytes match the CRC), the live counters
//! recounted, and files no record names listed; `repair` writes the recounted counters and
//! deletes orphan files older than the horizon.

use std::collections::BTreeMap;

use super::format::{self, Stored};
use super::{encode_record, seg_key, SegmentedKv};
use crate::kv::{Batch, Dir, KvResult, Space};

/// What [`SegmentCheck::check`] found.
#[derive(Debug, Default, Clone)]
pub struct SegmentReport {
    /// Segments in the catalog.
    pub segments: u64,
    /// References checked, and the bytes they point to.
    pub refs: u64,
    pub bytes: u64,
    /// References that do not hold (key, what is wrong).
    pub bad_refs: Vec<(Vec<u8>, String)>,
    /// Segments whose live counter differs from the references: (segment, recorded, counted).
    pub miscounted: Vec<(u64, u64, u64)>,
    /// Files no record names: (segment, bytes).
    pub orphans: Vec<(u64, u64)>,
}

impl SegmentReport {
    pub fn is_clean(&self) -> bool {
        self.bad_refs.is_empty() && self.miscounted.is_empty() && self.orphans.is_empty()
    }
}

/// The segment layer's checks (see the module doc), reached with `Kv::segments`.
pub trait SegmentCheck: Send + Sync {
    /// Checks every reference and counter; reads every referenced byte.
    fn check(&self) -> KvResult<SegmentReport>;
    /// Writes recounted live counters and deletes orphans older than the horizon; returns the
    /// number of fixes.
    fn repair(&self, report: &SegmentReport) -> KvResult<u64>;
}

impl SegmentCheck for SegmentedKv {
    fn check(&self) -> KvResult<SegmentReport> {
        let st = self.state.lock();
        let mut report = SegmentReport {
            segments: st.segs.len() as u64,
            ..SegmentReport::default()
        };
        let mut counted: BTreeMap<u64, u64> = st.segs.keys().map(|s| (*s, 0)).collect();
        let mut file_lens: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        let end = super::open::space_end();
        self.inner
            .scan(Space::Data, &[], &end, Dir::Forward, &mut |k, raw| {
                let r = match format::parse(raw) {
                    Stored::Ref(r) => r,
                    Stored::Inline(_) => return true,
                    Stored::Bad => {
                        report
                            .bad_refs
                            .push((k.to_vec(), "malformed reference".into()));
                        return true;
                    }
                };
                report.refs += 1;
                report.bytes += r.len as u64;
                let Some(n) = counted.get_mut(&r.seg) else {
                    report
                        .bad_refs
                        .push((k.to_vec(), format!("segment {:016x} has no record", r.seg)));
                    return true;
                };
                *n += r.len as u64;
                let flen = *file_lens
                    .entry(r.seg)
                    .or_insert_with(|| self.store.len_of(r.seg).ok());
                match flen {
                    None => report
                        .bad_refs
                        .push((k.to_vec(), format!("segment {:016x} has no file", r.seg))),
                    Some(l) if r.end() > l => report.bad_refs.push((
                        k.to_vec(),
                        format!(
                            "bytes {}..{} are past the end of segment {:016x} ({l} bytes)",
                            r.off,
                            r.end(),
                            r.seg
                        ),
                    )),
                    Some(_) => {
                        if let Err(e) = self.read_ref(&r) {
                            report.bad_refs.push((k.to_vec(), e.to_string()));
                        }
                    }
                }
                true
            })?;
        for (seg, n) in counted {
            if let Some(info) = st.segs.get(&seg) {
                if info.rec.live != n {
                    report.miscounted.push((seg, info.rec.live, n));
                }
            }
        }
        drop(st);
        report.orphans = self.orphans(false)?;
        Ok(report)
    }

    fn repair(&self, report: &SegmentReport) -> KvResult<u64> {
        let mut fixes = 0;
        if !report.miscounted.is_empty() {
            let mut st = self.state.lock();
            let mut b = Batch::new();
            for (seg, _, counted) in &report.miscounted {
                if let Some(info) = st.segs.get_mut(seg) {
                    info.rec.live = *counted;
                    info.empty_since = (*counted == 0).then(std::time::Instant::now);
                    b.put(Space::Segments, seg_key(*seg), encode_record(&info.rec));
                    fixes += 1;
                }
            }
            self.inner.write(b, true)?;
            self.refresh_totals(&st);
        }
        fixes += self.delete_orphans()?;
        Ok(fixes)
    }
}
