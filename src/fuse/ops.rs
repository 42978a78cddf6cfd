//! The FUSE operations, transport-neutral: each converts a request's arguments, calls the
//! core and returns plain values (entries, attributes, data, errno). The two transports —
//! the `/dev/fuse` workers (`pool.rs`, `conn.rs`) and the io_uring rings (`uring/`) — share
//! one decoder and encoder (`dispatch.rs`), so TTLs, open flags, errors, kill-priv rules and
//! readdirplus attributes are the same on both.

use std::sync::Arc;
use std::time::Duration;

use crate::codec::Inode;
use crate::error::FsError;
use crate::fs::{Caller, Fh, SetAttr, Statfs, Volume};
use crate::ids::KernelIno;

/// An errno (positive), as the kernel gets it back.
pub(crate) type Errno = i32;
pub(crate) type OpResult<T> = Result<T, Errno>;

/// How long the kernel may cache entries and attributes of the head. This daemon is the only
/// writer of a mounted head, and every change goes through the kernel, so caches stay true.
const TTL: Duration = Duration::from_secs(60);
/// Snapshot views never change; a deleted snapshot's data is refused at open and read.
const FROZEN_TTL: Duration = Duration::from_secs(60);
/// Largest write the kernel sends in one request (also the io_uring payload buffer size).
pub(crate) const MAX_WRITE: u32 = 1 << 20;

/// `FOPEN_KEEP_CACHE`: the kernel keeps the file's pages across opens.
pub(crate) const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// `FOPEN_CACHE_DIR`: the kernel caches the directory's listing.
pub(crate) const FOPEN_CACHE_DIR: u32 = 1 << 3;

/// A looked-up or created name. `inode` is `None` for a negative entry (the kernel caches
/// that the name does not exist; inode number 0).
pub(crate) struct Entry {
    pub ino: u64,
    pub inode: Option<Inode>,
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
}

/// Attributes of `ino` and how long the kernel may keep them.
pub(crate) struct Attr {
    pub ino: u64,
    pub inode: Inode,
    pub ttl: Duration,
}

/// An opened file or directory: its handle and `FOPEN_*` flags.
pub(crate) struct Opened {
    pub fh: u64,
    pub flags: u32,
}

/// A getxattr/listxattr answer: the size asked for, or the bytes.
pub(crate) enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

/// One READDIRPLUS entry: name, offset and the attributes of `ino`.
pub(crate) struct PlusEntry<'a> {
    pub ino: u64,
    pub offset: u64,
    pub name: &'a [u8],
    pub ttl: Duration,
    pub inode: &'a Inode,
}

/// The operations of one mounted volume, shared by both transports.
pub(crate) struct Ops {
    volume: Arc<Volume>,
    /// The kernel's writeback cache is in use: INIT negotiated it ([`Negotiated::writeback`];
    /// without it the kernel neither stamps times nor places appends, so the daemon must).
    writeback: bool,
    /// Open replies let the kernel keep pages and listings (see [`super::config::kernel_cache`]).
    keep_cache: bool,
}

/// Converts a core error, logging the ones that are the daemon's or the store's fault.
pub(crate) fn errno(e: FsError) -> Errno {
    if matches!(e, FsError::Io(_) | FsError::Corrupt(_)) {
        log::error!("{e}");
    }
    let n = e.errno();
    // Absent names are the everyday answer of lookups, not failures worth counting.
    if n != libc::ENOENT {
        crate::metrics::fuse_error(n);
    }
    n
}

fn empty(r: Result<(), FsError>) -> OpResult<()> {
    r.map_err(errno)
}

impl Ops {
    pub fn new(volume: Arc<Volume>, writeback: bool, keep_cache: bool) -> Self {
        Ops {
            volume,
            writeback,
            keep_cache,
        }
    }

    #[cfg(test)]
    pub fn writeback(&self) -> bool {
        self.writeback
    }

    pub fn block_size(&self) -> u32 {
        self.volume.head().block_size()
    }

    /// Whether `ino` is the `.snapshots` directory (a `mkdir` there takes a snapshot, which
    /// waits for the kernel to write cached pages back).
    pub fn is_snapdir(&self, ino: u64) -> bool {
        let ino = KernelIno::new(ino);
        self.volume.is_snapdir(ino)
    }

    /// Open flags of a file: keep its cached pages across opens where that is safe.
    fn file_cache(&self, ino: KernelIno) -> u32 {
        if self.keep_cache && self.volume.kernel_cacheable(ino) {
            FOPEN_KEEP_CACHE
        } else {
            0
        }
    }

    /// Open flags as the core should see them. With the writeback cache the kernel places
    /// appends itself (at its own, possibly not yet written back, end of file) and sends
    /// explicit offsets, so `O_APPEND` must not move writes again here.
    fn open_flags(&self, flags: i32) -> i32 {
        if self.writeback {
            flags & !libc::O_APPEND
        } else {
            flags
        }
    }

    /// How long the kernel may keep attributes of `ino`.
    fn attr_ttl(&self, ino: KernelIno) -> Duration {
        if self.volume.is_snapdir(ino) {
            Duration::ZERO
        } else if self.volume.is_frozen(ino) {
            FROZEN_TTL
        } else {
            TTL
        }
    }

    /// An entry under `parent`; names in `.snapshots` are never cached (aliases move).
    fn entry(&self, parent: KernelIno, r: Result<(KernelIno, Inode), FsError>) -> OpResult<Entry> {
        let (ino, inode) = r.map_err(errno)?;
        let entry_ttl = if self.volume.is_snapdir(parent) {
            Duration::ZERO
        } else {
            self.attr_ttl(ino)
        };
        Ok(Entry {
            ino: ino.get(),
            inode: Some(inode),
            attr_ttl: self.attr_ttl(ino),
            entry_ttl,
        })
    }

    fn attr(&self, ino: KernelIno, r: Result<Inode, FsError>) -> OpResult<Attr> {
        Ok(Attr {
            ino: ino.get(),
            inode: r.map_err(errno)?,
            ttl: self.attr_ttl(ino),
        })
    }

    /// The final sync when the connection ends.
    pub fn destroy(&self) {
        if let Err(e) = self.volume.head().fsync() {
            log::error!("final sync: {e}");
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> OpResult<Entry> {
        let parent = KernelIno::new(parent);
        let _t = crate::metrics::FuseTimer::new("lookup");
        match self.volume.lookup(parent, name) {
            // A name that does not exist is cached too (a negative entry: inode 0), for as
            // long as a positive one would be: a head's names change only through this mount
            // (online restore invalidates the root's names), a snapshot's never. Not in
            // `.snapshots`, whose names the API and the expiry thread change.
            Err(FsError::NotFound) if !self.volume.is_snapdir(parent) => {
                let ttl = self.attr_ttl(parent);
                Ok(Entry {
                    ino: 0,
                    inode: None,
                    attr_ttl: ttl,
                    entry_ttl: ttl,
                })
            }
            r => self.entry(parent, r),
        }
    }

    pub fn getattr(&self, ino: u64) -> OpResult<Attr> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("getattr");
        self.attr(ino, self.volume.getattr(ino))
    }

    pub fn setattr(&self, ino: u64, set: &SetAttr, caller: Caller) -> OpResult<Attr> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("setattr");
        let r = self
            .volume
            .head_ino(ino)
            .and_then(|i| self.volume.head().setattr(i, set, caller));
        self.attr(ino, r)
    }

    pub fn readlink(&self, ino: u64) -> OpResult<Vec<u8>> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("readlink");
        self.volume.readlink(ino).map_err(errno)
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> OpResult<Entry> {
        let parent = KernelIno::new(parent);
        let _t = crate::metrics::FuseTimer::new("mknod");
        let vol = &self.volume;
        let r = vol.head_dir(parent, name).and_then(|dir| {
            let (ino, inode) = vol.head().mknod(dir, name, mode, rdev, caller)?;
            Ok((vol.head_kernel_ino(ino), inode))
        });
        self.entry(parent, r)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> OpResult<Entry> {
        let parent = KernelIno::new(parent);
        let _t = crate::metrics::FuseTimer::new("mkdir");
        self.entry(parent, self.volume.mkdir(parent, name, mode, caller))
    }

    pub fn unlink(&self, parent: u64, name: &[u8], caller: Caller) -> OpResult<()> {
        let parent = KernelIno::new(parent);
        let _t = crate::metrics::FuseTimer::new("unlink");
        empty(self.volume.unlink(parent, name, caller))
    }

    pub fn rmdir(&self, parent: u64, name: &[u8], caller: Caller) -> OpResult<()> {
        let parent = KernelIno::new(parent);
        let _t = crate::metrics::FuseTimer::new("rmdir");
        empty(self.volume.rmdir(parent, name, caller))
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> OpResult<Entry> {
        let parent = KernelIno::new(parent);
        let _t = crate::metrics::FuseTimer::new("symlink");
        self.entry(parent, self.volume.symlink(parent, name, target, caller))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        caller: Caller,
    ) -> OpResult<()> {
        let parent = KernelIno::new(parent);
        let newparent = KernelIno::new(newparent);
        let _t = crate::metrics::FuseTimer::new("rename");
        empty(
            self.volume
                .rename(parent, name, newparent, newname, flags, caller),
        )
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> OpResult<Entry> {
        let ino = KernelIno::new(ino);
        let newparent = KernelIno::new(newparent);
        let _t = crate::metrics::FuseTimer::new("link");
        self.entry(newparent, self.volume.link(ino, newparent, newname))
    }

    pub fn open(&self, ino: u64, flags: i32) -> OpResult<Opened> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("open");
        let flags_in = self.open_flags(flags);
        let fh = self.volume.open(ino, flags_in).map_err(errno)?;
        Ok(Opened {
            fh: fh.get(),
            flags: self.file_cache(ino),
        })
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> OpResult<Vec<u8>> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("read");
        let node = self.volume.resolve(ino).map_err(errno)?;
        let (fs, i) = self
            .volume
            .tree(&node)
            .ok_or(FsError::IsDir)
            .map_err(errno)?;
        let data = fs.read(i, offset, size).map_err(errno)?;
        crate::metrics::get().read_bytes.inc_by(data.len() as u64);
        Ok(data)
    }

    /// `kill`: the kernel says the writer lacks `CAP_FSETID` (`FUSE_WRITE_KILL_SUIDGID`).
    /// `fh`: the handle written through (`None`: at `offset` whatever its open flags).
    pub fn write(
        &self,
        ino: u64,
        fh: Option<u64>,
        offset: u64,
        data: &[u8],
        kill: bool,
    ) -> OpResult<u32> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("write");
        let i = self.volume.head_ino(ino).map_err(errno)?;
        let head = self.volume.head();
        let fh = fh.map(Fh::new);
        let n = if self.writeback {
            head.write_back(i, fh, offset, data, kill).inspect_err(|e| {
                // The writer's write(2) returned long ago: the kernel drops these bytes, and
                // only an fsync would tell. A full disk or quota says so on its own.
                if !matches!(e.errno(), libc::ENOSPC | libc::EDQUOT) {
                    log::warn!(
                        "writing back {} bytes at {offset} of inode {ino}: {e}",
                        data.len()
                    );
                }
            })
        } else {
            head.write(i, fh, offset, data, kill)
        }
        .map_err(errno)?;
        crate::metrics::get().written_bytes.inc_by(u64::from(n));
        Ok(n)
    }

    /// Nothing to do at close: every write is in the store (the kernel writes its cached
    /// pages back before it asks), durability is fsync's job, and locks are the kernel's.
    /// ENOSYS tells the kernel never to send FLUSH again, which takes one round trip off
    /// every close(2) (the kernel then treats flush as done).
    pub fn flush(&self) -> OpResult<()> {
        let _t = crate::metrics::FuseTimer::new("flush");
        Err(libc::ENOSYS)
    }

    pub fn release(&self, ino: u64, fh: u64) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("release");
        empty(self.volume.release(ino, Fh::new(fh)))
    }

    /// FSYNC and FSYNCDIR: sync the store's write-ahead log.
    pub fn fsync(&self) -> OpResult<()> {
        let _t = crate::metrics::FuseTimer::new("fsync");
        empty(self.volume.head().fsync())
    }

    pub fn opendir(&self, ino: u64) -> OpResult<Opened> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("opendir");
        let fh = self.volume.opendir(ino).map_err(errno)?;
        let flags = if self.keep_cache && self.volume.kernel_cacheable(ino) {
            FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR
        } else {
            0
        };
        Ok(Opened {
            fh: fh.get(),
            flags,
        })
    }

    /// Lists `ino` from `offset`: `add(ino, offset, kind, name)` returns true once the
    /// reply is full.
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, crate::codec::Kind, &[u8]) -> bool,
    ) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("readdir");
        let entries = self
            .volume
            .readdir(ino, Fh::new(fh), offset)
            .map_err(errno)?;
        for e in entries.iter_from(offset as usize) {
            if add(e.ino.get(), e.offset, e.kind, e.name) {
                break;
            }
        }
        Ok(())
    }

    /// Lists `ino` from `offset` with each entry's attributes (same TTLs as lookups, 0 in
    /// `.snapshots`); `add` returns true once the reply is full.
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&PlusEntry) -> bool,
    ) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("readdirplus");
        let entries = self
            .volume
            .readdir(ino, Fh::new(fh), offset)
            .map_err(errno)?;
        let snapdir = self.volume.is_snapdir(ino);
        // The kernel ignores the attributes of `.` and `..`; give the directory's own,
        // looked up once per reply.
        let mut dir_attr: Option<Option<Inode>> = None;
        for e in entries.iter_from(offset as usize) {
            let (aino, looked) = if e.name == b"." || e.name == b".." {
                let a = dir_attr.get_or_insert_with(|| self.volume.getattr(ino).ok());
                (ino, a.clone())
            } else {
                (e.ino, self.volume.getattr(e.ino).ok())
            };
            // An entry removed since the listing was made is left out, as a later listing
            // would.
            let Some(inode) = looked else { continue };
            // `.snapshots` entries change behind the kernel's back (API): never cached.
            let ttl = if snapdir {
                Duration::ZERO
            } else {
                self.attr_ttl(aino)
            };
            let plus = PlusEntry {
                ino: aino.get(),
                offset: e.offset,
                name: e.name,
                ttl,
                inode: &inode,
            };
            if add(&plus) {
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, ino: u64, fh: u64) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("releasedir");
        // Nothing to release for `.snapshots`, an alias or a stale number.
        if let Ok(node) = self.volume.resolve(ino) {
            if let Some((fs, _)) = self.volume.tree(&node) {
                fs.releasedir(Fh::new(fh));
            }
        }
        Ok(())
    }

    pub fn statfs(&self) -> OpResult<Statfs> {
        let _t = crate::metrics::FuseTimer::new("statfs");
        self.volume.head().statfs().map_err(errno)
    }

    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("setxattr");
        empty(self.volume.setxattr(ino, name, value, flags, caller))
    }

    pub fn getxattr(&self, ino: u64, name: &[u8], size: u32) -> OpResult<Xattr> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("getxattr");
        xattr_answer(self.volume.getxattr(ino, name).map_err(errno)?, size)
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> OpResult<Xattr> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("listxattr");
        xattr_answer(self.volume.listxattr(ino).map_err(errno)?, size)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("removexattr");
        let r = self
            .volume
            .head_ino(ino)
            .and_then(|i| self.volume.head().removexattr(i, name));
        empty(r)
    }

    pub fn access(&self, ino: u64, mask: i32, caller: Caller) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("access");
        empty(self.volume.access(ino, mask, caller))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> OpResult<(Attr, Opened)> {
        let parent = KernelIno::new(parent);
        let _t = crate::metrics::FuseTimer::new("create");
        let vol = &self.volume;
        let dir = vol.head_dir(parent, name).map_err(errno)?;
        let (ino, inode, fh) = vol
            .head()
            .create(dir, name, mode, self.open_flags(flags), caller)
            .map_err(errno)?;
        let ino = vol.head_kernel_ino(ino);
        let opened = Opened {
            fh: fh.get(),
            flags: self.file_cache(ino),
        };
        let attr = Attr {
            ino: ino.get(),
            inode,
            ttl: self.attr_ttl(ino),
        };
        Ok((attr, opened))
    }

    /// `uid`: the caller's, standing for `CAP_FSETID` (see [`lacks_fsetid`]).
    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        mode: i32,
        uid: u32,
    ) -> OpResult<()> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("fallocate");
        let r = self.volume.head_ino(ino).and_then(|i| {
            self.volume
                .head()
                .fallocate(i, offset, length, mode, lacks_fsetid(uid))
        });
        empty(r)
    }

    /// No ioctls are implemented: answered ENOTTY ("not a terminal / not supported"), what
    /// git, bash and test tools expect from a filesystem without them, and without a
    /// warning per call (tens of thousands of log lines per hour of use).
    pub fn ioctl(&self) -> OpResult<()> {
        let _t = crate::metrics::FuseTimer::new("ioctl");
        Err(libc::ENOTTY)
    }

    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> OpResult<i64> {
        let ino = KernelIno::new(ino);
        let _t = crate::metrics::FuseTimer::new("lseek");
        let off = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
        let node = self.volume.resolve(ino).map_err(errno)?;
        let (fs, i) = (self.volume.tree(&node))
            .ok_or(FsError::Invalid("not a file"))
            .map_err(errno)?;
        let o = fs.lseek(i, off, whence).map_err(errno)?;
        Ok(o as i64)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(
        &self,
        ino_in: u64,
        offset_in: u64,
        ino_out: u64,
        offset_out: u64,
        len: u64,
        flags: u64,
        uid: u32,
    ) -> OpResult<u32> {
        let ino_in = KernelIno::new(ino_in);
        let ino_out = KernelIno::new(ino_out);
        let _t = crate::metrics::FuseTimer::new("copy_file_range");
        if flags != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        let len = len.min(u32::MAX as u64 & !0xfff);
        let n = self
            .volume
            .copy_file_range(
                ino_in,
                offset_in,
                ino_out,
                offset_out,
                len,
                lacks_fsetid(uid),
            )
            .map_err(errno)?;
        Ok(n as u32)
    }
}

/// Whether the caller of a write-like request (fallocate, copy_file_range) must lose the
/// setuid/setgid bits of the file it changes: the kernel leaves that to us and does not say
/// whether the caller has `CAP_FSETID` (for writes it does: `FUSE_WRITE_KILL_SUIDGID`), so
/// root is taken to have it, as it has by default.
fn lacks_fsetid(uid: u32) -> bool {
    uid != 0
}

/// getxattr/listxattr: the size when asked (size 0), ERANGE when it does not fit.
fn xattr_answer(value: Vec<u8>, size: u32) -> OpResult<Xattr> {
    if size == 0 {
        Ok(Xattr::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(libc::ERANGE)
    } else {
        Ok(Xattr::Data(value))
    }
}
