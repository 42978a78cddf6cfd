//! The filesystem core: POSIX semantics over one view of a container. No FUSE types here; the
//! adapter in `fuse/` converts and calls these methods.
//!
//! Every mutating operation takes the store's write lock, builds one [`Batch`] and writes it
//! atomically. Reads resolve, for each key, the newest version in the view's epoch chain.

mod container;
mod data;
mod diff;
mod dir;
mod history;
mod journal;
mod node;
mod repair;
mod restore;
mod volume;
mod xattr;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::codec::{self, Dirent, Inode, Kind, Ts};
use crate::error::{FsError, FsResult};
use crate::ids::{ContainerId, DataId, Epoch, Ino};
use crate::keys;
use crate::kv::{Batch, Dir, KvRead, Space};
use crate::store::{self, resolve, scan_visible, Chain, Store};

pub use container::{Container, MountHooks};
pub use diff::{Change, ChangeKind, Side, TreeSwitch};
pub use dir::DirEntry;
pub use history::{components, PathChange};
pub use journal::{HandleKind, HandleRecord, MountJournal, RestoreIntent, Resumed};
pub use node::{SetAttr, TimeSet};
pub use repair::Fix;
pub use restore::PathRestore;
pub use volume::{
    KernelDrops, KernelLink, Listed, Listing, Node, Volume, VolumeOptions, ROOT_KERNEL_INO,
    SNAPDIR_INO, SNAPDIR_NAME,
};

pub use crate::store::ROOT_INO;

/// Longest file name accepted, in bytes.
pub use crate::keys::NAME_MAX;
/// Longest symlink target, in bytes (PATH_MAX less the NUL).
pub const SYMLINK_MAX: usize = 4095;
/// Largest file size (offsets past it get EFBIG): the kernel's own limit for FUSE files
/// (`MAX_LFS_FILESIZE`). It must be the same: with the writeback cache the kernel accepts
/// writes up to its limit before the daemon sees them, and a smaller limit here would turn
/// such writes into data lost at writeback.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Largest xattr value (Linux XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 65536;

/// Who is asking (from the kernel request).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller { uid: 0, gid: 0 };
}

/// Filesystem statistics for `statfs`.
#[derive(Debug, Clone, Copy)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// An open file or directory of one view (see [`crate::ids::Fh`]): a type of its own because
/// the calls that take it also take inode numbers and offsets.
pub use crate::ids::Fh;

enum Handle {
    File {
        ino: Ino,
        append: bool,
        /// Opened for writing (the kernel may hold cached writes for it).
        write: bool,
    },
    Dir {
        ino: Ino,
        entries: Option<Arc<Vec<DirEntry>>>,
    },
}

/// The open handles of one view. Whether an inode is still open and whether it was unlinked
/// while open are decided under this one lock, so that exactly one of `unlink` and the last
/// `release` frees an inode: unlink frees it if nothing has it open, else records it in
/// `orphans`; a release that closes the last handle frees it only if it is there. The common
/// close (of a linked file) therefore never takes the store's write lock.
#[derive(Default)]
struct Handles {
    map: HashMap<Fh, Handle>,
    /// Open file handles per inode (an unlinked inode lives until its count drops to zero).
    open: HashMap<Ino, u32>,
    /// Inodes unlinked (nlink 0) while open: their last release frees them.
    orphans: HashSet<Ino>,
}

/// Which tree an [`Fs`] shows.
enum View {
    /// The container's live, writable head (follows snapshots and restores).
    Head,
    /// A frozen epoch (a snapshot), read-only.
    Frozen(Arc<Chain>),
}

/// One view of a container: its head, or a snapshot.
pub struct Fs {
    store: Arc<Store>,
    container: ContainerId,
    view: View,
    handles: Mutex<Handles>,
    next_fh: AtomicU64,
    /// Where handles are recorded for a daemon that takes the mount over, and this view's
    /// slot in it (set once, before the view serves anything).
    journal: std::sync::OnceLock<(Arc<dyn MountJournal>, u64)>,
}

/// A write transaction: holds the store's write lock and collects one atomic batch.
struct Tx<'a> {
    fs: &'a Fs,
    chain: Arc<Chain>,
    batch: Batch,
    /// Bytes of versions this batch physically drops (for the store's garbage account).
    dropped: u64,
    /// File data bytes (`alloc`) of each inode this batch writes: (before, after), for the
    /// container's usage and quota.
    allocs: HashMap<Ino, (u64, u64)>,
    /// Ids allocated by this batch: nothing under them exists yet, in any epoch, so what
    /// it writes under them replaces nothing (no read needed to know it).
    fresh: Vec<u64>,
    _guard: parking_lot::MutexGuard<'a, ()>,
}

impl Tx<'_> {
    fn epoch(&self) -> Epoch {
        self.chain.epoch
    }

    fn inode(&self, ino: Ino) -> FsResult<Inode> {
        self.fs.inode_in(&self.chain, ino)
    }

    fn put_inode(&mut self, ino: Ino, inode: &Inode) {
        let alloc = if inode.kind == Kind::File {
            inode.alloc
        } else {
            0
        };
        self.note_alloc(ino, alloc);
        let e = self.epoch();
        store::put_version(
            &mut self.batch,
            Space::Meta,
            &keys::inode(ino),
            e,
            codec::encode_live(inode),
        );
    }

    /// Records that inode `ino` now holds `alloc` bytes of file data (0: freed), against
    /// what it held before this batch (read once, through the cache).
    fn note_alloc(&mut self, ino: Ino, alloc: u64) {
        if let Some(e) = self.allocs.get_mut(&ino) {
            e.1 = alloc;
            return;
        }
        let before = if self.fresh.contains(&ino.get()) {
            0
        } else {
            match self.inode(ino) {
                Ok(i) if i.kind == Kind::File => i.alloc,
                _ => 0,
            }
        };
        self.allocs.insert(ino, (before, alloc));
    }

    /// Deletes inode `ino` in this head (a tombstone version).
    fn tombstone_inode(&mut self, ino: Ino) {
        self.note_alloc(ino, 0);
        let e = self.epoch();
        store::put_version(
            &mut self.batch,
            Space::Meta,
            &keys::inode(ino),
            e,
            codec::tombstone(),
        );
    }

    fn dirent(&self, parent: Ino, name: &[u8]) -> FsResult<Option<Dirent>> {
        self.fs.dirent_in(&self.chain, parent, name)
    }

    /// Points entry `name` of `parent` at `d`; `prev` is the inode the entry named before
    /// (None for a new name). Keeps the back links (`keys::link`) in the same batch.
    fn put_dirent(&mut self, parent: Ino, name: &[u8], d: Dirent, prev: Option<Ino>) {
        let e = self.epoch();
        store::put_version(
            &mut self.batch,
            Space::Meta,
            &keys::dirent(parent, name),
            e,
            codec::encode_live(&d),
        );
        if prev == Some(d.ino) {
            return;
        }
        if let Some(old) = prev {
            self.put_link(old, parent, name, false);
        }
        self.put_link(d.ino, parent, name, true);
    }

    /// Removes entry `name` of `parent`, which names inode `ino`.
    fn del_dirent(&mut self, parent: Ino, name: &[u8], ino: Ino) {
        let e = self.epoch();
        store::put_version(
            &mut self.batch,
            Space::Meta,
            &keys::dirent(parent, name),
            e,
            codec::tombstone(),
        );
        self.put_link(ino, parent, name, false);
    }

    fn put_link(&mut self, ino: Ino, parent: Ino, name: &[u8], live: bool) {
        let e = self.epoch();
        let value = if live {
            codec::encode_live(&())
        } else {
            codec::tombstone()
        };
        store::put_version(
            &mut self.batch,
            Space::Meta,
            &keys::link(ino, parent, name),
            e,
            value,
        );
    }

    /// Drops this head's own blocks of `data_id` and records that the data id is dead from
    /// this epoch down (so reclaim knows older epochs' blocks of it are shadowed).
    fn drop_data(&mut self, data_id: DataId) -> FsResult<()> {
        self.drop_own(Space::Data, &keys::block_prefix(data_id))?;
        let e = self.epoch();
        store::put_version(
            &mut self.batch,
            Space::Meta,
            &keys::data_gone(data_id),
            e,
            codec::encode_live(&()),
        );
        Ok(())
    }

    /// A fresh inode number (inodes and data ids share one counter: never reused).
    fn alloc_ino(&mut self) -> Ino {
        Ino::new(self.alloc_id())
    }

    /// A fresh data id.
    fn alloc_data_id(&mut self) -> DataId {
        DataId::new(self.alloc_id())
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.fs.store.alloc_id(&mut self.batch);
        self.fresh.push(id);
        id
    }

    /// Physically drops this head epoch's own versions of every key under `prefix` (found
    /// through the change index). Only for keys no view can reach any more.
    fn drop_own(&mut self, space: Space, prefix: &[u8]) -> FsResult<()> {
        let e = self.epoch();
        let start = keys::change(e, space, prefix);
        let end = crate::kv::prefix_end(&start);
        let mut bases = Vec::new();
        let mut bytes = 0u64;
        self.fs
            .store
            .kv()
            .scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, v| {
                if let Some((_, _, base)) = keys::split_change(k) {
                    bases.push(base.to_vec());
                    bytes += <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes);
                }
                true
            })?;
        self.dropped += bytes;
        for base in bases {
            store::drop_version(&mut self.batch, space, &base, e);
        }
        Ok(())
    }

    fn commit(self) -> FsResult<()> {
        self.commit_with(false)
    }

    /// Commits and waits until the batch is durable (for changes made through the API).
    fn commit_durable(self) -> FsResult<()> {
        self.commit_with(true)
    }

    fn commit_with(mut self, sync: bool) -> FsResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let store = &self.fs.store;
        let epoch = self.chain.epoch;
        let container = &self.fs.container;
        // Usage and quotas: what this batch adds is checked before anything is written.
        let delta: i64 = self
            .allocs
            .values()
            .map(|&(before, after)| after as i64 - before as i64)
            .sum();
        let usage = if delta != 0 {
            let before = store.usage(epoch)?;
            let after = (before as i64 + delta).max(0) as u64;
            store.put_usage(&mut self.batch, epoch, after);
            Some((before, after))
        } else {
            None
        };
        let quota = store.quota(container)?;
        // The head's own size: kept when a limit needs it or once someone asked for it
        // (the containerd snapshotter's Usage, `df`, the metrics, a container's bytes
        // used); else forgotten (`note_size`).
        let size_delta = if quota.including_snapshots.is_some() || store.own_known(epoch) {
            Some(store.size_delta(epoch, self.batch.ops(), &self.fresh)?)
        } else {
            None
        };
        store.check_quota(container, &quota, usage, size_delta.map(|d| d.bytes))?;
        // What the caches and the drop account read after the write: everything but the
        // file data (cloning the blocks would copy every byte written once more).
        let ops: Vec<_> = self
            .batch
            .ops()
            .iter()
            .filter(|op| !matches!(op, crate::kv::BatchOp::Put(Space::Data, ..)))
            .cloned()
            .collect();
        match store.kv().write(self.batch, sync) {
            Ok(()) => {
                if let Some((_, after)) = usage {
                    store.note_usage(epoch, after);
                }
                store.note_size(epoch, size_delta);
                // Lookups in a new directory and of a new file's attributes (the kernel asks
                // for `security.capability` before every write) are answered from the cache.
                store.cache_commit(epoch, &ops, &self.fresh);
                if self.dropped > 0 {
                    store.note_drops(&ops, self.dropped);
                }
                Ok(())
            }
            Err(e) => {
                store.cache_bump();
                Err(e.into())
            }
        }
    }
}

pub fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if !keys::valid_name(name) {
        return Err(FsError::Invalid("bad file name"));
    }
    Ok(())
}

/// Like [`scan_visible`], for codec values: calls `f(base, value)` for every visible live
/// version (tombstones skipped) until it returns false; a value that does not decode ends
/// the scan with its error.
fn scan_live<T: serde::de::DeserializeOwned>(
    r: &dyn KvRead,
    start: &[u8],
    end: &[u8],
    chain: &Chain,
    f: &mut dyn FnMut(&[u8], T) -> bool,
) -> FsResult<()> {
    let mut err = None;
    scan_visible(
        r,
        Space::Meta,
        start,
        end,
        chain,
        &mut |base, v| match codec::decode::<T>(v) {
            Ok(codec::Version::Live(value)) => f(base, value),
            Ok(codec::Version::Tombstone) => true,
            Err(e) => {
                err = Some(FsError::from(e));
                false
            }
        },
    )?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn now() -> Ts {
    Ts::now()
}

impl Fs {
    /// Opens the head view of `container`, freeing inodes a crash left unlinked but open.
    pub fn new(store: Arc<Store>, container: &ContainerId) -> FsResult<Fs> {
        let fs = Self::head_unchanged(store, container)?;
        fs.purge_orphans()?;
        Ok(fs)
    }

    /// Opens the head view of `container` without writing anything (for checks: orphans
    /// stay until the next real open).
    pub fn head_unchanged(store: Arc<Store>, container: &ContainerId) -> FsResult<Fs> {
        store.head(container)?;
        Ok(Fs {
            store,
            container: container.clone(),
            view: View::Head,
            handles: Mutex::new(Handles::default()),
            next_fh: AtomicU64::new(1),
            journal: std::sync::OnceLock::new(),
        })
    }

    /// A read-only view of the frozen tree `chain` of `container`.
    pub fn frozen(store: Arc<Store>, container: &ContainerId, chain: Arc<Chain>) -> Fs {
        Fs {
            store,
            container: container.clone(),
            view: View::Frozen(chain),
            handles: Mutex::new(Handles::default()),
            next_fh: AtomicU64::new(1),
            journal: std::sync::OnceLock::new(),
        }
    }

    /// Is this the writable head?
    pub fn is_head(&self) -> bool {
        matches!(self.view, View::Head)
    }

    /// How many file handles are open.
    pub fn open_handles(&self) -> usize {
        self.handles.lock().open.values().map(|&n| n as usize).sum()
    }

    /// Store inode numbers that have open file handles.
    pub fn open_inodes(&self) -> Vec<Ino> {
        self.handles.lock().open.keys().copied().collect()
    }

    /// Store inode numbers that have a file handle open for writing.
    pub fn open_writable_inodes(&self) -> Vec<Ino> {
        let mut v: Vec<Ino> = self
            .handles
            .lock()
            .map
            .values()
            .filter_map(|h| match h {
                Handle::File {
                    ino, write: true, ..
                } => Some(*ino),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn container(&self) -> &ContainerId {
        &self.container
    }

    pub fn block_size(&self) -> u32 {
        self.store.block_size()
    }

    /// The epoch chain of the container's current head (changes on snapshot and restore).
    fn chain(&self) -> FsResult<Arc<Chain>> {
        match &self.view {
            View::Head => self.store.head(&self.container),
            View::Frozen(chain) => {
                // A deleted snapshot's epoch is retired: never serve its data again.
                match self.store.epoch(chain.epoch).map(|r| r.kind) {
                    Some(crate::store::EpochKind::Frozen) => Ok(chain.clone()),
                    _ => Err(FsError::Stale),
                }
            }
        }
    }

    fn begin(&self) -> FsResult<Tx<'_>> {
        if !self.is_head() {
            return Err(FsError::ReadOnly);
        }
        let guard = self.store.write_lock();
        Ok(Tx {
            fs: self,
            chain: self.chain()?,
            batch: Batch::new(),
            dropped: 0,
            allocs: HashMap::new(),
            fresh: Vec::new(),
            _guard: guard,
        })
    }

    /// `resolve` of a metadata key through the store's cache.
    fn resolve_meta(&self, base: &[u8], chain: &Chain) -> FsResult<Option<Vec<u8>>> {
        match self.store.cache_get(chain.epoch, base) {
            Ok(v) => Ok(v),
            Err(generation) => {
                let v = resolve(self.store.kv(), Space::Meta, base, chain)?;
                self.store
                    .cache_insert(generation, chain.epoch, base, v.clone());
                Ok(v)
            }
        }
    }

    fn inode_in(&self, chain: &Chain, ino: Ino) -> FsResult<Inode> {
        match self.resolve_meta(&keys::inode(ino), chain)? {
            None => Err(FsError::NotFound),
            Some(v) => codec::decode::<Inode>(&v)?.live().ok_or(FsError::NotFound),
        }
    }

    fn dirent_in(&self, chain: &Chain, parent: Ino, name: &[u8]) -> FsResult<Option<Dirent>> {
        match self.resolve_meta(&keys::dirent(parent, name), chain)? {
            None => Ok(None),
            Some(v) => Ok(codec::decode::<Dirent>(&v)?.live()),
        }
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> FsResult<Inode> {
        self.inode_in(&*self.chain()?, ino)
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<(Ino, Inode)> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let chain = self.chain()?;
        let dir = self.inode_in(&chain, parent)?;
        if dir.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if name == b"." {
            return Ok((parent, dir));
        }
        if name == b".." {
            let p = dir.parent;
            return Ok((p, self.inode_in(&chain, p)?));
        }
        let d = self
            .dirent_in(&chain, parent, name)?
            .ok_or(FsError::NotFound)?;
        Ok((d.ino, self.inode_in(&chain, d.ino)?))
    }

    /// Makes every write so far durable.
    pub fn fsync(&self) -> FsResult<()> {
        self.store.kv().sync()?;
        Ok(())
    }

    pub fn statfs(&self) -> FsResult<Statfs> {
        let bsize = self.block_size();
        let disk = self.store.kv().maintenance();
        let (blocks, bfree, bavail) = match disk.and_then(|m| m.path()) {
            Some(p) => match nix::sys::statvfs::statvfs(p) {
                Ok(s) => {
                    // What file data can still use: the device's free space less the
                    // backend's reserve (writes are refused below it).
                    let frag = s.fragment_size().max(1) as u128;
                    let reserve = disk.map_or(0, |m| m.reserve_bytes()) as u128;
                    let scale = |n: u64| {
                        ((n as u128 * frag).saturating_sub(reserve) / bsize as u128) as u64
                    };
                    (
                        (s.blocks() as u128 * frag / bsize as u128) as u64,
                        scale(s.blocks_free()),
                        scale(s.blocks_available()),
                    )
                }
                Err(e) => return Err(FsError::Io(format!("statvfs: {e}"))),
            },
            None => {
                let total = (1u64 << 40) / bsize as u64;
                (total, total, total)
            }
        };
        // A container with a quota looks like a disk of the quota's size.
        let (blocks, bfree, bavail) = match self
            .store
            .quota_room(&self.container, self.chain()?.epoch)?
        {
            Some((used, limit)) => {
                let room = limit.saturating_sub(used) / bsize as u64;
                (limit / bsize as u64, bfree.min(room), bavail.min(room))
            }
            None => (blocks, bfree, bavail),
        };
        Ok(Statfs {
            blocks,
            bfree,
            bavail,
            files: u32::MAX as u64,
            ffree: u32::MAX as u64,
            bsize,
            namelen: NAME_MAX as u32,
        })
    }

    /// A number for a new handle on `ino`, recorded in the journal when there is one.
    fn new_fh(&self, ino: Ino, kind: HandleKind) -> Fh {
        match self.journal.get() {
            Some((j, slot)) => j.open(HandleRecord {
                slot: *slot,
                ino,
                kind,
            }),
            None => Fh::new(self.next_fh.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// Handle `fh` is gone.
    fn forget_fh(&self, fh: Fh) {
        if let Some((j, _)) = self.journal.get() {
            j.close(fh);
        }
    }

    /// Records this view's handles in `journal`, as view `slot`; once, before it serves.
    pub fn set_journal(&self, journal: Arc<dyn MountJournal>, slot: u64) {
        let _ = self.journal.set((journal, slot));
    }

    /// Serves again the handles another daemon opened in this view (kernel numbers and all).
    pub fn adopt_handles(&self, handles: &[(Fh, HandleRecord)]) {
        let mut h = self.handles.lock();
        for (fh, rec) in handles {
            let handle = match rec.kind {
                HandleKind::File { append, write } => {
                    *h.open.entry(rec.ino).or_insert(0) += 1;
                    Handle::File {
                        ino: rec.ino,
                        append,
                        write,
                    }
                }
                HandleKind::Dir => Handle::Dir {
                    ino: rec.ino,
                    entries: None,
                },
            };
            h.map.insert(*fh, handle);
        }
    }

    /// The head view of `container` taken over from another daemon with `handles` open:
    /// inodes unlinked while open stay until their last handle closes, the other orphans a
    /// crash left are freed.
    pub fn resumed_head(
        store: Arc<Store>,
        container: &ContainerId,
        journal: Arc<dyn MountJournal>,
        handles: &[(Fh, HandleRecord)],
    ) -> FsResult<Fs> {
        let fs = Self::head_unchanged(store, container)?;
        fs.set_journal(journal, 0);
        fs.adopt_handles(handles);
        fs.purge_orphans()?;
        Ok(fs)
    }

    /// Removes inodes that were unlinked while open when the store was last closed.
    fn purge_orphans(&self) -> FsResult<()> {
        let prefix = keys::orphan_prefix(&self.container);
        let end = crate::kv::prefix_end(&prefix);
        let mut inos = Vec::new();
        self.store
            .kv()
            .scan(Space::Meta, &prefix, &end, Dir::Forward, &mut |k, _| {
                if let Some((_, ino)) = keys::split_orphan(k) {
                    inos.push(ino);
                }
                true
            })?;
        for ino in inos {
            {
                let mut h = self.handles.lock();
                if h.open.contains_key(&ino) {
                    // Still open through a handle a former daemon gave out: its last
                    // release frees it.
                    h.orphans.insert(ino);
                    continue;
                }
            }
            let mut tx = self.begin()?;
            if let Ok(inode) = tx.inode(ino) {
                if inode.nlink == 0 {
                    node::free_inode(&mut tx, ino, &inode)?;
                }
            }
            tx.batch
                .delete(Space::Meta, keys::orphan(&self.container, ino));
            tx.commit()?;
        }
        Ok(())
    }
}
