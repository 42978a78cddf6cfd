//! A loopback S3 server (SeaweedFS `weed mini`, started by `scripts/s3.sh`, which installs
//! the pinned version) for the object-store tests: its own data directory and ports, stopped
//! on drop. A machine where it cannot start makes the test fail, never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3.sh")
}

/// `scripts/s3.sh start DIR`: the server's client variables, from the `export K=V` lines it
/// prints.
fn start(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(dir)
        .output()
        .expect("run scripts/s3.sh");
    assert!(
        out.status.success(),
        "scripts/s3.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(
        env.iter().any(|(k, _)| k == "AWS_ENDPOINT_URL"),
        "scripts/s3.sh printed no endpoint: {text}"
    );
    env
}

pub struct S3Server {
    dir: TempDir,
    /// The `AWS_*` variables a client needs.
    env: Vec<(String, String)>,
    running: bool,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("snapfs-s3-")
            .tempdir()
            .expect("create S3 data dir");
        let mut s = S3Server {
            dir,
            env: Vec::new(),
            running: false,
        };
        s.up();
        s
    }

    fn up(&mut self) {
        self.env = start(self.dir.path());
        self.running = true;
    }

    /// Stops the server (its data stays); [`S3Server::restart`] brings it back on the same
    /// ports.
    pub fn stop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
        self.running = false;
    }

    pub fn restart(&mut self) {
        assert!(!self.running, "already running");
        self.up();
    }

    /// The client environment, as `snapfs_env` takes it.
    pub fn env(&self) -> Vec<(String, Option<String>)> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect()
    }

    /// `s3://snapfs/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("s3://snapfs/{name}")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if self.running {
            self.stop();
        }
    }
}

/// One server for a whole test process (many short tests, e.g. the kv conformance suite),
/// started on first use. A watchdog stops it and removes its data once the process is gone.
pub fn shared() -> &'static [(String, String)] {
    static SHARED: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("snapfs-s3-shared-")
            .tempdir()
            .expect("create S3 data dir")
            .keep();
        let env = start(&dir);
        let watchdog = "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; \
                        bash \"$1\" stop \"$2\"; rm -rf -- \"$2\"";
        // `setsid -f` forks the watchdog into a session of its own and returns at once.
        let started = Command::new("setsid")
            .arg("-f")
            .arg("bash")
            .arg("-c")
            .arg(watchdog)
            .arg(std::process::id().to_string())
            .arg(script())
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("start the S3 watchdog");
        assert!(started.success(), "setsid -f failed: {started}");
        env
    })
}
