//! A mount's record outside the daemon: a memory file (memfd) whose descriptor is kept,
//! with the mount's `/dev/fuse` descriptor, by whoever holds the daemon's descriptors
//! (systemd's file-descriptor store or `snapfs serve`'s supervisor). A daemon that takes the
//! mount over reads from it everything the kernel still relies on: what INIT negotiated, the
//! snapshot view slots, head generations and moved inode numbers, and the open handles.
//!
//! Layout (a sparse file: untouched ranges cost nothing):
//! - `[0, 64 KiB)`: the header, written once at mount: `SNAPFSM1`, length, CRC-32 and the
//!   postcard [`MountRecord`]; its last 8 bytes say `SNAPFSHO` when the daemon handed the
//!   mount over with everything it accepted durable (a planned restart), zeros otherwise
//!   (cleared by the daemon that takes the mount over);
//! - `[64 KiB, 1 GiB)`: a log of view and numbering events, each `length, CRC-32, postcard
//!   body`; a zero length or a bad CRC ends it (a record torn by a crash is the last one);
//! - `[1 GiB, 2 GiB)`: the handle table, 16 bytes per handle number (`fh - 1`): the view's
//!   slot and store inode (`slot << 48 | ino`), then the kind and flags (0: free). An entry
//!   is one aligned 16-byte write, never torn by the death of the writer.
//!
//! Writes are `pwrite`s into the memory file (about a microsecond; no disk, no sync): the
//! file lives as long as a descriptor to it does, which is the mount's lifetime.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::fs::{HandleKind, HandleRecord, MountJournal, RestoreIntent, Resumed};
use crate::ids::{Epoch, Fh, Ino};

const MAGIC: &[u8; 8] = b"SNAPFSM1";
const HEADER_MAX: u64 = 64 << 10;
/// Where the handover mark goes (the header's last 8 bytes).
const HANDOVER_AT: u64 = HEADER_MAX - 8;
const HANDOVER_MARK: &[u8; 8] = b"SNAPFSHO";
const LOG_START: u64 = HEADER_MAX;
const LOG_END: u64 = 1 << 30;
const HANDLES_START: u64 = 1 << 30;
const HANDLE_SIZE: u64 = 16;
const MAX_HANDLES: u64 = (1 << 30) / HANDLE_SIZE;
const FILE_SIZE: u64 = HANDLES_START + MAX_HANDLES * HANDLE_SIZE;
/// Inode numbers per `Renumbered` log record (a restore may move millions).
const RENUMBER_CHUNK: usize = 4096;
/// The largest restore intent recorded in full; a larger one is recorded as such (and a
/// takeover right after it committed ends the mount rather than serve stale caches).
const RESTORE_INTENT_MAX: usize = 64 << 20;

const SLOT_SHIFT: u32 = 48;
const LOW_MASK: u64 = (1 << SLOT_SHIFT) - 1;
const IN_USE: u64 = 1;
const DIR: u64 = 2;
const APPEND: u64 = 4;
const WRITE: u64 = 8;

/// What a mount is, as the daemon that takes it over needs it: the container and options
/// it was mounted with, and what INIT negotiated (a resumed connection gets no new INIT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MountRecord {
    /// The container's id.
    pub container: String,
    /// The mountpoint, as bytes (any path).
    pub mountpoint: Vec<u8>,
    /// The mount's source, `STORE:CONTAINER`.
    pub fsname: String,
    pub snapdir_visible: bool,
    pub admin_uid: Option<u32>,
    pub read_only: bool,
    /// The FUSE connection's number (its device minor).
    pub minor: u64,
    pub kernel_minor: u32,
    pub flags: u64,
    pub max_write: u32,
    pub max_readahead: u32,
    /// FUSE over io_uring was taken at INIT.
    pub io_uring: bool,
}

#[derive(Serialize, Deserialize)]
enum Event {
    View {
        slot: u64,
        epoch: u64,
        name: String,
    },
    Generation {
        floor: u64,
    },
    Renumbered {
        slot: u64,
        inos: Vec<u64>,
    },
    RestoreBegun(RestoreIntent),
    /// A restore from this head epoch whose intent was too large to record.
    RestoreTooLarge(Epoch),
    RestoreDone,
}

struct Numbers {
    /// Handle numbers given back (reused first).
    free: Vec<u64>,
    /// The next never-used handle number.
    next: u64,
}

/// A mount's state file, open for writing.
pub(crate) struct MountState {
    file: File,
    log_end: Mutex<u64>,
    numbers: Mutex<Numbers>,
}

impl MountState {
    /// A new state file, its record to be written (`write_record`) before it is handed on.
    pub fn create() -> io::Result<MountState> {
        let name = CString::new("snapfs-mount").map_err(io::Error::other)?;
        let fd =
            nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
                .map_err(io::Error::from)?;
        let file = File::from(fd);
        file.set_len(FILE_SIZE)?;
        Ok(MountState {
            file,
            log_end: Mutex::new(LOG_START),
            numbers: Mutex::new(Numbers {
                free: Vec::new(),
                next: 1,
            }),
        })
    }

    /// Writes what the mount is (once the connection's number is known).
    pub fn write_record(&self, record: &MountRecord) -> io::Result<()> {
        let body = postcard::to_allocvec(record).map_err(io::Error::other)?;
        if body.len() as u64 + 16 > HANDOVER_AT {
            return Err(io::Error::other("mount record too large"));
        }
        let mut header = Vec::with_capacity(body.len() + 16);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(body.len() as u32).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        header.extend_from_slice(&body);
        self.file.write_all_at(&header, 0)
    }

    /// Marks the mount as handed over with everything its daemon accepted durable.
    pub fn mark_handed_over(&self) -> io::Result<()> {
        self.file.write_all_at(HANDOVER_MARK, HANDOVER_AT)
    }

    /// Reads and clears the handover mark (this daemon serves the mount from now on).
    fn take_handover_mark(file: &File) -> io::Result<bool> {
        let mut mark = [0u8; 8];
        file.read_exact_at(&mut mark, HANDOVER_AT)?;
        if &mark == HANDOVER_MARK {
            file.write_all_at(&[0u8; 8], HANDOVER_AT)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads a state file another daemon wrote: its record, what the volume needs, and
    /// whether that daemon handed the mount over (else it died).
    pub fn open(fd: OwnedFd) -> io::Result<(MountState, MountRecord, Resumed, bool)> {
        let file = File::from(fd);
        let mut head = [0u8; 16];
        file.read_exact_at(&mut head, 0)?;
        if &head[..8] != MAGIC {
            return Err(io::Error::other("not a snapfs mount state file"));
        }
        let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64;
        let crc = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
        if len + 16 > HANDOVER_AT {
            return Err(io::Error::other("mount state: bad header length"));
        }
        let mut body = vec![0u8; len as usize];
        file.read_exact_at(&mut body, 16)?;
        if crc32fast::hash(&body) != crc {
            return Err(io::Error::other("mount state: header checksum mismatch"));
        }
        let record: MountRecord = postcard::from_bytes(&body)
            .map_err(|e| io::Error::other(format!("mount state: {e}")))?;
        let handed_over = Self::take_handover_mark(&file)?;
        let mut resumed = Resumed::default();
        let log_end = read_log(&file, &mut resumed)?;
        let next = read_handles(&file, &mut resumed)?;
        let used: std::collections::HashSet<u64> =
            resumed.handles.iter().map(|(fh, _)| fh.get()).collect();
        let free = (1..next).filter(|n| !used.contains(n)).collect();
        // The last record of each inode wins.
        let mut last = std::collections::HashMap::new();
        for (ino, slot) in resumed.renumbered.drain(..) {
            last.insert(ino, slot);
        }
        resumed.renumbered = last.into_iter().collect();
        Ok((
            MountState {
                file,
                log_end: Mutex::new(log_end),
                numbers: Mutex::new(Numbers { free, next }),
            },
            record,
            resumed,
            handed_over,
        ))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn append(&self, event: &Event) {
        match postcard::to_allocvec(event) {
            Ok(b) => self.append_body(&b),
            Err(e) => log::error!("mount state: cannot encode an event: {e}"),
        }
    }

    fn append_body(&self, body: &[u8]) {
        let mut rec = Vec::with_capacity(body.len() + 8);
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        rec.extend_from_slice(body);
        let mut end = self.log_end.lock();
        if *end + rec.len() as u64 + 8 > LOG_END {
            log::error!("mount state: event log full; a takeover would lose numbering");
            return;
        }
        match self.file.write_all_at(&rec, *end) {
            Ok(()) => *end += rec.len() as u64,
            Err(e) => log::error!("mount state: cannot record an event: {e}"),
        }
    }

    fn write_handle(&self, fh: u64, words: [u64; 2]) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&words[0].to_le_bytes());
        b[8..].copy_from_slice(&words[1].to_le_bytes());
        let at = HANDLES_START + (fh - 1) * HANDLE_SIZE;
        if let Err(e) = self.file.write_all_at(&b, at) {
            log::error!("mount state: cannot record handle {fh}: {e}");
        }
    }
}

impl MountJournal for MountState {
    fn open(&self, rec: HandleRecord) -> Fh {
        let n = {
            let mut nums = self.numbers.lock();
            match nums.free.pop() {
                Some(n) => n,
                None => {
                    let n = nums.next;
                    nums.next += 1;
                    n
                }
            }
        };
        if n <= MAX_HANDLES {
            let flags = match rec.kind {
                HandleKind::Dir => IN_USE | DIR,
                HandleKind::File { append, write } => {
                    IN_USE | if append { APPEND } else { 0 } | if write { WRITE } else { 0 }
                }
            };
            let word = (rec.slot << SLOT_SHIFT) | (rec.ino.get() & LOW_MASK);
            self.write_handle(n, [word, flags]);
        } else {
            log::error!("mount state: more than {MAX_HANDLES} open handles; not recorded");
        }
        Fh::new(n)
    }

    fn close(&self, fh: Fh) {
        let n = fh.get();
        if n == 0 {
            return;
        }
        if n <= MAX_HANDLES {
            self.write_handle(n, [0, 0]);
        }
        self.numbers.lock().free.push(n);
    }

    fn view(&self, slot: u64, epoch: Epoch, name: &str) {
        self.append(&Event::View {
            slot,
            epoch: epoch.get(),
            name: name.to_string(),
        });
    }

    fn generation(&self, floor: u64) {
        self.append(&Event::Generation { floor });
    }

    fn renumbered(&self, slot: u64, inos: &[Ino]) {
        for chunk in inos.chunks(RENUMBER_CHUNK) {
            self.append(&Event::Renumbered {
                slot,
                inos: chunk.iter().map(|i| i.get()).collect(),
            });
        }
    }

    fn restore_begun(&self, intent: &RestoreIntent) {
        match postcard::to_allocvec(&Event::RestoreBegun(intent.clone())) {
            Ok(b) if b.len() <= RESTORE_INTENT_MAX => self.append_body(&b),
            _ => self.append(&Event::RestoreTooLarge(intent.old_head)),
        }
    }

    fn restore_done(&self) {
        self.append(&Event::RestoreDone);
    }
}

/// Replays the event log into `resumed`; returns where the next event goes.
fn read_log(file: &File, resumed: &mut Resumed) -> io::Result<u64> {
    let mut at = LOG_START;
    loop {
        let mut head = [0u8; 8];
        if at + 8 > LOG_END {
            return Ok(at);
        }
        file.read_exact_at(&mut head, at)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || at + 8 + len > LOG_END {
            return Ok(at);
        }
        let mut body = vec![0u8; len as usize];
        file.read_exact_at(&mut body, at + 8)?;
        if crc32fast::hash(&body) != crc {
            // Torn by the death of its writer: nothing after it was written.
            return Ok(at);
        }
        match postcard::from_bytes::<Event>(&body) {
            Ok(Event::View { slot, epoch, name }) => {
                resumed.views.push((slot, Epoch::new(epoch), name))
            }
            Ok(Event::Generation { floor }) => resumed.gen_floor = floor,
            Ok(Event::Renumbered { slot, inos }) => resumed
                .renumbered
                .extend(inos.into_iter().map(|i| (Ino::new(i), slot))),
            Ok(Event::RestoreBegun(intent)) => {
                resumed.restore = Some(intent);
                resumed.restore_unrecorded = None;
            }
            Ok(Event::RestoreTooLarge(old_head)) => {
                resumed.restore = None;
                resumed.restore_unrecorded = Some(old_head);
            }
            Ok(Event::RestoreDone) => {
                resumed.restore = None;
                resumed.restore_unrecorded = None;
            }
            Err(e) => return Err(io::Error::other(format!("mount state log: {e}"))),
        }
        at += 8 + len;
    }
}

/// Reads the handle table into `resumed`; returns the next never-used handle number. Only
/// the pages ever written are read (the table is sparse).
fn read_handles(file: &File, resumed: &mut Resumed) -> io::Result<u64> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut next = 1;
    let mut pos = HANDLES_START as i64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let data = match lseek(fd, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => return Ok(next),
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(fd, data, Whence::SeekHole)?;
        let mut at = data as u64;
        while at < hole as u64 {
            let n = ((hole as u64 - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)?;
            for (i, e) in buf[..n].chunks_exact(HANDLE_SIZE as usize).enumerate() {
                let word = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
                let flags = u64::from_le_bytes(e[8..].try_into().unwrap_or_default());
                let fh = (at - HANDLES_START) / HANDLE_SIZE + i as u64 + 1;
                if flags & IN_USE == 0 {
                    continue;
                }
                next = next.max(fh + 1);
                let kind = if flags & DIR != 0 {
                    HandleKind::Dir
                } else {
                    HandleKind::File {
                        append: flags & APPEND != 0,
                        write: flags & WRITE != 0,
                    }
                };
                resumed.handles.push((
                    Fh::new(fh),
                    HandleRecord {
                        slot: word >> SLOT_SHIFT,
                        ino: Ino::new(word & LOW_MASK),
                        kind,
                    },
                ));
            }
            at += n as u64;
        }
        pos = hole;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::KernelIno;

    fn record() -> MountRecord {
        MountRecord {
            container: "c1".into(),
            mountpoint: b"/mnt/x\xff".to_vec(),
            fsname: "/s:c".into(),
            snapdir_visible: true,
            admin_uid: Some(5),
            read_only: false,
            minor: 77,
            kernel_minor: 44,
            flags: 0xdead,
            max_write: 1 << 20,
            max_readahead: 131072,
            io_uring: false,
        }
    }

    fn created() -> MountState {
        let s = MountState::create().expect("create");
        s.write_record(&record()).expect("record");
        s
    }

    fn reopen(s: &MountState) -> (MountState, MountRecord, Resumed) {
        let fd = s.fd().try_clone_to_owned().expect("dup");
        let (s, rec, r, _) = MountState::open(fd).expect("open");
        (s, rec, r)
    }

    fn handed_over(s: &MountState) -> bool {
        let fd = s.fd().try_clone_to_owned().expect("dup");
        MountState::open(fd).expect("open").3
    }

    #[test]
    fn a_restore_intent_is_pending_until_done() {
        let s = created();
        let intent = RestoreIntent {
            old_head: Epoch::new(7),
            slot: Some(0xfffe),
            files: vec![Ino::new(5)],
            entries: vec![(KernelIno::new(1), b"x\xff".to_vec())],
            inodes: vec![KernelIno::new(5)],
        };
        s.restore_begun(&intent);
        let (_, _, r) = reopen(&s);
        assert_eq!(r.restore.as_ref(), Some(&intent));
        s.restore_done();
        let (_, _, r) = reopen(&s);
        assert_eq!(r.restore, None);
        assert_eq!(r.restore_unrecorded, None);
        // One too large for the log is recorded as such.
        let big = RestoreIntent {
            entries: vec![(KernelIno::new(1), vec![b'n'; 255]); RESTORE_INTENT_MAX / 255 + 1],
            ..intent
        };
        s.restore_begun(&big);
        let (_, _, r) = reopen(&s);
        assert_eq!(r.restore, None);
        assert_eq!(r.restore_unrecorded, Some(Epoch::new(7)));
    }

    #[test]
    fn the_handover_mark_is_seen_once() {
        let s = created();
        assert!(!handed_over(&s), "a new mount was never handed over");
        s.mark_handed_over().expect("mark");
        assert!(handed_over(&s), "the next daemon sees the mark");
        // ... and clears it: if that daemon dies, the one after it sees a death.
        assert!(!handed_over(&s));
        let (_, rec, _) = reopen(&s);
        assert_eq!(rec, record(), "the mark does not touch the record");
    }

    #[test]
    fn a_new_daemon_reads_back_what_the_mount_recorded() {
        let s = created();
        let file = |append, write| HandleKind::File { append, write };
        let a = s.open(HandleRecord {
            slot: 0,
            ino: Ino::new(5),
            kind: file(false, true),
        });
        let b = s.open(HandleRecord {
            slot: 2,
            ino: Ino::new(9),
            kind: HandleKind::Dir,
        });
        let c = s.open(HandleRecord {
            slot: 0,
            ino: Ino::new(6),
            kind: file(true, true),
        });
        s.close(b);
        s.view(1, Epoch::new(10), "snap-a");
        s.view(2, Epoch::new(12), "snap-b");
        s.generation(0xfffe);
        s.renumbered(0xfffe, &[Ino::new(5), Ino::new(7)]);
        s.renumbered(0xfffd, &[Ino::new(5)]);
        let (s2, rec, r) = reopen(&s);
        assert_eq!(rec, record());
        assert_eq!(
            r.views,
            vec![
                (1, Epoch::new(10), "snap-a".to_string()),
                (2, Epoch::new(12), "snap-b".to_string())
            ]
        );
        assert_eq!(r.gen_floor, 0xfffe);
        let mut ren = r.renumbered.clone();
        ren.sort();
        assert_eq!(ren, vec![(Ino::new(5), 0xfffd), (Ino::new(7), 0xfffe)]);
        assert_eq!(r.handles.len(), 2);
        assert!(r.handles.contains(&(
            a,
            HandleRecord {
                slot: 0,
                ino: Ino::new(5),
                kind: file(false, true)
            }
        )));
        assert!(r
            .handles
            .iter()
            .any(|(fh, h)| *fh == c && h.kind == file(true, true) && h.ino == Ino::new(6)));
        // The freed number is given out again before a new one; the log goes on after
        // what the first daemon wrote.
        let d = s2.open(HandleRecord {
            slot: 0,
            ino: Ino::new(8),
            kind: HandleKind::Dir,
        });
        assert_eq!(d, b);
        s2.view(3, Epoch::new(14), "snap-c");
        let (_, _, r3) = reopen(&s2);
        assert_eq!(r3.views.len(), 3);
        assert_eq!(r3.handles.len(), 3);
    }

    #[test]
    fn a_torn_event_ends_the_log() {
        let s = created();
        s.view(1, Epoch::new(10), "snap-a");
        let end = *s.log_end.lock();
        s.view(2, Epoch::new(11), "snap-b");
        // The second record's body, half written.
        s.file.write_all_at(&[0xee; 3], end + 9).expect("tear");
        let (_, _, r) = reopen(&s);
        assert_eq!(r.views.len(), 1);
    }

    #[test]
    fn foreign_files_are_refused() {
        let s = created();
        s.file.write_all_at(b"NOTSNAPF", 0).expect("write");
        let fd = s.fd().try_clone_to_owned().expect("dup");
        assert!(MountState::open(fd).is_err());
    }
}
