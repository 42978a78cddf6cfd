//! The REST API tests' fixture: a [`Store`] served by `snapfs serve` on its Unix socket and
//! on a loopback TCP port with a bearer token ([`Daemon`], over the [`super::http`] client),
//! and checkers for the JSON envelope, snapshot and container objects and RFC 3339 times.
//!
//! [`Daemon`] always cleans up: on drop it sends SIGTERM (the daemon unmounts its mounts),
//! waits, falls back to SIGKILL; then its store unmounts anything still mounted.

use std::fs;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::http::{build_request, enc, exchange, Auth, Resp, Via};
use super::{is_mounted, require_fuse, snapfs_bin, wait_until, Store};

/// Longest time any single HTTP exchange may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

pub const TOKEN: &str = "api-test-token-0123456789abcdef";

// ---------------------------------------------------------------------------------------
// The daemon

/// A store served by `snapfs serve` (Unix socket + TCP with [`TOKEN`]).
pub struct Daemon {
    child: Option<Child>,
    /// The store and the mountpoints beside it (unmounted on drop if still mounted).
    store: Store,
    pub port: u16,
    pub token: String,
    /// Extra `snapfs serve` arguments (kept for [`Daemon::restart`]).
    extra: Vec<std::ffi::OsString>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Daemon {
    /// `snapfs init` a fresh store and serve it; returns once the socket accepts.
    pub fn start() -> Daemon {
        Daemon::start_with(Store::new(), &[])
    }

    /// [`Daemon::start`] on `store`, with extra `snapfs serve` arguments.
    pub fn start_with(store: Store, extra: &[&std::ffi::OsStr]) -> Daemon {
        let token_file = store.dir().join("token");
        fs::write(&token_file, format!("{TOKEN}\n")).expect("write token file");
        let mut d = Daemon {
            child: None,
            store,
            port: 0,
            token: TOKEN.to_string(),
            extra: extra.iter().map(|a| a.to_os_string()).collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        self.port = free_port();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.dir().join("daemon.stderr"))
            .expect("stderr file");
        let child = Command::new(snapfs_bin())
            .arg("serve")
            .arg(self.store.path())
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--token-file",
            ])
            .arg(self.store.dir().join("token"))
            .args(&self.extra)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn snapfs serve");
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            self.shutdown();
            panic!("snapfs serve did not become ready: {e}");
        }
    }

    /// Stops the daemon (SIGTERM: it unmounts everything) and starts it again with the same
    /// arguments.
    pub fn restart(&mut self) {
        self.shutdown();
        self.spawn();
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let sock = self.socket();
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    return Err(format!("daemon exited with {st}: {}", self.stderr()));
                }
            }
            let unix_ok = UnixStream::connect(&sock).is_ok();
            let tcp_ok = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if unix_ok && tcp_ok {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("not ready after 30 s: {}", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The store's directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.store.path().join("snapfs.sock")
    }

    /// What the daemon wrote on stderr and in its log.
    pub fn stderr(&self) -> String {
        let e = fs::read_to_string(self.store.dir().join("daemon.stderr")).unwrap_or_default();
        let l = fs::read_to_string(self.store.path().join("snapfs.log")).unwrap_or_default();
        format!("stderr: {e}\nlog: {l}")
    }

    /// Is the daemon process still running?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Any request: `via` socket, `auth` (TCP only), raw body.
    #[track_caller]
    pub fn request(&self, via: Via, auth: &Auth, method: &str, path: &str, body: &[u8]) -> Resp {
        self.try_request(via, auth, method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::request`] that reports a broken exchange instead of panicking.
    pub fn try_request(
        &self,
        via: Via,
        auth: &Auth,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Resp, String> {
        let mut headers: Vec<(String, String)> = Vec::new();
        let bearer = format!("Bearer {}", self.token);
        match (via, auth) {
            (Via::Tcp, Auth::Good) => headers.push(("Authorization".into(), bearer)),
            (Via::Tcp, Auth::Header(h)) => headers.push(("Authorization".into(), h.clone())),
            _ => {}
        }
        if !body.is_empty() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        let req = build_request(method, path, &headers, body);
        let shown: String = path.chars().take(200).collect();
        let what = format!(
            "{method} {shown} via {via:?} body {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        let connect_err = |e: io::Error| format!("{what}: connect {via:?}: {e}");
        match via {
            Via::Tcp => {
                let s = TcpStream::connect(("127.0.0.1", self.port)).map_err(connect_err)?;
                s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
                exchange(s, &req, &what)
            }
            Via::Unix => {
                let s = UnixStream::connect(self.socket()).map_err(connect_err)?;
                s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
                exchange(s, &req, &what)
            }
        }
    }

    /// TCP with the token; `body` is sent as JSON when given.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        self.call_via(Via::Tcp, method, path, body)
    }

    pub fn call_via(&self, via: Via, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let bytes = body
            .map(|b| serde_json::to_vec(b).expect("encode"))
            .unwrap_or_default();
        self.request(via, &Auth::Good, method, path, &bytes)
    }

    /// TCP with the token and a raw body.
    pub fn call_raw(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.request(Via::Tcp, &Auth::Good, method, path, body)
    }

    /// Asserts success and returns `data`.
    #[track_caller]
    /// The daemon's process id (0 if it is not running): the supervisor's child, named in
    /// `STORE/snapfs.pid`.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        if self.child.is_none() {
            return 0;
        }
        super::daemon_pid(self.store.path()).map_or(0, |p| p as u32)
    }

    /// The `snapfs serve` process: the daemon's supervisor (0 if it is not running).
    #[allow(dead_code)]
    pub fn serve_pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, path, body).data()
    }

    #[track_caller]
    pub fn create_container(&self, name: &str, project: Option<&str>) -> Value {
        let mut b = json!({ "name": name });
        if let Some(p) = project {
            b["project_id"] = json!(p);
        }
        let c = self.ok("POST", "/api/v1/containers", Some(&b));
        check_container(&c);
        c
    }

    #[track_caller]
    pub fn container(&self, id: &str) -> Value {
        let c = self.ok("GET", &format!("/api/v1/containers/{}", enc(id)), None);
        check_container(&c);
        c
    }

    /// Creates a snapshot of `c` with this body; returns the snapshot object.
    #[track_caller]
    pub fn snapshot(&self, c: &str, body: Value) -> Value {
        let d = self.ok(
            "POST",
            &format!("/api/v1/containers/{}/snapshots", enc(c)),
            Some(&body),
        );
        check_typed::<snapfs::contract::SnapshotData>(&d);
        let s = d["snapshot"].clone();
        check_snapshot(&s);
        s
    }

    /// The snapshots of `c`, newest first (shapes checked).
    #[track_caller]
    pub fn snapshots(&self, c: &str) -> Vec<Value> {
        let d = self.ok(
            "GET",
            &format!("/api/v1/containers/{}/snapshots", enc(c)),
            None,
        );
        check_typed::<snapfs::contract::SnapshotList>(&d);
        let list = d["snapshots"]
            .as_array()
            .unwrap_or_else(|| panic!("snapshots is not an array: {d}"))
            .clone();
        for s in &list {
            check_snapshot(s);
        }
        list
    }

    #[track_caller]
    pub fn containers(&self) -> Vec<Value> {
        let d = self.ok("GET", "/api/v1/containers", None);
        check_typed::<snapfs::contract::ContainerList>(&d);
        let list = d["containers"]
            .as_array()
            .unwrap_or_else(|| panic!("containers is not an array: {d}"))
            .clone();
        for c in &list {
            check_container(c);
        }
        list
    }

    /// Everything the API lists: every container and each one's snapshots (over the
    /// Unix socket, so it works whatever the test does to TCP).
    #[track_caller]
    pub fn state(&self) -> Value {
        let d = self
            .call_via(Via::Unix, "GET", "/api/v1/containers", None)
            .data();
        let mut out = Vec::new();
        for c in d["containers"].as_array().expect("containers array") {
            let id = c["id"].as_str().expect("id");
            let s = self
                .call_via(
                    Via::Unix,
                    "GET",
                    &format!("/api/v1/containers/{id}/snapshots"),
                    None,
                )
                .data();
            out.push(json!({"container": c, "snapshots": s}));
        }
        Value::Array(out)
    }

    /// A fresh empty directory to mount on (unmounted and removed with the fixture).
    pub fn new_mountpoint(&self, name: &str) -> PathBuf {
        self.store.mountpoint(name)
    }

    /// `POST .../start` on a fresh directory; asserts the mount is live. Returns it.
    #[track_caller]
    pub fn mount(&self, c: &str, dir_name: &str) -> PathBuf {
        require_fuse();
        let mnt = self.new_mountpoint(dir_name);
        let d = self.ok(
            "POST",
            &format!("/api/v1/containers/{}/start", enc(c)),
            Some(&json!({ "mountpoint": mnt.display().to_string() })),
        );
        check_container(&d);
        assert_eq!(d["status"], "running", "after start: {d}");
        assert_eq!(d["mountpoint"], json!(mnt.display().to_string()), "{d}");
        assert!(
            is_mounted(&mnt),
            "{} is not a mount point after start",
            mnt.display()
        );
        mnt
    }

    /// `POST .../stop`; asserts stopped.
    #[track_caller]
    pub fn unmount(&self, c: &str, mnt: &Path) {
        let d = self.ok("POST", &format!("/api/v1/containers/{}/stop", enc(c)), None);
        check_container(&d);
        assert_eq!(d["status"], "stopped", "after stop: {d}");
        assert!(
            !is_mounted(mnt),
            "{} still mounted after stop",
            mnt.display()
        );
    }

    /// SIGTERM, wait up to 20 s, then SIGKILL; returns the exit status if it exited on TERM.
    pub fn shutdown(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let mut status = None;
        wait_until(Duration::from_secs(20), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            // The child is the supervisor (it would start another daemon): it goes first.
            let _ = child.kill();
            let _ = child.wait();
            if let Some(pid) = super::daemon_pid(self.store.path()).filter(|p| super::alive(*p)) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        status
    }
}

/// Stops the daemon first: the store's drop then finds its mounts gone (or dead, and
/// detaches them).
impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------
// Shapes and times

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ` (exactly that form, a real
/// calendar date), or None.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from civil (Howard Hinnant); the round trip below rejects anything malformed.
    let yy = if mo <= 2 { y - 1 } else { y };
    let (era, yoe) = (yy.div_euclid(400), yy.rem_euclid(400));
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let t = ((days * 86_400) + h * 3600 + mi * 60 + se) * 1000 + ms;
    (format_time_ms(t) == s).then_some(t)
}

/// RFC 3339 with milliseconds for `ms` since the epoch.
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, se, frac) = (rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000));
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{se:02}.{frac:03}Z")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[track_caller]
pub fn time_field(v: &Value, field: &str) -> Option<i64> {
    match &v[field] {
        Value::Null => None,
        Value::String(s) => Some(
            parse_time_ms(s)
                .unwrap_or_else(|| panic!("{field} {s:?} is not RFC 3339 UTC with ms: {v}")),
        ),
        other => panic!("{field} is neither a time string nor null ({other}): {v}"),
    }
}

/// A snapshot name: `snap-YYYYMMDD-HHMMSS`, optionally `-N`.
pub fn is_snapshot_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || !s.starts_with("snap-") {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(5..13) && b[13] == b'-' && digits(14..20)) {
        return false;
    }
    match &s[20..] {
        "" => true,
        t => t.len() > 1 && t.starts_with('-') && t[1..].bytes().all(|c| c.is_ascii_digit()),
    }
}

/// `v` read as the library's contract type `T` (`snapfs::contract`) and written back is `v`
/// again: the type describes exactly what the daemon sent, no field more or less.
#[track_caller]
pub fn check_typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("not a {} ({e}): {v}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).expect("encode");
    assert_eq!(
        &back,
        v,
        "{} does not round-trip",
        std::any::type_name::<T>()
    );
    typed
}

/// Checks a snapshot object: exactly the documented fields with their types.
#[track_caller]
pub fn check_snapshot(s: &Value) {
    check_typed::<snapfs::contract::Snapshot>(s);
    let obj = s
        .as_object()
        .unwrap_or_else(|| panic!("snapshot is not an object: {s}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "alias",
            "created_at",
            "expires_at",
            "last_used_at",
            "name",
            "size",
            "stateful"
        ],
        "snapshot fields: {s}"
    );
    let name = s["name"].as_str().unwrap_or_else(|| panic!("name: {s}"));
    assert!(is_snapshot_name(name), "snapshot name {name:?}: {s}");
    assert!(s["alias"].is_string() || s["alias"].is_null(), "alias: {s}");
    assert!(
        time_field(s, "created_at").is_some(),
        "created_at null: {s}"
    );
    time_field(s, "last_used_at");
    time_field(s, "expires_at");
    assert_eq!(s["stateful"], json!(false), "stateful: {s}");
    assert!(
        s["size"].is_u64(),
        "size is not a non-negative integer: {s}"
    );
}

/// Checks a container object.
#[track_caller]
pub fn check_container(c: &Value) {
    check_typed::<snapfs::contract::Container>(c);
    let obj = c
        .as_object()
        .unwrap_or_else(|| panic!("container is not an object: {c}"));
    const KEYS: &str =
        "id name project_id status mountpoint fuse created_at bytes_used snapshot_count";
    for k in KEYS.split(' ') {
        assert!(obj.contains_key(k), "container lacks {k}: {c}");
    }
    let id = c["id"].as_str().unwrap_or_else(|| panic!("id: {c}"));
    assert!(
        id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "id {id:?} is not 24 hex digits: {c}"
    );
    assert!(c["name"].is_string(), "name: {c}");
    assert!(
        c["fuse"].is_null() || c["fuse"]["transport"].is_string(),
        "fuse: {c}"
    );
    assert!(
        c["project_id"].is_string() || c["project_id"].is_null(),
        "project_id: {c}"
    );
    let status = c["status"]
        .as_str()
        .unwrap_or_else(|| panic!("status: {c}"));
    assert!(
        ["running", "stopped", "deleted"].contains(&status),
        "status {status:?}: {c}"
    );
    match status {
        "running" => assert!(
            c["mountpoint"].is_string(),
            "running without mountpoint: {c}"
        ),
        _ => assert!(c["mountpoint"].is_null(), "{status} with a mountpoint: {c}"),
    }
    assert!(time_field(c, "created_at").is_some(), "created_at: {c}");
    if obj.contains_key("deleted_at") {
        let del = time_field(c, "deleted_at");
        assert_eq!(
            del.is_some(),
            status == "deleted",
            "deleted_at vs status: {c}"
        );
    }
    assert!(c["bytes_used"].is_u64(), "bytes_used: {c}");
    assert!(c["snapshot_count"].is_u64(), "snapshot_count: {c}");
}
