//! One FUSE connection over `/dev/fuse`, served without a thread of its own: mount(2) with a
//! fresh `/dev/fuse` descriptor, the INIT handshake, reading one request, answering it
//! (decoded and encoded by `dispatch.rs`, as the io_uring queues do), and the notifications
//! we send. The shared workers that read every connection live in `pool.rs`.
//!
//! Reads are non-blocking once INIT is answered: the pool polls the descriptor and any of
//! its workers reads the next request. Several workers may read one descriptor at once;
//! the kernel hands each request to exactly one of them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::errno::Errno as NixErrno;

use super::abi::{self, init, op, InHeader, InitIn, InitOut, Out};
use super::config::readdirplus;
use super::dispatch;
use super::ops::{Errno, Ops, MAX_WRITE};
use super::uring;
use crate::fs::Volume;

/// Size of a request buffer: the kernel refuses reads into less than the largest WRITE
/// (header, `fuse_write_in`, `max_write` bytes); READ replies (at most `max_pages` pages,
/// 1 MiB) are encoded into the same buffer after the request's fixed part.
pub(crate) const BUF_SIZE: usize = MAX_WRITE as usize + 8192;

/// A request buffer with every page present, so the kernel never has to fault one in while
/// it copies a request in (or a reply out). A page fault in that copy fails when the
/// daemon is being killed, and the kernel then ends the request with EIO instead of keeping
/// it for the next daemon: for a WRITE of cached pages, written back long after the
/// writer's write(2) returned, those bytes were lost (the file read zeros there; tracing
/// `fuse:fuse_request_end` showed resent 1 MiB WRITEs ended with -5 by a dying worker).
/// Filled with a non-zero byte: the allocator cannot hand back untouched zero pages, and
/// the fill is not optimized away. Locked in memory where the limit allows it (so swap
/// never takes a page back); what stays possible is the kernel migrating a page (compaction)
/// at the very moment of a kill.
pub(crate) fn request_buffer() -> Vec<u8> {
    let buf = vec![0xa5u8; BUF_SIZE];
    lock_in_memory(&buf);
    buf
}

/// Best effort `mlock` of `buf` (it stays allocated as long as the caller keeps it; the
/// lock goes with the memory when it is freed).
#[allow(unsafe_code)]
fn lock_in_memory(buf: &[u8]) {
    // SAFETY: mlock only changes how the kernel treats the pages of this live allocation;
    // it reads and writes nothing.
    let rc = unsafe { libc::mlock(buf.as_ptr().cast(), buf.len()) };
    if rc != 0 {
        log::debug!(
            "request buffer not locked in memory: {}",
            io::Error::last_os_error()
        );
    }
}

/// What INIT decided for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The kernel's protocol minor version.
    pub kernel_minor: u32,
    /// The capabilities in force (ours & the kernel's).
    pub flags: u64,
    pub max_write: u32,
    pub max_readahead: u32,
}

impl Negotiated {
    /// Whether the kernel's writeback cache is in force (it then owns mtime/ctime of regular
    /// files and places appends itself).
    pub fn writeback(&self) -> bool {
        self.flags & init::WRITEBACK_CACHE != 0
    }
}

/// What a mount asks for at INIT beyond what every mount does (see [`super::config`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wants {
    pub writeback: bool,
    pub keep_cache: bool,
}

/// The operations a connection serves `volume` with, as INIT decided them: asked-for
/// features the kernel did not take are not assumed.
pub(crate) fn negotiated_ops(
    volume: Arc<Volume>,
    negotiated: &Negotiated,
    keep_cache: bool,
) -> Arc<Ops> {
    Arc::new(Ops::new(volume, negotiated.writeback(), keep_cache))
}

/// A mounted FUSE connection.
pub(crate) struct Conn {
    fd: OwnedFd,
    ops: Arc<Ops>,
    negotiated: Negotiated,
    /// Number of the connection under /sys/fs/fuse/connections (its device minor).
    minor: AtomicU64,
    ended: Mutex<bool>,
    ended_cv: Condvar,
}

/// Mounts a FUSE filesystem at `mountpoint` (source `fsname`, type `fuse.snapfs`) and
/// returns the connection's `/dev/fuse` descriptor. As fuser did: allow_other,
/// default_permissions, device files and setuid honoured.
pub(crate) fn mount(mountpoint: &Path, fsname: &str, read_only: bool) -> io::Result<OwnedFd> {
    use nix::mount::MsFlags;
    let root_mode = std::fs::metadata(mountpoint)?.mode();
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                io::Error::other("/dev/fuse not found (try `modprobe fuse`)")
            }
            _ => io::Error::other(format!("cannot open /dev/fuse: {e}")),
        })?;
    let fd = OwnedFd::from(dev);
    let options = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions,allow_other",
        fd.as_raw_fd(),
        root_mode,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    let mut flags = MsFlags::empty();
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some(fsname),
        mountpoint,
        Some("fuse.snapfs"),
        flags,
        Some(options.as_str()),
    )
    .map_err(|e| {
        io::Error::from_raw_os_error(e as i32)
            .with_context(format!("mount {} (fuse.snapfs)", mountpoint.display()))
    })?;
    Ok(fd)
}

trait Context {
    fn with_context(self, what: String) -> io::Error;
}

impl Context for io::Error {
    fn with_context(self, what: String) -> io::Error {
        io::Error::new(self.kind(), format!("{what}: {self}"))
    }
}

impl Conn {
    /// Answers the kernel's INIT on `fd` (blocking until it comes; the kernel sends it at
    /// mount) and returns the connection, ready to be served. `selection` learns whether
    /// FUSE-over-io_uring was taken.
    pub fn handshake(
        fd: OwnedFd,
        volume: Arc<Volume>,
        wants: Wants,
        selection: &uring::Selection,
    ) -> io::Result<Arc<Conn>> {
        let mut buf = request_buffer();
        let negotiated = loop {
            let n = read_blocking(fd.as_fd(), &mut buf)?;
            let h = InHeader::parse(&buf[..n])
                .ok_or_else(|| io::Error::other("short request before INIT"))?;
            if h.opcode != op::INIT {
                reply(fd.as_fd(), h.unique, Err(libc::EIO), &[]);
                return Err(io::Error::other(format!(
                    "FUSE opcode {} before INIT",
                    h.opcode
                )));
            }
            let body = buf.get(abi::IN_HEADER_SIZE..n).unwrap_or(&[]);
            let init = InitIn::parse(body).ok_or_else(|| io::Error::other("short INIT"))?;
            if init.major > abi::PROTO_MAJOR {
                // The kernel asks again with our major version.
                let mut v = [0u8; 8];
                v[..4].copy_from_slice(&abi::PROTO_MAJOR.to_ne_bytes());
                v[4..].copy_from_slice(&abi::PROTO_MINOR.to_ne_bytes());
                reply(fd.as_fd(), h.unique, Ok(()), &v);
                continue;
            }
            if init.major < abi::PROTO_MAJOR || init.minor < 31 {
                reply(fd.as_fd(), h.unique, Err(libc::EPROTO), &[]);
                return Err(io::Error::other(format!(
                    "FUSE protocol {}.{} is too old (7.31 or later needed)",
                    init.major, init.minor
                )));
            }
            let out = init_reply(&init, wants, selection);
            let mut body = [0u8; abi::INIT_OUT_SIZE];
            let mut o = Out::new(&mut body);
            out.write(&mut o);
            reply(fd.as_fd(), h.unique, Ok(()), &body);
            break Negotiated {
                kernel_minor: init.minor,
                flags: out.flags,
                max_write: out.max_write,
                max_readahead: out.max_readahead,
            };
        };
        Self::resume(
            fd,
            negotiated_ops(volume, &negotiated, wants.keep_cache),
            negotiated,
        )
    }

    /// A connection INIT was answered on, ready to be served: the one just mounted, or one
    /// another daemon mounted and negotiated, taken over through its descriptor (no INIT:
    /// the kernel sends it once per connection; the same parameters).
    pub fn resume(fd: OwnedFd, ops: Arc<Ops>, negotiated: Negotiated) -> io::Result<Arc<Conn>> {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Arc::new(Conn {
            fd,
            ops,
            negotiated,
            minor: AtomicU64::new(0),
            ended: Mutex::new(false),
            ended_cv: Condvar::new(),
        }))
    }

    /// Asks the kernel to send again the requests a former daemon read and never answered
    /// (they come back with [`abi::RESENT`] in their `unique`).
    pub fn resend_unanswered(&self) -> io::Result<()> {
        resend_unanswered(self.fd())
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    pub fn set_minor(&self, minor: u64) {
        self.minor.store(minor, Ordering::SeqCst);
    }

    pub fn minor(&self) -> u64 {
        self.minor.load(Ordering::SeqCst)
    }

    /// Reads the next request into `buf`: its length, `Ok(None)` when none is waiting,
    /// `Err` once the connection is gone (unmounted or aborted).
    pub fn read(&self, buf: &mut [u8]) -> Result<Option<usize>, NixErrno> {
        loop {
            match nix::unistd::read(self.fd.as_raw_fd(), buf) {
                Ok(n) => return Ok(Some(n)),
                // ENOENT: the request was interrupted while we read it.
                Err(NixErrno::EINTR) | Err(NixErrno::ENOENT) => continue,
                Err(NixErrno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves the request of `n` bytes in `buf` and answers it (forgets and interrupts get
    /// no answer). `before_slow` runs first if the request may wait (a WAL sync, a snapshot).
    pub fn serve(&self, buf: &mut [u8], n: usize, before_slow: impl FnOnce()) {
        let Some(h) = buf.get(..n).and_then(InHeader::parse) else {
            log::warn!("short FUSE request ({n} bytes) ignored");
            return;
        };
        match h.opcode {
            // Kernel numbers are derived, not counted: nothing to forget.
            op::FORGET | op::BATCH_FORGET => return,
            // Requests are not cancellable once started; the kernel waits for the answer.
            op::INTERRUPT => return,
            op::INIT => {
                reply(self.fd(), h.unique, Err(libc::EIO), &[]);
                return;
            }
            _ => {}
        }
        if dispatch::is_slow(&self.ops, &h) {
            before_slow();
        }
        let len = (h.len as usize).min(n);
        let fixed = (abi::IN_HEADER_SIZE + abi::op_in_size(h.opcode)).min(len);
        let (head, rest) = buf.split_at_mut(fixed);
        let op_in = &head[abi::IN_HEADER_SIZE.min(fixed)..];
        let input_len = len - fixed;
        let r = guarded(|| dispatch::serve(&self.ops, &h, op_in, rest, input_len));
        match r {
            Ok(body_len) => reply(self.fd(), h.unique, Ok(()), &rest[..body_len]),
            Err(e) => reply(self.fd(), h.unique, Err(e), &[]),
        }
    }

    /// Drops the kernel's cached entry `name` of directory `parent` (present or absent).
    pub fn inval_entry(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        let mut arg = [0u8; 16];
        arg[..8].copy_from_slice(&parent.to_ne_bytes());
        let namelen = u32::try_from(name.len()).map_err(|_| io::Error::other("name too long"))?;
        arg[8..12].copy_from_slice(&namelen.to_ne_bytes());
        self.notify(abi::notify::INVAL_ENTRY, &[&arg, name, b"\0"])
    }

    /// Drops the kernel's attributes and pages of `ino` (written back first if dirty).
    pub fn inval_inode(&self, ino: u64) -> io::Result<()> {
        let mut arg = [0u8; 24];
        arg[..8].copy_from_slice(&ino.to_ne_bytes());
        // offset 0, length 0: every page
        self.notify(abi::notify::INVAL_INODE, &[&arg])
    }

    fn notify(&self, code: i32, parts: &[&[u8]]) -> io::Result<()> {
        let body: usize = parts.iter().map(|p| p.len()).sum();
        let header = abi::out_header(body, -code, 0);
        let mut iov = Vec::with_capacity(parts.len() + 1);
        iov.push(io::IoSlice::new(&header));
        iov.extend(parts.iter().map(|p| io::IoSlice::new(p)));
        nix::sys::uio::writev(self.fd(), &iov).map_err(io::Error::from)?;
        Ok(())
    }

    /// Marks the connection gone (its reader saw ENODEV) and wakes who waits for it.
    pub fn set_ended(&self) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if !*ended {
            *ended = true;
            self.ended_cv.notify_all();
        }
    }

    pub fn is_ended(&self) -> bool {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the connection to end; true if it did.
    pub fn wait_ended(&self, timeout: Duration) -> bool {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let (ended, _) = self
            .ended_cv
            .wait_timeout_while(ended, timeout, |e| !*e)
            .unwrap_or_else(|e| e.into_inner());
        *ended
    }
}

/// The capabilities and limits we answer INIT with.
fn init_reply(init: &InitIn, wants: Wants, selection: &uring::Selection) -> InitOut {
    let offered = init.flags;
    let mut want = init::ASYNC_READ | init::BIG_WRITES | init::INIT_EXT;
    if offered & init::MAX_PAGES != 0 {
        want |= init::MAX_PAGES;
    }
    want |= init::PARALLEL_DIROPS;
    // We drop setuid/setgid bits and file capabilities on write, truncate and chown
    // ourselves; in exchange the kernel stops asking for `security.capability` before
    // every write (one round trip less per write: 4 KiB random writes +20 %).
    want |= init::HANDLE_KILLPRIV_V2;
    // Directory listings carry each entry's attributes (one round trip per listing chunk
    // instead of a LOOKUP per name on a cold walk); the kernel's adaptive mode falls back
    // to plain listings where nobody looks the names up.
    if readdirplus() {
        if offered & init::DO_READDIRPLUS == 0 {
            log::info!("the kernel offers no READDIRPLUS");
        }
        want |= init::DO_READDIRPLUS | init::READDIRPLUS_AUTO;
    }
    // A symlink's target never changes (a new target is a new inode; restores move the
    // head to new inode numbers; snapshot views are frozen): the kernel may keep it.
    if wants.keep_cache {
        want |= init::CACHE_SYMLINKS;
    }
    if wants.writeback {
        if offered & init::WRITEBACK_CACHE == 0 {
            log::warn!("the kernel offers no writeback cache; every write goes to the daemon");
        }
        want |= init::WRITEBACK_CACHE;
    }
    // FUSE-over-io_uring: offered only where `enable_uring` is on. Asked for unless turned
    // off; requests move to the rings once every queue is registered (`session.rs`).
    let uring_offered = offered & init::OVER_IO_URING != 0;
    let accepted = selection.wanted() && uring_offered && uring::usable();
    if accepted {
        want |= init::OVER_IO_URING;
    }
    selection.negotiated(uring_offered, accepted);
    let max_pages = (MAX_WRITE.max(init.max_readahead) - 1) / 4096 + 1;
    InitOut {
        max_readahead: init.max_readahead,
        flags: want & offered,
        max_background: 16,
        congestion_threshold: 12,
        max_write: MAX_WRITE,
        time_gran: 1,
        max_pages: u16::try_from(max_pages).unwrap_or(u16::MAX),
    }
}

fn read_blocking(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(n) => return Ok(n),
            Err(NixErrno::EINTR) | Err(NixErrno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Answers request `unique`: `body` on success, or the errno.
fn reply(fd: BorrowedFd, unique: u64, result: Result<(), Errno>, body: &[u8]) {
    let (error, body) = match result {
        Ok(()) => (0, body),
        Err(e) => (e, &[][..]),
    };
    let header = abi::out_header(body.len(), error, unique);
    let iov = [io::IoSlice::new(&header), io::IoSlice::new(body)];
    match nix::sys::uio::writev(fd, &iov) {
        Ok(_) => {}
        // The request was interrupted and is gone, or the connection ended meanwhile.
        Err(NixErrno::ENOENT) | Err(NixErrno::ENODEV) => {}
        Err(e) => log::warn!("cannot answer FUSE request {unique}: {e}"),
    }
}

/// Asks the kernel to send again on `fd` every request read and never answered.
pub(crate) fn resend_unanswered(fd: BorrowedFd) -> io::Result<()> {
    let header = abi::out_header(0, -abi::notify::RESEND, 0);
    nix::sys::uio::writev(fd, &[io::IoSlice::new(&header)]).map_err(io::Error::from)?;
    Ok(())
}

/// Answers the next request on `fd` (blocking until one comes) with EIO, as the supervisor
/// does for the mounts of a daemon that cannot start: their users get an error instead of
/// waiting forever. Forgets and interrupts get no answer. Returns false once the connection
/// is gone (unmounted or aborted).
pub(crate) fn answer_eio(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<bool> {
    let n = match nix::unistd::read(fd.as_raw_fd(), buf) {
        Ok(n) => n,
        Err(NixErrno::EINTR) | Err(NixErrno::ENOENT) | Err(NixErrno::EAGAIN) => return Ok(true),
        Err(NixErrno::ENODEV) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if let Some(h) = buf.get(..n).and_then(InHeader::parse) {
        if !matches!(h.opcode, op::FORGET | op::BATCH_FORGET | op::INTERRUPT) {
            reply(fd, h.unique, Err(libc::EIO), &[]);
        }
    }
    Ok(true)
}

/// Runs a handler, turning a panic into EIO: a worker serves every mount and must outlive
/// every request.
pub(crate) fn guarded(f: impl FnOnce() -> Result<usize, Errno>) -> Result<usize, Errno> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log::error!("a FUSE request handler panicked; answered EIO");
        Err(libc::EIO)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_takes_only_what_the_kernel_offers() {
        let sel = uring::Selection::from_env();
        let offered = init::ASYNC_READ | init::BIG_WRITES | init::MAX_PAGES | init::INIT_EXT;
        let wants = Wants {
            writeback: false,
            keep_cache: true,
        };
        let out = init_reply(
            &InitIn {
                major: 7,
                minor: 44,
                max_readahead: 131072,
                flags: offered,
            },
            wants,
            &sel,
        );
        assert_eq!(out.flags & !offered, 0, "nothing the kernel did not offer");
        assert_eq!(out.max_pages, 256);
        assert_eq!(out.max_write, MAX_WRITE);
        let mut body = [0u8; abi::INIT_OUT_SIZE];
        let mut o = Out::new(&mut body);
        out.write(&mut o);
        assert_eq!(o.len(), abi::INIT_OUT_SIZE);
        assert!(!o.overflowed());
    }

    /// Writes are served as written-back pages (times left to the kernel) only where the
    /// kernel took the writeback cache: without it nobody else would stamp them.
    #[test]
    fn a_writeback_cache_the_kernel_does_not_offer_is_not_assumed() {
        let sel = uring::Selection::from_env();
        let base = init::ASYNC_READ | init::BIG_WRITES | init::MAX_PAGES | init::INIT_EXT;
        for (offered, kept) in [(base, false), (base | init::WRITEBACK_CACHE, true)] {
            let wants = Wants {
                writeback: true,
                keep_cache: true,
            };
            let req = InitIn {
                major: 7,
                minor: 44,
                max_readahead: 131072,
                flags: offered,
            };
            let out = init_reply(&req, wants, &sel);
            assert_eq!(out.flags & init::WRITEBACK_CACHE != 0, kept);
            let negotiated = Negotiated {
                kernel_minor: 44,
                flags: out.flags,
                max_write: out.max_write,
                max_readahead: out.max_readahead,
            };
            let ops = negotiated_ops(crate::fuse::dispatch::tests::volume(), &negotiated, true);
            assert_eq!(ops.writeback(), kept);
        }
    }
}
