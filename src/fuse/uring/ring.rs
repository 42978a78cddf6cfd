//! The io_uring of one CPU's FUSE queues ([`Ring`]: 128-byte SQEs, shared by the queue of
//! that CPU of every connection) and one connection's queue on it ([`Queue`]: its ring
//! entries' buffers and the commands that hand entries to the kernel). The only `unsafe`
//! code of the crate lives here, for three reasons: the buffers are memory the kernel writes
//! into (mapped here, handed over by address), SQEs carry raw addresses, and `io_uring`
//! pushes are unsafe.
//!
//! Ownership protocol, which makes the safe API below sound: an entry's buffers belong to
//! the kernel from the moment its REGISTER or COMMIT_AND_FETCH SQE is pushed until its CQE
//! is reaped; only then does [`Queue::entry`] give out slices of them, and only until the
//! entry is committed again. The kernel writes into them only while it owns them (in task
//! work of the ring's thread, inside `io_uring_enter`). The mappings are released only once
//! every entry that was ever handed over has been given back for good (an error CQE: the
//! connection is gone); otherwise they are leaked rather than freed under the kernel.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::fuse::abi;

/// user_data of the eventfd poll; ring entries use their index.
pub(super) const EVENT_TAG: u64 = u64::MAX;

/// Anonymous private memory, zero-filled, populated by the kernel on first touch (a payload
/// buffer costs resident memory only for what requests actually used).
struct Region {
    ptr: NonNull<u8>,
    len: usize,
    leaked: bool,
}

impl Region {
    fn new(len: usize) -> io::Result<Region> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected. The result is
        // checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(Region {
            ptr,
            len,
            leaked: false,
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, unmapped once; the
            // queue only drops a region once the kernel holds no entry of it (else `leaked`).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Who holds an entry's buffers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holder {
    /// Never handed to the kernel (or its registration was refused).
    Idle,
    /// Handed to the kernel (REGISTER or COMMIT_AND_FETCH pushed, no CQE yet).
    Kernel,
    /// A request is in it; ours until committed.
    Daemon,
    /// The kernel gave it back with an error: the connection is gone (or refused it).
    Dead,
}

/// The io_uring of one CPU: the queues of every connection on that CPU push their commands
/// here; completions carry the queue's tag and the entry's index ([`tag`]).
pub(super) struct Ring {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    event_fd: i32,
}

/// Completion CQEs the ring keeps room for; more are held back by the kernel
/// (IORING_FEAT_NODROP) and come at the next reap.
const CQ_SIZE: u32 = 4096;
/// Submission slots (a full queue is submitted before more are pushed).
const SQ_SIZE: u32 = 256;

/// user_data of a queue's entry: the queue's slot on its ring and the entry's index.
pub(super) fn tag(slot: usize, entry: usize) -> u64 {
    ((slot as u64) << 16) | entry as u64
}

/// (slot, entry) of a user_data made by [`tag`].
pub(super) fn untag(tag: u64) -> (usize, usize) {
    ((tag >> 16) as usize, (tag & 0xffff) as usize)
}

impl Ring {
    /// Sets up the ring; `event_fd` wakes its thread (it must outlive the ring).
    pub fn new(event_fd: i32) -> io::Result<Ring> {
        // No SINGLE_ISSUER/DEFER_TASKRUN: measured no faster here (as libfuse found), and
        // without them the kernel fills an entry as soon as a request comes.
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize(CQ_SIZE)
            .setup_submit_all()
            .build(SQ_SIZE)?;
        Ok(Ring { ring, event_fd })
    }

    fn push(&mut self, sqe: &squeue::Entry128) -> io::Result<()> {
        loop {
            // SAFETY: every SQE pushed here refers to memory owned by a queue of this ring
            // that stays mapped while the kernel may use it (see the module's ownership
            // protocol), or to nothing (COMMIT_AND_FETCH carries no address, the poll an fd).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            // Full: hand what is queued to the kernel first.
            self.ring.submit()?;
        }
    }

    /// (Re)arms the one-shot poll on the eventfd.
    pub fn arm_event(&mut self) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(self.event_fd), libc::POLLIN as u32)
            .build()
            .user_data(EVENT_TAG);
        self.push(&squeue::Entry128::from(sqe))
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    /// Submits what is queued and waits for at least one completion (EINTR retried).
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // Completion queue overflowing: the caller reaps, then calls again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends the completions to `out` as (user_data, result); the caller hands each to
    /// its queue ([`Queue::completed`]).
    pub fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        for cqe in self.ring.completion() {
            out.push((cqe.user_data(), cqe.result()));
        }
    }
}

/// One connection's queue on a ring: its entries and their buffers.
pub(super) struct Queue {
    fuse: OwnedFd,
    qid: u16,
    /// This queue's slot on its ring (the high bits of its entries' tags).
    slot: usize,
    depth: usize,
    payload_size: usize,
    headers: Region,
    payloads: Region,
    iovecs: Box<[[libc::iovec; 2]]>,
    holders: Vec<Holder>,
    commit_ids: Vec<u64>,
}

impl Queue {
    /// Maps the buffers (`depth` entries of `payload_size` bytes each). `fuse` is a
    /// `/dev/fuse` descriptor of the connection.
    pub fn new(
        qid: u16,
        slot: usize,
        depth: usize,
        payload_size: usize,
        fuse: OwnedFd,
    ) -> io::Result<Queue> {
        let headers = Region::new(depth * abi::HEADER_SIZE)?;
        let payloads = Region::new(depth * payload_size)?;
        let mut iovecs = Vec::with_capacity(depth);
        for i in 0..depth {
            // SAFETY (pointer arithmetic): offsets stay within the two mappings.
            let (h, p) = unsafe {
                (
                    headers.ptr.as_ptr().add(i * abi::HEADER_SIZE),
                    payloads.ptr.as_ptr().add(i * payload_size),
                )
            };
            iovecs.push([
                libc::iovec {
                    iov_base: h.cast(),
                    iov_len: abi::HEADER_SIZE,
                },
                libc::iovec {
                    iov_base: p.cast(),
                    iov_len: payload_size,
                },
            ]);
        }
        Ok(Queue {
            fuse,
            qid,
            slot,
            depth,
            payload_size,
            headers,
            payloads,
            iovecs: iovecs.into_boxed_slice(),
            holders: vec![Holder::Idle; depth],
            commit_ids: vec![0; depth],
        })
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Entries the kernel may still hand back (not dead).
    pub fn live(&self) -> usize {
        self.holders.iter().filter(|h| **h != Holder::Dead).count()
    }

    fn register_sqe(&self, i: usize) -> squeue::Entry128 {
        let iov = self.iovecs[i].as_ptr() as u64;
        let sqe = opcode::UringCmd80::new(types::Fd(self.fuse.as_raw_fd()), abi::CMD_REGISTER)
            .addr(Some(iov))
            .cmd(abi::cmd_req(0, self.qid))
            .build()
            .user_data(tag(self.slot, i));
        // The kernel reads the iovec array (2 entries: header, payload) while it issues
        // the command; `sqe.len` must say 2.
        with_len(sqe, 2)
    }

    /// Hands every entry to the kernel (FUSE_IO_URING_CMD_REGISTER). Registration errors
    /// come back as CQEs.
    pub fn register(&mut self, ring: &mut Ring) -> io::Result<()> {
        for i in 0..self.depth {
            let sqe = self.register_sqe(i);
            self.holders[i] = Holder::Kernel;
            ring.push(&sqe)?;
        }
        Ok(())
    }

    /// Records the completion of entry `i`: with a request it becomes the daemon's, with
    /// an error dead (EINTR/EAGAIN excepted: those are resubmitted by the caller through
    /// [`Queue::retry`]).
    pub fn completed(&mut self, i: usize, res: i32) {
        if let Some(h) = self.holders.get_mut(i) {
            *h = match res {
                r if r >= 0 => Holder::Daemon,
                r if r == -libc::EINTR || r == -libc::EAGAIN => Holder::Daemon,
                _ => Holder::Dead,
            };
        }
    }

    /// Resubmits an entry's last command after EINTR/EAGAIN.
    pub fn retry(&mut self, ring: &mut Ring, i: usize) -> io::Result<()> {
        if i >= self.depth {
            return Ok(());
        }
        if self.commit_ids[i] == 0 {
            // Never fetched a request: its REGISTER is what failed.
            let sqe = self.register_sqe(i);
            self.holders[i] = Holder::Kernel;
            ring.push(&sqe)
        } else {
            self.commit(ring, i)
        }
    }

    /// The header and payload of entry `i`, if the daemon holds it.
    pub fn entry(&mut self, i: usize) -> Option<(&mut [u8], &mut [u8])> {
        if self.holders.get(i) != Some(&Holder::Daemon) {
            return None;
        }
        // SAFETY: entry `i` is held by the daemon (its CQE was reaped, it is not committed),
        // so the kernel does not touch its buffers; the two ranges are disjoint parts of the
        // queue's own mappings, and the `&mut self` borrow keeps them unique while in use.
        unsafe {
            let h = self.headers.ptr.as_ptr().add(i * abi::HEADER_SIZE);
            let p = self.payloads.ptr.as_ptr().add(i * self.payload_size);
            Some((
                std::slice::from_raw_parts_mut(h, abi::HEADER_SIZE),
                std::slice::from_raw_parts_mut(p, self.payload_size),
            ))
        }
    }

    /// Remembers the commit id of the request in entry `i` (read from its header).
    pub fn set_commit_id(&mut self, i: usize, id: u64) {
        if let Some(c) = self.commit_ids.get_mut(i) {
            *c = id;
        }
    }

    /// Hands entry `i` back with its reply (already written into its buffers):
    /// FUSE_IO_URING_CMD_COMMIT_AND_FETCH, which also waits for the next request.
    pub fn commit(&mut self, ring: &mut Ring, i: usize) -> io::Result<()> {
        let Some(&id) = self.commit_ids.get(i) else {
            return Ok(());
        };
        let sqe =
            opcode::UringCmd80::new(types::Fd(self.fuse.as_raw_fd()), abi::CMD_COMMIT_AND_FETCH)
                .cmd(abi::cmd_req(id, self.qid))
                .build()
                .user_data(tag(self.slot, i));
        self.holders[i] = Holder::Kernel;
        ring.push(&sqe)
    }
}

/// Whether this process can set up a ring of 128-byte SQEs at all (checked before taking
/// FUSE_OVER_IO_URING at INIT: once taken, the kernel holds every request until the queues
/// are registered or a registration fails).
pub(super) fn probe() -> io::Result<()> {
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .build(2)
        .map(drop)
}

/// Makes the kernel give up FUSE-over-io_uring on this connection: a REGISTER it must refuse
/// (one iovec instead of two) clears the connection's io_uring flag and releases the
/// requests it held, which then go to `/dev/fuse`. Ok once the kernel refused it.
pub(super) fn refuse(fuse: BorrowedFd, qid: u16) -> io::Result<()> {
    let mut ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2)?;
    let sqe = opcode::UringCmd80::new(types::Fd(fuse.as_raw_fd()), abi::CMD_REGISTER)
        .cmd(abi::cmd_req(0, qid))
        .build()
        .user_data(1);
    // SAFETY: the SQE carries no address (the kernel rejects its iovec count before
    // reading any), only the descriptor, which outlives the call.
    unsafe { ring.submission().push(&with_len(sqe, 1)) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let res = ring.completion().next().map(|c| c.result());
    match res {
        Some(r) if r < 0 => Ok(()),
        _ => Err(io::Error::other("the kernel accepted a malformed REGISTER")),
    }
}

/// Sets the SQE's `len` (the iovec count of a REGISTER), which `UringCmd80` leaves at 0.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]` over the kernel's 128-byte `io_uring_sqe`; `len` is
    // the u32 at byte offset 24 of it (opcode u8, flags u8, ioprio u16, fd i32, off u64,
    // addr u64, len u32). The copy is a plain value of the same layout.
    unsafe {
        let mut raw: [u8; 128] = std::mem::transmute(sqe);
        raw[24..28].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(raw)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let held = self
            .holders
            .iter()
            .filter(|h| matches!(h, Holder::Kernel))
            .count();
        if held > 0 {
            // The kernel may still write into these buffers: keep them mapped for the life
            // of the process rather than let it write into freed memory.
            log::warn!(
                "io_uring queue {}: {held} entries still with the kernel; their buffers are kept",
                self.qid
            );
            self.headers.leaked = true;
            self.payloads.leaked = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_len_sets_the_sqe_len_field() {
        let sqe = opcode::UringCmd80::new(types::Fd(3), abi::CMD_REGISTER)
            .addr(Some(0x1000))
            .build()
            .user_data(7);
        let sqe = with_len(sqe, 2);
        // SAFETY: as in `with_len`: a 128-byte plain value.
        let raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(raw[0], opcode::UringCmd80::CODE);
        assert_eq!(u64::from_ne_bytes(raw[16..24].try_into().unwrap()), 0x1000);
        assert_eq!(u32::from_ne_bytes(raw[24..28].try_into().unwrap()), 2);
        assert_eq!(u64::from_ne_bytes(raw[32..40].try_into().unwrap()), 7);
    }
}
