//! The FUSE adapter: the only module that names `fuser` (`session.rs`: mounts). Each method converts the request,
//! calls the core and converts the reply; no filesystem logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::codec::{Inode, Kind, Ts};
use crate::error::FsError;
use crate::fs::{Caller, Fh, SetAttr, TimeSet, Volume};

/// How long the kernel may cache entries and attributes of the head. This daemon is the only
/// writer of a mounted head, and every change goes through the kernel, so caches stay true.
const TTL: Duration = Duration::from_secs(60);
/// Snapshot views never change; a deleted snapshot's data is refused at open and read.
const FROZEN_TTL: Duration = Duration::from_secs(60);
/// Largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;

pub struct FuseFs {
    fs: Arc<Volume>,
    /// The kernel's writeback cache is asked for (see [`writeback_cache`]).
    writeback: bool,
    /// Open replies let the kernel keep pages and listings (see [`session::kernel_cache`]).
    keep_cache: bool,
}

impl FuseFs {
    /// Open flags of a file: keep its cached pages across opens where that is safe.
    fn file_cache(&self, ino: u64) -> FopenFlags {
        if self.keep_cache && self.fs.kernel_cacheable(ino) {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    pub fn new(fs: Arc<Volume>) -> Self {
        FuseFs {
            fs,
            writeback: writeback_cache(),
            keep_cache: session::kernel_cache(),
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
    fn attr_ttl(&self, ino: u64) -> Duration {
        if self.fs.is_snapdir(ino) {
            Duration::ZERO
        } else if self.fs.is_frozen(ino) {
            FROZEN_TTL
        } else {
            TTL
        }
    }
}

fn errno(e: FsError) -> Errno {
    if matches!(e, FsError::Io(_) | FsError::Corrupt(_)) {
        log::error!("{e}");
    }
    Errno::from_i32(e.errno())
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

fn attr(ino: u64, i: &Inode, blksize: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: i.size,
        blocks: i.alloc.div_ceil(512),
        atime: i.atime.to_system(),
        mtime: i.mtime.to_system(),
        ctime: i.ctime.to_system(),
        crtime: i.crtime.to_system(),
        kind: file_type(i.kind),
        perm: i.perm,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize,
        flags: 0,
    }
}

/// The attributes of a negative entry: inode 0 tells the kernel the name does not exist.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: std::time::UNIX_EPOCH,
        mtime: std::time::UNIX_EPOCH,
        ctime: std::time::UNIX_EPOCH,
        crtime: std::time::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Converts a time the kernel sent. fuser 0.18 builds pre-1970 times as
/// `EPOCH - (secs + nsecs)` from the kernel's `(-secs, nsecs)`, so undo exactly that.
fn request_time(t: SystemTime) -> Ts {
    match std::time::UNIX_EPOCH.duration_since(t) {
        Ok(d) if !d.is_zero() => Ts {
            secs: -(d.as_secs() as i64),
            nsecs: d.subsec_nanos(),
        },
        _ => Ts::from_system(t),
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(request_time(s)),
    }
}

impl FuseFs {
    /// Replies with an entry; names in `.snapshots` are never cached (aliases move).
    fn entry(&self, parent: u64, reply: ReplyEntry, r: Result<(u64, Inode), FsError>) {
        match r {
            Ok((ino, i)) => {
                let entry_ttl = if self.fs.is_snapdir(parent) {
                    Duration::ZERO
                } else {
                    self.attr_ttl(ino)
                };
                let a = attr(ino, &i, self.fs.block_size());
                reply.entry_with_ttls(&self.attr_ttl(ino), &entry_ttl, &a, Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // We drop setuid/setgid bits and file capabilities on write, truncate and chown
        // ourselves; in exchange the kernel stops asking for `security.capability` before
        // every write (one round trip less per write: 4 KiB random writes +20 %).
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // Directory listings carry each entry's attributes (one round trip per listing chunk
        // instead of a LOOKUP per name on a cold walk); the kernel's adaptive mode falls back
        // to plain listings where nobody looks the names up.
        if readdirplus()
            && config
                .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO)
                .is_err()
        {
            log::info!("the kernel offers no READDIRPLUS");
        }
        // A symlink's target never changes (a new target is a new inode; restores move the
        // head to new inode numbers; snapshot views are frozen): the kernel may keep it.
        if self.keep_cache {
            let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        }
        if self.writeback
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            log::warn!("the kernel offers no writeback cache; every write goes to the daemon");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.fsync() {
            log::error!("final sync: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            // A name that does not exist is cached too (a negative entry: inode 0), for as
            // long as a positive one would be: a head's names change only through this mount
            // (online restore invalidates the root's names), a snapshot's never. Not in
            // `.snapshots`, whose names the API and the expiry thread change.
            Err(FsError::NotFound) if !self.fs.is_snapdir(parent.0) => {
                let ttl = self.attr_ttl(parent.0);
                reply.entry_with_ttls(&ttl, &ttl, &negative_attr(), Generation(0))
            }
            r => self.entry(parent.0, reply, r),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(i) => reply.attr(
                &self.attr_ttl(ino.0),
                &attr(ino.0, &i, self.fs.block_size()),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(request_time),
            crtime: crtime.map(request_time),
            fh: fh.map(|f| Fh(f.0)),
        };
        match self.fs.setattr(ino.0, &set, caller(req)) {
            Ok(i) => reply.attr(
                &self.attr_ttl(ino.0),
                &attr(ino.0, &i, self.fs.block_size()),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .fs
            .mknod(parent.0, name.as_bytes(), mode, rdev, caller(req));
        self.entry(parent.0, reply, r)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.fs.mkdir(parent.0, name.as_bytes(), mode, caller(req));
        self.entry(parent.0, reply, r)
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(
            reply,
            self.fs.unlink(parent.0, name.as_bytes(), caller(req)),
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(reply, self.fs.rmdir(parent.0, name.as_bytes(), caller(req)))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.fs.symlink(
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            caller(req),
        );
        self.entry(parent.0, reply, r)
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
            caller(req),
        );
        Self::empty(reply, r)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.fs.link(ino.0, newparent.0, newname.as_bytes());
        self.entry(newparent.0, reply, r)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, self.open_flags(flags.0)) {
            Ok(fh) => reply.opened(FileHandle(fh.0), self.file_cache(ino.0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write(ino.0, Fh(fh.0), offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close: every write is in the store (the kernel writes its cached
        // pages back before it asks), durability is fsync's job, and locks are the kernel's.
        // ENOSYS tells the kernel never to send FLUSH again, which takes one round trip off
        // every close(2) (the kernel then treats flush as done).
        reply.error(Errno::from_i32(libc::ENOSYS))
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.fs.release(ino.0, Fh(fh.0)))
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.fs.fsync())
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => {
                let flags = if self.keep_cache && self.fs.kernel_cacheable(ino.0) {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh.0), flags)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0, Fh(fh.0), offset) {
            Ok(entries) => {
                for e in entries.iter().skip(offset as usize) {
                    let name = OsStr::from_bytes(&e.name);
                    if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.fs.readdir(ino.0, Fh(fh.0), offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        let snapdir = self.fs.is_snapdir(ino.0);
        let bs = self.fs.block_size();
        // The kernel ignores the attributes of `.` and `..`; give the directory's own,
        // looked up once per reply.
        let mut dir_attr: Option<Option<Inode>> = None;
        for e in entries.iter().skip(offset as usize) {
            let (aino, looked) = if e.name == b"." || e.name == b".." {
                let a = dir_attr.get_or_insert_with(|| self.fs.getattr(ino.0).ok());
                (ino.0, a.clone().ok_or(()))
            } else {
                (e.ino, self.fs.getattr(e.ino).map_err(|_| ()))
            };
            // An entry removed since the listing was made is left out, as a later listing
            // would.
            let Ok(a) = looked else { continue };
            // `.snapshots` entries change behind the kernel's back (API): never cached.
            let ttl = if snapdir {
                Duration::ZERO
            } else {
                self.attr_ttl(aino)
            };
            let name = OsStr::from_bytes(&e.name);
            let fa = attr(aino, &a, bs);
            if reply.add(INodeNo(e.ino), e.offset, name, &ttl, &fa, Generation(0)) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(ino.0, Fh(fh.0));
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.fs.fsync())
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .fs
            .setxattr(ino.0, name.as_bytes(), value, flags, caller(req));
        Self::empty(reply, r)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(reply, self.fs.removexattr(ino.0, name.as_bytes()))
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        Self::empty(reply, self.fs.access(ino.0, mask.bits(), caller(req)))
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(
            parent.0,
            name.as_bytes(),
            mode,
            self.open_flags(flags),
            caller(req),
        ) {
            Ok((ino, i, fh)) => reply.created(
                &self.attr_ttl(ino),
                &attr(ino, &i, self.fs.block_size()),
                Generation(0),
                FileHandle(fh.0),
                self.file_cache(ino),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let kill = lacks_fsetid(req);
        Self::empty(reply, self.fs.fallocate(ino.0, offset, length, mode, kill))
    }

    /// No ioctls are implemented: answered ENOTTY ("not a terminal / not supported"), what
    /// git, bash and test tools expect from a filesystem without them, and without fuser's
    /// default warning per call (tens of thousands of log lines per hour of use).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::EINVAL);
        };
        match self.fs.lseek(ino.0, off, whence) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let len = len.min(u32::MAX as u64 & !0xfff);
        let kill = lacks_fsetid(req);
        match self
            .fs
            .copy_file_range(ino_in.0, offset_in, ino_out.0, offset_out, len, kill)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Whether the caller of a write-like request (fallocate, copy_file_range) must lose the
/// setuid/setgid bits of the file it changes: the kernel leaves that to us and does not say
/// whether the caller has `CAP_FSETID` (for writes it does: `FUSE_WRITE_KILL_SUIDGID`), so
/// root is taken to have it, as it has by default.
fn lacks_fsetid(req: &Request) -> bool {
    req.uid() != 0
}

/// Replies to getxattr/listxattr: the size when asked (size 0), ERANGE when it does not fit.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE))
    } else {
        reply.data(value)
    }
}

mod session;

pub use session::{mount, readdirplus, writeback_cache, MountHandle, FUSE_THREADS};
