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

use crate::codec::{Inode, Kind};
use crate::error::{FsError, FsResult};
use crate::store::{SnapshotInfo, StoreError};
use crate::timefmt;

use super::{Caller, Container, DirEntry, Fh, Fs, MountHooks, SetAttr, Statfs, ROOT_INO};

mod kernel;
mod snapdir;

pub use kernel::{KernelDrops, KernelLink};

/// Name of the magic directory at a container's root.
pub const SNAPDIR_NAME: &[u8] = b".snapshots";
const SLOT_SHIFT: u32 = 48;
const LOW_MASK: u64 = (1 << SLOT_SHIFT) - 1;
const SPECIAL_SLOT: u64 = 0xffff;
/// The `.snapshots` directory.
pub const SNAPDIR_INO: u64 = (SPECIAL_SLOT << SLOT_SHIFT) | 1;
/// Alias symlinks: `ALIAS_BASE | slot`.
const ALIAS_BASE: u64 = (SPECIAL_SLOT << SLOT_SHIFT) | (1 << 32);
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
    by_epoch: HashMap<u64, u64>,
    views: Vec<(String, u64, Arc<Fs>)>,
}

/// What a kernel inode number designates.
enum Target {
    Head(u64),
    Snap(u64, Arc<Fs>, u64),
    SnapDir,
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
    renumbered: RwLock<HashMap<u64, u64>>,
    any_renumbered: AtomicBool,
    /// Requests to the kernel, through the mount adapter (a FUSE handler must never notify
    /// the kernel itself).
    kernel: parking_lot::Mutex<Option<Arc<dyn KernelLink>>>,
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
        let volume = Arc::new(Volume {
            head: container.head()?,
            container: container.clone(),
            opts,
            slots: RwLock::new(Slots::default()),
            head_slot: AtomicU64::new(0),
            gen_floor: AtomicU64::new(0),
            renumbered: RwLock::new(HashMap::new()),
            any_renumbered: AtomicBool::new(false),
            kernel: parking_lot::Mutex::new(None),
        });
        let hooks: Arc<dyn MountHooks> = volume.clone();
        container.attach(Arc::downgrade(&hooks));
        Ok(volume)
    }

    /// Names in the root directory of the head.
    fn root_names(&self) -> Vec<Vec<u8>> {
        let fs = &self.head;
        let Ok(fh) = fs.opendir(ROOT_INO) else {
            return Vec::new();
        };
        let names = fs
            .readdir(ROOT_INO, fh, 0)
            .map(|v| v.iter().skip(2).map(|e| e.name.clone()).collect())
            .unwrap_or_default();
        fs.releasedir(fh);
        names
    }

    /// Kernel inode number of head inode `ino`.
    fn out(&self, ino: u64) -> u64 {
        if ino == ROOT_INO {
            ino
        } else {
            (self.slot_of_head(ino) << SLOT_SHIFT) | ino
        }
    }

    /// The slot head inode `ino` has now: the head generation's, or its own after a path
    /// restore replaced it.
    fn slot_of_head(&self, ino: u64) -> u64 {
        if self.any_renumbered.load(Ordering::SeqCst) {
            if let Some(s) = self.renumbered.read().get(&ino) {
                return *s;
            }
        }
        self.head_slot.load(Ordering::SeqCst)
    }

    fn out_entry(&self, r: FsResult<(u64, Inode)>) -> FsResult<(u64, Inode)> {
        r.map(|(ino, i)| (self.out(ino), i))
    }

    pub fn head(&self) -> &Fs {
        &self.head
    }

    pub fn block_size(&self) -> u32 {
        self.head.block_size()
    }

    /// Entries of `.snapshots` must not be cached: aliases move under the kernel's feet.
    pub fn is_snapdir(&self, ino: u64) -> bool {
        ino == SNAPDIR_INO
    }

    /// Snapshot views never change: their attributes may be cached for long.
    pub fn is_frozen(&self, ino: u64) -> bool {
        let slot = ino >> SLOT_SHIFT;
        slot != 0 && slot != SPECIAL_SLOT
    }

    fn container(&self) -> &[u8] {
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
        slots.views.push((info.name.clone(), epoch, fs));
        let slot = slots.views.len() as u64;
        slots.by_epoch.insert(epoch, slot);
        slot
    }

    fn view(&self, slot: u64) -> FsResult<(String, u64, Arc<Fs>)> {
        let slots = self.slots.read();
        slot.checked_sub(1)
            .and_then(|i| slots.views.get(i as usize))
            .cloned()
            .ok_or(FsError::Stale)
    }

    fn target(&self, ino: u64) -> FsResult<Target> {
        let slot = ino >> SLOT_SHIFT;
        let low = ino & LOW_MASK;
        if ino == ROOT_INO || slot == self.slot_of_head(low) {
            return Ok(Target::Head(low));
        }
        let floor = self.gen_floor.load(Ordering::SeqCst);
        match slot {
            // A head generation from before a restore, or an inode a path restore replaced.
            0 => Err(FsError::Stale),
            s if floor != 0 && s >= floor && s <= FIRST_HEAD_SLOT => Err(FsError::Stale),
            SPECIAL_SLOT if ino == SNAPDIR_INO => Ok(Target::SnapDir),
            SPECIAL_SLOT if ino & !0xffff == ALIAS_BASE => Ok(Target::Alias(ino & 0xffff)),
            SPECIAL_SLOT => Err(FsError::NotFound),
            s => {
                let (_, _, fs) = self.view(s)?;
                Ok(Target::Snap(s, fs, low))
            }
        }
    }

    fn snapshots(&self) -> FsResult<Vec<SnapshotInfo>> {
        self.head.store().snapshots(self.container())
    }

    fn snapshot_by_slot(&self, slot: u64) -> FsResult<SnapshotInfo> {
        let (name, epoch, _) = self.view(slot)?;
        self.head
            .store()
            .find_snapshot(self.container(), &name)?
            .filter(|s| s.name == name && s.record.epoch == epoch)
            .ok_or(FsError::Stale)
    }

    /// The root of a snapshot view; its mtime is the snapshot's creation time.
    fn snap_root(&self, info: &SnapshotInfo) -> FsResult<(u64, Inode)> {
        let slot = self.slot_of(info);
        let (_, _, fs) = self.view(slot)?;
        let mut root = fs.getattr(ROOT_INO)?;
        root.mtime = info.record.created_at;
        Ok(((slot << SLOT_SHIFT) | ROOT_INO, root))
    }

    fn in_snap(slot: u64, r: FsResult<(u64, Inode)>) -> FsResult<(u64, Inode)> {
        r.map(|(ino, i)| ((slot << SLOT_SHIFT) | ino, i))
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Inode> {
        match self.target(ino)? {
            Target::Head(i) => self.head.getattr(i),
            Target::Snap(slot, fs, i) => {
                if i == ROOT_INO {
                    let info = self.snapshot_by_slot(slot)?;
                    return self.snap_root(&info).map(|(_, a)| a);
                }
                fs.getattr(i)
            }
            Target::SnapDir => self.snapdir_attr(),
            Target::Alias(slot) => Ok(Self::alias_attr(&self.alias_of(slot)?)),
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<(u64, Inode)> {
        match self.target(parent)? {
            Target::Head(p) => {
                if p == ROOT_INO && name == SNAPDIR_NAME {
                    return Ok((SNAPDIR_INO, self.snapdir_attr()?));
                }
                self.out_entry(self.head.lookup(p, name))
            }
            Target::Snap(slot, fs, p) => {
                if p == ROOT_INO && name == b".." {
                    return Ok((SNAPDIR_INO, self.snapdir_attr()?));
                }
                Self::in_snap(slot, fs.lookup(p, name))
            }
            Target::SnapDir => match name {
                b"." => Ok((SNAPDIR_INO, self.snapdir_attr()?)),
                b".." => self.out_entry(self.head.lookup(ROOT_INO, b".")),
                _ => self.snapdir_lookup(name),
            },
            Target::Alias(_) => Err(FsError::NotDir),
        }
    }

    /// A mutation in a directory: head only (snapshot views are read-only; `.snapshots`
    /// itself has its own gestures). Refuses to shadow `.snapshots` at the root.
    fn head_dir(&self, parent: u64, name: &[u8]) -> FsResult<u64> {
        match self.target(parent)? {
            Target::Head(p) => {
                if p == ROOT_INO && name == SNAPDIR_NAME {
                    return Err(FsError::Exists);
                }
                Ok(p)
            }
            Target::Snap(..) => Err(FsError::ReadOnly),
            Target::SnapDir => Err(FsError::Perm),
            Target::Alias(_) => Err(FsError::NotDir),
        }
    }

    fn head_ino(&self, ino: u64) -> FsResult<u64> {
        match self.target(ino)? {
            Target::Head(i) => Ok(i),
            _ => Err(FsError::ReadOnly),
        }
    }

    pub fn setattr(&self, ino: u64, set: &SetAttr, caller: Caller) -> FsResult<Inode> {
        self.head.setattr(self.head_ino(ino)?, set, caller)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match self.target(ino)? {
            Target::Head(i) => self.head.readlink(i),
            Target::Snap(_, fs, i) => fs.readlink(i),
            Target::Alias(slot) => Ok(self.alias_of(slot)?.name.into_bytes()),
            Target::SnapDir => Err(FsError::Invalid("not a symlink")),
        }
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<(u64, Inode)> {
        let dir = self.head_dir(parent, name)?;
        self.out_entry(self.head.mknod(dir, name, mode, rdev, caller))
    }

    /// `mkdir`; in `.snapshots` it takes a snapshot with alias `name`.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        caller: Caller,
    ) -> FsResult<(u64, Inode)> {
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
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<(u64, Inode)> {
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
            return Ok((ALIAS_BASE | slot, Self::alias_attr(&info)));
        }
        let dir = self.head_dir(parent, name)?;
        self.out_entry(self.head.symlink(dir, name, target, caller))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(u64, Inode, Fh)> {
        let dir = self.head_dir(parent, name)?;
        let (ino, attr, fh) = self.head.create(dir, name, mode, flags, caller)?;
        Ok((self.out(ino), attr, fh))
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<(u64, Inode)> {
        let dir = self.head_dir(newparent, newname)?;
        match self.target(ino)? {
            Target::Head(i) => self.out_entry(self.head.link(i, dir, newname)),
            _ => Err(FsError::CrossDevice),
        }
    }

    /// `unlink`; in `.snapshots` it drops an alias.
    pub fn unlink(&self, parent: u64, name: &[u8], caller: Caller) -> FsResult<()> {
        match self.target(parent)? {
            Target::SnapDir => {
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
    pub fn rmdir(&self, parent: u64, name: &[u8], caller: Caller) -> FsResult<()> {
        match self.target(parent)? {
            Target::SnapDir => {
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
            Target::Head(p) if p == ROOT_INO && name == SNAPDIR_NAME => Err(FsError::Perm),
            _ => self.head.rmdir(self.head_dir(parent, name)?, name),
        }
    }

    /// `rename`; inside `.snapshots` it sets or renames aliases.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        caller: Caller,
    ) -> FsResult<()> {
        let (src, dst) = (self.target(parent)?, self.target(newparent)?);
        match (&src, &dst) {
            (Target::SnapDir, Target::SnapDir) => {
                self.may_manage(caller)?;
                self.snapdir_rename(name, newname, flags)
            }
            (Target::Head(p), Target::Head(np)) => {
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
            (Target::Snap(a, ..), Target::Snap(b, ..)) if a == b => Err(FsError::ReadOnly),
            _ => Err(FsError::CrossDevice),
        }
    }

    pub fn open(&self, ino: u64, flags: i32) -> FsResult<Fh> {
        match self.target(ino)? {
            Target::Head(i) => self.head.open(i, flags),
            Target::Snap(_, fs, i) => fs.open(i, flags),
            Target::SnapDir => Err(FsError::IsDir),
            Target::Alias(_) => Err(FsError::Invalid("symlink")),
        }
    }

    pub fn release(&self, ino: u64, fh: Fh) -> FsResult<()> {
        match self.target(ino) {
            Ok(Target::Snap(_, fs, _)) => fs.release(fh),
            // Handles of a head generation from before a restore live in the head too.
            Ok(Target::Head(_)) | Err(FsError::Stale) => self.head.release(fh),
            _ => Ok(()),
        }
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match self.target(ino)? {
            Target::Head(i) => self.head.read(i, offset, size),
            Target::Snap(_, fs, i) => fs.read(i, offset, size),
            _ => Err(FsError::IsDir),
        }
    }

    pub fn write(
        &self,
        ino: u64,
        fh: Fh,
        offset: u64,
        data: &[u8],
        kill_priv: bool,
    ) -> FsResult<u32> {
        self.head
            .write(self.head_ino(ino)?, Some(fh), offset, data, kill_priv)
    }

    pub fn fsync(&self) -> FsResult<()> {
        self.head.fsync()
    }

    /// May the kernel keep what it caches of `ino`, which was just opened, across opens
    /// (pages, listings)? Whatever opens is a head or snapshot-view file or directory
    /// (see `fuse::session::kernel_cache`), except `.snapshots`, whose entries also change
    /// through the API. No lookup: this runs on every open.
    pub fn kernel_cacheable(&self, ino: u64) -> bool {
        ino != SNAPDIR_INO
    }

    pub fn opendir(&self, ino: u64) -> FsResult<Fh> {
        match self.target(ino)? {
            Target::Head(i) => self.head.opendir(i),
            Target::Snap(_, fs, i) => fs.opendir(i),
            Target::SnapDir => Ok(Fh(0)),
            Target::Alias(_) => Err(FsError::NotDir),
        }
    }

    /// Directory entries from `offset`, with kernel inode numbers.
    pub fn readdir(&self, ino: u64, fh: Fh, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        match self.target(ino)? {
            Target::Head(i) => {
                let entries = self.head.readdir(i, fh, offset)?;
                let plain = i != ROOT_INO || !self.opts.snapdir_visible;
                if plain
                    && self.head_slot.load(Ordering::SeqCst) == 0
                    && !self.any_renumbered.load(Ordering::SeqCst)
                {
                    return Ok(entries); // kernel numbers equal store numbers
                }
                let mut v: Vec<DirEntry> = entries
                    .iter()
                    .map(|e| DirEntry {
                        ino: self.out(e.ino),
                        ..e.clone()
                    })
                    .collect();
                if plain {
                    return Ok(Arc::new(v));
                }
                v.push(DirEntry {
                    ino: SNAPDIR_INO,
                    kind: Kind::Dir,
                    name: SNAPDIR_NAME.to_vec(),
                    offset: 0,
                });
                renumber(&mut v);
                Ok(Arc::new(v))
            }
            Target::Snap(slot, fs, i) => {
                let entries = fs.readdir(i, fh, offset)?;
                let v = entries
                    .iter()
                    .map(|e| {
                        let ino = if i == ROOT_INO && e.name == b".." {
                            SNAPDIR_INO
                        } else {
                            (slot << SLOT_SHIFT) | e.ino
                        };
                        DirEntry { ino, ..e.clone() }
                    })
                    .collect();
                Ok(Arc::new(v))
            }
            Target::SnapDir => {
                let mut v = vec![
                    DirEntry {
                        ino: SNAPDIR_INO,
                        kind: Kind::Dir,
                        name: b".".to_vec(),
                        offset: 0,
                    },
                    DirEntry {
                        ino: ROOT_INO,
                        kind: Kind::Dir,
                        name: b"..".to_vec(),
                        offset: 0,
                    },
                ];
                for s in self.snapshots()? {
                    let slot = self.slot_of(&s);
                    v.push(DirEntry {
                        ino: (slot << SLOT_SHIFT) | ROOT_INO,
                        kind: Kind::Dir,
                        name: s.name.clone().into_bytes(),
                        offset: 0,
                    });
                    if let Some(a) = &s.record.alias {
                        v.push(DirEntry {
                            ino: ALIAS_BASE | slot,
                            kind: Kind::Symlink,
                            name: a.clone().into_bytes(),
                            offset: 0,
                        });
                    }
                }
                renumber(&mut v);
                Ok(Arc::new(v))
            }
            Target::Alias(_) => Err(FsError::NotDir),
        }
    }

    pub fn releasedir(&self, ino: u64, fh: Fh) {
        match self.target(ino) {
            Ok(Target::Head(_)) => self.head.releasedir(fh),
            Ok(Target::Snap(_, fs, _)) => fs.releasedir(fh),
            _ => {}
        }
    }

    pub fn statfs(&self) -> FsResult<Statfs> {
        self.head.statfs()
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
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
        match self.target(ino)? {
            Target::Head(i) => self.head.getxattr(i, name),
            Target::Snap(_, fs, i) => fs.getxattr(i, name),
            _ => Err(FsError::NoData),
        }
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut out = match self.target(ino)? {
            Target::Head(i) => self.head.listxattr(i)?,
            Target::Snap(_, fs, i) => fs.listxattr(i)?,
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
        ino: u64,
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

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.head.removexattr(self.head_ino(ino)?, name)
    }

    pub fn access(&self, ino: u64, mask: i32, caller: Caller) -> FsResult<()> {
        const W_OK: i32 = 2;
        match self.target(ino)? {
            Target::Head(i) => self.head.access(i, mask, caller),
            Target::Snap(_, fs, i) => {
                if mask & W_OK != 0 {
                    return Err(FsError::ReadOnly);
                }
                fs.access(i, mask, caller)
            }
            _ => Ok(()),
        }
    }

    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        kill_priv: bool,
    ) -> FsResult<()> {
        self.head
            .fallocate(self.head_ino(ino)?, offset, len, mode, kill_priv)
    }

    pub fn lseek(&self, ino: u64, offset: u64, whence: i32) -> FsResult<u64> {
        match self.target(ino)? {
            Target::Head(i) => self.head.lseek(i, offset, whence),
            Target::Snap(_, fs, i) => fs.lseek(i, offset, whence),
            _ => Err(FsError::Invalid("not a file")),
        }
    }

    pub fn copy_file_range(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
        kill_priv: bool,
    ) -> FsResult<u64> {
        let out = self.head_ino(ino_out)?;
        match self.target(ino_in)? {
            Target::Head(i) => self
                .head
                .copy_file_range(i, off_in, out, off_out, len, kill_priv),
            Target::Snap(_, fs, i) => {
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

/// Gives synthetic listings their stable offsets (each names the next entry).
fn renumber(v: &mut [DirEntry]) {
    for (i, e) in v.iter_mut().enumerate() {
        e.offset = i as u64 + 1;
    }
}
