//! Mounting and unmounting containers. The service decides what may be mounted where; the
//! [`Mounter`] it was given (the FUSE adapter, in the daemon) does the mounting.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Service, ServiceError, ServiceResult};
use crate::fs::{Container, MountJournal, Resumed, Volume, VolumeOptions};
use crate::ids::ContainerId;
use crate::store::ContainerRecord;

/// How long a busy mount may take to let go after being detached on stop.
const UNMOUNT_GRACE: Duration = Duration::from_secs(2);

/// Makes a volume visible at a mountpoint (the FUSE adapter: `fuse::FuseMounter`).
pub trait Mounter: Send + Sync {
    /// Mounts `volume` at `mountpoint`, with `fsname` (`STORE:CONTAINER`) as its source in
    /// /proc/mounts; returns once the mount is usable. The mounter registers its link to
    /// the kernel with the volume ([`Volume::set_kernel_link`]).
    fn mount(
        &self,
        volume: Arc<Volume>,
        mountpoint: &Path,
        fsname: &str,
    ) -> std::io::Result<Box<dyn Mounted>>;
}

/// A live mount, as the service sees it.
pub trait Mounted: Send {
    fn mountpoint(&self) -> &Path;

    /// The mount's source, `STORE:CONTAINER`.
    fn fsname(&self) -> &str;

    /// How the kernel's requests travel (`dev_fuse`, `io_uring`), and how many went through
    /// io_uring queues so far.
    fn transport(&self) -> (&'static str, u64);

    /// Is the mount still served (not unmounted from outside)?
    fn is_alive(&self) -> bool;

    /// Everything this mount's daemon accepted is durable and the daemon is handing the
    /// mount over: says so to the next daemon (which may then resume it on any store).
    fn mark_handed_over(&self);

    /// Does something outside the daemon keep this mount's descriptors (so that it outlives
    /// the daemon)?
    fn is_kept(&self) -> bool;

    /// Unmounts and waits for the serving threads to finish; a busy mount is detached and,
    /// if its users do not let go within `grace`, its connection aborted.
    fn unmount(self: Box<Self>, grace: Duration) -> std::io::Result<()>;
}

/// One mounted container: its lifecycle (registered with its volume), the volume and the
/// mount.
pub(super) struct Mount {
    pub(super) container: Arc<Container>,
    pub(super) volume: Arc<Volume>,
    pub(super) handle: Box<dyn Mounted>,
}

impl Service {
    /// Mounts a container at `mountpoint`.
    pub fn start(
        &self,
        id_or_name: &str,
        mountpoint: &Path,
        opts: VolumeOptions,
    ) -> ServiceResult<ContainerRecord> {
        let c = self.live(id_or_name)?;
        // One spelling per directory: `/m/../m` and symlinks are the same place.
        let mountpoint = &std::fs::canonicalize(mountpoint).map_err(|e| {
            ServiceError::Invalid(format!("mountpoint {}: {e}", mountpoint.display()))
        })?;
        let mut mounts = self.mounts.lock();
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ServiceError::ShuttingDown);
        }
        reap_locked(&mut mounts);
        // A delete may have run since `live` above (it deletes under this lock).
        let c = self.live(c.id.as_str())?;
        if let Some(m) = mounts.get(&c.id) {
            return Err(ServiceError::Conflict(format!(
                "container {} is already mounted at {}",
                c.name,
                m.handle.mountpoint().display()
            )));
        }
        if mounts.values().any(|m| m.handle.mountpoint() == mountpoint) {
            return Err(ServiceError::Conflict(format!(
                "{} is already in use by another container",
                mountpoint.display()
            )));
        }
        match std::fs::metadata(mountpoint) {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(ServiceError::Invalid(format!(
                    "mountpoint {} is not a directory",
                    mountpoint.display()
                )))
            }
        }
        if self.store.kv().status().is_some_and(|s| s.read_only()) && !opts.read_only {
            return Err(ServiceError::Conflict(format!(
                "the daemon of {} opened the store read-only: mount with --read-only",
                self.path.display()
            )));
        }
        let container = Container::new(self.store.clone(), &c.id);
        let volume = Volume::new(container.clone(), opts)?;
        let fsname = format!("{}:{}", self.path.display(), c.name);
        let handle = self
            .mounter
            .mount(volume.clone(), mountpoint, &fsname)
            .map_err(|e| {
                ServiceError::Internal(format!("cannot mount {}: {e}", mountpoint.display()))
            })?;
        self.record_mount(&mut mounts, &c, container, volume, handle, "mounted");
        Ok(c)
    }

    /// Takes over a mount a former daemon of this store made (its descriptors came back from
    /// the fd store): the volume as its journal left it, served by `attach`.
    pub fn adopt(
        &self,
        container_id: &str,
        mountpoint: &Path,
        opts: VolumeOptions,
        journal: Arc<dyn MountJournal>,
        resumed: &Resumed,
        attach: impl FnOnce(Arc<Volume>) -> std::io::Result<Box<dyn Mounted>>,
    ) -> ServiceResult<()> {
        let c = self.live(container_id)?;
        let mut mounts = self.mounts.lock();
        if let Some(m) = mounts.get(&c.id) {
            return Err(ServiceError::Conflict(format!(
                "container {} is already mounted at {}",
                c.name,
                m.handle.mountpoint().display()
            )));
        }
        let container = Container::new(self.store.clone(), &c.id);
        let volume = Volume::resume(container.clone(), opts, journal, resumed)?;
        let handle = attach(volume.clone()).map_err(|e| {
            ServiceError::Internal(format!("cannot resume {}: {e}", mountpoint.display()))
        })?;
        self.record_mount(&mut mounts, &c, container, volume, handle, "resumed");
        Ok(())
    }

    /// Lists a live mount of `c` in the mounts table.
    fn record_mount(
        &self,
        mounts: &mut HashMap<ContainerId, Mount>,
        c: &ContainerRecord,
        container: Arc<Container>,
        volume: Arc<Volume>,
        handle: Box<dyn Mounted>,
        how: &str,
    ) {
        let mnt = handle.mountpoint().display().to_string();
        mounts.insert(
            c.id.clone(),
            Mount {
                container,
                volume,
                handle,
            },
        );
        self.mounted_once
            .store(true, std::sync::atomic::Ordering::SeqCst);
        log::info!("{how} {} ({}) at {mnt}", c.name, c.id);
    }

    /// Unmounts a container (no-op when not mounted); everything is flushed on return.
    pub fn stop(&self, id_or_name: &str) -> ServiceResult<ContainerRecord> {
        let c = match self.container(id_or_name) {
            Ok(c) => c,
            Err(e) => {
                // The store cannot answer (another host took it over, an I/O error): a
                // mount of that container must still go.
                let id = self.mounts.lock().iter().find_map(|(id, m)| {
                    let name = m.handle.fsname().rsplit_once(':').map_or("", |(_, n)| n);
                    (id.as_str() == id_or_name || name == id_or_name).then(|| id.clone())
                });
                if let Some(id) = id {
                    self.stop_id(&id)?;
                }
                return Err(e);
            }
        };
        self.stop_id(&c.id)?;
        Ok(c)
    }

    pub(super) fn stop_id(&self, id: &ContainerId) -> ServiceResult<()> {
        let mount = self.mounts.lock().remove(id);
        if let Some(m) = mount {
            let mnt = m.handle.mountpoint().to_path_buf();
            m.handle.unmount(UNMOUNT_GRACE).map_err(|e| {
                ServiceError::Internal(format!("cannot unmount {}: {e}", mnt.display()))
            })?;
            log::info!("unmounted {}", mnt.display());
        }
        // Unmounted either way; a failing sync (e.g. a full disk) is reported, not fatal.
        if let Err(e) = self.store.kv().sync() {
            log::error!("sync after unmount: {e}");
        }
        Ok(())
    }

    /// Before a handover: unmounts what cannot outlive this daemon (mounts nothing keeps,
    /// e.g. over io_uring), so that they end cleanly rather than with their daemon.
    pub fn stop_unkept(&self) {
        self.stop_where(|m| !m.handle.is_kept(), "its mount cannot be handed over");
    }

    /// A planned handover: once every request served was answered and the store synced,
    /// tells the next daemon, mount by mount, that nothing accepted can have been lost.
    pub fn mark_handed_over(&self) {
        for m in self.mounts.lock().values() {
            m.handle.mark_handed_over();
        }
    }

    /// Unmounts everything (daemon shutdown).
    pub fn stop_all(&self) {
        self.stop_where(|_| true, "the daemon stops");
        let _ = self.store.kv().sync();
    }

    /// Unmounts every mount `which` picks (`why` goes to the log).
    fn stop_where(&self, which: impl Fn(&Mount) -> bool, why: &str) {
        let ids: Vec<ContainerId> = self
            .mounts
            .lock()
            .iter()
            .filter(|(_, m)| which(m))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            log::info!("{id}: unmounting ({why})");
            if let Err(e) = self.stop_id(&id) {
                log::error!("stopping {id}: {e}");
            }
        }
    }

    /// The container mounted at `mountpoint`, if any.
    pub fn mounted_at(&self, mountpoint: &Path) -> Option<String> {
        self.mounts
            .lock()
            .iter()
            .find(|(_, m)| m.handle.mountpoint() == mountpoint)
            .map(|(id, _)| id.to_string())
    }

    /// Was anything ever mounted by this service?
    pub fn mounted_once(&self) -> bool {
        self.mounted_once.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn mount_count(&self) -> usize {
        self.mounts.lock().len()
    }

    /// Forgets mounts whose session ended from outside (a plain `umount`). Returns how many
    /// mounts remain.
    pub fn reap(&self) -> usize {
        let mut mounts = self.mounts.lock();
        reap_locked(&mut mounts);
        mounts.len()
    }

    /// With `idle_exit`: if nothing is mounted (after reaping) and something was once, or
    /// `never_used_for_long`, refuses further mounts and returns true (the daemon exits).
    pub fn close_if_idle(&self, never_used_for_long: bool) -> bool {
        let mut mounts = self.mounts.lock();
        reap_locked(&mut mounts);
        // A snapshot stream going in or out keeps the daemon, however long it takes.
        if !self.transfers.list().is_empty() {
            return false;
        }
        if mounts.is_empty() && (self.mounted_once() || never_used_for_long) {
            self.closing
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return true;
        }
        false
    }
}

/// Forgets mounts whose session ended from outside (a plain `umount`).
pub(super) fn reap_locked(mounts: &mut HashMap<ContainerId, Mount>) {
    let dead: Vec<ContainerId> = mounts
        .iter()
        .filter(|(_, m)| !m.handle.is_alive())
        .map(|(id, _)| id.clone())
        .collect();
    for id in dead {
        if let Some(m) = mounts.remove(&id) {
            log::info!(
                "{} was unmounted from outside",
                m.handle.mountpoint().display()
            );
            let _ = m.handle.unmount(Duration::from_secs(1));
        }
    }
}
