//! The account of versions physically deleted and not yet compacted away.

use super::Store;
use crate::ids::DataId;
use crate::keys;
use crate::kv::Space;

/// What batches physically deleted since the daemon last compacted: the bytes of the versions
/// (their change-index sizes) and the span of data ids whose blocks went. The daemon compacts
/// just that span once enough has accumulated, so the cost of giving space back follows the
/// garbage, not the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub bytes: u64,
    /// Lowest and highest data id with a dropped block.
    pub data_ids: Option<(DataId, DataId)>,
}

impl Store {
    /// Accounts a written batch's physical deletions of versions (`bytes` of them).
    pub fn note_drops(&self, ops: &[crate::kv::BatchOp], bytes: u64) {
        self.account_drops(bytes, dropped_span(ops));
    }

    /// Adds `bytes` of dropped versions, and the span of data ids that lost blocks.
    pub fn account_drops(&self, bytes: u64, span: Option<(DataId, DataId)>) {
        let mut dr = self.reclaim.dropped.lock();
        dr.bytes = dr.bytes.saturating_add(bytes);
        if let Some((lo, hi)) = span {
            dr.data_ids = Some(
                dr.data_ids
                    .map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))),
            );
        }
    }
    /// What was dropped since the last [`Store::take_dropped`].
    pub fn dropped(&self) -> Dropped {
        self.reclaim.dropped.lock().clone()
    }

    /// Takes (and resets) the account of dropped versions.
    pub fn take_dropped(&self) -> Dropped {
        std::mem::take(&mut *self.reclaim.dropped.lock())
    }
}

/// The lowest and highest data id whose blocks `ops` delete, if any.
pub fn dropped_span(ops: &[crate::kv::BatchOp]) -> Option<(DataId, DataId)> {
    let mut span: Option<(DataId, DataId)> = None;
    for op in ops {
        if let crate::kv::BatchOp::Delete(Space::Data, k) = op {
            if let Some((d, _)) = keys::split_block(k) {
                span = Some(span.map_or((d, d), |(lo, hi)| (lo.min(d), hi.max(d))));
            }
        }
    }
    span
}
