//! Containers: named, writable trees. Each has a stable id (24 hex digits), a unique name among
//! live containers, an optional project id, and a head epoch. A deleted container keeps its
//! record (with `deleted_at`), so its snapshots can still be listed and copied from.

use serde::{Deserialize, Serialize};

use super::{put_version, EpochKind, EpochRecord, Store, StoreError, ROOT_INO};
use crate::codec::{self, Inode, Kind, Ts};
use crate::error::{FsError, FsResult};
use crate::ids::{ContainerId, DataId, Epoch};
use crate::keys;
use crate::kv::{Batch, Dir, Space};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: ContainerId,
    pub name: String,
    pub project_id: Option<String>,
    pub head: Epoch,
    pub created: Ts,
    pub deleted_at: Option<Ts>,
}

/// Container names: 1–255 bytes of UTF-8, no `/`, NUL or control characters.
pub fn check_container_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(StoreError::BadContainerName(name.to_string()));
    }
    Ok(())
}

/// A fresh 24-hex-digit id.
fn new_id() -> ContainerId {
    let mut bytes = [0u8; 12];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: time and a counter still give unique ids within this store.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = Ts::now();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&(t.secs as u64 ^ ((t.nsecs as u64) << 32)).to_be_bytes());
        bytes[8..].copy_from_slice(&(n as u32).to_be_bytes());
    }
    ContainerId::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn empty_root(now: Ts) -> Inode {
    Inode {
        kind: Kind::Dir,
        perm: 0o755,
        uid: 0,
        gid: 0,
        nlink: 2,
        size: 4096,
        alloc: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        rdev: 0,
        data_id: DataId::new(0),
        parent: ROOT_INO,
        target: Vec::new(),
    }
}

impl Store {
    /// The container with this id (live or deleted).
    pub fn container(&self, id: &ContainerId) -> FsResult<Option<ContainerRecord>> {
        match self.kv.get(Space::Meta, &keys::container(id))? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::decode_plain(&v)?)),
        }
    }

    /// The live container called `name`.
    pub fn container_by_name(&self, name: &str) -> FsResult<Option<ContainerRecord>> {
        match self.kv.get(Space::Meta, &keys::container_name(name))? {
            None => Ok(None),
            Some(id) => match ContainerId::from_bytes(&id) {
                Some(id) => self.container(&id),
                None => Err(FsError::Corrupt(format!("container name index {name:?}"))),
            },
        }
    }

    /// A container by id (live or deleted) or else by live name.
    pub fn find_container(&self, id_or_name: &str) -> FsResult<Option<ContainerRecord>> {
        if let Some(c) = self.container(&ContainerId::new(id_or_name))? {
            return Ok(Some(c));
        }
        self.container_by_name(id_or_name)
    }

    /// Every container, live and deleted, oldest first.
    pub fn containers(&self) -> FsResult<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        let mut bad = None;
        self.kv.scan(
            Space::Meta,
            &[keys::TAG_CONTAINER],
            &[keys::TAG_CONTAINER + 1],
            Dir::Forward,
            &mut |_, v| match codec::decode_plain::<ContainerRecord>(v) {
                Ok(r) => {
                    out.push(r);
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            },
        )?;
        if let Some(e) = bad {
            return Err(e.into());
        }
        out.sort_by_key(|c| (c.created.secs, c.created.nsecs, c.head));
        Ok(out)
    }

    pub(super) fn put_container(&self, b: &mut Batch, rec: &ContainerRecord) {
        b.put(
            Space::Meta,
            keys::container(&rec.id),
            codec::encode_plain(rec),
        );
    }

    /// Adds container `name` with head `head` (whose epoch record the caller puts) to `b`.
    /// Call with the write lock held.
    pub(super) fn new_container_record(
        &self,
        b: &mut Batch,
        name: &str,
        project_id: Option<&str>,
        head: Epoch,
    ) -> Result<ContainerRecord, StoreError> {
        check_container_name(name)?;
        if self.container_by_name(name)?.is_some() {
            return Err(StoreError::ContainerExists(name.to_string()));
        }
        let rec = ContainerRecord {
            id: new_id(),
            name: name.to_string(),
            project_id: project_id.map(str::to_string),
            head,
            created: Ts::now(),
            deleted_at: None,
        };
        self.put_container(b, &rec);
        b.put(
            Space::Meta,
            keys::container_name(name),
            rec.id.as_bytes().to_vec(),
        );
        Ok(rec)
    }

    /// Creates an empty container: a new root epoch holding an empty root directory.
    pub fn create_container(
        &self,
        name: &str,
        project_id: Option<&str>,
    ) -> Result<ContainerRecord, StoreError> {
        check_container_name(name)?;
        let _g = self.write_lock();
        let mut b = Batch::new();
        let head = self.alloc_epoch(&mut b);
        let crec = self.new_container_record(&mut b, name, project_id, head)?;
        let rec = EpochRecord {
            parent: None,
            kind: EpochKind::Head {
                container: crec.id.clone(),
            },
        };
        b.put(Space::Meta, keys::epoch(head), codec::encode_plain(&rec));
        self.put_usage(&mut b, head, 0);
        put_version(
            &mut b,
            Space::Meta,
            &keys::inode(ROOT_INO),
            head,
            codec::encode_live(&empty_root(crec.created)),
        );
        self.kv.write(b, true)?;
        self.catalog.edit_tree(|t| t.insert(head, rec));
        self.note_usage(head, 0);
        self.forget_snapshot_epochs();
        self.set_head(&crec.id, head);
        Ok(crec)
    }

    /// Deletes container `id`: its tree goes (reclaimed in the background), its snapshots stay.
    pub fn delete_container(&self, id: &ContainerId) -> Result<ContainerRecord, StoreError> {
        let _g = self.write_lock();
        let mut rec = self.require_container(id)?;
        if rec.deleted_at.is_some() {
            return Err(StoreError::NoContainer(rec.id.to_string()));
        }
        let mut b = Batch::new();
        self.retire(&mut b, rec.head)?;
        rec.deleted_at = Some(Ts::now());
        self.put_container(&mut b, &rec);
        b.delete(Space::Meta, keys::container_name(&rec.name));
        self.drop_quota(&mut b, id);
        self.kv.write(b, true)?;
        self.reload_epochs(&[rec.head])?;
        self.remove_head(id);
        Ok(rec)
    }

    /// The live container `id`.
    pub(super) fn require_live(&self, id: &ContainerId) -> Result<ContainerRecord, StoreError> {
        match self.require_container(id)? {
            c if c.deleted_at.is_none() => Ok(c),
            c => Err(StoreError::NoContainer(c.id.to_string())),
        }
    }

    pub(super) fn require_container(
        &self,
        id: &ContainerId,
    ) -> Result<ContainerRecord, StoreError> {
        self.container(id)?
            .ok_or_else(|| StoreError::NoContainer(id.to_string()))
    }
}
