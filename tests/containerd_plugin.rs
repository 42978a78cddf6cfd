//! The containerd snapshotter's gRPC API, called directly (as containerd's proxy client
//! does) on a real daemon with real FUSE mounts: every operation, and what bad input gets
//! (status codes containerd maps to its errdefs: NotFound, AlreadyExists,
//! FailedPrecondition, InvalidArgument).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::containerd::SnapfsPlugin;
use snapfs::containerd::proto::{self, snapshots_client::SnapshotsClient};
use tonic::{transport::Channel, Code};

struct Client {
    rt: tokio::runtime::Runtime,
    c: SnapshotsClient<Channel>,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::from_static("http://snapfs.invalid")
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                        }
                    })),
            )
            .expect("connect to the snapshotter socket");
        Client {
            rt,
            c: SnapshotsClient::new(channel),
        }
    }

    fn prepare(&mut self, key: &str, parent: &str) -> Result<Vec<proto::Mount>, tonic::Status> {
        self.prepare_labels(key, parent, &[])
    }

    fn prepare_labels(
        &mut self,
        key: &str,
        parent: &str,
        labels: &[(&str, &str)],
    ) -> Result<Vec<proto::Mount>, tonic::Status> {
        let req = proto::PrepareSnapshotRequest {
            snapshotter: "snapfs".into(),
            key: key.into(),
            parent: parent.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.rt
            .block_on(self.c.prepare(req))
            .map(|r| r.into_inner().mounts)
    }

    fn view(&mut self, key: &str, parent: &str) -> Result<Vec<proto::Mount>, tonic::Status> {
        let req = proto::ViewSnapshotRequest {
            snapshotter: "snapfs".into(),
            key: key.into(),
            parent: parent.into(),
            labels: HashMap::new(),
        };
        self.rt
            .block_on(self.c.view(req))
            .map(|r| r.into_inner().mounts)
    }

    fn mounts(&mut self, key: &str) -> Result<Vec<proto::Mount>, tonic::Status> {
        let req = proto::MountsRequest {
            snapshotter: "snapfs".into(),
            key: key.into(),
        };
        self.rt
            .block_on(self.c.mounts(req))
            .map(|r| r.into_inner().mounts)
    }

    fn commit(&mut self, name: &str, key: &str) -> Result<(), tonic::Status> {
        let req = proto::CommitSnapshotRequest {
            snapshotter: "snapfs".into(),
            name: name.into(),
            key: key.into(),
            labels: HashMap::from([("layer".to_string(), name.to_string())]),
        };
        self.rt.block_on(self.c.commit(req)).map(|_| ())
    }

    fn remove(&mut self, key: &str) -> Result<(), tonic::Status> {
        let req = proto::RemoveSnapshotRequest {
            snapshotter: "snapfs".into(),
            key: key.into(),
        };
        self.rt.block_on(self.c.remove(req)).map(|_| ())
    }

    fn stat(&mut self, key: &str) -> Result<proto::Info, tonic::Status> {
        let req = proto::StatSnapshotRequest {
            snapshotter: "snapfs".into(),
            key: key.into(),
        };
        self.rt
            .block_on(self.c.stat(req))
            .map(|r| r.into_inner().info.expect("stat answers an info"))
    }

    fn update(
        &mut self,
        key: &str,
        labels: &[(&str, &str)],
        mask: &[&str],
    ) -> Result<proto::Info, tonic::Status> {
        let req = proto::UpdateSnapshotRequest {
            snapshotter: "snapfs".into(),
            info: Some(proto::Info {
                name: key.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types_mask(mask)),
        };
        self.rt
            .block_on(self.c.update(req))
            .map(|r| r.into_inner().info.expect("update answers an info"))
    }

    fn list(&mut self, filters: &[&str]) -> Result<Vec<proto::Info>, tonic::Status> {
        let req = proto::ListSnapshotsRequest {
            snapshotter: "snapfs".into(),
            filters: filters.iter().map(|s| s.to_string()).collect(),
        };
        let c = &mut self.c;
        self.rt.block_on(async move {
            let mut stream = c.list(req).await?.into_inner();
            let mut out = Vec::new();
            while let Some(page) = stream.message().await? {
                out.extend(page.info);
            }
            Ok(out)
        })
    }

    fn usage(&mut self, key: &str) -> Result<(i64, i64), tonic::Status> {
        let req = proto::UsageRequest {
            snapshotter: "snapfs".into(),
            key: key.into(),
        };
        self.rt
            .block_on(self.c.usage(req))
            .map(|r| (r.get_ref().size, r.get_ref().inodes))
    }

    fn cleanup(&mut self) -> Result<(), tonic::Status> {
        let req = proto::CleanupRequest {
            snapshotter: "snapfs".into(),
        };
        self.rt.block_on(self.c.cleanup(req)).map(|_| ())
    }
}

fn prost_types_mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|s| s.to_string()).collect(),
    }
}

/// Writes and fsyncs (EDQUOT may come at either).
fn write_synced(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(p)?;
    f.write_all(data)?;
    f.sync_all()
}

#[track_caller]
fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, want: Code) {
    match r {
        Err(s) if s.code() == want => {}
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

/// The directory a bind mount answer points at (one `bind` mount with `rbind`).
#[track_caller]
fn bind_dir(m: &[proto::Mount], rw: &str) -> PathBuf {
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].r#type, "bind", "{m:?}");
    assert_eq!(
        m[0].options,
        vec!["rbind".to_string(), rw.to_string()],
        "{m:?}"
    );
    let dir = PathBuf::from(&m[0].source);
    assert!(common::is_mounted(&dir), "{} is not mounted", dir.display());
    dir
}

#[test]
fn lifecycle_and_bad_input() {
    let plugin = SnapfsPlugin::start();
    let mut c = Client::connect(&plugin.socket);

    // A base layer: prepared empty, filled, committed.
    let m = c.prepare("ns/1/extract-base", "").expect("prepare base");
    let dir = bind_dir(&m, "rw");
    std::fs::create_dir(dir.join("etc")).expect("mkdir");
    std::fs::write(dir.join("etc/base"), b"base\n").expect("write");
    std::fs::write(dir.join("etc/gone"), b"deleted above\n").expect("write");
    code(c.prepare("ns/1/extract-base", ""), Code::AlreadyExists);
    let (size, inodes) = c.usage("ns/1/extract-base").expect("usage");
    assert!(
        size > 0 && inodes >= 3,
        "usage of the base: {size} bytes, {inodes} inodes"
    );
    let st = c.stat("ns/1/extract-base").expect("stat");
    assert_eq!(st.kind, proto::Kind::Active as i32);
    // Not committed yet: nothing may start from it.
    code(
        c.prepare("ns/2/child", "ns/1/extract-base"),
        Code::FailedPrecondition,
    );
    code(c.commit("", "ns/1/extract-base"), Code::InvalidArgument);
    c.commit("layer-1", "ns/1/extract-base").expect("commit");
    // Its container is unmounted and deleted in the background.
    assert!(
        common::wait_until(Duration::from_secs(10), || !common::is_mounted(&dir)),
        "committed snapshot still mounted"
    );
    code(c.stat("ns/1/extract-base"), Code::NotFound);
    let st = c.stat("layer-1").expect("stat layer");
    assert_eq!(st.kind, proto::Kind::Committed as i32);
    assert_eq!(st.parent, "");
    assert_eq!(st.labels.get("layer").map(String::as_str), Some("layer-1"));
    let (size1, inodes1) = c.usage("layer-1").expect("usage of a committed snapshot");
    assert_eq!((size1, inodes1), (size, inodes), "commit copies nothing");
    code(c.mounts("layer-1"), Code::FailedPrecondition);

    // A second layer on it: sees the base, deletes a file, adds one.
    let m = c
        .prepare("ns/3/extract-2", "layer-1")
        .expect("prepare on a layer");
    let dir2 = bind_dir(&m, "rw");
    assert_eq!(
        std::fs::read(dir2.join("etc/base")).expect("read"),
        b"base\n"
    );
    std::fs::remove_file(dir2.join("etc/gone")).expect("unlink");
    std::fs::write(dir2.join("etc/top"), b"top\n").expect("write");
    let (own, _) = c.usage("ns/3/extract-2").expect("usage");
    code(c.commit("layer-1", "ns/3/extract-2"), Code::AlreadyExists);
    c.commit("layer-2", "ns/3/extract-2").expect("commit 2");
    assert_eq!(c.stat("layer-2").expect("stat").parent, "layer-1");
    let (own2, _) = c.usage("layer-2").expect("usage");
    assert_eq!(own2, own, "a layer's usage is its own, not its parent's");

    // A view and a container on the top layer.
    let m = c.view("ns/4/view", "layer-2").expect("view");
    let vdir = bind_dir(&m, "ro");
    assert_eq!(
        std::fs::read(vdir.join("etc/top")).expect("read view"),
        b"top\n"
    );
    assert!(
        !vdir.join("etc/gone").exists(),
        "the upper layer's deletion shows"
    );
    let err = std::fs::write(vdir.join("etc/x"), b"x").expect_err("a view is read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    code(c.commit("layer-v", "ns/4/view"), Code::FailedPrecondition);
    let m = c
        .prepare_labels(
            "ns/5/ctr",
            "layer-2",
            &[("containerd.io/snapshot/disk_quota", "1M")],
        )
        .expect("prepare a container with a quota");
    let cdir = bind_dir(&m, "rw");
    assert_eq!(
        std::fs::read(cdir.join("etc/base")).expect("read"),
        b"base\n"
    );
    let big = vec![7u8; 2 << 20];
    let err = write_synced(&cdir.join("big"), &big).expect_err("2 MiB past a 1 MiB quota");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    std::fs::remove_file(cdir.join("big")).ok();
    std::fs::write(cdir.join("small"), vec![1u8; 300 << 10]).expect("under the quota");
    let (used, _) = c.usage("ns/5/ctr").expect("usage");
    assert!(used >= 300 << 10, "usage {used} counts the 300 KiB written");
    code(
        c.prepare_labels(
            "ns/6/q",
            "",
            &[("containerd.io/snapshot/disk_quota", "lots")],
        ),
        Code::InvalidArgument,
    );
    code(c.stat("ns/6/q"), Code::NotFound);

    // Parents with children stay; leaves go.
    code(c.remove("layer-2"), Code::FailedPrecondition);
    code(c.remove("layer-1"), Code::FailedPrecondition);
    // The mounts of an active snapshot are the same when asked again.
    assert_eq!(bind_dir(&c.mounts("ns/5/ctr").expect("mounts"), "rw"), cdir);

    // Labels: update changes labels only.
    let i = c
        .update("layer-2", &[("a", "1"), ("b", "2")], &[])
        .expect("update all labels");
    assert_eq!(i.labels.len(), 2, "{i:?}");
    let i = c
        .update("layer-2", &[("b", "3")], &["labels.b", "labels.a"])
        .expect("update some labels");
    assert_eq!(i.labels.get("b").map(String::as_str), Some("3"), "{i:?}");
    assert!(
        !i.labels.contains_key("a"),
        "labels.a without a value removes it: {i:?}"
    );
    code(c.update("layer-2", &[], &["kind"]), Code::InvalidArgument);
    code(c.update("nope", &[], &[]), Code::NotFound);
    assert_eq!(c.stat("layer-2").expect("stat").labels, i.labels);

    // List with containerd's filters.
    let all = c.list(&[]).expect("list");
    let mut names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["layer-1", "layer-2", "ns/4/view", "ns/5/ctr"]);
    let committed = c.list(&["kind==committed"]).expect("list committed");
    assert_eq!(committed.len(), 2, "{committed:?}");
    let labelled = c.list(&["labels.b==3", "kind==view"]).expect("list or");
    assert_eq!(labelled.len(), 2, "{labelled:?}");
    code(c.list(&["bogus==1"]), Code::InvalidArgument);
    code(c.list(&["name~=("]), Code::InvalidArgument);

    // Unknown keys.
    code(c.stat("nope"), Code::NotFound);
    code(c.mounts("nope"), Code::NotFound);
    code(c.usage("nope"), Code::NotFound);
    code(c.remove("nope"), Code::NotFound);
    code(c.commit("x", "nope"), Code::NotFound);
    code(c.prepare("k", "nope"), Code::NotFound);
    code(c.prepare("", ""), Code::InvalidArgument);

    // Odd keys: long, with spaces, slashes, dots and non-ASCII.
    let odd = format!("ns/7/{} ./..é\u{7f}", "k".repeat(1000));
    let m = c.prepare(&odd, "layer-2").expect("prepare an odd key");
    bind_dir(&m, "rw");
    assert_eq!(c.stat(&odd).expect("stat").name, odd);

    // The snapfs API shows them as containers of project containerd.
    let containers = plugin.containers();
    let running: Vec<&serde_json::Value> = containers
        .iter()
        .filter(|c| c["status"] == "running")
        .collect();
    assert_eq!(
        running.len(),
        3,
        "view, container and odd key: {containers:?}"
    );

    // Removing a mounted active snapshot (something holds a file open in it): the mount is
    // detached at once and the container deleted; the open file's reads fail afterwards
    // (the connection is aborted after the grace period) instead of pinning a deleted tree.
    let held = std::fs::File::open(cdir.join("small")).expect("open in the mount");
    c.remove("ns/5/ctr").expect("remove a busy active snapshot");
    code(c.stat("ns/5/ctr"), Code::NotFound);
    assert!(
        common::wait_until(Duration::from_secs(10), || !common::is_mounted(&cdir)),
        "removed snapshot still mounted"
    );
    drop(held);
    c.remove("ns/4/view").expect("remove view");
    c.remove(&odd).expect("remove odd");
    c.remove("layer-2").expect("remove layer 2");
    c.remove("layer-1").expect("remove layer 1");
    assert!(c.list(&[]).expect("list").is_empty());
    c.cleanup().expect("cleanup");
    assert!(
        common::wait_until(Duration::from_secs(10), || plugin.containers().is_empty()),
        "containers left: {:?}",
        plugin.containers()
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || plugin.mounted_dirs().is_empty()),
        "{:?}",
        plugin.mounted_dirs()
    );
}

/// Records outlive the daemon: after a restart, Stat and List answer as before, an active
/// snapshot is mounted again by Mounts, and new containers start from committed layers.
#[test]
fn state_survives_a_daemon_restart() {
    let mut plugin = SnapfsPlugin::start();
    let mut c = Client::connect(&plugin.socket);
    let dir = bind_dir(&c.prepare("a", "").expect("prepare"), "rw");
    std::fs::write(dir.join("f"), b"layer\n").expect("write");
    c.commit("L", "a").expect("commit");
    let dir = bind_dir(&c.prepare("b", "L").expect("prepare b"), "rw");
    std::fs::write(dir.join("g"), b"active\n").expect("write");
    let before = c.list(&[]).expect("list");

    plugin.daemon.restart();
    let mut c = Client::connect(&plugin.socket);
    let after = c.list(&[]).expect("list after restart");
    assert_eq!(before, after);
    let dir = bind_dir(&c.mounts("b").expect("mounts after restart"), "rw");
    assert_eq!(std::fs::read(dir.join("g")).expect("read"), b"active\n");
    assert_eq!(std::fs::read(dir.join("f")).expect("read"), b"layer\n");
    let dir = bind_dir(&c.prepare("c", "L").expect("prepare after restart"), "rw");
    assert_eq!(std::fs::read(dir.join("f")).expect("read"), b"layer\n");
    assert!(!dir.join("g").exists());
}

/// fsck checks containerd's records against the store (a committed snapshot's snapfs snapshot
/// is there, a parent is committed, the child index matches) and `--repair` rebuilds the
/// child index.
#[test]
fn fsck_checks_the_records() {
    let mut plugin = SnapfsPlugin::start();
    let mut c = Client::connect(&plugin.socket);
    bind_dir(&c.prepare("a", "").expect("prepare"), "rw");
    c.commit("L", "a").expect("commit");
    bind_dir(&c.prepare("b", "L").expect("prepare b"), "rw");
    plugin.daemon.shutdown();
    let store = plugin.daemon.store().to_path_buf();
    let out = common::snapfs(["fsck".as_ref(), store.as_os_str()]);
    assert!(out.success(), "fsck of a healthy store: {}", out.describe());
    // The committed layer's snapfs snapshot goes behind the plugin's back.
    let st = snapfs::storedir::open_store(&store).expect("open");
    let rec = st.runtime_snapshot("L").expect("read").expect("record");
    st.delete_snapshot(&rec.container, rec.snapshot.as_deref().expect("named"))
        .expect("delete the snapshot");
    drop(st);
    let out = common::snapfs(["fsck".as_ref(), store.as_os_str()]);
    assert!(!out.success(), "fsck must fail");
    assert!(
        out.stdout
            .contains("containerd snapshot \"L\": its snapshot"),
        "{}",
        out.describe()
    );
}
