//! The `.snapshots` directory itself: its attributes, its entries (snapshot directories and
//! alias symlinks), alias renames, and the `user.snapfs.*` attributes of snapshot roots.

use crate::codec::{Inode, Kind, Ts};
use crate::error::{FsError, FsResult};
use crate::store::SnapshotInfo;
use crate::timefmt;

use super::inos::alias;
use super::{name_str, store_err, Node, Volume, ROOT_INO};
use crate::ids::{DataId, Ino, KernelIno};

impl Volume {
    pub(super) fn snapdir_attr(&self) -> FsResult<Inode> {
        let root = self.head.getattr(ROOT_INO)?;
        let (count, newest) = self.head.store().snapshot_summary(self.container())?;
        let t = newest.unwrap_or(root.ctime);
        Ok(Inode {
            kind: Kind::Dir,
            // Open to all so the kernel (default_permissions) passes gestures to us: the
            // daemon decides who may manage snapshots (root or the admin uid, else EPERM).
            perm: 0o777,
            uid: 0,
            gid: 0,
            nlink: 2u32.saturating_add(u32::try_from(count).unwrap_or(u32::MAX)),
            size: 4096,
            alloc: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: root.crtime,
            rdev: 0,
            data_id: DataId::new(0),
            parent: ROOT_INO,
            target: Vec::new(),
        })
    }

    pub(super) fn alias_attr(info: &SnapshotInfo) -> Inode {
        let t = info.record.created_at;
        Inode {
            kind: Kind::Symlink,
            perm: 0o777,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: info.name.len() as u64,
            alloc: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev: 0,
            data_id: DataId::new(0),
            parent: Ino::new(0),
            target: info.name.as_bytes().to_vec(),
        }
    }

    pub(super) fn alias_of(&self, slot: u64) -> FsResult<SnapshotInfo> {
        let info = self.snapshot_by_slot(slot)?;
        if info.record.alias.is_none() {
            return Err(FsError::NotFound);
        }
        Ok(info)
    }

    /// Finds `name` in `.snapshots`: a snapshot (by name) or an alias. O(1).
    pub(super) fn snapdir_lookup(&self, name: &[u8]) -> FsResult<(KernelIno, Inode)> {
        let name = name_str(name).map_err(|_| FsError::NotFound)?;
        if let Some(s) = self.snapshot_named(name)? {
            return self.snap_root(&s);
        }
        if let Some(s) = self.snapshot_aliased(name)? {
            let slot = self.slot_of(&s);
            return Ok((alias(slot), Self::alias_attr(&s)));
        }
        Err(FsError::NotFound)
    }

    /// The snapshot called `name` (its name, not an alias).
    pub(super) fn snapshot_named(&self, name: &str) -> FsResult<Option<SnapshotInfo>> {
        self.head.store().snapshot_by_name(self.container(), name)
    }

    /// The snapshot whose alias is `alias`.
    pub(super) fn snapshot_aliased(&self, alias: &str) -> FsResult<Option<SnapshotInfo>> {
        self.head.store().snapshot_by_alias(self.container(), alias)
    }

    pub(super) fn snapdir_rename(&self, name: &[u8], newname: &[u8], flags: u32) -> FsResult<()> {
        const RENAME_NOREPLACE: u32 = 1;
        if flags & !RENAME_NOREPLACE != 0 {
            return Err(FsError::Invalid("unsupported rename flags in .snapshots"));
        }
        let from = name_str(name).map_err(|_| FsError::NotFound)?;
        let to = name_str(newname)?;
        let by_name = self.snapshot_named(from)?;
        let target = match &by_name {
            Some(s) => s.clone(),
            None => self.snapshot_aliased(from)?.ok_or(FsError::NotFound)?,
        };
        if self.snapshot_named(to)?.is_some() {
            return Err(FsError::Exists);
        }
        if let Some(holder) = self.snapshot_aliased(to)? {
            if holder.name == target.name {
                return Ok(());
            }
            // Renaming a snapshot directory never overwrites; an alias may replace another
            // alias (that is how `ln -sfn` moves one) unless NOREPLACE was asked.
            if by_name.is_some() || flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            self.container
                .set_alias(&holder.name, None)
                .map_err(store_err)?;
        }
        self.container
            .set_alias(&target.name, Some(to))
            .map_err(store_err)?;
        Ok(())
    }

    pub(super) fn snapshot_xattrs(info: &SnapshotInfo, size: u64) -> Vec<(String, Vec<u8>)> {
        let t = |o: Option<Ts>| o.map(timefmt::rfc3339).unwrap_or_default().into_bytes();
        vec![
            (
                "alias".into(),
                info.record.alias.clone().unwrap_or_default().into_bytes(),
            ),
            (
                "created_at".into(),
                timefmt::rfc3339(info.record.created_at).into_bytes(),
            ),
            ("expires_at".into(), t(info.record.expires_at)),
            ("last_used_at".into(), t(info.record.last_used_at)),
            ("name".into(), info.name.clone().into_bytes()),
            ("size".into(), size.to_string().into_bytes()),
        ]
    }

    /// The snapshot whose root `ino` is, if it is one.
    pub(super) fn snap_root_info(&self, ino: KernelIno) -> FsResult<Option<SnapshotInfo>> {
        match self.resolve(ino)? {
            Node::Snap { slot, ino, .. } if ino == ROOT_INO => {
                Ok(Some(self.snapshot_by_slot(slot)?))
            }
            _ => Ok(None),
        }
    }
}
