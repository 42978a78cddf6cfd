//! `snapfs send | snapfs receive` between two stores, through their daemons: the received
//! snapshots and live tree equal the sender's (contents, modes, owners, times, inode numbers,
//! xattrs, hard links, symlinks, devices, holes, non-UTF-8 names); bad streams and wrong
//! targets are one clear error line and change nothing.

mod common;

use std::path::Path;

use common::{q, require_fuse, sh, Mount, Store};

/// A listing of everything under `dir` that two equal trees share: metadata by path
/// (`find -printf`), xattrs (`getfattr`), and file contents (checksums).
fn listing(dir: &Path) -> String {
    let out = sh(
        dir,
        "find . -printf '%p %y %m %U %G %s %T@ %A@ %n %i %l\\n' | LC_ALL=C sort && \
         getfattr -h -d -m - -R . 2>/dev/null | LC_ALL=C sort && \
         find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum",
    );
    out.ok().to_string()
}

/// A tree with every kind of thing a stream must carry.
fn fill(root: &Path) {
    sh(
        root,
        "mkdir -p dir/sub && printf hello > dir/file && ln dir/file hardlink && \
         ln -s ../hardlink dir/sym && mkfifo fifo && mknod chr c 1 3 && \
         truncate -s 1M sparse && printf tail >> sparse && \
         setfattr -n user.tag -v value dir/file && \
         touch \"$(printf 'caf\\351-\\377')\" && touch \"$(printf 'x%.0s' $(seq 255))\" && \
         chown 1234:5678 dir/file && chmod 4750 dir/sub && \
         head -c 3000000 /dev/urandom > big",
    )
    .ok();
}

fn change(root: &Path) {
    sh(
        root,
        "rm fifo && mv dir/sym sym2 && truncate -s 2 dir/file && \
         setfattr -x user.tag dir/file && dd if=/dev/zero of=big bs=4096 seek=100 count=3 \
         conv=notrunc status=none && echo new > dir/sub/new && rm -r dir/sub/new && \
         echo again > added",
    )
    .ok();
}

fn create_snapshot(store: &Store, alias: &str) {
    store
        .cli(&["snapshots", "create", "--alias", alias])
        .assert_success();
}

/// `snapfs send FROM ... | snapfs receive TO --container C [extra]`.
fn pipe(from: &Store, send: &str, to: &Store, container: &str, extra: &str) -> common::Output {
    let bin = common::snapfs_bin();
    sh(
        Path::new("/"),
        &format!(
            "{bin} send {} {send} | {bin} receive {} --container {container} {extra}",
            q(from.path()),
            q(to.path())
        ),
    )
}

#[test]
fn full_and_incremental_streams_through_a_pipe() {
    require_fuse();
    let mut a = Mount::new();
    fill(a.path());
    create_snapshot(a.store(), "one");
    change(a.path());
    create_snapshot(a.store(), "two");
    sh(a.path(), "echo unsnapshotted > later").ok();

    let b = Store::new();
    let full = pipe(a.store(), "--snapshot one", &b, "copy", "");
    full.assert_success();
    assert!(
        full.ok().contains("received snapshot"),
        "{}",
        full.describe()
    );
    pipe(a.store(), "--snapshot two --from one", &b, "copy", "").assert_success();

    let mnt_b = b.mountpoint("copy");
    common::snapfs([
        "mount",
        &b.path().display().to_string(),
        &mnt_b.display().to_string(),
        "--container",
        "copy",
    ])
    .assert_success();
    let sa = a.path().join(".snapshots");
    let sb = mnt_b.join(".snapshots");
    assert_eq!(listing(&sa.join("one/")), listing(&sb.join("one/")));
    assert_eq!(listing(&sa.join("two/")), listing(&sb.join("two/")));
    // The copy's live tree is snapshot two (not the sender's later, unsnapshotted file).
    let live = listing(&mnt_b);
    assert!(!live.contains("./later "), "{live}");
    assert!(live.contains("./added "), "{live}");
    // Receiving onto a mounted container is refused.
    create_snapshot(a.store(), "three");
    let mounted = pipe(a.store(), "--snapshot three --from two", &b, "copy", "");
    assert!(
        mounted
            .one_line_error()
            .contains("is mounted: stop it first"),
        "{}",
        mounted.describe()
    );
    common::snapfs(["umount", &mnt_b.display().to_string()]).assert_success();
    // The same incremental again: already there, one line.
    let again = pipe(a.store(), "--snapshot two --from one", &b, "copy", "");
    let line = again.one_line_error();
    assert!(
        line.contains(&format!(
            "already has snapshot {:?}",
            snapshot_name(a.store(), "two")
        )),
        "{line}"
    );
    pipe(a.store(), "--snapshot three --from two", &b, "copy", "").assert_success();
    a.umount();
}

fn snapshot_name(store: &Store, alias: &str) -> String {
    let list = store.json(&["snapshots", "list"]);
    list["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .find(|s| s["alias"] == alias)
        .and_then(|s| s["name"].as_str())
        .expect("snapshot with alias")
        .to_string()
}

#[test]
fn bad_streams_and_targets_are_one_line_and_change_nothing() {
    let a = Store::new();
    create_snapshot(&a, "one");
    create_snapshot(&a, "two");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("one.stream");
    let bin = common::snapfs_bin();
    sh(
        dir.path(),
        &format!("{bin} send {} --snapshot one > {}", q(a.path()), q(&file)),
    )
    .ok();
    let bytes = std::fs::read(&file).expect("stream");
    assert!(bytes.starts_with(b"SNFS"));
    let b = Store::new();
    let receive = |name: &str, content: &[u8]| {
        let f = dir.path().join("in.stream");
        std::fs::write(&f, content).expect("write");
        sh(
            dir.path(),
            &format!(
                "{bin} receive {} --container {name} < {}",
                q(b.path()),
                q(&f)
            ),
        )
    };
    let truncated = receive("copy", &bytes[..bytes.len() - 7]);
    assert!(
        truncated.one_line_error().contains("bad snapshot stream"),
        "{}",
        truncated.describe()
    );
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let corrupted = receive("copy", &flipped);
    assert!(
        corrupted.one_line_error().contains("corrupted"),
        "{}",
        corrupted.describe()
    );
    let foreign = receive("copy", b"GIF89a not a stream");
    assert!(
        foreign
            .one_line_error()
            .contains("not a snapfs snapshot stream"),
        "{}",
        foreign.describe()
    );
    // Nothing of those is visible.
    let list = b.json(&["containers", "list"]);
    assert!(!list.to_string().contains("\"copy\""), "{list}");
    // An incremental stream without its base; unknown snapshots on the sending side.
    let inc = sh(
        dir.path(),
        &format!(
            "{bin} send {} --snapshot two --from one > inc.stream",
            q(a.path())
        ),
    );
    inc.assert_success();
    let no_base = receive(
        "copy",
        &std::fs::read(dir.path().join("inc.stream")).expect("inc"),
    );
    assert!(
        no_base.one_line_error().contains("must exist and hold it"),
        "{}",
        no_base.describe()
    );
    let unknown = sh(
        dir.path(),
        &format!("{bin} send {} --snapshot nope > x.stream", q(a.path())),
    );
    assert!(
        unknown.one_line_error().contains("not found"),
        "{}",
        unknown.describe()
    );
    // The good stream still goes in.
    receive("copy", &bytes).assert_success();
}
