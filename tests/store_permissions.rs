//! The store is owner-only (issue 12): whatever the modes of the files in a container, no
//! other local user can read the store's files (the RocksDB log holds written data in the
//! clear), connect to its socket, or find the data with `grep`. A store whose modes were
//! loosened is reported by `snapfs fsck` and tightened by the next daemon start (said once
//! in its log) or by `fsck --repair`.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{chmod, mode_of, q, sh, sh_as, snapfs, Mount, Store};

/// `nobody`: an unprivileged user that owns nothing here.
const NOBODY: u32 = 65534;

/// The daemon's log line when it tightened a store.
const TIGHTENED: &str = "tightened to owner-only";

/// Paths under `store` (itself included) with a group or other permission bit, per `find`.
fn loose(store: &Path) -> Vec<String> {
    let out = sh(Path::new("/"), &format!("find {} -perm /077", q(store)));
    out.assert_success();
    out.stdout.lines().map(str::to_string).collect()
}

/// Regular files under `store`, listed by root.
fn files(store: &Path) -> Vec<PathBuf> {
    let out = sh(Path::new("/"), &format!("find {} -type f", q(store)));
    out.assert_success();
    out.stdout.lines().map(PathBuf::from).collect()
}

/// Lets every user traverse the directory the store lives in (the fixture's temp dir is
/// 0700), so that only the store's own modes stand between other users and its files.
fn open_parent(store: &Path) {
    let parent = store.parent().expect("store parent");
    chmod(parent, 0o755);
    let ls = sh_as(NOBODY, NOBODY, &format!("ls {}", q(parent)));
    ls.assert_success();
    assert!(
        ls.stdout.lines().any(|l| l == "store"),
        "uid {NOBODY} cannot list the store's parent: {}",
        ls.describe()
    );
}

fn unique_secret() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("snapfs-secret-{}-{nanos}", std::process::id())
}

#[test]
fn init_creates_an_owner_only_store() {
    let store = Store::new();
    assert_eq!(mode_of(store.path()) & 0o7777, 0o700);
    assert_eq!(loose(store.path()), Vec::<String>::new());
    assert!(!files(store.path()).is_empty(), "init created no files");

    // An existing empty directory is made owner-only too.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty");
    fs::create_dir(&path).expect("mkdir");
    chmod(&path, 0o755);
    snapfs([Path::new("init"), &path]).assert_success();
    assert_eq!(mode_of(&path) & 0o7777, 0o700);
    assert_eq!(loose(&path), Vec::<String>::new());
}

#[test]
fn store_of_a_mount_is_unreadable_and_unreachable_by_other_users() {
    let m = Mount::new();
    let store = m.store().path().to_path_buf();
    open_parent(&store);
    let secret = unique_secret();
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(m.join("private"))
            .expect("create the secret file");
        f.write_all(secret.as_bytes()).expect("write the secret");
        f.sync_all().expect("fsync the secret");
    }
    assert_eq!(mode_of(&m.join("private")) & 0o777, 0o600);

    // Controls: the secret is in the store in the clear (so a grep could find it), and root
    // can talk to the socket.
    let found = sh(
        Path::new("/"),
        &format!("grep -rlF {} {}", q(Path::new(&secret)), q(&store)),
    );
    assert!(
        found.success() && !found.stdout.trim().is_empty(),
        "root does not find the secret in the store, so the check below proves nothing: {}",
        found.describe()
    );
    let sock = store.join("snapfs.sock");
    let curl = |uid: u32| {
        sh_as(
            uid,
            uid,
            &format!(
                "curl -sS --max-time 10 --unix-socket {} http://x/api/v1/containers",
                q(&sock)
            ),
        )
    };
    let root_curl = curl(0);
    assert!(
        root_curl.success() && root_curl.stdout.contains("statusCode"),
        "root cannot use the socket: {}",
        root_curl.describe()
    );

    // Every path is owner-only, as root sees it.
    assert_eq!(loose(&store), Vec::<String>::new());

    // As another user: nothing readable, no file opens, no socket, no grep hit.
    let readable = sh_as(
        NOBODY,
        NOBODY,
        &format!("find {} -type f -readable", q(&store)),
    );
    assert_eq!(
        readable.stdout.trim(),
        "",
        "files readable by uid {NOBODY}: {}",
        readable.describe()
    );
    let all = files(&store);
    assert!(
        all.iter().any(|f| f.starts_with(store.join("db"))),
        "no database files listed: {all:?}"
    );
    let script: String = all
        .iter()
        .map(|f| format!("cat {p} >/dev/null 2>&1 && echo {p}\n", p = q(f)))
        .collect();
    let cat = sh_as(NOBODY, NOBODY, &script);
    assert_eq!(
        cat.stdout.trim(),
        "",
        "files uid {NOBODY} could read: {}",
        cat.describe()
    );
    let other_curl = curl(NOBODY);
    assert!(
        !other_curl.success() && !other_curl.stdout.contains("statusCode"),
        "uid {NOBODY} reached the API socket: {}",
        other_curl.describe()
    );
    let grep = sh_as(
        NOBODY,
        NOBODY,
        &format!("grep -rF {} {}", q(Path::new(&secret)), q(&store)),
    );
    assert!(
        !grep.success() && !grep.stdout.contains(&secret),
        "uid {NOBODY} found the secret: {}",
        grep.describe()
    );
}

#[test]
fn loose_store_is_reported_by_fsck_and_tightened_once_by_the_next_daemon_start() {
    let mut m = Mount::new();
    fs::write(m.join("f"), "kept").expect("write");
    m.umount();
    let store = m.store().path().to_path_buf();
    let p = store.to_str().expect("utf8 path").to_string();
    sh(Path::new("/"), &format!("chmod -R go+rwX {}", q(&store))).assert_success();
    assert!(
        loose(&store).contains(&p),
        "chmod -R did not loosen the store"
    );

    let bad = snapfs(["fsck", &p]);
    assert_eq!(bad.status.code(), Some(1), "{}", bad.describe());
    assert!(
        bad.stdout
            .lines()
            .any(|l| l.starts_with("problem: store permissions: ")
                && l.contains("open to group or others")
                && l.contains("owner-only")),
        "{}",
        bad.describe()
    );
    assert_eq!(
        bad.stderr.trim(),
        format!("snapfs: error: 1 problems found in {p}")
    );

    // The next daemon start tightens everything, and files it creates are owner-only.
    m.mount();
    assert_eq!(loose(&store), Vec::<String>::new());
    assert_eq!(fs::read_to_string(m.join("f")).expect("read"), "kept");
    fs::write(m.join("g"), vec![7u8; 1 << 20]).expect("write");
    m.umount();
    // A second start finds nothing to tighten.
    m.mount();
    m.umount();
    assert_eq!(loose(&store), Vec::<String>::new());
    let log = fs::read_to_string(store.join("snapfs.log")).expect("read the daemon log");
    let said: Vec<&str> = log.lines().filter(|l| l.contains(TIGHTENED)).collect();
    assert_eq!(said.len(), 1, "log lines about tightening: {said:?}");
    assert!(
        said[0].contains(&p) && said[0].contains("WARN"),
        "{}",
        said[0]
    );

    let clean = snapfs(["fsck", &p]);
    assert!(clean.success(), "{}", clean.describe());
}

#[test]
fn fsck_repair_makes_a_loose_store_owner_only() {
    let store = Store::new();
    let p = store.path().to_str().expect("utf8 path").to_string();
    sh(
        Path::new("/"),
        &format!("chmod -R go+rwX {}", q(store.path())),
    )
    .assert_success();
    let fixed = snapfs(["fsck", "--repair", &p]);
    assert!(fixed.success(), "{}", fixed.describe());
    assert!(
        fixed
            .stdout
            .lines()
            .any(|l| l.starts_with("repaired: store permissions: ")
                && l.ends_with("made owner-only")),
        "{}",
        fixed.describe()
    );
    assert!(
        fixed.stdout.contains("0 problems left after 1 repairs"),
        "{}",
        fixed.describe()
    );
    assert_eq!(loose(store.path()), Vec::<String>::new());
    let clean = snapfs(["fsck", &p]);
    assert!(clean.success(), "{}", clean.describe());
}
