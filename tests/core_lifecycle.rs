//! The snapshot lifecycle's one owner (`fs::Container`), without a mount: a recording
//! `MountHooks` stands in for a mounted volume and shows what each operation asks of the mount,
//! and in which order relative to the store's batch.

#[path = "core/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::{default_id, mem_backend};

use parking_lot::Mutex;
use snapfs::error::FsResult;
use snapfs::fs::{Caller, Container, Fs, MountHooks, PathRestore, ROOT_INO};
use snapfs::store::{SnapshotInfo, Store, StoreError};

const ME: Caller = harness::ME;

/// A stand-in for a mounted volume: records each hook call; `switch_tree` also records
/// whether the store had switched trees when it was called and when it returned.
struct Recorder {
    log: Mutex<Vec<String>>,
    container: Arc<Container>,
}

impl Recorder {
    fn head_text(&self) -> String {
        read_file(&self.container.head().expect("head"), b"f")
    }
}

impl MountHooks for Recorder {
    fn flush_writes(&self) -> FsResult<()> {
        self.log.lock().push("flush".into());
        Ok(())
    }

    fn switch_tree(
        &self,
        snap: &SnapshotInfo,
        switch: &mut dyn FnMut() -> Result<SnapshotInfo, StoreError>,
    ) -> Result<SnapshotInfo, StoreError> {
        let before = self.head_text();
        self.log
            .lock()
            .push(format!("switch from {before} to {}", snap.name));
        let r = switch();
        let after = self.head_text();
        self.log.lock().push(format!("switched to {after}"));
        r
    }

    fn restore_paths(&self, snap: &SnapshotInfo, paths: &[Vec<u8>]) -> FsResult<PathRestore> {
        self.log.lock().push("restore_paths".into());
        self.container.head()?.restore_paths(snap, paths)
    }

    fn snapshot_gone(&self, _epoch: snapfs::ids::Epoch, wait: bool) {
        self.log.lock().push(format!("gone wait={wait}"));
    }
}

fn read_file(fs: &Fs, name: &[u8]) -> String {
    match fs.lookup(ROOT_INO, name) {
        Ok((ino, _)) => String::from_utf8(fs.read(ino, 0, 100).expect("read")).expect("utf8"),
        Err(_) => "-".into(),
    }
}

fn write_file(fs: &Fs, name: &[u8], text: &str) {
    let ino = match fs.lookup(ROOT_INO, name) {
        Ok((ino, _)) => ino,
        Err(_) => {
            let (ino, _, fh) = fs.create(ROOT_INO, name, 0o644, 0, ME).expect("create");
            fs.release(fh).expect("release");
            ino
        }
    };
    let fh = fs.open(ino, libc::O_WRONLY).expect("open");
    fs.setattr(
        ino,
        &snapfs::fs::SetAttr {
            size: Some(0),
            ..Default::default()
        },
        ME,
    )
    .expect("truncate");
    fs.write(ino, Some(fh), 0, text.as_bytes(), false)
        .expect("write");
    fs.release(fh).expect("release");
}

/// A store with its `default` container, that container's lifecycle and a recorder attached
/// as its mount.
fn mounted() -> (Arc<Store>, Arc<Container>, Arc<Recorder>) {
    let store = Arc::new(Store::init(mem_backend().kv(), 4096).expect("init"));
    let id = default_id(&store);
    let container = Container::new(store.clone(), &id);
    let rec = Arc::new(Recorder {
        log: Mutex::new(Vec::new()),
        container: container.clone(),
    });
    let hooks: Arc<dyn MountHooks> = rec.clone();
    container.attach(Arc::downgrade(&hooks));
    (store, container, rec)
}

fn take(rec: &Recorder) -> Vec<String> {
    std::mem::take(&mut *rec.log.lock())
}

#[test]
fn snapshot_of_mounted_container_flushes_before_the_batch() {
    let (store, c, rec) = mounted();
    let s = c.snapshot(Some("first"), None).expect("snapshot");
    assert_eq!(take(&rec), ["flush"]);
    let listed = store.snapshots(c.id()).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, s.name);
    assert_eq!(listed[0].record.alias.as_deref(), Some("first"));
}

#[test]
fn restore_switches_the_mounted_tree_around_the_store_restore() {
    let (_store, c, rec) = mounted();
    write_file(&c.head().expect("head"), b"f", "old");
    let s = c.snapshot(None, None).expect("snapshot");
    write_file(&c.head().expect("head"), b"f", "new");
    take(&rec);
    c.restore(&s.name).expect("restore");
    // The mount is asked once, and the store switches trees inside that call.
    assert_eq!(
        take(&rec),
        [
            format!("switch from new to {}", s.name),
            "switched to old".into()
        ]
    );
}

#[test]
fn restore_of_unknown_snapshot_asks_nothing_of_the_mount() {
    let (_store, c, rec) = mounted();
    write_file(&c.head().expect("head"), b"f", "live");
    let e = c.restore("no-such-snapshot").expect_err("unknown snapshot");
    assert!(matches!(e, StoreError::NoSnapshot(_)), "{e:?}");
    assert!(take(&rec).is_empty());
    assert_eq!(rec.head_text(), "live");
}

#[test]
fn delete_tells_the_mount_and_passes_the_wait_flag() {
    let (store, c, rec) = mounted();
    let a = c.snapshot(None, None).expect("snapshot a");
    let b = c.snapshot(None, None).expect("snapshot b");
    take(&rec);
    c.delete_snapshot(&a.name, true).expect("delete a");
    c.delete_snapshot(&b.name, false).expect("delete b");
    assert_eq!(take(&rec), ["gone wait=true", "gone wait=false"]);
    assert!(store.snapshots(c.id()).expect("list").is_empty());
}

#[test]
fn copy_flushes_only_when_it_copies_the_live_tree() {
    let (store, c, rec) = mounted();
    let s = c.snapshot(None, None).expect("snapshot");
    take(&rec);
    c.copy(Some(&s.name), "from-snap", None)
        .expect("copy snapshot");
    assert!(take(&rec).is_empty());
    c.copy(None, "from-live", None).expect("copy live");
    assert_eq!(take(&rec), ["flush"]);
    assert!(store
        .container_by_name("from-snap")
        .expect("find")
        .is_some());
    assert!(store
        .container_by_name("from-live")
        .expect("find")
        .is_some());
}

#[test]
fn path_restore_of_mounted_container_goes_through_the_mount() {
    let (_store, c, rec) = mounted();
    write_file(&c.head().expect("head"), b"f", "old");
    let s = c.snapshot(None, None).expect("snapshot");
    write_file(&c.head().expect("head"), b"f", "new");
    take(&rec);
    c.restore_paths(&s, &[b"/f".to_vec()])
        .expect("restore paths");
    assert_eq!(take(&rec), ["restore_paths"]);
    assert_eq!(rec.head_text(), "old");
}

#[test]
fn lifecycle_of_unmounted_container_works_without_hooks() {
    let (_store, c, rec) = mounted();
    let recorder = Arc::downgrade(&rec);
    drop(rec); // the mount is gone: its weak registration no longer upgrades
    assert!(recorder.upgrade().is_none());
    write_file(&c.head().expect("head"), b"f", "old");
    let s = c.snapshot(Some("a"), None).expect("snapshot");
    write_file(&c.head().expect("head"), b"f", "new");
    c.restore(&s.name).expect("restore");
    assert_eq!(read_file(&c.head().expect("head"), b"f"), "old");
    c.set_alias(&s.name, Some("b")).expect("alias");
    c.delete_snapshot("b", true).expect("delete by alias");
}
