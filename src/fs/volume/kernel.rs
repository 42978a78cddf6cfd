//! What a volume asks of the kernel, through its mount's notifier thread: dropping cached
//! pages and attributes, writing back cached writes before a snapshot, and new inode-number
//! generations for the head after a restore.

use std::sync::atomic::Ordering;

use super::inos::{kernel, ROOT};
use super::{SnapView, Volume, FIRST_HEAD_SLOT};
use crate::error::{FsError, FsResult};
use crate::fs::ROOT_INO;
use crate::ids::{Epoch, Ino, KernelIno};

/// A request to the kernel, carried out by the mount's notifier thread.
pub enum Notice {
    /// Drop the cached attributes and pages of this kernel inode.
    Inval(KernelIno),

    /// Write back the kernel's cached (dirty) pages of these kernel inodes, waiting until
    /// they are in the store; then answer on the channel.
    Flush(Vec<KernelIno>, crossbeam_channel::Sender<()>),
}

/// What the kernel must drop from its caches after a path restore, in kernel numbers.
#[derive(Debug, Default)]
pub struct KernelDrops {
    /// (directory, name) entries, present or absent.
    pub entries: Vec<(KernelIno, Vec<u8>)>,
    /// Inodes whose attributes and pages go.
    pub inodes: Vec<KernelIno>,
}

/// How long a snapshot deletion through the API waits for the kernel to drop its pages.
const INVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a snapshot waits for the kernel to hand over its cached writes.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Volume {
    /// Where to send requests to the kernel.
    pub fn set_invalidator(&self, tx: crossbeam_channel::Sender<Notice>) {
        *self.invalidate.lock() = Some(tx);
    }

    /// Makes every write the kernel has accepted for this mount part of the head: with the
    /// writeback cache, returned writes may still sit in the kernel's page cache for files
    /// that are open for writing (closed files were flushed by close). Called before a
    /// snapshot, a copy of the current tree and a restore. Fails (never snapshots without
    /// them) if the kernel does not hand them over in time.
    pub fn flush_writes(&self) -> FsResult<()> {
        let inos: Vec<KernelIno> = self
            .head
            .open_writable_inodes()
            .into_iter()
            .map(|i| self.out(i))
            .collect();
        if inos.is_empty() {
            return Ok(());
        }
        let Some(tx) = self.invalidate.lock().clone() else {
            return Ok(()); // not mounted: nothing is cached
        };
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        tx.send(Notice::Flush(inos, done_tx))
            .map_err(|_| FsError::Io("the mount's notifier is gone".into()))?;
        done_rx
            .recv_timeout(FLUSH_TIMEOUT)
            .map_err(|_| FsError::Io("the kernel did not write back cached writes in time".into()))
    }

    /// A snapshot of this container was deleted: drop what the kernel caches of its open
    /// files (and its root), so its data is never served again. With `wait` (a deletion
    /// through the API), returns once the kernel has dropped them, so a read that starts
    /// after the deletion returned cannot be served from the cache; a deletion by `rmdir`
    /// in the mount cannot wait (the kernel holds the snapshot's inode during the call), and
    /// the invalidation follows it at once.
    pub fn snapshot_gone(&self, epoch: Epoch, wait: bool) {
        let view = {
            let slots = self.slots.read();
            slots.by_epoch.get(&epoch).and_then(|&slot| {
                let i = slot.checked_sub(1)? as usize;
                slots.views.get(i).map(|v| (slot, v.fs.clone()))
            })
        };
        let Some((slot, fs)) = view else { return };
        let Some(tx) = self.invalidate.lock().clone() else {
            return;
        };
        let mut inos: Vec<KernelIno> = fs
            .open_inodes()
            .into_iter()
            .map(|ino| kernel(slot, ino))
            .collect();
        inos.push(kernel(slot, ROOT_INO));
        if wait {
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            if tx.send(Notice::Flush(inos, done_tx)).is_ok()
                && done_rx.recv_timeout(INVAL_TIMEOUT).is_err()
            {
                log::warn!("the kernel did not drop a deleted snapshot's pages in time");
            }
        } else {
            for ino in inos {
                let _ = tx.send(Notice::Inval(ino));
            }
        }
    }

    /// Starts a new head generation (after the container was restored): inode numbers of the
    /// previous tree go stale.
    pub fn new_head_generation(&self) -> FsResult<()> {
        let mut renumbered = self.renumbered.write();
        let next = self.next_generation()?;
        self.head_slot.store(next, Ordering::SeqCst);
        renumbered.clear();
        self.any_renumbered.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the next slot for a head generation (they count down from FIRST_HEAD_SLOT).
    fn next_generation(&self) -> FsResult<u64> {
        let slots = self.slots.read();
        let cur = self.gen_floor.load(Ordering::SeqCst);
        let next = if cur == 0 { FIRST_HEAD_SLOT } else { cur - 1 };
        if next <= slots.views.len() as u64 {
            return Err(FsError::Io("out of inode number slots; remount".into()));
        }
        self.gen_floor.store(next, Ordering::SeqCst);
        Ok(next)
    }

    /// Restores `paths` of the head from snapshot `snap` (see `Fs::restore_paths`). The
    /// inodes it replaces get new kernel numbers, so what the kernel knows of the old ones
    /// (cached pages, descriptors open on them) goes stale, as after a full restore. Returns
    /// what the caller must drop from the kernel's caches: entries (directory, name) and
    /// inodes, in kernel numbers.
    pub fn restore_paths(
        &self,
        snap: &crate::store::SnapshotInfo,
        paths: &[Vec<u8>],
    ) -> FsResult<(crate::fs::PathRestore, KernelDrops)> {
        // Cached writes go into the tree as it is before the restore.
        self.flush_writes()?;
        // Numbers are handed out under this lock until the restore is done, so no lookup
        // gives a restored inode its old number.
        let mut renumbered = self.renumbered.write();
        let slot = self.next_generation()?;
        self.any_renumbered.store(true, Ordering::SeqCst);
        let r = self.head.restore_paths(snap, paths);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                self.any_renumbered
                    .store(!renumbered.is_empty(), Ordering::SeqCst);
                return Err(e);
            }
        };
        let inodes = r
            .replaced
            .iter()
            .chain(&r.touched)
            .map(|&i| self.out_locked(&renumbered, i))
            .collect();
        for &i in &r.replaced {
            renumbered.insert(i, slot);
        }
        self.any_renumbered
            .store(!renumbered.is_empty(), Ordering::SeqCst);
        let entries = r
            .names
            .iter()
            .map(|(d, n)| (self.out_locked(&renumbered, *d), n.clone()))
            .collect();
        Ok((r, KernelDrops { entries, inodes }))
    }

    /// `out` while the caller holds the renumbering map.
    fn out_locked(&self, renumbered: &std::collections::HashMap<Ino, u64>, ino: Ino) -> KernelIno {
        if ino == ROOT_INO {
            return ROOT;
        }
        let slot = renumbered
            .get(&ino)
            .copied()
            .unwrap_or_else(|| self.head_slot.load(Ordering::SeqCst));
        kernel(slot, ino)
    }

    /// File handles open through this mount (head and snapshot views), for metrics.
    pub fn open_handles(&self) -> usize {
        let views: usize = self
            .slots
            .read()
            .views
            .iter()
            .map(|v: &SnapView| v.fs.open_handles())
            .sum();
        self.head.open_handles() + views
    }

    /// Kernel inode numbers of the head's files that are open right now.
    pub fn open_head_inodes(&self) -> Vec<KernelIno> {
        self.head
            .open_inodes()
            .into_iter()
            .map(|i| self.out(i))
            .collect()
    }
}
