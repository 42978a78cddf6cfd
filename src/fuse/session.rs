//! Mount sessions: mount(2) and INIT (`conn.rs`), the transport (the daemon's shared
//! `/dev/fuse` workers, and the io_uring queues when INIT took them), the notifier behind the
//! volume's `KernelLink`, readahead, unmount with its detach/abort fallbacks.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::{kernel_cache, writeback_cache};
use super::conn::{self, Conn};
use super::fusectl::abort_connection;
use super::notify::Notifier;
use super::state::{MountRecord, MountState};
use super::{pool, uring};
use crate::fdstore::FdStore;
use crate::fs::{MountJournal, Resumed, Volume, VolumeOptions};

/// How the kernel's requests reach a mount's daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `read(2)`/`write(2)` on `/dev/fuse`, by the daemon's shared workers.
    DevFuse,
    /// FUSE-over-io_uring queues, one per CPU (forgets, interrupts and notifications still
    /// use `/dev/fuse`).
    IoUring,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::DevFuse => "dev_fuse",
            Transport::IoUring => "io_uring",
        }
    }
}

/// A live mount of a volume, served by the daemon's shared workers (and its own io_uring
/// queues, when it has them).
pub struct MountHandle {
    conn: Arc<Conn>,
    /// The io_uring queues, when they were started (even if some failed to register).
    rings: Option<uring::Rings>,
    transport: Transport,
    ring_stats: Option<Arc<uring::Stats>>,
    mountpoint: PathBuf,
    /// The mount's source, `STORE:CONTAINER`.
    fsname: String,
    volume: Arc<Volume>,
    /// Where its descriptors are kept for the next daemon, and under which name.
    kept: Option<Kept>,
}

/// A mount whose descriptors the fd store keeps (see `fdstore.rs`); its state file stays
/// open as long as its volume, which journals into it.
struct Kept {
    store: FdStore,
    name: String,
    state: Arc<MountState>,
}

/// The name a mount's descriptors are kept under: its connection's number.
fn kept_name(minor: u64) -> String {
    format!("mount.{minor}")
}

/// Mounts `volume` at `mountpoint` (source shown as `fsname` in /proc/mounts) and serves it
/// from the daemon's workers. Returns once the mount is live.
pub fn mount(volume: Arc<Volume>, mountpoint: &Path, fsname: &str) -> std::io::Result<MountHandle> {
    let pool = pool::get()?;
    let selection = uring::Selection::from_env();
    let wants = conn::Wants {
        writeback: writeback_cache(),
        keep_cache: kernel_cache(),
    };
    let fd = conn::mount(mountpoint, fsname, volume.options().read_only)?;
    let conn = match Conn::handshake(fd, volume.clone(), wants, &selection) {
        Ok(c) => c,
        Err(e) => {
            let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
            return Err(e);
        }
    };
    log::debug!("{}: INIT {:?}", mountpoint.display(), conn.negotiated());
    // The kernel holds every request from INIT until the queues are registered (or a
    // registration fails): start them before anything can wait for the mount.
    let (transport, rings) = if !selection.accepted() {
        let why = selection.why_not().unwrap_or("not negotiated");
        log::info!("{}: FUSE over /dev/fuse ({why})", mountpoint.display());
        (Transport::DevFuse, None)
    } else {
        match uring::start(&conn) {
            Ok(r) => {
                log::info!(
                    "{}: FUSE over io_uring ({} queues x {} entries of {} KiB)",
                    mountpoint.display(),
                    r.nr_queues,
                    r.depth,
                    super::ops::MAX_WRITE / 1024
                );
                (Transport::IoUring, Some(r))
            }
            Err((e, r)) => {
                log::warn!(
                    "{}: io_uring setup failed ({e}); FUSE over /dev/fuse",
                    mountpoint.display()
                );
                (Transport::DevFuse, Some(r))
            }
        }
    };
    // Invalidations the core asks for go out from the notifier thread, never from a handler.
    volume.set_kernel_link(Arc::new(Notifier::new(&conn)?));
    // A mount over /dev/fuse outlives its daemon when an fd store keeps its descriptor:
    // what the kernel will know of it is journaled from the first request on.
    let fd_store = crate::fdstore::store().filter(|_| transport == Transport::DevFuse);
    let state = match &fd_store {
        Some(_) => match MountState::create() {
            Ok(s) => {
                let s = Arc::new(s);
                volume.set_journal(s.clone() as Arc<dyn MountJournal>);
                Some(s)
            }
            Err(e) => {
                log::warn!(
                    "{}: cannot create the mount's state file ({e}); it will not outlive the daemon",
                    mountpoint.display()
                );
                None
            }
        },
        None => None,
    };
    if let Err(e) = pool.add(conn.clone()) {
        let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
        return Err(e);
    }
    // Served from here on: the mount's root can be looked at.
    let minor = std::fs::metadata(mountpoint)
        .map(|m| libc_minor(m.dev()))
        .unwrap_or(0);
    conn.set_minor(minor);
    set_readahead(minor);
    let kept = match (fd_store, state) {
        (Some(store), Some(state)) => {
            let n = conn.negotiated();
            let opts = volume.options();
            let record = MountRecord {
                container: volume.head().container().as_str().to_string(),
                mountpoint: mountpoint.as_os_str().as_encoded_bytes().to_vec(),
                fsname: fsname.to_string(),
                snapdir_visible: opts.snapdir_visible,
                admin_uid: opts.admin_uid,
                read_only: opts.read_only,
                minor,
                kernel_minor: n.kernel_minor,
                flags: n.flags,
                max_write: n.max_write,
                max_readahead: n.max_readahead,
                io_uring: false,
            };
            keep(store, &conn, &state, &record, mountpoint)
        }
        _ => None,
    };
    let ring_stats = rings
        .as_ref()
        .filter(|_| transport == Transport::IoUring)
        .map(|r| r.stats.clone());
    Ok(MountHandle {
        conn,
        rings,
        transport,
        ring_stats,
        mountpoint: mountpoint.to_path_buf(),
        fsname: fsname.to_string(),
        volume,
        kept,
    })
}

/// Hands the mount's descriptors to the fd store, under its connection's number.
fn keep(
    store: FdStore,
    conn: &Conn,
    state: &Arc<MountState>,
    record: &MountRecord,
    mountpoint: &Path,
) -> Option<Kept> {
    let name = kept_name(record.minor);
    let kept = state
        .write_record(record)
        .and_then(|()| store.keep(&name, &[conn.fd(), state.fd()]));
    match kept {
        Ok(()) => Some(Kept {
            store,
            name,
            state: state.clone(),
        }),
        Err(e) => {
            log::warn!(
                "{}: cannot hand the mount to the fd store ({e}); it will not outlive the daemon",
                mountpoint.display()
            );
            None
        }
    }
}

/// A mount another daemon made, as its descriptors came back from the fd store: the
/// connection's `/dev/fuse` descriptor and its state file.
pub struct Inherited {
    record: MountRecord,
    fuse: std::os::fd::OwnedFd,
    state: Arc<MountState>,
    resumed: Resumed,
    /// Its daemon handed it over (a planned restart: everything it accepted is durable);
    /// false when that daemon died.
    handed_over: bool,
}

impl Inherited {
    /// The container's id.
    pub fn container(&self) -> &str {
        &self.record.container
    }

    pub fn mountpoint(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(&self.record.mountpoint))
    }

    pub fn options(&self) -> VolumeOptions {
        VolumeOptions {
            snapdir_visible: self.record.snapdir_visible,
            admin_uid: self.record.admin_uid,
            read_only: self.record.read_only,
        }
    }

    pub fn journal(&self) -> Arc<dyn MountJournal> {
        self.state.clone()
    }

    pub fn resumed(&self) -> &Resumed {
        &self.resumed
    }

    /// Did its daemon hand it over with everything it accepted durable (else it died)?
    pub fn handed_over(&self) -> bool {
        self.handed_over
    }

    /// Gives the mount up: its connection is aborted (its users get ENOTCONN, nothing
    /// waits forever), it is detached, and the fd store lets go of it.
    pub fn abandon(self, why: &str) {
        abandon(self.record.minor, &self.mountpoint(), why);
    }

    /// The FUSE connection's number.
    pub fn minor(&self) -> u64 {
        self.record.minor
    }
}

/// Gives up inherited mount `minor` at `mountpoint`: its connection is aborted (its users
/// get ENOTCONN, nothing waits forever), it is detached, and the fd store lets go of it.
pub fn abandon(minor: u64, mountpoint: &Path, why: &str) {
    log::error!(
        "{}: cannot resume the mount ({why}); its connection is aborted",
        mountpoint.display()
    );
    abort_connection(minor);
    let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
    if let Some(store) = crate::fdstore::store() {
        let _ = store.drop_name(&kept_name(minor));
    }
}

/// Sorts the descriptors handed to the daemon at start into the mounts they belong to
/// (`mount.N`: a `/dev/fuse` descriptor and a state file, told apart by their type).
/// Descriptors that make no mount are let go of (and their connection aborted).
pub fn inherited(fds: Vec<(String, std::os::fd::OwnedFd)>) -> Vec<Inherited> {
    use std::collections::BTreeMap;
    let mut by_name: BTreeMap<String, Vec<std::os::fd::OwnedFd>> = BTreeMap::new();
    for (name, fd) in fds {
        by_name.entry(name).or_default().push(fd);
    }
    let store = crate::fdstore::store();
    let mut out = Vec::new();
    for (name, fds) in by_name {
        let mut fuse = None;
        let mut state = None;
        for fd in fds {
            if crate::fdstore::is_char_device(&fd) {
                fuse = Some(fd);
            } else {
                state = Some(fd);
            }
        }
        let parsed = state.map(MountState::open);
        match (name.strip_prefix("mount."), fuse, parsed) {
            (Some(_), Some(fuse), Some(Ok((state, record, resumed, handed_over)))) => {
                out.push(Inherited {
                    record,
                    fuse,
                    state: Arc::new(state),
                    resumed,
                    handed_over,
                })
            }
            (_, _, parsed) => {
                let why = match parsed {
                    Some(Err(e)) => e.to_string(),
                    _ => "incomplete".to_string(),
                };
                log::error!("inherited descriptors {name:?} make no mount ({why}); dropped");
                if let Some(s) = &store {
                    let _ = s.drop_name(&name);
                }
            }
        }
    }
    out
}

/// Serves `volume` again on the connection a former daemon left: the same negotiated
/// parameters, the kernel asked to send again what was never answered.
pub fn resume(volume: Arc<Volume>, m: Inherited) -> std::io::Result<MountHandle> {
    let pool = pool::get()?;
    let mountpoint = m.mountpoint();
    if m.record.io_uring {
        return Err(std::io::Error::other(
            "it was served over io_uring, whose queues died with the old daemon",
        ));
    }
    let negotiated = conn::Negotiated {
        kernel_minor: m.record.kernel_minor,
        flags: m.record.flags,
        max_write: m.record.max_write,
        max_readahead: m.record.max_readahead,
    };
    let ops = conn::negotiated_ops(volume.clone(), &negotiated, kernel_cache());
    let conn = Conn::resume(m.fuse, ops, negotiated)?;
    conn.set_minor(m.record.minor);
    volume.set_kernel_link(Arc::new(Notifier::new(&conn)?));
    pool.add(conn.clone())?;
    if let Err(e) = conn.resend_unanswered() {
        log::warn!(
            "{}: the kernel cannot resend unanswered requests ({e}); they wait until unmount",
            mountpoint.display()
        );
    }
    // Served again: a restore the old daemon committed as it died is finished (the kernel
    // drops the old tree's names and pages).
    volume.finish_takeover();
    log::info!(
        "{}: resumed ({} handles open, {} snapshot views)",
        mountpoint.display(),
        m.resumed.handles.len(),
        m.resumed.views.len()
    );
    let kept = crate::fdstore::store().map(|store| Kept {
        store,
        name: kept_name(m.record.minor),
        state: m.state.clone(),
    });
    Ok(MountHandle {
        conn,
        rings: None,
        transport: Transport::DevFuse,
        ring_stats: None,
        mountpoint,
        fsname: m.record.fsname.clone(),
        volume,
        kept,
    })
}

/// Kernel readahead for the mount, in KiB. FUSE offers at most 128 KiB at init; the
/// connection's backing device takes more. Measured on a cold 1 GiB sequential read (dd
/// bs=1M): 474 MB/s with 128 KiB, 565 MB/s with 1 MiB; a cold 256 MiB read, 4 rounds
/// interleaved: 545-593 MiB/s with 1 MiB, 564-766 (median ~715) with 4 MiB, which keeps
/// more 1 MiB READs in flight for the daemon's threads. The host's disk here reads ahead
/// 8 MiB (mmap faults read around that much too), so 4 MiB stays below what it does.
const READAHEAD_KB: u32 = 4096;

/// Raises the readahead of FUSE connection `conn` (best effort: needs root and sysfs).
fn set_readahead(conn: u64) {
    let path = format!("/sys/class/bdi/0:{conn}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, READAHEAD_KB.to_string()) {
        log::info!("cannot raise readahead ({path}): {e}");
    }
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

impl MountHandle {
    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The mount's source, `STORE:CONTAINER`.
    pub fn fsname(&self) -> &str {
        &self.fsname
    }

    /// How the kernel's requests reach this mount.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Requests served through the io_uring queues so far (0 on `/dev/fuse`).
    pub fn ring_requests(&self) -> u64 {
        self.ring_stats
            .as_ref()
            .map_or(0, |s| s.requests.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Is the connection still up (not unmounted from outside, not aborted)?
    pub fn is_alive(&self) -> bool {
        !self.conn.is_ended()
    }

    /// Unmounts and waits for the connection to end. A busy mount is detached; if its users
    /// do not let go within `grace`, the FUSE connection is aborted.
    pub fn unmount(mut self, grace: Duration) -> std::io::Result<()> {
        use nix::mount::{umount2, MntFlags};
        match umount2(&self.mountpoint, MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(nix::errno::Errno::EBUSY) => {
                umount2(&self.mountpoint, MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
            }
            Err(e) => return Err(e.into()),
        }
        // The workers see ENODEV once the kernel tears the connection down, the io_uring
        // queues get their entries back (ENOTCONN).
        if !self.conn.wait_ended(grace) {
            abort_connection(self.conn.minor());
            if !self.conn.wait_ended(Duration::from_secs(30)) {
                return Err(std::io::Error::other("FUSE connection did not end"));
            }
        }
        if let Some(rings) = self.rings.take() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            std::thread::spawn(move || {
                rings.join();
                let _ = tx.send(());
            });
            if rx.recv_timeout(Duration::from_secs(30)).is_err() {
                return Err(std::io::Error::other("io_uring queues did not end"));
            }
        }
        self.conn.ops().destroy();
        if let Some(k) = self.kept.take() {
            if let Err(e) = k.store.drop_name(&k.name) {
                log::warn!("fd store: cannot let go of {}: {e}", k.name);
            }
        }
        Ok(())
    }
}

/// The FUSE adapter as the service's [`Mounter`](crate::service::Mounter).
pub struct FuseMounter;

impl crate::service::Mounter for FuseMounter {
    fn mount(
        &self,
        volume: Arc<Volume>,
        mountpoint: &Path,
        fsname: &str,
    ) -> std::io::Result<Box<dyn crate::service::Mounted>> {
        Ok(Box::new(mount(volume, mountpoint, fsname)?))
    }
}

impl crate::service::Mounted for MountHandle {
    fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    fn fsname(&self) -> &str {
        &self.fsname
    }

    fn transport(&self) -> (&'static str, u64) {
        (self.transport.as_str(), self.ring_requests())
    }

    fn is_alive(&self) -> bool {
        MountHandle::is_alive(self)
    }

    fn is_kept(&self) -> bool {
        self.kept.is_some()
    }

    fn mark_handed_over(&self) {
        if let Some(k) = &self.kept {
            if let Err(e) = k.state.mark_handed_over() {
                log::error!(
                    "{}: cannot mark the mount handed over ({e}); the next daemon treats it \
                     as after a crash",
                    self.mountpoint.display()
                );
            }
        }
    }

    fn unmount(self: Box<Self>, grace: Duration) -> std::io::Result<()> {
        MountHandle::unmount(*self, grace)
    }
}
