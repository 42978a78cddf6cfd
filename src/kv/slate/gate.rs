//! The drain's wait for segment uploads: SlateDB gets no batch whose references point to
//! segment bytes not in the object store yet (`kv/slate/segments.rs`).

use std::time::{Duration, Instant};

use super::super::overlay::Layer;
use super::Shared;
use crate::kv::{KvResult, SegPos};

/// How long the drain waits for segment bytes to be uploaded on their own (every
/// `sync_bytes` of the open segment) before it uploads them itself: a layer is written
/// without delay when someone waits for it.
const GATE_DELAY: Duration = Duration::from_millis(500);

impl Shared {
    /// Waits until the segment bytes `layer` points to are uploaded (or made durable by
    /// itself, by a layer before it, or by a sync's batch queued behind it: a tail journal
    /// record, or parts uploaded beside the log write); uploads them itself when someone
    /// waits for the drain or after [`GATE_DELAY`].
    ///
    /// A layer that goes ahead of its bytes' upload (a sync's) may reach the bucket before
    /// them: a crash in between leaves references that opening checks and deletes (the
    /// catalog records say those bytes are not durable yet), and a reader on another host
    /// waits for the part in flight (`SegmentedKv::seg_read`).
    pub(super) fn await_segments(&self, layer: &Layer, handed: Option<SegPos>) -> KvResult<()> {
        let (Some(need), Some(gate)) = (layer.needs, self.gate.get()) else {
            return Ok(());
        };
        if layer.covers >= Some(need) || handed >= Some(need) {
            return Ok(());
        }
        let since = Instant::now();
        let mut failures = 0u32;
        while !gate.uploaded(need) {
            if self.overlay.queued_covers() >= Some(need) {
                return Ok(());
            }
            if self.overlay.pressed() || since.elapsed() >= GATE_DELAY {
                match gate.upload(need) {
                    Ok(()) => return Ok(()),
                    // The object store is down: wait for it (syncs time out meanwhile,
                    // writes wait for room), unless closing.
                    Err(e) if self.overlay.closing() => return Err(e),
                    Err(e) => {
                        if failures.is_multiple_of(30) {
                            log::warn!("{e}; retrying");
                        }
                        failures += 1;
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}
