//! A mounted container: its head plus the magic `.snapshots` directory and read-only snapshot
//! views, all behind one inode space.
//!
//! Inode numbers seen by the kernel: the top 16 bits select the view (0 = head, 1..=0xfffe =
//! a snapshot view slot, 0xffff = `.snapshots` itself and its alias symlinks), the low 48 bits
//! are the store's inode number. Slots are handed out on first use and never reused while
//! mounted, so numbers are distinct between views and stable across lookups.
//!
//! The head's slot changes when the container is restored underneath a mount (head
//! generations count down from 0xfffe while snapshot slots count up from 1): every inode
//! number the kernel knew from before the restore then answers ESTALE, so descriptors opened
//! on the discarded tree fail instead of reading or writing it. The root stays inode 1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::codec::Inode;
use crate::error::{FsError, FsResult};
use crate::store::{SnapshotInfo, StoreError};
use crate::timefmt;

use super::{Caller, Container, Fh, Fs, MountHooks, MountJournal, Resumed, ROOT_INO};
use crate::ids::{ContainerId, Epoch, Ino, KernelIno};

mod inos;
mod kernel;
mod snapdir;

use inos::{alias as alias_ino, alias_slot, kernel, split, ROOT, SPECIAL_SLOT};
pub use inos::{Listed, Listing, ROOT as ROOT_KERNEL_INO, SNAPDIR_INO};
pub use kernel::{KernelDrops, KernelLink};

/// Name of the magic directory at a container's root.
pub const SNAPDIR_NAME: &[u8] = b".snapshots";
const XATTR_PREFIX: &str = "user.snapfs.";

#[derive(Debug, Clone, Default)]
pub struct VolumeOptions {
    /// List `.snapshots` in the root directory.
    pub snapdir_visible: bool,
    /// Besides root, who may create, rename and delete snapshots.
    pub admin_uid: Option<u32>,
    /// Mounted read-only (the kernel refuses every change with EROFS).
    pub read_only: bool,
}

/// Snapshot views by slot. Keyed by epoch, not name: a name can come back (deleted, then
/// taken again within the same second) for a different snapshot.
#[derive(Default)]
struct Slots {
    by_epoch: HashMap<Epoch, u64>,
    /// The view of slot `i + 1`.
    views: Vec<SnapView>,
}

/// A snapshot view of the mount: the snapshot it shows (by name and epoch) and its tree.
#[derive(Clone)]
struct SnapView {
    name: String,
    epoch: Epoch,
    fs: Arc<Fs>,
}

/// What a kernel inode number designates ([`Volume::resolve`]). The mount adapter calls
/// the view's [`Fs`] itself for the operations that mean the same in every view (read,
/// write, lseek...: [`Volume::tree`]); store inode numbers it gets back from the head become
/// kernel numbers again through [`Volume::head_kernel_ino`].
pub enum Node {
    /// Inode `Ino` of the head (writable).
    Head(Ino),
    /// Inode `ino` of the snapshot view in `slot`.
    Snap {
        slot: u64,
        fs: Arc<Fs>,
        ino: Ino,
    },
    SnapDir,
    /// The alias symlink of the snapshot in this slot.
    Alias(u64),
}

pub struct Volume {
    head: Fs,
    /// The lifecycle of the mounted container: the `.snapshots` gestures go through it.
    container: Arc<Container>,
    opts: VolumeOptions,
    slots: RwLock<Slots>,
    /// Slot of the current head generation (0 until the first restore).
    head_slot: AtomicU64,
    /// Lowest slot handed to a head generation or a path restore (0: none yet).
    gen_floor: AtomicU64,
    /// Inodes a path restore replaced since the last full restore, with their own slot.
    renumbered: RwLock<HashMap<Ino, u64>>,
    any_renumbered: AtomicBool,
    /// Requests to the kernel, through the mount adapter (a FUSE handler must never notify
    /// the kernel itself).
    kernel: parking_lot::Mutex<Option<Arc<dyn KernelLink>>>,
    /// Where what a new daemon needs to take the mount over is written (set once, before
    /// the mount serves).
    journal: std::sync::OnceLock<Arc<dyn MountJournal>>,
    /// What the kernel must still drop of a restore the previous daemon committed and died
    /// in (sent by [`Volume::finish_takeover`] once the mount is served again).
    takeover_drops: parking_lot::Mutex<Option<kernel::KernelDrops>>,
}

/// First slot handed to a head generation after a restore (they count down).
pub(super) const FIRST_HEAD_SLOT: u64 = SPECIAL_SLOT - 1;

fn store_err(e: StoreError) -> FsError {
    match e {
        StoreError::Fs(f) => f,
        StoreError::NoSnapshot(_) | StoreError::NoContainer(_) => FsError::NotFound,
        StoreError::AliasTaken(_) | StoreError::ContainerExists(_) => FsError::Exists,
        StoreError::BadAlias(..) | StoreError::BadContainerName(_) => {
            FsError::Invalid("bad snapshot alias")
        }
        other => FsError::Io(other.to_string()),
    }
}

fn name_str(name: &[u8]) -> FsResult<&str> {
    std::str::from_utf8(name).map_err(|_| FsError::Invalid("snapshot names are UTF-8"))
}

impl Volume {
    pub fn options(&self) -> &VolumeOptions {
        &self.opts
    }

    /// A volume over `container`'s head, registered as the container's mount (its
    /// lifecycle operations then flush and invalidate through this volume).
    pub fn new(container: Arc<Container>, opts: VolumeOptions) -> FsResult<Arc<Volume>> {
        let head = container.head()?;
        Ok(Self::assemble(container, opts, head, Slots::default()))
    }

    fn assemble(
        container: Arc<Container>,
        opts: VolumeOptions,
        head: Fs,
        slots: Slots,
    ) -> Arc<Volume> {
        let volume = Arc::new(Volume {
            head,
            container: container.clone(),
            opts,
            slots: RwLock::new(slots),
            head_slot: AtomicU64::new(0),
            gen_floor: AtomicU64::new(0),
            renumbered: RwLock::new(HashMap::new()),
            any_renumbered: AtomicBool::new(false),
            kernel: parking_lot::Mutex::new(None),
            journal: std::sync::OnceLock::new(),
            takeover_drops: parking_lot::Mutex::new(None),
        });
        let hooks: Arc<dyn MountHooks> = volume.clone();
        container.attach(Arc::downgrade(&hooks));
        volume
    }

    /// Records what a new daemon needs to take this mount over in `journal` from now on
    /// (before the mount serves anything).
    pub fn set_journal(&self, journal: Arc<dyn MountJournal>) {
        if self.journal.set(journal.clone()).is_ok() {
            self.head.set_journal(journal, 0);
        }
    }

    fn journal(&self) -> Option<&Arc<dyn MountJournal>> {
        self.journal.get()
    }

    /// The volume of a mount another daemon served, as its journal left it: the same
    /// snapshot slots, head generations and moved inode numbers (so every number the kernel
    /// holds resolves as before), and its open handles.
    pub fn resume(
        container: Arc<Container>,
        opts: VolumeOptions,
        journal: Arc<dyn MountJournal>,
        resumed: &Resumed,
    ) -> FsResult<Arc<Volume>> {
        let store = container.store().clone();
        let in_slot = |slot: u64| -> Vec<(Fh, super::HandleRecord)> {
            resumed
                .handles
                .iter()
                .filter(|(_, r)| r.slot == slot)
                .copied()
                .collect()
        };
        let head = Fs::resumed_head(store.clone(), container.id(), journal.clone(), &in_slot(0))?;
        let mut slots = Slots::default();
        for (i, (slot, epoch, name)) in resumed.views.iter().enumerate() {
            if *slot != i as u64 + 1 {
                return Err(FsError::Io(format!(
                    "mount journal: view slot {slot} out of order (expected {})",
                    i + 1
                )));
            }
            let chain = Arc::new(store.chain(*epoch));
            let fs = Arc::new(Fs::frozen(store.clone(), container.id(), chain));
            fs.set_journal(journal.clone(), *slot);
            fs.adopt_handles(&in_slot(*slot));
            slots.views.push(SnapView {
                name: name.clone(),
                epoch: *epoch,
                fs,
            });
            slots.by_epoch.insert(*epoch, *slot);
        }
        let volume = Self::assemble(container, opts, head, slots);
        let _ = volume.journal.set(journal.clone());
        volume.gen_floor.store(resumed.gen_floor, Ordering::SeqCst);
        // A restore the old daemon began: if it committed (the head moved on), its files'
        // new numbers hold and the kernel must still drop the old tree's names and pages.
        let head_now = volume.head.chain()?.epoch;
        if let Some(old) = resumed.restore_unrecorded.filter(|old| *old != head_now) {
            return Err(FsError::Io(format!(
                "a restore (from epoch {old}) committed as the daemon died, too large to have \
                 been journaled: what the kernel caches of the old tree cannot be dropped"
            )));
        }
        let mut r = volume.renumbered.write();
        r.extend(resumed.renumbered.iter().copied());
        match &resumed.restore {
            Some(intent) if intent.old_head != head_now => {
                if let Some(slot) = intent.slot {
                    journal.renumbered(slot, &intent.files);
                    r.extend(intent.files.iter().map(|&f| (f, slot)));
                }
                *volume.takeover_drops.lock() = Some(intent.clone().into());
            }
            // Begun and never committed: nothing is pending.
            Some(_) => journal.restore_done(),
            None if resumed.restore_unrecorded.is_some() => journal.restore_done(),
            None => {}
        }
        volume.any_renumbered.store(!r.is_empty(), Ordering::SeqCst);
        drop(r);
        Ok(volume)
    }

    /// Kernel inode number of head inode `ino`.
    fn out(&self, ino: Ino) -> KernelIno {
        if ino == ROOT_INO {
            ROOT
        } else {
            kernel(self.slot_of_head(ino), ino)
        }
    }

    /// The slot head inode `ino` has now: the head generation's, or its own after a path
    /// restore replaced it.
    fn slot_of_head(&self, ino: Ino) -> u64 {
        if self.any_renumbered.load(Ordering::SeqCst) {
            if let Some(s) = self.renumbered.read().get(&ino) {
                return *s;
            }
        }
        self.head_slot.load(Ordering::SeqCst)
    }

    fn out_entry(&self, r: FsResult<(Ino, Inode)>) -> FsResult<(KernelIno, Inode)> {
        r.map(|(ino, i)| (self.out(ino), i))
    }

    pub fn head(&self) -> &Fs {
        &self.head
    }

    /// Entries of `.snapshots` must not be cached: aliases move under the kernel's feet.
    pub fn is_snapdir(&self, ino: KernelIno) -> bool {
        ino == SNAPDIR_INO
    }

    /// Snapshot views never change: their attributes may be cached for long.
    pub fn is_frozen(&self, ino: KernelIno) -> bool {
        let (slot, _) = split(ino);
        slot != 0 && slot != SPECIAL_SLOT
    }

    fn container(&self) -> &ContainerId {
        self.head.container()
    }

    fn may_manage(&self, caller: Caller) -> FsResult<()> {
        if caller.uid == 0 || Some(caller.uid) == self.opts.admin_uid {
            Ok(())
        } else {
            Err(FsError::Perm)
        }
    }

    /// The slot of snapshot `info`, assigned on first use.
    fn slot_of(&self, info: &SnapshotInfo) -> u64 {
        let epoch = info.record.epoch;
        if let Some(s) = self.slots.read().by_epoch.get(&epoch) {
            return *s;
        }
        let mut slots = self.slots.write();
        if let Some(s) = slots.by_epoch.get(&epoch) {
            return *s;
        }
        let store = self.head.store().clone();
        let chain = store.snapshot_chain(info);
        let fs = Arc::new(Fs::frozen(store, self.container(), chain));
        let slot = slots.views.len() as u64 + 1;
        if let Some(j) = self.journal() {
            // Before the kernel can learn a number in this slot.
            j.view(slot, epoch, &info.name);
            fs.set_journal(j.clone(), slot);
        }
        slots.views.push(SnapView {
            name: info.name.clone(),
            epoch,
            fs,
        });
        slots.by_epoch.insert(epoch, slot);
        slot
    }

    fn view(&self, slot: u64) -> FsResult<SnapView> {
        let slots = self.slots.read();
        slot.checked_sub(1)
            .and_then(|i| slots.views.get(i as usize))
            .cloned()
            .ok_or(FsError::Stale)
    }

    /// What kernel number `ino` designates. Fails with ESTALE for a number of a head
    /// generation from before a restore (or of an inode a path restore replaced), and for a
    /// snapshot view that is gone.
    pub fn resolve(&self, ino: KernelIno) -> FsResult<Node> {
        let (slot, low) = split(ino);
        if ino == ROOT || slot == self.slot_of_head(low) {
            return Ok(Node::Head(low));
        }
        let floor = self.gen_floor.load(Ordering::SeqCst);
        match slot {
            // A head generation from before a restore, or an inode a path restore replaced.
            0 => Err(FsError::Stale),
            s if floor != 0 && s >= floor && s <= FIRST_HEAD_SLOT => Err(FsError::Stale),
            SPECIAL_SLOT if ino == SNAPDIR_INO => Ok(Node::SnapDir),
            SPECIAL_SLOT => alias_slot(ino).map(Node::Alias).ok_or(FsError::NotFound),
            s => {
                let fs = self.view(s)?.fs;
                Ok(Node::Snap {
                    slot: s,
                    fs,
                    ino: low,
                })
            }
        }
    }

    fn snapshots(&self) -> FsResult<Vec<SnapshotInfo>> {
        self.head.store().snapshots(self.container())
    }

    fn snapshot_by_slot(&self, slot: u64) -> FsResult<SnapshotInfo> {
        let SnapView { name, epoch, .. } = self.view(slot)?;
        self.head
            .store()
            .find_snapshot(self.container(), &name)?
            .filter(|s| s.name == name && s.record.epoch == epoch)
            .ok_or(FsError::Stale)
    }

    /// The root of a snapshot view; its mtime is the snapshot's creation time.
    fn snap_root(&self, info: &SnapshotInfo) -> FsResult<(KernelIno, Inode)> {
        let slot = self.slot_of(info);
        let fs = self.view(slot)?.fs;
        let mut root = fs.getattr(ROOT_INO)?;
        root.mtime = info.record.created_at;
        Ok((kernel(slot, ROOT_INO), root))
    }

    fn in_snap(slot: u64, r: FsResult<(Ino, Inode)>) -> FsResult<(KernelIno, Inode)> {
        r.map(|(ino, i)| (kernel(slot, ino), i))
    }

    pub fn getattr(&self, ino: KernelIno) -> FsResult<Inode> {
        match self.resolve(ino)? {
            Node::Head(i) => self.head.getattr(i),
            Node::Snap { slot, fs, ino: i } => {
                if i == ROOT_INO {
                    let info = self.snapshot_by_slot(slot)?;
                    return self.snap_root(&info).map(|(_, a)| a);
                }
                fs.getattr(i)
            }
            Node::SnapDir => self.snapdir_attr(),
            Node::Alias(slot) => Ok(Self::alias_attr(&self.alias_of(slot)?)),
        }
    }

    pub fn lookup(&self, parent: KernelIno, name: &[u8]) -> FsResult<(KernelIno, Inode)> {
        match self.resolve(parent)? {
            Node::Head(p) => {
                if p == ROOT_INO && name == SNAPDIR_NAME {
                    return Ok((SNAPDIR_INO, self.snapdir_attr()?));
                }
                self.out_entry(self.head.lookup(p, name))
            }
            Node::Snap { slot, fs, ino: p } => {
                if p == ROOT_INO && name == b".." {
                    return Ok((SNAPDIR_INO, self.snapdir_attr()?));
                }
                Self::in_snap(slot, fs.lookup(p, name))
            }
            Node::SnapDir => match name {
                b"." => Ok((SNAPDIR_INO, self.snapdir_attr()?)),
                b".." => self.out_entry(self.head.lookup(ROOT_INO, b".")),
                _ => self.snapdir_lookup(name),
            },
            Node::Alias(_) => Err(FsError::NotDir),
        }
    }

    /// The tree and store inode behind `node`, if it is a head or snapshot-view inode;
    /// `None` for `.snapshots` and its alias symlinks, which have no tree behind them.
    pub fn tree<'a>(&'a self, node: &'a Node) -> Option<(&'a Fs, Ino)> {
        match node {
            Node::Head(i) => Some((&self.head, *i)),
            Node::Snap { fs, ino, .. } => Some((fs, *ino)),
            Node::SnapDir | Node::Alias(_) => None,
        }
    }

    /// The kernel number of head inode `ino` (of the current head generation, or the slot a
    /// path restore gave it).
    pub fn head_kernel_ino(&self, ino: Ino) -> KernelIno {
        self.out(ino)
    }

    /// The directory of a change made under `parent`: head only. Snapshot views answer
    /// EROFS, `.snapshots` EPERM (it has its own gestures), an alias ENOTDIR, and
    /// `.snapshots` at the root cannot be shadowed (EEXIST).
    pub fn head_dir(&self, parent: KernelIno, name: &[u8]) -> FsResult<Ino> {
        match self.resolve(parent)? {
            Node::Head(p) => {
                if p == ROOT_INO && name == SNAPDIR_NAME {
                    return Err(FsError::Exists);
                }
                Ok(p)
            }
            Node::Snap { .. } => Err(FsError::ReadOnly),
            Node::SnapDir => Err(FsError::Perm),
            Node::Alias(_) => Err(FsError::NotDir),
        }
    }

    /// The head inode a change to `ino` applies to: EROFS for anything else (snapshot views,
    /// `.snapshots` and its aliases), ESTALE for an old generation's number.
    pub fn head_ino(&self, ino: KernelIno) -> FsResult<Ino> {
        match self.resolve(ino)? {
            Node::Head(i) => Ok(i),
            _ => Err(FsError::ReadOnly),
        }
    }

    pub fn readlink(&self, ino: KernelIno) -> FsResult<Vec<u8>> {
        match self.resolve(ino)? {
            Node::Head(i) => self.head.readlink(i),
            Node::Snap { fs, ino: i, .. } => fs.readlink(i),
            Node::Alias(slot) => Ok(self.alias_of(slot)?.name.into_bytes()),
            Node::SnapDir => Err(FsError::Invalid("not a symlink")),
        }
    }

    /// `mkdir`; in `.snapshots` it takes a snapshot with alias `name`.
    pub fn mkdir(
        &self,
        parent: KernelIno,
        name: &[u8],
        mode: u32,
        caller: Caller,
    ) -> FsResult<(KernelIno, Inode)> {
        if parent == SNAPDIR_INO {
            self.may_manage(caller)?;
            let alias = name_str(name)?;
            if self.snapdir_lookup(name).is_ok() {
                return Err(FsError::Exists);
            }
            let info = self
                .container
                .snapshot(Some(alias), None)
                .map_err(store_err)?;
            return self.snap_root(&info);
        }
        let dir = self.head_dir(parent, name)?;
        self.out_entry(self.head.mkdir(dir, name, mode, caller))
    }

    /// `symlink`; in `.snapshots`, `ln -s NAME ALIAS` sets alias ALIAS on snapshot NAME.
    pub fn symlink(
        &self,
        parent: KernelIno,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<(KernelIno, Inode)> {
        if parent == SNAPDIR_INO {
            self.may_manage(caller)?;
            let alias = name_str(name)?;
            let target = name_str(target)?;
            if self.snapdir_lookup(name).is_ok() {
                return Err(FsError::Exists);
            }
            let snap = self.snapshot_named(target)?.ok_or(FsError::NotFound)?;
            let info = self
                .container
                .set_alias(&snap.name, Some(alias))
                .map_err(store_err)?;
            let slot = self.slot_of(&info);
            return Ok((alias_ino(slot), Self::alias_attr(&info)));
        }
        let dir = self.head_dir(parent, name)?;
        self.out_entry(self.head.symlink(dir, name, target, caller))
    }

    pub fn link(
        &self,
        ino: KernelIno,
        newparent: KernelIno,
        newname: &[u8],
    ) -> FsResult<(KernelIno, Inode)> {
        let dir = self.head_dir(newparent, newname)?;
        match self.resolve(ino)? {
            Node::Head(i) => self.out_entry(self.head.link(i, dir, newname)),
            _ => Err(FsError::CrossDevice),
        }
    }

    /// `unlink`; in `.snapshots` it drops an alias.
    pub fn unlink(&self, parent: KernelIno, name: &[u8], caller: Caller) -> FsResult<()> {
        match self.resolve(parent)? {
            Node::SnapDir => {
                self.may_manage(caller)?;
                let n = name_str(name).map_err(|_| FsError::NotFound)?;
                if self.snapshot_named(n)?.is_some() {
                    return Err(FsError::IsDir);
                }
                let s = self.snapshot_aliased(n)?.ok_or(FsError::NotFound)?;
                self.container.set_alias(&s.name, None).map_err(store_err)?;
                Ok(())
            }
            _ => self.head.unlink(self.head_dir(parent, name)?, name),
        }
    }

    /// `rmdir`; in `.snapshots` it deletes a snapshot.
    pub fn rmdir(&self, parent: KernelIno, name: &[u8], caller: Caller) -> FsResult<()> {
        match self.resolve(parent)? {
            Node::SnapDir => {
                self.may_manage(caller)?;
                let n = name_str(name).map_err(|_| FsError::NotFound)?;
                if self.snapshot_named(n)?.is_none() {
                    return Err(if self.snapshot_aliased(n)?.is_some() {
                        FsError::NotDir
                    } else {
                        FsError::NotFound
                    });
                }
                self.container
                    .delete_snapshot(n, false)
                    .map_err(store_err)?;
                Ok(())
            }
            Node::Head(p) if p == ROOT_INO && name == SNAPDIR_NAME => Err(FsError::Perm),
            _ => self.head.rmdir(self.head_dir(parent, name)?, name),
        }
    }

    /// `rename`; inside `.snapshots` it sets or renames aliases.
    pub fn rename(
        &self,
        parent: KernelIno,
        name: &[u8],
        newparent: KernelIno,
        newname: &[u8],
        flags: u32,
        caller: Caller,
    ) -> FsResult<()> {
        let (src, dst) = (self.resolve(parent)?, self.resolve(newparent)?);
        match (&src, &dst) {
            (Node::SnapDir, Node::SnapDir) => {
                self.may_manage(caller)?;
                self.snapdir_rename(name, newname, flags)
            }
            (Node::Head(p), Node::Head(np)) => {
                if (*p == ROOT_INO && name == SNAPDIR_NAME)
                    || (*np == ROOT_INO && newname == SNAPDIR_NAME)
                {
                    return Err(if *p == ROOT_INO && name == SNAPDIR_NAME {
                        FsError::Perm
                    } else {
                        FsError::Exists
                    });
                }
                self.head.rename(*p, name, *np, newname, flags)
            }
            (Node::Snap { slot: a, .. }, Node::Snap { slot: b, .. }) if a == b => {
                Err(FsError::ReadOnly)
            }
            _ => Err(FsError::CrossDevice),
        }
    }

    pub fn open(&self, ino: KernelIno, flags: i32) -> FsResult<Fh> {
        match self.resolve(ino)? {
            Node::Head(i) => self.head.open(i, flags),
            Node::Snap { fs, ino: i, .. } => fs.open(i, flags),
            Node::SnapDir => Err(FsError::IsDir),
            Node::Alias(_) => Err(FsError::Invalid("symlink")),
        }
    }

    pub fn opendir(&self, ino: KernelIno) -> FsResult<Fh> {
        match self.resolve(ino)? {
            Node::Head(i) => self.head.opendir(i),
            Node::Snap { fs, ino: i, .. } => fs.opendir(i),
            // `.snapshots` is listed from the catalog: no handle behind it.
            Node::SnapDir => Ok(Fh::new(0)),
            Node::Alias(_) => Err(FsError::NotDir),
        }
    }

    pub fn release(&self, ino: KernelIno, fh: Fh) -> FsResult<()> {
        match self.resolve(ino) {
            Ok(Node::Snap { fs, .. }) => fs.release(fh),
            // Handles of a head generation from before a restore live in the head too.
            Ok(Node::Head(_)) | Err(FsError::Stale) => self.head.release(fh),
            _ => Ok(()),
        }
    }

    /// May the kernel keep what it caches of `ino`, which was just opened, across opens
    /// (pages, listings)? Whatever opens is a head or snapshot-view file or directory
    /// (see `fuse::config::kernel_cache`), except `.snapshots`, whose entries also change
    /// through the API. No lookup: this runs on every open.
    pub fn kernel_cacheable(&self, ino: KernelIno) -> bool {
        ino != SNAPDIR_INO
    }

    pub fn getxattr(&self, ino: KernelIno, name: &[u8]) -> FsResult<Vec<u8>> {
        if let Some(key) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| n.strip_prefix(XATTR_PREFIX))
        {
            if let Some(info) = self.snap_root_info(ino)? {
                let size = self.head.store().epoch_size(info.record.epoch)?;
                return Self::snapshot_xattrs(&info, size)
                    .into_iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v)
                    .ok_or(FsError::NoData);
            }
        }
        match self.resolve(ino)? {
            Node::Head(i) => self.head.getxattr(i, name),
            Node::Snap { fs, ino: i, .. } => fs.getxattr(i, name),
            _ => Err(FsError::NoData),
        }
    }

    pub fn listxattr(&self, ino: KernelIno) -> FsResult<Vec<u8>> {
        let mut out = match self.resolve(ino)? {
            Node::Head(i) => self.head.listxattr(i)?,
            Node::Snap { fs, ino: i, .. } => fs.listxattr(i)?,
            _ => Vec::new(),
        };
        if let Some(info) = self.snap_root_info(ino)? {
            for (k, _) in Self::snapshot_xattrs(&info, 0) {
                out.extend_from_slice(XATTR_PREFIX.as_bytes());
                out.extend_from_slice(k.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(
        &self,
        ino: KernelIno,
        name: &[u8],
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> FsResult<()> {
        if let Some(info) = self.snap_root_info(ino)? {
            if name == b"user.snapfs.expires_at" {
                self.may_manage(caller)?;
                let text = std::str::from_utf8(value)
                    .map_err(|_| FsError::Invalid("expires_at must be RFC 3339"))?
                    .trim_end_matches('\0')
                    .trim();
                let at = if text.is_empty() {
                    None
                } else {
                    Some(
                        timefmt::parse_rfc3339(text)
                            .ok_or(FsError::Invalid("expires_at must be RFC 3339"))?,
                    )
                };
                self.container
                    .set_expiry(&info.name, at)
                    .map_err(store_err)?;
                return Ok(());
            }
        }
        self.head.setxattr(self.head_ino(ino)?, name, value, flags)
    }

    pub fn access(&self, ino: KernelIno, mask: i32, caller: Caller) -> FsResult<()> {
        const W_OK: i32 = 2;
        match self.resolve(ino)? {
            Node::Head(i) => self.head.access(i, mask, caller),
            Node::Snap { fs, ino: i, .. } => {
                if mask & W_OK != 0 {
                    return Err(FsError::ReadOnly);
                }
                fs.access(i, mask, caller)
            }
            _ => Ok(()),
        }
    }

    pub fn copy_file_range(
        &self,
        ino_in: KernelIno,
        off_in: u64,
        ino_out: KernelIno,
        off_out: u64,
        len: u64,
        kill_priv: bool,
    ) -> FsResult<u64> {
        let out = self.head_ino(ino_out)?;
        match self.resolve(ino_in)? {
            Node::Head(i) => self
                .head
                .copy_file_range(i, off_in, out, off_out, len, kill_priv),
            Node::Snap { fs, ino: i, .. } => {
                // Copy out of a snapshot into the head: read there, write here.
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(1 << 20) as u32;
                    let buf = fs.read(i, off_in.saturating_add(done), n)?;
                    if buf.is_empty() {
                        break;
                    }
                    self.head
                        .write(out, None, off_out.saturating_add(done), &buf, kill_priv)?;
                    done += buf.len() as u64;
                }
                Ok(done)
            }
            _ => Err(FsError::Invalid("not a file")),
        }
    }
}
