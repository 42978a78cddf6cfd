//! The FUSE kernel ABI (Linux `include/uapi/linux/fuse.h`, protocol 7.40 as we answer INIT;
//! the io_uring parts are 7.42+): requests as `/dev/fuse` delivers them (a `fuse_in_header`,
//! then the opcode's fixed argument struct, then names or data) and as a FUSE-over-io_uring
//! ring entry carries them, INIT, notifications, and the byte layout of every request
//! argument and reply we read or write. Everything is decoded and encoded field by field
//! (native endianness, as the kernel writes it) from plain byte slices: no `unsafe`, no
//! trust in lengths.
//!
//! A ring entry is two buffers: the header (`in_out`: `fuse_in_header` in, `fuse_out_header`
//! out; `op_in`: the opcode's fixed argument struct; `ring_ent_in_out`: commit id and payload
//! size) and the payload (everything after the fixed argument — names, write data — in, the
//! whole reply body out). Since 6.14 the kernel puts a zero-sized header first for opcodes
//! without one (LOOKUP, UNLINK, RMDIR, SYMLINK, REMOVEXATTR), so their names are in the
//! payload too. On `/dev/fuse` the same pieces follow each other in one buffer; [`op_in_size`]
//! says where the fixed argument ends.

/// Size of `struct fuse_uring_req_header`.
pub(crate) const HEADER_SIZE: usize = 288;
/// Offset of `op_in` in the header (after the 128-byte `in_out`).
pub(crate) const OP_IN: usize = 128;
/// Size of `op_in`.
pub(crate) const OP_IN_SIZE: usize = 128;
/// Offset of `struct fuse_uring_ent_in_out` in the header.
pub(crate) const ENT_IN_OUT: usize = 256;

/// `enum fuse_uring_cmd`.
pub(crate) const CMD_REGISTER: u32 = 1;
pub(crate) const CMD_COMMIT_AND_FETCH: u32 = 2;

/// Smallest payload buffer the kernel accepts (`FUSE_MIN_READ_BUFFER`).
pub(crate) const MIN_PAYLOAD: usize = 8192;

pub(crate) mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
}

/// `fuse_setattr_in.valid` bits.
pub(crate) mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const CTIME: u32 = 1 << 10;
}

/// `fuse_write_in.write_flags`: the writer lacks `CAP_FSETID`.
pub(crate) const WRITE_KILL_SUIDGID: u32 = 1 << 2;

/// The 80-byte command area of a FUSE SQE (`struct fuse_uring_cmd_req`: flags, commit id,
/// queue id).
pub(crate) fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// Reads fixed-size fields in order from a byte slice; every read is bounds-checked
/// (`None` past the end: the request is malformed).
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_ne_bytes)
    }

    pub fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_ne_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_ne_bytes)
    }

    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_ne_bytes)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    /// A NUL-terminated string (without its NUL); `None` if no NUL follows.
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let n = self.b.iter().position(|&c| c == 0)?;
        let s = self.take(n)?;
        self.skip(1)?;
        Some(s)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}

/// `struct fuse_in_header`, the fields we use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InHeader {
    /// Length of the whole request, header included.
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
}

impl InHeader {
    pub fn parse(b: &[u8]) -> Option<InHeader> {
        let mut c = Cursor::new(b);
        let len = c.u32()?;
        let opcode = c.u32()?;
        let unique = c.u64()?;
        let nodeid = c.u64()?;
        let uid = c.u32()?;
        let gid = c.u32()?;
        Some(InHeader {
            len,
            opcode,
            unique,
            nodeid,
            uid,
            gid,
        })
    }
}

/// Size of `struct fuse_in_header`.
pub(crate) const IN_HEADER_SIZE: usize = 40;

/// Size of the fixed argument struct that follows the header of `opcode` on `/dev/fuse`
/// (protocol 7.40, no extensions negotiated: no `FUSE_SETXATTR_EXT`, no security context);
/// 0 for opcodes whose arguments are names only, or that we do not serve.
pub(crate) fn op_in_size(opcode: u32) -> usize {
    match opcode {
        op::FORGET | op::LINK | op::RENAME | op::MKDIR | op::OPEN | op::OPENDIR => 8,
        op::SETXATTR | op::GETXATTR | op::LISTXATTR | op::ACCESS | op::INTERRUPT => 8,
        op::BATCH_FORGET => 8,
        op::GETATTR | op::MKNOD | op::FSYNC | op::FSYNCDIR | op::CREATE | op::RENAME2 => 16,
        op::RELEASE | op::RELEASEDIR | op::FLUSH | op::LSEEK => 24,
        op::IOCTL | op::FALLOCATE => 32,
        op::READ | op::READDIR | op::READDIRPLUS | op::WRITE => 40,
        op::COPY_FILE_RANGE => 56,
        op::SETATTR => 88,
        op::INIT => 64,
        _ => 0,
    }
}

/// Notification codes (`enum fuse_notify_code`), sent as the error field of a reply with
/// `unique` 0.
pub(crate) mod notify {
    pub const INVAL_INODE: i32 = 2;
    pub const INVAL_ENTRY: i32 = 3;
    /// Asks the kernel to send again every request read but not answered (Linux 6.9+): a
    /// resent request's `unique` has [`RESENT`](super::RESENT) set.
    pub const RESEND: i32 = 7;
}

/// The bit the kernel sets in the `unique` of a request it sends again after `RESEND`.
pub(crate) const RESENT: u64 = 1 << 63;

/// INIT capability bits (`FUSE_*` of `fuse_init_in.flags`, `flags2` shifted by 32).
pub(crate) mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const WRITEBACK_CACHE: u64 = 1 << 16;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// The protocol version we answer INIT with (the kernel speaks the lower of its and ours).
pub(crate) const PROTO_MAJOR: u32 = 7;
pub(crate) const PROTO_MINOR: u32 = 40;

/// `struct fuse_init_in`, the fields we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InitIn {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    /// `flags`, and `flags2 << 32` when the kernel set `FUSE_INIT_EXT`.
    pub flags: u64,
}

impl InitIn {
    pub fn parse(b: &[u8]) -> Option<InitIn> {
        let mut c = Cursor::new(b);
        let major = c.u32()?;
        let minor = c.u32()?;
        let max_readahead = c.u32()?;
        let flags = u64::from(c.u32()?);
        // flags2 exists from 7.36 on; older kernels send a 16-byte struct.
        let flags2 = if flags & init::INIT_EXT != 0 {
            u64::from(c.u32().unwrap_or(0))
        } else {
            0
        };
        Some(InitIn {
            major,
            minor,
            max_readahead,
            flags: flags | (flags2 << 32),
        })
    }
}

/// What we answer INIT with (`struct fuse_init_out`, 64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InitOut {
    pub max_readahead: u32,
    pub flags: u64,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
}

pub(crate) const INIT_OUT_SIZE: usize = 64;

impl InitOut {
    pub fn write(&self, o: &mut Out) {
        o.u32(PROTO_MAJOR);
        o.u32(PROTO_MINOR);
        o.u32(self.max_readahead);
        o.u32(self.flags as u32);
        o.bytes(&self.max_background.to_ne_bytes());
        o.bytes(&self.congestion_threshold.to_ne_bytes());
        o.u32(self.max_write);
        o.u32(self.time_gran);
        o.bytes(&self.max_pages.to_ne_bytes());
        o.zeros(2); // map_alignment
        o.u32((self.flags >> 32) as u32);
        o.zeros(INIT_OUT_SIZE - 36); // max_stack_depth, request_timeout, unused
    }
}

/// `struct fuse_out_header` (16 bytes): length of header plus body, `-errno`, request id.
pub(crate) fn out_header(body_len: usize, error: i32, unique: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    let len = u32::try_from(16 + body_len).unwrap_or(u32::MAX);
    h[0..4].copy_from_slice(&len.to_ne_bytes());
    h[4..8].copy_from_slice(&(-error).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

/// `struct fuse_uring_ent_in_out`: the commit id the kernel gave a request and its payload
/// size.
pub(crate) fn ent_in_out(b: &[u8]) -> Option<(u64, u32)> {
    let mut c = Cursor::new(b);
    let _flags = c.u64()?;
    let commit_id = c.u64()?;
    let payload_sz = c.u32()?;
    Some((commit_id, payload_sz))
}

/// Writes a reply body into a buffer, field by field. Writes past the end are refused and
/// remembered (`overflowed`), never performed.
pub(crate) struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflowed: bool,
}

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out {
            buf,
            len: 0,
            overflowed: false,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn bytes(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) if !self.overflowed => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            _ => self.overflowed = true,
        }
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_ne_bytes())
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_ne_bytes())
    }

    pub fn zeros(&mut self, n: usize) {
        const Z: [u8; 64] = [0; 64];
        let mut left = n;
        while left > 0 {
            let k = left.min(Z.len());
            self.bytes(&Z[..k]);
            left -= k;
        }
    }
}

/// `struct fuse_attr` (88 bytes).
pub(crate) struct FuseAttr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    /// (seconds, nanoseconds) of atime, mtime, ctime.
    pub times: [(i64, u32); 3],
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

pub(crate) const ATTR_SIZE: usize = 88;
/// `struct fuse_entry_out`.
pub(crate) const ENTRY_OUT_SIZE: usize = 40 + ATTR_SIZE;
/// `struct fuse_dirent` without its name.
pub(crate) const DIRENT_SIZE: usize = 24;

impl FuseAttr {
    pub fn write(&self, o: &mut Out) {
        o.u64(self.ino);
        o.u64(self.size);
        o.u64(self.blocks);
        for (s, _) in self.times {
            o.u64(s as u64);
        }
        for (_, ns) in self.times {
            o.u32(ns);
        }
        o.u32(self.mode);
        o.u32(self.nlink);
        o.u32(self.uid);
        o.u32(self.gid);
        o.u32(self.rdev);
        o.u32(self.blksize);
        o.u32(0); // flags
    }
}

/// `struct fuse_entry_out` (128 bytes).
pub(crate) fn entry_out(
    o: &mut Out,
    nodeid: u64,
    entry_ttl: std::time::Duration,
    attr_ttl: std::time::Duration,
    attr: &FuseAttr,
) {
    o.u64(nodeid);
    o.u64(0); // generation
    o.u64(entry_ttl.as_secs());
    o.u64(attr_ttl.as_secs());
    o.u32(entry_ttl.subsec_nanos());
    o.u32(attr_ttl.subsec_nanos());
    attr.write(o);
}

/// `struct fuse_attr_out` (104 bytes).
pub(crate) fn attr_out(o: &mut Out, ttl: std::time::Duration, attr: &FuseAttr) {
    o.u64(ttl.as_secs());
    o.u32(ttl.subsec_nanos());
    o.u32(0); // dummy
    attr.write(o);
}

/// `struct fuse_open_out` (16 bytes).
pub(crate) fn open_out(o: &mut Out, fh: u64, flags: u32) {
    o.u64(fh);
    o.u32(flags);
    o.u32(0); // backing_id
}

/// `struct fuse_dirent` header (the name and its padding to 8 bytes follow).
pub(crate) fn dirent(o: &mut Out, ino: u64, off: u64, namelen: u32, typ: u32) {
    o.u64(ino);
    o.u64(off);
    o.u32(namelen);
    o.u32(typ);
}

/// Bytes a directory entry takes with its name, padded to 8.
pub(crate) fn dirent_size(fixed: usize, name: &[u8]) -> usize {
    (fixed + name.len()).next_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_refuses_reads_past_the_end() {
        let mut c = Cursor::new(&[1, 0, 0, 0, 2, 0]);
        assert_eq!(c.u32(), Some(1));
        assert_eq!(c.u32(), None);
        assert_eq!(c.take(2), Some(&[2u8, 0][..]));
        assert_eq!(c.take(1), None);
        let mut c = Cursor::new(b"abc");
        assert_eq!(c.cstr(), None, "a name without its NUL is malformed");
        let mut c = Cursor::new(b"ab\0cd\0");
        assert_eq!(c.cstr(), Some(&b"ab"[..]));
        assert_eq!(c.cstr(), Some(&b"cd"[..]));
        assert_eq!(c.rest(), b"");
    }

    #[test]
    fn out_refuses_writes_past_the_end() {
        let mut buf = [0u8; 10];
        let mut o = Out::new(&mut buf);
        o.u64(7);
        assert!(!o.overflowed());
        o.u32(1);
        assert!(o.overflowed());
        assert_eq!(o.len(), 8);
    }

    #[test]
    fn reply_structs_have_the_kernel_sizes() {
        let a = FuseAttr {
            ino: 1,
            size: 2,
            blocks: 3,
            times: [(-2, 800_000_000), (4, 5), (6, 7)],
            mode: 0o100644,
            nlink: 1,
            uid: 2,
            gid: 3,
            rdev: 0,
            blksize: 4096,
        };
        let mut buf = [0u8; 256];
        let mut o = Out::new(&mut buf);
        a.write(&mut o);
        assert_eq!(o.len(), ATTR_SIZE);
        let mut o = Out::new(&mut buf);
        entry_out(&mut o, 1, Default::default(), Default::default(), &a);
        assert_eq!(o.len(), ENTRY_OUT_SIZE);
        assert_eq!(ENTRY_OUT_SIZE, 128);
        let mut o = Out::new(&mut buf);
        attr_out(&mut o, Default::default(), &a);
        assert_eq!(o.len(), 104);
        // atime (offset 24 in fuse_attr, after the 16 bytes of attr_out) is an i64 of
        // seconds; its nanoseconds at offset 48.
        assert_eq!(i64::from_ne_bytes(buf[40..48].try_into().unwrap()), -2);
        assert_eq!(
            u32::from_ne_bytes(buf[64..68].try_into().unwrap()),
            800_000_000
        );
        assert_eq!(dirent_size(DIRENT_SIZE, b"abc"), 32);
        assert_eq!(dirent_size(ENTRY_OUT_SIZE + DIRENT_SIZE, b""), 152);
    }

    #[test]
    fn headers_encode_as_the_kernel_reads_them() {
        let h = out_header(8, libc::ENOENT, 0x1234);
        assert_eq!(u32::from_ne_bytes(h[0..4].try_into().unwrap()), 24);
        assert_eq!(
            i32::from_ne_bytes(h[4..8].try_into().unwrap()),
            -libc::ENOENT
        );
        assert_eq!(u64::from_ne_bytes(h[8..16].try_into().unwrap()), 0x1234);
        let cmd = cmd_req(99, 3);
        assert_eq!(u64::from_ne_bytes(cmd[8..16].try_into().unwrap()), 99);
        assert_eq!(u16::from_ne_bytes(cmd[16..18].try_into().unwrap()), 3);
        let mut ent = [0u8; 32];
        ent[8..16].copy_from_slice(&5u64.to_ne_bytes());
        ent[16..20].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(ent_in_out(&ent), Some((5, 77)));
    }
}
