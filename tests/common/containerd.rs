//! A private containerd (Debian's 1.6 with runc, started by `scripts/containerd.sh`, which
//! installs it) for the tests that run snapfs as an external ("proxy") snapshotter: its root,
//! state, sockets and log in a temporary directory of its own under /tmp, never the system's
//! containerd. `ctr` talks to it through [`Containerd::ctr`]. On drop its containers, shims
//! and daemon are killed, everything mounted below its directory is unmounted, and the
//! directory is removed. A machine where it cannot start makes the test fail, never skip.
//!
//! Each instance uses a containerd namespace of its own (`CONTAINERD_NAMESPACE` for `ctr`):
//! runc keeps its state in /run/containerd/runc/NAMESPACE/ID for every containerd on the
//! machine, so two instances running a container `t1` in one namespace would collide.
//!
//! ```ignore
//! let c = Containerd::start("snapfs", &socket);
//! c.import("snapfs", &Containerd::image(dir)).assert_success();
//! let out = c.run("snapfs", "t1", &["/bin/cat", "/etc/layer2"]);
//! assert_eq!(out.ok(), "from layer 2\n");
//! ```

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;

use super::{alive, run_with_timeout, Output};

/// How long one `ctr` command may take.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one `scripts/containerd.sh` command may take (`start` waits 30 s at most, but
/// installs the packages first when they are missing).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

/// The name of the image [`Containerd::image`] builds (`scripts/containerd.sh image`): two
/// uncompressed layers. Layer 1: /bin/busybox with the applet links (sh, ls, cat, …),
/// /etc/passwd, /etc/group, /etc/layer1-only ("from layer 1\n"), /etc/deleted-by-layer2 and
/// a 1 MiB /data/blob; layer 2: /etc/layer2 ("from layer 2\n") and the whiteout of
/// /etc/deleted-by-layer2. `PATH=/bin`, command `/bin/sh`.
pub const IMAGE: &str = "snapfs.test/busybox:1";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/containerd.sh")
}

/// `bash scripts/containerd.sh ARGS...`.
fn script_run(args: &[&OsStr]) -> Output {
    run_with_timeout(
        Command::new("bash")
            .arg(script())
            .args(args)
            .current_dir("/"),
        SCRIPT_TIMEOUT,
    )
}

static NEXT_NAMESPACE: AtomicU64 = AtomicU64::new(0);

pub struct Containerd {
    dir: TempDir,
    plugin_name: String,
    plugin_socket: PathBuf,
    namespace: String,
}

impl Containerd {
    /// `scripts/containerd.sh start DIR PLUGIN_NAME PLUGIN_SOCKET` in a fresh directory: a
    /// containerd with the proxy snapshotter `plugin_name` at `plugin_socket` (which need not
    /// listen yet: containerd dials it on first use). Panics with the log tail if it does not
    /// answer.
    pub fn start(plugin_name: &str, plugin_socket: &Path) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("snapfs-containerd-")
            .tempdir_in("/tmp")
            .expect("create containerd temp dir");
        let c = Containerd {
            dir,
            plugin_name: plugin_name.to_string(),
            plugin_socket: plugin_socket.to_path_buf(),
            namespace: format!(
                "snapfs-{}-{}",
                std::process::id(),
                NEXT_NAMESPACE.fetch_add(1, Ordering::SeqCst)
            ),
        };
        // On a panic here `c` is dropped: whatever did start is stopped.
        c.up();
        c
    }

    fn up(&self) {
        let out = script_run(&[
            OsStr::new("start"),
            self.dir.path().as_os_str(),
            OsStr::new(&self.plugin_name),
            self.plugin_socket.as_os_str(),
        ]);
        assert!(
            out.success(),
            "scripts/containerd.sh start failed: {}\n--- containerd.log (last lines) ---\n{}",
            out.describe(),
            self.log_tail(40)
        );
    }

    /// Stops containerd only (TERM, KILL after 5 s): its shims, hence the running containers,
    /// stay; then starts it again on the same directory, where it finds them again.
    pub fn restart(&mut self) {
        script_run(&[OsStr::new("stop-daemon"), self.dir.path().as_os_str()]).assert_success();
        self.up();
    }

    /// Runs `ctr -a SOCKET ARGS...` (killed after [`CTR_TIMEOUT`]) in this instance's
    /// namespace, with the proxy snapshotter as the default of `--snapshotter`
    /// (`CONTAINERD_NAMESPACE`, `CONTAINERD_SNAPSHOTTER`: an explicit `-n` before the command
    /// or `--snapshotter` after it wins).
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new("ctr")
                .arg("-a")
                .arg(self.socket())
                .args(args)
                .env("CONTAINERD_NAMESPACE", &self.namespace)
                .env("CONTAINERD_SNAPSHOTTER", &self.plugin_name)
                .current_dir("/"),
            CTR_TIMEOUT,
        )
    }

    /// [`Containerd::ctr`] that must succeed (stderr may say something); its stdout.
    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.success(),
            "ctr failed: {}\n--- containerd.log (last lines) ---\n{}",
            out.describe(),
            self.log_tail(20)
        );
        out.stdout
    }

    /// `ctr images import --snapshotter SNAPSHOTTER TAR`: the image is unpacked into
    /// SNAPSHOTTER.
    pub fn import(&self, snapshotter: &str, tar: &Path) -> Output {
        let tar = tar.to_str().expect("image path is UTF-8");
        self.ctr(&["images", "import", "--snapshotter", snapshotter, tar])
    }

    /// `ctr run --rm --snapshotter SNAPSHOTTER IMAGE ID CMD...`: a container of [`IMAGE`] on
    /// a fresh snapshot of SNAPSHOTTER, removed with its snapshot when CMD exits. Its output
    /// is the output of CMD; its I/O fifos are made in [`Containerd::fifo_dir`] (not
    /// /run/containerd/fifo).
    pub fn run(&self, snapshotter: &str, id: &str, cmd: &[&str]) -> Output {
        let fifo = self.fifo_dir();
        let mut args = vec![
            "run",
            "--rm",
            "--fifo-dir",
            fifo.to_str().expect("fifo dir is UTF-8"),
            "--snapshotter",
            snapshotter,
            IMAGE,
            id,
        ];
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// Builds the test image ([`IMAGE`]) as `DIR/snapfs-busybox.tar` (offline, reproducible:
    /// the same bytes every time) once per process and directory; its path. E.g.
    /// `Containerd::image(Path::new(env!("CARGO_TARGET_TMPDIR")))` for one copy shared by
    /// every test.
    pub fn image(dir: &Path) -> PathBuf {
        static BUILT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
        let tar = dir.join("snapfs-busybox.tar");
        // Held while building: two tests asking at once build it once.
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if !built.contains(&tar) || !tar.exists() {
            script_run(&[OsStr::new("image"), tar.as_os_str()]).assert_success();
            built.push(tar.clone());
        }
        tar
    }

    /// The temporary directory that holds everything (root, state, sockets, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's gRPC socket, for `ctr -a`.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The containerd namespace of this instance's `ctr` commands.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn plugin_name(&self) -> &str {
        &self.plugin_name
    }

    /// Where [`Containerd::run`] makes the I/O fifos (pass it to `ctr run --fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// containerd's pid, if it is running.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.dir.path().join("containerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// containerd's log (both runs after a restart).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The last `n` lines of [`Containerd::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // No timeout helper here (it panics, and a panic in a drop during a panic aborts):
        // `stop` bounds its own waits.
        let status = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "scripts/containerd.sh stop {} failed: {status:?}",
                self.dir.path().display()
            );
        }
        // The TempDir removes the directory.
    }
}

/// A snapfs daemon serving containerd's snapshots API (`snapfs serve --containerd-socket`)
/// on a fresh store, with its mounts under the store's temporary directory. On drop the
/// daemon stops (unmounting its mounts); anything still mounted under the mount directory
/// (a daemon killed on purpose) is detached.
pub struct SnapfsPlugin {
    pub daemon: super::api::Daemon,
    pub socket: PathBuf,
    pub mounts: PathBuf,
}

impl SnapfsPlugin {
    pub fn start() -> SnapfsPlugin {
        super::require_fuse();
        let store = super::Store::new();
        let socket = store.dir().join("snapshotter.sock");
        let mounts = store.dir().join("ctrd-mounts");
        let daemon = super::api::Daemon::start_with(
            store,
            &[
                OsStr::new("--containerd-socket"),
                socket.as_os_str(),
                OsStr::new("--containerd-mounts"),
                mounts.as_os_str(),
            ],
        );
        assert!(
            super::wait_until(Duration::from_secs(10), || socket.exists()),
            "no snapshotter socket at {}: {}",
            socket.display(),
            daemon.stderr()
        );
        SnapfsPlugin {
            daemon,
            socket,
            mounts,
        }
    }

    /// The snapfs mounts under the snapshotter's mount directory.
    pub fn mounted_dirs(&self) -> Vec<PathBuf> {
        snapfs::mount::snapfs_mounts()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mountpoint)
            .filter(|m| m.starts_with(&self.mounts))
            .collect()
    }

    /// The containers of the store the snapshotter made (project `containerd`), not deleted,
    /// as the REST API shows them.
    pub fn containers(&self) -> Vec<serde_json::Value> {
        self.daemon
            .containers()
            .into_iter()
            .filter(|c| c["project_id"] == "containerd" && c["status"] != "deleted")
            .collect()
    }
}

impl Drop for SnapfsPlugin {
    fn drop(&mut self) {
        self.daemon.shutdown();
        let mut left = self.mounted_dirs();
        left.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in left {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&m)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
