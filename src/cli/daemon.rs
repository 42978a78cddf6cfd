//! The CLI's side of the API: the store's daemon (started on demand), one typed call at a
//! time, and how an answer is printed.

use super::*;

/// The store's daemon (started on demand).
pub(super) struct Daemon {
    store: PathBuf,
}

/// The store of `--store`, else of `$SNAPFS_STORE` (None when neither is given).
pub(super) fn given_store(store: Option<PathBuf>) -> Option<PathBuf> {
    store.or_else(|| {
        std::env::var_os(STORE_ENV)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    })
}

impl Daemon {
    pub(super) fn connect(store: Option<PathBuf>) -> Result<Daemon> {
        let Some(store) = given_store(store) else {
            bail!("no store given: use --store STORE or set {STORE_ENV}")
        };
        let store = std::path::absolute(&store)
            .with_context(|| format!("bad store path {}", store.display()))?;
        if !store.is_dir() {
            bail!("store {} does not exist", store.display());
        }
        ensure_daemon(&store)?;
        Ok(Daemon { store })
    }

    /// One API call: `body` sent as JSON, `data` read as `T` on success, the API's message
    /// as the error otherwise. A daemon that went away between calls (an on-demand daemon
    /// exits once its last mount is gone) is started again and the call retried
    /// (`mount::call_daemon`).
    pub(super) fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let path = format!("/api/v1{path}");
        crate::mount::call_daemon(&self.store, method, &path, body)?.data()
    }

    /// The daemon's socket (for streaming calls, which are not retried).
    pub(super) fn socket(&self) -> PathBuf {
        crate::storedir::socket_path(&self.store)
    }

    /// `GET`.
    pub(super) fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T> {
        self.call("GET", path, NO_BODY)
    }

    /// Is the container mounted?
    pub(super) fn running(&mut self, container: &str) -> Result<bool> {
        let c: crate::contract::Container = self.get(&container_path(container))?;
        Ok(c.status == crate::contract::ContainerStatus::Running)
    }

    /// After unmounting `unmounted`: a daemon started on demand exits once nothing is
    /// mounted; wait for it, so the store is free when the command returns (as
    /// `snapfs umount` does).
    pub(super) fn settle(&mut self, unmounted: bool) -> Result<()> {
        if !unmounted {
            return Ok(());
        }
        let Some(pid) = idle_exit_pid(&self.store) else {
            return Ok(());
        };
        let running = self
            .get::<ContainerList>("/containers")
            .is_ok_and(|d| d.any_running());
        if running {
            return Ok(());
        }
        if crate::mount::wait_exit(pid, Duration::from_secs(60)) {
            return Ok(());
        }
        bail!("daemon (pid {pid}) did not exit after the last unmount")
    }
}

/// The pid in `STORE/snapfs.pid` when that daemon exits once idle.
fn idle_exit_pid(store: &Path) -> Option<i32> {
    crate::storedir::read_pid(store).and_then(|(pid, idle)| idle.then_some(pid))
}

pub(super) fn container_path(c: &str) -> String {
    format!("/containers/{}", url_segment(c))
}

pub(super) fn snapshot_path(c: &str, name: &str) -> String {
    format!("{}/snapshots/{}", container_path(c), url_segment(name))
}

/// Prints `data` as pretty JSON (keys sorted, as the API sends them), or as `human` renders
/// it; either way with one final newline.
pub(super) fn emit<T: Serialize>(
    json: bool,
    data: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<()> {
    let text = if json {
        let value = serde_json::to_value(data).context("cannot encode JSON")?;
        serde_json::to_string_pretty(&value).context("cannot encode JSON")?
    } else {
        human(data)
    };
    let text = text.trim_end_matches('\n');
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}
