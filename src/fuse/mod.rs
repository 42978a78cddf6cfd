//! The FUSE adapter: the only module that names `fuser`. The operations themselves are
//! transport-neutral (`ops.rs`); this file is their `/dev/fuse` front end (fuser's request
//! loop and reply types), `uring/` their FUSE-over-io_uring one, and `session.rs` mounts,
//! picks the transport and unmounts.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::codec::{Inode, Kind, Ts};
use crate::fs::{Caller, Fh, SetAttr, TimeSet};
use ops::{OpResult, Ops, Xattr, MAX_WRITE};

pub struct FuseFs {
    ops: Arc<Ops>,
    /// What INIT decided about FUSE-over-io_uring (`uring::Selection`).
    uring: Arc<uring::Selection>,
}

impl FuseFs {
    fn new(ops: Arc<Ops>, uring: Arc<uring::Selection>) -> Self {
        FuseFs { ops, uring }
    }
}

fn fuser_errno(e: i32) -> Errno {
    Errno::from_i32(e)
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
    fn entry(&self, reply: ReplyEntry, r: OpResult<ops::Entry>) {
        match r {
            Ok(e) => {
                let a = match &e.inode {
                    Some(i) => attr(e.ino, i, self.ops.block_size()),
                    None => negative_attr(),
                };
                reply.entry_with_ttls(&e.attr_ttl, &e.entry_ttl, &a, Generation(0))
            }
            Err(e) => reply.error(fuser_errno(e)),
        }
    }

    fn attr(&self, reply: ReplyAttr, r: OpResult<ops::Attr>) {
        match r {
            Ok(a) => reply.attr(&a.ttl, &attr(a.ino, &a.inode, self.ops.block_size())),
            Err(e) => reply.error(fuser_errno(e)),
        }
    }

    fn empty(reply: ReplyEmpty, r: OpResult<()>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fuser_errno(e)),
        }
    }

    fn opened(reply: ReplyOpen, r: OpResult<ops::Opened>) {
        match r {
            Ok(o) => reply.opened(FileHandle(o.fh), FopenFlags::from_bits_retain(o.flags)),
            Err(e) => reply.error(fuser_errno(e)),
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
        if self.ops.keep_cache() {
            let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        }
        if self.ops.writeback()
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            log::warn!("the kernel offers no writeback cache; every write goes to the daemon");
        }
        // FUSE-over-io_uring: offered only where `enable_uring` is on. Asked for unless turned
        // off; requests move to the rings once every queue is registered (`session.rs`).
        let offered = config
            .capabilities()
            .contains(InitFlags::FUSE_OVER_IO_URING);
        let accepted = self.uring.wanted()
            && offered
            && uring::usable()
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
        self.uring.negotiated(offered, accepted);
        Ok(())
    }

    fn destroy(&mut self) {
        self.ops.destroy()
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, self.ops.lookup(parent.0, name.as_bytes()))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.attr(reply, self.ops.getattr(ino.0))
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
            fh: fh.map(|f| Fh::new(f.0)),
        };
        self.attr(reply, self.ops.setattr(ino.0, &set, caller(req)))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.ops.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(fuser_errno(e)),
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
            .ops
            .mknod(parent.0, name.as_bytes(), mode, rdev, caller(req));
        self.entry(reply, r)
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
        let r = self.ops.mkdir(parent.0, name.as_bytes(), mode, caller(req));
        self.entry(reply, r)
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.ops.unlink(parent.0, name.as_bytes(), caller(req));
        Self::empty(reply, r)
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.ops.rmdir(parent.0, name.as_bytes(), caller(req));
        Self::empty(reply, r)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.ops.symlink(
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            caller(req),
        );
        self.entry(reply, r)
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
        let r = self.ops.rename(
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
        let r = self.ops.link(ino.0, newparent.0, newname.as_bytes());
        self.entry(reply, r)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        Self::opened(reply, self.ops.open(ino.0, flags.0))
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
        match self.ops.read(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(fuser_errno(e)),
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
        match self.ops.write(ino.0, fh.0, offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fuser_errno(e)),
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
        Self::empty(reply, self.ops.flush())
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
        Self::empty(reply, self.ops.release(ino.0, fh.0))
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.ops.fsync())
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        Self::opened(reply, self.ops.opendir(ino.0))
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self
            .ops
            .readdir(ino.0, fh.0, offset, |ino, off, kind, name| {
                reply.add(INodeNo(ino), off, file_type(kind), OsStr::from_bytes(name))
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fuser_errno(e)),
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
        let bs = self.ops.block_size();
        let r = self.ops.readdirplus(ino.0, fh.0, offset, |e| {
            let fa = attr(e.ino, e.inode, bs);
            let name = OsStr::from_bytes(e.name);
            reply.add(INodeNo(e.ino), e.offset, name, &e.ttl, &fa, Generation(0))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fuser_errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.ops.releasedir(ino.0, fh.0))
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.ops.fsync())
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.ops.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(fuser_errno(e)),
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
            .ops
            .setxattr(ino.0, name.as_bytes(), value, flags, caller(req));
        Self::empty(reply, r)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, self.ops.getxattr(ino.0, name.as_bytes(), size))
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, self.ops.listxattr(ino.0, size))
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(reply, self.ops.removexattr(ino.0, name.as_bytes()))
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        Self::empty(reply, self.ops.access(ino.0, mask.bits(), caller(req)))
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
        match self
            .ops
            .create(parent.0, name.as_bytes(), mode, flags, caller(req))
        {
            Ok((a, o)) => reply.created(
                &a.ttl,
                &attr(a.ino, &a.inode, self.ops.block_size()),
                Generation(0),
                FileHandle(o.fh),
                FopenFlags::from_bits_retain(o.flags),
            ),
            Err(e) => reply.error(fuser_errno(e)),
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
        let r = self.ops.fallocate(ino.0, offset, length, mode, req.uid());
        Self::empty(reply, r)
    }

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
        match self.ops.ioctl() {
            Ok(()) => reply.ioctl(0, &[]),
            Err(e) => reply.error(fuser_errno(e)),
        }
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
        match self.ops.lseek(ino.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(fuser_errno(e)),
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
        match self.ops.copy_file_range(
            ino_in.0,
            offset_in,
            ino_out.0,
            offset_out,
            len,
            flags.bits(),
            req.uid(),
        ) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fuser_errno(e)),
        }
    }
}

/// Replies to getxattr/listxattr.
fn xattr_reply(reply: ReplyXattr, r: OpResult<Xattr>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(v)) => reply.data(&v),
        Err(e) => reply.error(fuser_errno(e)),
    }
}

mod config;
mod fusectl;
mod ops;
mod session;
mod uring;

pub use config::{readdirplus, writeback_cache};
pub use session::{mount, FuseMounter, MountHandle, Transport, FUSE_THREADS};
