//! What a volume asks of the kernel, through the mount adapter's [`KernelLink`]: dropping
//! cached names, attributes and pages, writing back cached writes before a snapshot; new
//! inode-number generations for the head after a restore; and the volume's side of the
//! snapshot lifecycle ([`MountHooks`], called by [`Container`](crate::fs::Container)).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::inos::{kernel, ROOT};
use super::{SnapView, Volume, FIRST_HEAD_SLOT};
use crate::error::{FsError, FsResult};
use crate::fs::{MountHooks, PathRestore, RestoreIntent, ROOT_INO};
use crate::ids::{Epoch, Ino, KernelIno};
use crate::store::{SnapshotInfo, StoreError};

/// What the mount adapter carries to the kernel for a volume; registered by the adapter when
/// it mounts the volume ([`Volume::set_kernel_link`]). Implementations notify the kernel
/// from a thread of their own: a request handler must never notify the kernel itself (it
/// would deadlock), and a gesture such as `mkdir .snapshots/X` runs inside one.
pub trait KernelLink: Send + Sync {
    /// Drops the kernel's cached entries `drops.entries` (present or absent), then the
    /// attributes and pages of `drops.inodes`; the kernel writes an inode's dirty pages back
    /// first (through the serving threads) and waits for them. With `wait`, returns true
    /// once the kernel has done all of it, false if it has not within that time; without,
    /// returns at once (true if the request was queued).
    fn invalidate(&self, drops: KernelDrops, wait: Option<Duration>) -> bool;

    /// Makes the kernel write back the dirty pages of files `inos` (open for writing) and
    /// waits up to `wait`. Pages dirtied meanwhile need not be written, so a writer that
    /// keeps writing cannot hold it up. True once done; false if a file could not be reached
    /// or it took longer (the caller then drops the files' pages, which also writes them
    /// back, but waits for their writers to pause).
    fn write_back(&self, inos: &[KernelIno], wait: Duration) -> bool;
}

/// What the kernel must drop from its caches, in kernel numbers.
#[derive(Debug, Default)]
pub struct KernelDrops {
    /// (directory, name) entries, present or absent.
    pub entries: Vec<(KernelIno, Vec<u8>)>,
    /// Inodes whose attributes and pages go.
    pub inodes: Vec<KernelIno>,
}

impl From<RestoreIntent> for KernelDrops {
    fn from(i: RestoreIntent) -> KernelDrops {
        KernelDrops {
            entries: i.entries,
            inodes: i.inodes,
        }
    }
}

/// How long a snapshot deletion through the API, or a restore, waits for the kernel to
/// drop what it caches.
const INVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a snapshot waits for the kernel to hand over its cached writes.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

impl Volume {
    /// Where to send requests to the kernel (the mount adapter, once mounted).
    pub fn set_kernel_link(&self, link: std::sync::Arc<dyn KernelLink>) {
        *self.kernel.lock() = Some(link);
    }

    fn kernel(&self) -> Option<std::sync::Arc<dyn KernelLink>> {
        self.kernel.lock().clone()
    }

    /// Once a mount taken over is served again: the kernel drops what it cached of the tree
    /// a restore replaced as the previous daemon died (see [`Volume::resume`]).
    pub fn finish_takeover(&self) {
        let Some(drops) = self.takeover_drops.lock().take() else {
            return;
        };
        log::warn!(
            "finishing a restore the previous daemon committed: the kernel drops {} names and \
             {} inodes of the old tree",
            drops.entries.len(),
            drops.inodes.len()
        );
        self.drop_and_wait(drops);
        if let Some(j) = self.journal() {
            j.restore_done();
        }
    }

    /// Asks the kernel to drop `drops` and waits up to `INVAL_TIMEOUT` (never from a
    /// request handler).
    fn drop_and_wait(&self, drops: KernelDrops) {
        if let Some(k) = self.kernel() {
            if !k.invalidate(drops, Some(INVAL_TIMEOUT)) {
                log::warn!("the kernel did not drop replaced or deleted files in time");
            }
        }
    }
}

impl MountHooks for Volume {
    /// Files open for writing may have cached writes (closed files were flushed by close):
    /// the kernel writes back what is dirty now, and we wait (see [`KernelLink::write_back`]).
    fn flush_writes(&self) -> FsResult<()> {
        let inos: Vec<KernelIno> = self
            .head
            .open_writable_inodes()
            .into_iter()
            .map(|i| self.out(i))
            .collect();
        if inos.is_empty() {
            return Ok(());
        }
        let Some(k) = self.kernel() else {
            return Ok(()); // not mounted: nothing is cached
        };
        if k.write_back(&inos, FLUSH_TIMEOUT) {
            return Ok(());
        }
        let drops = KernelDrops {
            entries: Vec::new(),
            inodes: inos,
        };
        if k.invalidate(drops, Some(FLUSH_TIMEOUT)) {
            Ok(())
        } else {
            Err(FsError::Io(
                "the kernel did not write back cached writes in time".into(),
            ))
        }
    }

    fn switch_tree(
        &self,
        snap: &SnapshotInfo,
        switch: &mut dyn FnMut() -> Result<SnapshotInfo, StoreError>,
    ) -> Result<SnapshotInfo, StoreError> {
        // Cached writes go into the tree being replaced.
        self.flush_writes()?;
        // Numbers are handed out under this lock until the switch is done, so no lookup
        // gives a restored file its old number; and from the flag on, resolving a head number
        // waits for it, so no write slips into a file between the count of what differs and
        // the switch.
        let mut renumbered = self.renumbered.write();
        self.any_renumbered.store(true, Ordering::SeqCst);
        let switched = (|| -> Result<_, StoreError> {
            let old = self.head.chain()?;
            let new = self.head.store().snapshot_chain(snap);
            let t = self.head.tree_switch(&old, &new)?;
            // A slot only for files to renumber: slots are few (16 bits).
            let slot = match t.files.is_empty() {
                true => None,
                false => Some(self.next_generation()?),
            };
            // In the numbers the kernel knows them by: files before renumbering,
            // directories keep theirs; the root's listing changes too.
            let mut inodes: Vec<KernelIno> = t
                .files
                .iter()
                .chain(&t.dirs)
                .map(|&i| self.out_locked(&renumbered, i))
                .collect();
            inodes.push(ROOT);
            let intent = RestoreIntent {
                old_head: old.epoch,
                slot,
                entries: t
                    .entries
                    .iter()
                    .map(|(d, n)| (self.out_locked(&renumbered, *d), n.clone()))
                    .collect(),
                inodes,
                files: t.files,
            };
            // If the daemon dies between the commit and the kernel's drops, the next one
            // finishes them from here.
            if let Some(j) = self.journal() {
                j.restore_begun(&intent);
            }
            Ok((intent, switch()?))
        })();
        let (intent, s) = match switched {
            Ok(v) => v,
            Err(e) => {
                self.any_renumbered
                    .store(!renumbered.is_empty(), Ordering::SeqCst);
                if let Some(j) = self.journal() {
                    j.restore_done();
                }
                return Err(e);
            }
        };
        if let Some(slot) = intent.slot {
            if let Some(j) = self.journal() {
                j.renumbered(slot, &intent.files);
            }
            for &f in &intent.files {
                renumbered.insert(f, slot);
            }
        }
        self.any_renumbered
            .store(!renumbered.is_empty(), Ordering::SeqCst);
        drop(renumbered);
        self.drop_and_wait(KernelDrops::from(intent));
        if let Some(j) = self.journal() {
            j.restore_done();
        }
        Ok(s)
    }

    fn restore_paths(&self, snap: &SnapshotInfo, paths: &[Vec<u8>]) -> FsResult<PathRestore> {
        let (r, drops) = self.restore_paths_renumbered(snap, paths)?;
        self.drop_and_wait(drops);
        Ok(r)
    }

    /// Its root and its open files, in the view's kernel numbers.
    fn snapshot_gone(&self, epoch: Epoch, wait: bool) {
        let view = {
            let slots = self.slots.read();
            slots.by_epoch.get(&epoch).and_then(|&slot| {
                let i = slot.checked_sub(1)? as usize;
                slots.views.get(i).map(|v| (slot, v.fs.clone()))
            })
        };
        let Some((slot, fs)) = view else { return };
        let Some(k) = self.kernel() else {
            return;
        };
        let mut inos: Vec<KernelIno> = fs
            .open_inodes()
            .into_iter()
            .map(|ino| kernel(slot, ino))
            .collect();
        inos.push(kernel(slot, ROOT_INO));
        let drops = KernelDrops {
            entries: Vec::new(),
            inodes: inos,
        };
        if wait {
            if !k.invalidate(drops, Some(INVAL_TIMEOUT)) {
                log::warn!("the kernel did not drop a deleted snapshot's pages in time");
            }
        } else {
            k.invalidate(drops, None);
        }
    }
}

impl Volume {
    /// Takes the next slot for a head generation (they count down from FIRST_HEAD_SLOT).
    fn next_generation(&self) -> FsResult<u64> {
        let slots = self.slots.read();
        let cur = self.gen_floor.load(Ordering::SeqCst);
        let next = if cur == 0 { FIRST_HEAD_SLOT } else { cur - 1 };
        if next <= slots.views.len() as u64 {
            return Err(FsError::Io("out of inode number slots; remount".into()));
        }
        if let Some(j) = self.journal() {
            j.generation(next);
        }
        self.gen_floor.store(next, Ordering::SeqCst);
        Ok(next)
    }

    /// Restores `paths` of the head from snapshot `snap` (see `Fs::restore_paths`). The
    /// inodes it replaces get new kernel numbers, so what the kernel knows of the old ones
    /// (cached pages, descriptors open on them) goes stale, as after a full restore. Returns
    /// what the kernel must drop from its caches: entries (directory, name) and inodes, in
    /// kernel numbers.
    fn restore_paths_renumbered(
        &self,
        snap: &SnapshotInfo,
        paths: &[Vec<u8>],
    ) -> FsResult<(PathRestore, KernelDrops)> {
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
        if let Some(j) = self.journal() {
            j.renumbered(slot, &r.replaced);
        }
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
}
