//! Decodes one request (its header, the opcode's fixed argument, the payload after it, as a
//! ring entry holds them or as `conn.rs` splits a `/dev/fuse` read), runs it through
//! [`Ops`] and encodes the reply body into the payload buffer. Malformed requests (short
//! arguments, names without their NUL, lengths past the payload) are answered EINVAL;
//! opcodes we do not serve ENOSYS. The encoding is the one fuser 0.18 used (same attribute
//! conversion, TTLs, negative entries, directory entry padding): both transports give the
//! kernel the same bytes.

use super::abi::{self, fattr, op, Cursor, FuseAttr, InHeader, Out};
use crate::codec::{Inode, Ts};
use crate::fs::{Caller, Fh, SetAttr, TimeSet};
use crate::fuse::ops::{self, Errno, OpResult, Ops, Xattr};

/// What a request may wait for besides the store.
pub(crate) fn is_slow(ops: &Ops, h: &InHeader) -> bool {
    match h.opcode {
        // A WAL sync: milliseconds during which other requests from this CPU would wait.
        op::FSYNC | op::FSYNCDIR => true,
        // A snapshot first makes the kernel write cached pages back: those writes arrive as
        // requests, possibly on this very queue, so the queue's thread must not wait for them.
        op::MKDIR => ops.is_snapdir(h.nodeid),
        _ => false,
    }
}

/// Serves one request. `input` is the payload as the kernel filled it (`payload_sz`
/// bytes); the reply body is written into `reply` (the same buffer once the input is no
/// longer needed, so everything borrowed from the input is consumed first). Returns the
/// reply body's length, or the errno to answer.
pub(crate) fn serve(
    ops: &Ops,
    h: &InHeader,
    op_in: &[u8],
    payload: &mut [u8],
    input_len: usize,
) -> Result<usize, Errno> {
    let input = payload.get(..input_len).ok_or(libc::EINVAL)?;
    let answer = match answer(ops, h, op_in, input) {
        Err(e) if h.unique & abi::RESENT != 0 => retried(ops, h, op_in, input, e)?,
        r => r?,
    };
    let mut out = Out::new(payload);
    answer.encode(ops, &mut out)?;
    if out.overflowed() {
        log::error!("io_uring reply to opcode {} does not fit", h.opcode);
        return Err(libc::EIO);
    }
    Ok(out.len())
}

/// The answer to a request a former daemon read and the kernel sent again after a takeover
/// (`RESENT`), when doing it again failed with `err`. The former daemon may have committed
/// the change and died before answering: a name that now exists after a create, or is gone
/// after an unlink, is what the first attempt did, and the caller gets the answer that
/// attempt would have given (the entry, an open handle, success) instead of EEXIST or
/// ENOENT (ENODATA for a removed extended attribute). Anything else keeps its error. Not
/// covered: a RENAME_EXCHANGE done before is done again (it cannot fail to tell).
fn retried(ops: &Ops, h: &InHeader, op_in: &[u8], input: &[u8], err: Errno) -> OpResult<Answer> {
    let mut a = Cursor::new(op_in);
    let mut p = Cursor::new(input);
    let ino = h.nodeid;
    // The entry `name` now names, if it has the type the request makes (`S_IFMT` bits).
    let existing = |name: &[u8], typ: u32| -> OpResult<ops::Entry> {
        let mut e = ops.lookup(ino, name)?;
        let kind = |e: &ops::Entry| e.inode.as_ref().map(|i| i.kind.mode_bits());
        if typ == libc::S_IFDIR && kind(&e) == Some(libc::S_IFLNK) && ops.is_snapdir(ino) {
            // `mkdir .snapshots/NAME` made a snapshot with alias NAME: the answer is the
            // snapshot's directory, which the alias points to.
            let target = ops.readlink(e.ino)?;
            e = ops.lookup(ino, &target)?;
        }
        if e.ino == 0 || kind(&e) != Some(typ) {
            Err(err)
        } else {
            Ok(e)
        }
    };
    let done = match (h.opcode, err) {
        (op::CREATE, libc::EEXIST) => {
            let flags = a.i32().ok_or(err)?;
            let _mode = a.u32().ok_or(err)?;
            let e = existing(p.cstr().ok_or(err)?, libc::S_IFREG)?;
            let inode = e.inode.ok_or(err)?;
            // Opened as the create did, without truncating what may have been written since.
            let opened = ops.open(
                e.ino,
                flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC),
            )?;
            let attr = ops::Attr {
                ino: e.ino,
                inode,
                ttl: e.attr_ttl,
            };
            Answer::Created(attr, opened)
        }
        (op::MKDIR, libc::EEXIST) => {
            let _mode = a.u32().ok_or(err)?;
            Answer::Entry(existing(p.cstr().ok_or(err)?, libc::S_IFDIR)?)
        }
        (op::MKNOD, libc::EEXIST) => {
            let mode = a.u32().ok_or(err)?;
            Answer::Entry(existing(p.cstr().ok_or(err)?, mode & libc::S_IFMT)?)
        }
        (op::SYMLINK, libc::EEXIST) => {
            Answer::Entry(existing(p.cstr().ok_or(err)?, libc::S_IFLNK)?)
        }
        (op::LINK, libc::EEXIST) => {
            // The new name must be the inode linked.
            let old = a.u64().ok_or(err)?;
            let e = ops.lookup(ino, p.cstr().ok_or(err)?)?;
            if e.ino != old {
                return Err(err);
            }
            Answer::Entry(e)
        }
        (op::UNLINK | op::RMDIR, libc::ENOENT) => Answer::Empty,
        (op::SETXATTR, libc::EEXIST) => {
            // XATTR_CREATE: done if the attribute holds the value asked for.
            let (_size, _flags) = (a.u32().ok_or(err)?, a.i32().ok_or(err)?);
            let name = p.cstr().ok_or(err)?;
            let value = p.rest();
            match ops.getxattr(ino, name, u32::MAX)? {
                Xattr::Data(v) if v == value => Answer::Empty,
                _ => return Err(err),
            }
        }
        (op::REMOVEXATTR, libc::ENODATA) => Answer::Empty,
        (op::RENAME | op::RENAME2, libc::ENOENT) => {
            let newdir = a.u64().ok_or(err)?;
            if h.opcode == op::RENAME2 {
                a.u32().ok_or(err)?;
            }
            let _name = p.cstr().ok_or(err)?;
            let newname = p.cstr().ok_or(err)?;
            let e = ops.lookup(newdir, newname)?;
            if e.ino == 0 {
                return Err(err);
            }
            Answer::Empty
        }
        _ => return Err(err),
    };
    log::info!(
        "request {} (opcode {}) sent again after a takeover: done before, answered as done",
        h.unique & !abi::RESENT,
        h.opcode
    );
    Ok(done)
}

/// A decoded answer, holding nothing borrowed from the request.
enum Answer {
    Empty,
    Entry(ops::Entry),
    Attr(ops::Attr),
    Opened(ops::Opened),
    Created(ops::Attr, ops::Opened),
    Data(Vec<u8>),
    Written(u32),
    Statfs(crate::fs::Statfs),
    XattrSize(u32),
    Offset(i64),
    /// An encoded directory listing.
    Listing(Vec<u8>),
}

const EINVAL: Errno = libc::EINVAL;

fn caller(h: &InHeader) -> Caller {
    Caller {
        uid: h.uid,
        gid: h.gid,
    }
}

fn answer(ops: &Ops, h: &InHeader, op_in: &[u8], input: &[u8]) -> OpResult<Answer> {
    let mut a = Cursor::new(op_in);
    let mut p = Cursor::new(input);
    let ino = h.nodeid;
    let bad = || EINVAL;
    Ok(match h.opcode {
        op::LOOKUP => Answer::Entry(ops.lookup(ino, p.cstr().ok_or_else(bad)?)?),
        op::GETATTR => Answer::Attr(ops.getattr(ino)?),
        op::SETATTR => Answer::Attr(ops.setattr(ino, &setattr(&mut a)?, caller(h))?),
        op::READLINK => Answer::Data(ops.readlink(ino)?),
        op::SYMLINK => {
            let name = p.cstr().ok_or_else(bad)?;
            let target = p.cstr().ok_or_else(bad)?;
            Answer::Entry(ops.symlink(ino, name, target, caller(h))?)
        }
        op::MKNOD => {
            let mode = a.u32().ok_or_else(bad)?;
            let rdev = a.u32().ok_or_else(bad)?;
            let name = p.cstr().ok_or_else(bad)?;
            Answer::Entry(ops.mknod(ino, name, mode, rdev, caller(h))?)
        }
        op::MKDIR => {
            let mode = a.u32().ok_or_else(bad)?;
            let name = p.cstr().ok_or_else(bad)?;
            Answer::Entry(ops.mkdir(ino, name, mode, caller(h))?)
        }
        op::UNLINK => {
            ops.unlink(ino, p.cstr().ok_or_else(bad)?, caller(h))?;
            Answer::Empty
        }
        op::RMDIR => {
            ops.rmdir(ino, p.cstr().ok_or_else(bad)?, caller(h))?;
            Answer::Empty
        }
        op::RENAME | op::RENAME2 => {
            let newdir = a.u64().ok_or_else(bad)?;
            let flags = if h.opcode == op::RENAME2 {
                a.u32().ok_or_else(bad)?
            } else {
                0
            };
            let name = p.cstr().ok_or_else(bad)?;
            let newname = p.cstr().ok_or_else(bad)?;
            ops.rename(ino, name, newdir, newname, flags, caller(h))?;
            Answer::Empty
        }
        op::LINK => {
            let old = a.u64().ok_or_else(bad)?;
            Answer::Entry(ops.link(old, ino, p.cstr().ok_or_else(bad)?)?)
        }
        op::OPEN => Answer::Opened(ops.open(ino, a.i32().ok_or_else(bad)?)?),
        op::READ => {
            let (_fh, offset, size) = (a.u64(), a.u64(), a.u32());
            let (Some(offset), Some(size)) = (offset, size) else {
                return Err(EINVAL);
            };
            Answer::Data(ops.read(ino, offset, size)?)
        }
        op::WRITE => {
            let fh = a.u64().ok_or_else(bad)?;
            let offset = a.u64().ok_or_else(bad)?;
            let size = a.u32().ok_or_else(bad)?;
            let write_flags = a.u32().ok_or_else(bad)?;
            let data = p.take(size as usize).ok_or_else(bad)?;
            let kill = write_flags & abi::WRITE_KILL_SUIDGID != 0;
            // A write sent again after a takeover goes where the kernel said, even on an
            // O_APPEND handle: the first attempt may have appended it already, and writing
            // at an offset is the same done twice.
            let resent = h.unique & abi::RESENT != 0;
            Answer::Written(ops.write(ino, (!resent).then_some(fh), offset, data, kill)?)
        }
        op::STATFS => Answer::Statfs(ops.statfs()?),
        op::RELEASE => {
            ops.release(ino, a.u64().ok_or_else(bad)?)?;
            Answer::Empty
        }
        op::FSYNC | op::FSYNCDIR => {
            ops.fsync()?;
            Answer::Empty
        }
        op::SETXATTR => {
            let _size = a.u32().ok_or_else(bad)?;
            let flags = a.i32().ok_or_else(bad)?;
            let name = p.cstr().ok_or_else(bad)?;
            ops.setxattr(ino, name, p.rest(), flags, caller(h))?;
            Answer::Empty
        }
        op::GETXATTR => {
            let size = a.u32().ok_or_else(bad)?;
            xattr(ops.getxattr(ino, p.cstr().ok_or_else(bad)?, size)?)
        }
        op::LISTXATTR => xattr(ops.listxattr(ino, a.u32().ok_or_else(bad)?)?),
        op::REMOVEXATTR => {
            ops.removexattr(ino, p.cstr().ok_or_else(bad)?)?;
            Answer::Empty
        }
        op::FLUSH => {
            ops.flush()?;
            Answer::Empty
        }
        op::OPENDIR => Answer::Opened(ops.opendir(ino)?),
        op::READDIR | op::READDIRPLUS => {
            let fh = a.u64().ok_or_else(bad)?;
            let offset = a.u64().ok_or_else(bad)?;
            let size = a.u32().ok_or_else(bad)?;
            Answer::Listing(listing(ops, h.opcode, ino, fh, offset, size)?)
        }
        op::RELEASEDIR => {
            ops.releasedir(ino, a.u64().ok_or_else(bad)?)?;
            Answer::Empty
        }
        op::ACCESS => {
            ops.access(ino, a.i32().ok_or_else(bad)?, caller(h))?;
            Answer::Empty
        }
        op::CREATE => {
            let flags = a.i32().ok_or_else(bad)?;
            let mode = a.u32().ok_or_else(bad)?;
            let name = p.cstr().ok_or_else(bad)?;
            let (attr, opened) = ops.create(ino, name, mode, flags, caller(h))?;
            Answer::Created(attr, opened)
        }
        op::FALLOCATE => {
            let _fh = a.u64().ok_or_else(bad)?;
            let offset = a.u64().ok_or_else(bad)?;
            let length = a.u64().ok_or_else(bad)?;
            let mode = a.i32().ok_or_else(bad)?;
            ops.fallocate(ino, offset, length, mode, h.uid)?;
            Answer::Empty
        }
        op::IOCTL => {
            ops.ioctl()?;
            Answer::Empty
        }
        op::LSEEK => {
            let _fh = a.u64().ok_or_else(bad)?;
            let offset = a.i64().ok_or_else(bad)?;
            let whence = a.i32().ok_or_else(bad)?;
            Answer::Offset(ops.lseek(ino, offset, whence)?)
        }
        op::COPY_FILE_RANGE => {
            let _fh_in = a.u64().ok_or_else(bad)?;
            let off_in = a.u64().ok_or_else(bad)?;
            let ino_out = a.u64().ok_or_else(bad)?;
            let _fh_out = a.u64().ok_or_else(bad)?;
            let off_out = a.u64().ok_or_else(bad)?;
            let len = a.u64().ok_or_else(bad)?;
            let flags = a.u64().ok_or_else(bad)?;
            let n = ops.copy_file_range(ino, off_in, ino_out, off_out, len, flags, h.uid)?;
            Answer::Written(n)
        }
        // Sent for fuseblk mounts only; nothing to answer but success.
        op::DESTROY => Answer::Empty,
        // Locks, bmap, poll, tmpfile, statx, syncfs...: the kernel then does without (local
        // locks, no bmap...) or reports the error.
        _ => return Err(libc::ENOSYS),
    })
}

fn xattr(x: Xattr) -> Answer {
    match x {
        Xattr::Size(n) => Answer::XattrSize(n),
        Xattr::Data(v) => Answer::Data(v),
    }
}

/// A time the kernel sent: `(secs, nsecs)` as they are (pre-1970 seconds are negative).
fn time(secs: u64, nsecs: u32) -> OpResult<Ts> {
    if nsecs >= 1_000_000_000 {
        return Err(EINVAL);
    }
    Ok(Ts {
        secs: secs as i64,
        nsecs,
    })
}

/// `struct fuse_setattr_in` (88 bytes) into the core's [`SetAttr`].
fn setattr(a: &mut Cursor) -> OpResult<SetAttr> {
    let mut f = || -> Option<_> {
        let valid = a.u32()?;
        a.skip(4)?;
        let fh = a.u64()?;
        let size = a.u64()?;
        let _lock_owner = a.u64()?;
        let (atime, mtime, ctime) = (a.u64()?, a.u64()?, a.u64()?);
        let (atimensec, mtimensec, ctimensec) = (a.u32()?, a.u32()?, a.u32()?);
        let mode = a.u32()?;
        a.skip(4)?;
        let uid = a.u32()?;
        let gid = a.u32()?;
        Some((
            valid,
            fh,
            size,
            [(atime, atimensec), (mtime, mtimensec), (ctime, ctimensec)],
            mode,
            uid,
            gid,
        ))
    };
    let (valid, fh, size, times, mode, uid, gid) = f().ok_or(EINVAL)?;
    let has = |bit| valid & bit != 0;
    let set_time = |bit, now_bit, (s, ns): (u64, u32)| -> OpResult<Option<TimeSet>> {
        if !has(bit) {
            Ok(None)
        } else if has(now_bit) {
            Ok(Some(TimeSet::Now))
        } else {
            Ok(Some(TimeSet::At(time(s, ns)?)))
        }
    };
    Ok(SetAttr {
        mode: has(fattr::MODE).then_some(mode),
        uid: has(fattr::UID).then_some(uid),
        gid: has(fattr::GID).then_some(gid),
        size: has(fattr::SIZE).then_some(size),
        atime: set_time(fattr::ATIME, fattr::ATIME_NOW, times[0])?,
        mtime: set_time(fattr::MTIME, fattr::MTIME_NOW, times[1])?,
        ctime: if has(fattr::CTIME) {
            Some(time(times[2].0, times[2].1)?)
        } else {
            None
        },
        // Creation time is set by macOS only.
        crtime: None,
        fh: has(fattr::FH).then_some(Fh::new(fh)),
    })
}

fn fuse_attr(ino: u64, i: &Inode, blksize: u32) -> FuseAttr {
    let t = |ts: Ts| (ts.secs, ts.nsecs);
    FuseAttr {
        ino,
        size: i.size,
        blocks: i.alloc.div_ceil(512),
        times: [t(i.atime), t(i.mtime), t(i.ctime)],
        mode: i.kind.mode_bits() | u32::from(i.perm),
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize,
    }
}

/// The attributes of a negative entry (a regular file, all zero).
fn negative_attr() -> FuseAttr {
    FuseAttr {
        ino: 0,
        size: 0,
        blocks: 0,
        times: [(0, 0); 3],
        mode: libc::S_IFREG,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
    }
}

/// A READDIR or READDIRPLUS reply of at most `size` bytes (the kernel asks for a page or a
/// few; never more than a payload buffer holds).
fn listing(ops: &Ops, opcode: u32, ino: u64, fh: u64, offset: u64, size: u32) -> OpResult<Vec<u8>> {
    let max = (size as usize).min(crate::fuse::ops::MAX_WRITE as usize);
    let mut buf = vec![0u8; max];
    let mut o = Out::new(&mut buf);
    if opcode == op::READDIR {
        ops.readdir(ino, fh, offset, |e_ino, off, kind, name| {
            let need = abi::dirent_size(abi::DIRENT_SIZE, name);
            if o.len() + need > max {
                return true;
            }
            abi::dirent(
                &mut o,
                e_ino,
                off,
                name.len() as u32,
                kind.mode_bits() >> 12,
            );
            o.bytes(name);
            o.zeros(need - abi::DIRENT_SIZE - name.len());
            false
        })?;
    } else {
        let bs = ops.block_size();
        ops.readdirplus(ino, fh, offset, |e| {
            let fixed = abi::ENTRY_OUT_SIZE + abi::DIRENT_SIZE;
            let need = abi::dirent_size(fixed, e.name);
            if o.len() + need > max {
                return true;
            }
            let a = fuse_attr(e.ino, e.inode, bs);
            abi::entry_out(&mut o, e.ino, e.ttl, e.ttl, &a);
            abi::dirent(&mut o, e.ino, e.offset, e.name.len() as u32, a.mode >> 12);
            o.bytes(e.name);
            o.zeros(need - fixed - e.name.len());
            false
        })?;
    }
    let n = o.len();
    buf.truncate(n);
    Ok(buf)
}

impl Answer {
    fn encode(self, ops: &Ops, o: &mut Out) -> OpResult<()> {
        let bs = ops.block_size();
        match self {
            Answer::Empty => {}
            Answer::Entry(e) => {
                let a = match &e.inode {
                    Some(i) => fuse_attr(e.ino, i, bs),
                    None => negative_attr(),
                };
                abi::entry_out(o, e.ino, e.entry_ttl, e.attr_ttl, &a);
            }
            Answer::Attr(a) => abi::attr_out(o, a.ttl, &fuse_attr(a.ino, &a.inode, bs)),
            Answer::Opened(x) => abi::open_out(o, x.fh, x.flags),
            Answer::Created(a, x) => {
                let fa = fuse_attr(a.ino, &a.inode, bs);
                abi::entry_out(o, a.ino, a.ttl, a.ttl, &fa);
                abi::open_out(o, x.fh, x.flags);
            }
            Answer::Data(d) | Answer::Listing(d) => o.bytes(&d),
            Answer::Written(n) => {
                o.u32(n);
                o.u32(0);
            }
            Answer::Statfs(s) => {
                for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree] {
                    o.u64(v);
                }
                // bsize, namelen, frsize (= bsize, as on /dev/fuse), padding, spare[6]
                for v in [s.bsize, s.namelen, s.bsize] {
                    o.u32(v);
                }
                o.zeros(4 + 24);
            }
            Answer::XattrSize(n) => {
                o.u32(n);
                o.u32(0);
            }
            Answer::Offset(off) => o.u64(off as u64),
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fs::{Container, Volume, VolumeOptions};
    use crate::kv::mem::MemKv;
    use crate::store::Store;

    pub(crate) fn ops() -> Ops {
        Ops::new(volume(), false, true)
    }

    /// The `default` container of a new in-memory store.
    pub(crate) fn volume() -> Arc<Volume> {
        let store = Arc::new(Store::init(Arc::new(MemKv::new()), 4096).expect("init"));
        let id = store
            .container_by_name("default")
            .expect("lookup")
            .expect("default container")
            .id;
        let container = Container::new(store, &id);
        Volume::new(container, VolumeOptions::default()).expect("open")
    }

    fn header(opcode: u32, nodeid: u64) -> InHeader {
        InHeader {
            len: 0,
            opcode,
            unique: 7,
            nodeid,
            uid: 0,
            gid: 0,
        }
    }

    fn call_with(ops: &Ops, h: &InHeader, op_in: &[u8], input: &[u8]) -> Result<Vec<u8>, Errno> {
        let mut payload = vec![0u8; 64 * 1024];
        payload[..input.len()].copy_from_slice(input);
        let n = serve(ops, h, op_in, &mut payload, input.len())?;
        Ok(payload[..n].to_vec())
    }

    fn call(
        ops: &Ops,
        opcode: u32,
        nodeid: u64,
        op_in: &[u8],
        input: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        call_with(ops, &header(opcode, nodeid), op_in, input)
    }

    /// `call` as the kernel sends a request again after a takeover (`RESENT`).
    fn call_again(
        ops: &Ops,
        opcode: u32,
        nodeid: u64,
        op_in: &[u8],
        input: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        let h = header(opcode, nodeid);
        let resent = InHeader {
            unique: h.unique | abi::RESENT,
            ..h
        };
        call_with(ops, &resent, op_in, input)
    }

    #[test]
    fn a_request_sent_again_after_a_takeover_answers_as_done() {
        let ops = ops();
        let mkdir_in = [0o755u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
        let first = call(&ops, op::MKDIR, 1, &mkdir_in, b"d\0").expect("mkdir");
        // Done before the old daemon died: the same entry, not EEXIST.
        let again = call_again(&ops, op::MKDIR, 1, &mkdir_in, b"d\0").expect("mkdir again");
        assert_eq!(first[..8], again[..8]);
        // A plain repeat still fails.
        assert_eq!(
            call(&ops, op::MKDIR, 1, &mkdir_in, b"d\0"),
            Err(libc::EEXIST)
        );
        // A directory where a file was asked for is not "done".
        let create_in = [libc::O_WRONLY.to_ne_bytes(), 0o644u32.to_ne_bytes()].concat();
        assert_eq!(
            call_again(&ops, op::CREATE, 1, &create_in, b"d\0"),
            Err(libc::EEXIST)
        );
        // Extended attributes: XATTR_CREATE of the same value, removal of a removed one.
        let set_in = [
            5u32.to_ne_bytes(),
            (libc::XATTR_CREATE as u32).to_ne_bytes(),
        ]
        .concat();
        call(&ops, op::SETXATTR, 1, &set_in, b"user.a\0value").expect("setxattr");
        call_again(&ops, op::SETXATTR, 1, &set_in, b"user.a\0value").expect("setxattr again");
        assert_eq!(
            call_again(&ops, op::SETXATTR, 1, &set_in, b"user.a\0other"),
            Err(libc::EEXIST)
        );
        call(&ops, op::REMOVEXATTR, 1, &[], b"user.a\0").expect("removexattr");
        call_again(&ops, op::REMOVEXATTR, 1, &[], b"user.a\0").expect("removexattr again");
        // Unlinks and renames found done.
        call(&ops, op::RMDIR, 1, &[], b"d\0").expect("rmdir");
        call_again(&ops, op::RMDIR, 1, &[], b"d\0").expect("rmdir again");
        assert_eq!(call(&ops, op::RMDIR, 1, &[], b"d\0"), Err(libc::ENOENT));
    }

    #[test]
    fn requests_are_served_and_encoded() {
        let ops = ops();
        let mkdir_in = [0o755u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
        let e = call(&ops, op::MKDIR, 1, &mkdir_in, b"d\0").expect("mkdir");
        assert_eq!(e.len(), abi::ENTRY_OUT_SIZE);
        let ino = u64::from_ne_bytes(e[..8].try_into().expect("8 bytes"));
        assert_ne!(ino, 0);
        // fuse_attr.mode at 40 + 60 in the entry: a directory, 0755
        let mode = u32::from_ne_bytes(e[100..104].try_into().expect("4 bytes"));
        assert_eq!(mode, libc::S_IFDIR | 0o755);
        let l = call(&ops, op::LOOKUP, 1, &[], b"d\0").expect("lookup");
        assert_eq!(&l[..8], &e[..8]);
        // A missing name is a negative entry (inode 0) with the parent's TTL.
        let n = call(&ops, op::LOOKUP, 1, &[], b"nope\0").expect("negative lookup");
        assert_eq!(&n[..8], &[0; 8]);
        assert_eq!(u64::from_ne_bytes(n[16..24].try_into().expect("8")), 60);
        let open = call(&ops, op::OPENDIR, 1, &[0; 8], b"").expect("opendir");
        let mut read_in = open[..8].to_vec();
        read_in.extend_from_slice(&0u64.to_ne_bytes());
        read_in.extend_from_slice(&4096u32.to_ne_bytes());
        let list = call(&ops, op::READDIR, 1, &read_in, b"").expect("readdir");
        assert_eq!(list.len() % 8, 0);
        assert!(list.windows(1).any(|w| w == b"d"));
        assert_eq!(call(&ops, op::FLUSH, ino, &[0; 24], b""), Err(libc::ENOSYS));
        assert_eq!(call(&ops, op::IOCTL, ino, &[0; 32], b""), Err(libc::ENOTTY));
        assert_eq!(call(&ops, 4242, ino, &[], b""), Err(libc::ENOSYS));
    }

    #[test]
    fn malformed_requests_are_refused_not_panicked() {
        let ops = ops();
        let opcodes = [
            op::LOOKUP,
            op::GETATTR,
            op::SETATTR,
            op::READLINK,
            op::SYMLINK,
            op::MKNOD,
            op::MKDIR,
            op::UNLINK,
            op::RMDIR,
            op::RENAME,
            op::LINK,
            op::OPEN,
            op::READ,
            op::WRITE,
            op::STATFS,
            op::RELEASE,
            op::FSYNC,
            op::SETXATTR,
            op::GETXATTR,
            op::LISTXATTR,
            op::REMOVEXATTR,
            op::FLUSH,
            op::OPENDIR,
            op::READDIR,
            op::RELEASEDIR,
            op::FSYNCDIR,
            op::ACCESS,
            op::CREATE,
            op::FALLOCATE,
            op::READDIRPLUS,
            op::RENAME2,
            op::LSEEK,
            op::COPY_FILE_RANGE,
        ];
        for &opcode in &opcodes {
            // Arguments cut short, names without their NUL.
            for cut in [0, 3, 7] {
                let r = call(&ops, opcode, 1, &[0xff; 128][..cut], b"abc");
                if let Err(e) = r {
                    assert!(e > 0, "opcode {opcode}: errno {e}");
                }
            }
        }
        // Random bytes everywhere, random node ids.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let opcode = opcodes[(next() % opcodes.len() as u64) as usize];
            let op_in: Vec<u8> = (0..128).map(|_| next() as u8).collect();
            let len = (next() % 300) as usize;
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let nodeid = [1, 2, 0, u64::MAX, next()][(next() % 5) as usize];
            let _ = call(&ops, opcode, nodeid, &op_in, &input);
        }
        // A payload size past the buffer is refused.
        let mut small = vec![0u8; 16];
        let r = serve(&ops, &header(op::LOOKUP, 1), &[], &mut small, 17);
        assert_eq!(r, Err(libc::EINVAL));
    }
}
