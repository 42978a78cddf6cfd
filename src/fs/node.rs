//! Inode-level operations: create, link, unlink, attributes, open and release.

use crate::codec::{Dirent, Inode, Kind, Ts};
use crate::error::{FsError, FsResult};
use crate::ids::{DataId, Ino};
use crate::keys;
use crate::kv::Space;

use super::{check_name, now, Caller, Fh, Fs, Handle, Tx, SYMLINK_MAX};

/// A time to set: the present, or a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(Ts),
}

/// The attribute changes of one `setattr` call; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Ts>,
    pub crtime: Option<Ts>,
    /// The handle the change came through (ftruncate), if any.
    pub fh: Option<Fh>,
}

fn resolve_time(t: TimeSet, now: Ts) -> Ts {
    match t {
        TimeSet::Now => now,
        TimeSet::At(ts) => ts,
    }
}

/// Releases everything an inode with no links and no open handle holds in this head.
pub(super) fn free_inode(tx: &mut Tx<'_>, ino: Ino, inode: &Inode) -> FsResult<()> {
    if inode.kind == Kind::File {
        tx.drop_data(inode.data_id)?;
    }
    tx.drop_own(Space::Meta, &keys::xattr_prefix(ino))?;
    tx.tombstone_inode(ino);
    Ok(())
}

impl Fs {
    fn new_inode(&self, parent: &Inode, kind: Kind, mode: u32, caller: Caller) -> Inode {
        let t = now();
        let mut perm = (mode & 0o7777) as u16;
        // A setgid directory hands its group down, and its setgid bit to subdirectories.
        let gid = if parent.perm & 0o2000 != 0 {
            if kind == Kind::Dir {
                perm |= 0o2000;
            }
            parent.gid
        } else {
            caller.gid
        };
        Inode {
            kind,
            perm,
            uid: caller.uid,
            gid,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            size: if kind == Kind::Dir { 4096 } else { 0 },
            alloc: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev: 0,
            data_id: DataId::new(0),
            parent: Ino::new(0),
            target: Vec::new(),
        }
    }

    /// Common path of mknod/mkdir/symlink/create: adds a new inode under `parent`.
    fn make_node(
        &self,
        parent: Ino,
        name: &[u8],
        build: impl FnOnce(&Inode) -> Inode,
    ) -> FsResult<(Ino, Inode)> {
        check_name(name)?;
        let mut tx = self.begin()?;
        let mut dir = tx.inode(parent)?;
        if dir.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if dir.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if tx.dirent(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let ino = tx.alloc_ino();
        let mut inode = build(&dir);
        if inode.kind == Kind::File {
            // Inodes and data ids share one counter: a new file's blocks take its number.
            inode.data_id = DataId::new(ino.get());
        }
        if inode.kind == Kind::Dir {
            inode.parent = parent;
            dir.nlink += 1;
        }
        let t = now();
        dir.mtime = t;
        dir.ctime = t;
        tx.put_inode(ino, &inode);
        tx.put_inode(parent, &dir);
        tx.put_dirent(
            parent,
            name,
            Dirent {
                ino,
                kind: inode.kind,
            },
            None,
        );
        tx.commit()?;
        Ok((ino, inode))
    }

    pub fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<(Ino, Inode)> {
        let kind = Kind::from_mode(mode).ok_or(FsError::Invalid("bad file type"))?;
        if kind == Kind::Dir || kind == Kind::Symlink {
            return Err(FsError::Invalid(
                "mknod cannot make directories or symlinks",
            ));
        }
        self.make_node(parent, name, |dir| {
            let mut i = self.new_inode(dir, kind, mode, caller);
            if matches!(kind, Kind::CharDev | Kind::BlockDev) {
                i.rdev = rdev;
            }
            i
        })
    }

    pub fn mkdir(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        caller: Caller,
    ) -> FsResult<(Ino, Inode)> {
        self.make_node(parent, name, |dir| {
            self.new_inode(dir, Kind::Dir, mode, caller)
        })
    }

    pub fn symlink(
        &self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<(Ino, Inode)> {
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        self.make_node(parent, name, |dir| {
            let mut i = self.new_inode(dir, Kind::Symlink, 0o777, caller);
            // Symlinks take the caller's group even in setgid directories? No: Linux gives
            // them the directory's group too, which new_inode did.
            i.size = target.len() as u64;
            i.target = target.to_vec();
            i
        })
    }

    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let inode = self.getattr(ino)?;
        if inode.kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        Ok(inode.target)
    }

    /// Creates a regular file and opens it.
    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Ino, Inode, Fh)> {
        let (ino, inode) = self.make_node(parent, name, |dir| {
            self.new_inode(dir, Kind::File, mode, caller)
        })?;
        let fh = self.register_open(ino, flags);
        Ok((ino, inode, fh))
    }

    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> FsResult<(Ino, Inode)> {
        check_name(newname)?;
        let mut tx = self.begin()?;
        let mut inode = tx.inode(ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::Perm);
        }
        if inode.nlink == 0 {
            return Err(FsError::NotFound);
        }
        let mut dir = tx.inode(newparent)?;
        if dir.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if tx.dirent(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        if inode.nlink == u32::MAX {
            return Err(FsError::Invalid("too many links"));
        }
        let t = now();
        inode.nlink += 1;
        inode.ctime = t;
        dir.mtime = t;
        dir.ctime = t;
        tx.put_inode(ino, &inode);
        tx.put_inode(newparent, &dir);
        tx.put_dirent(
            newparent,
            newname,
            Dirent {
                ino,
                kind: inode.kind,
            },
            None,
        );
        tx.commit()?;
        Ok((ino, inode))
    }

    /// Drops one link of `ino` (already removed from its directory); frees it when it has
    /// no link and no open handle left, else records it as an orphan.
    pub(super) fn drop_link(&self, tx: &mut Tx<'_>, ino: Ino, inode: &mut Inode) -> FsResult<()> {
        inode.nlink = if inode.kind == Kind::Dir {
            0
        } else {
            inode.nlink.saturating_sub(1)
        };
        inode.ctime = now();
        if inode.nlink > 0 {
            tx.put_inode(ino, inode);
            return Ok(());
        }
        // Decided under the handles lock, as `release` decides (see `Handles`).
        let open = {
            let mut h = self.handles.lock();
            let open = h.open.get(&ino).is_some_and(|n| *n > 0);
            if open {
                h.orphans.insert(ino);
            }
            open
        };
        if open {
            tx.put_inode(ino, inode);
            tx.batch
                .put(Space::Meta, keys::orphan(&self.container, ino), Vec::new());
            Ok(())
        } else {
            free_inode(tx, ino, inode)
        }
    }

    pub fn unlink(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        check_name(name)?;
        let mut tx = self.begin()?;
        let mut dir = tx.inode(parent)?;
        let d = tx.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        if d.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let mut inode = tx.inode(d.ino)?;
        tx.del_dirent(parent, name, d.ino);
        let t = now();
        dir.mtime = t;
        dir.ctime = t;
        tx.put_inode(parent, &dir);
        self.drop_link(&mut tx, d.ino, &mut inode)?;
        tx.commit()
    }

    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid("cannot remove ."));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        check_name(name)?;
        let mut tx = self.begin()?;
        let mut dir = tx.inode(parent)?;
        let d = tx.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        if d.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if !self.dir_is_empty(&tx.chain, d.ino)? {
            return Err(FsError::NotEmpty);
        }
        let mut inode = tx.inode(d.ino)?;
        tx.del_dirent(parent, name, d.ino);
        let t = now();
        dir.nlink = dir.nlink.saturating_sub(1).max(2);
        dir.mtime = t;
        dir.ctime = t;
        tx.put_inode(parent, &dir);
        self.drop_link(&mut tx, d.ino, &mut inode)?;
        tx.commit()
    }

    pub fn setattr(&self, ino: Ino, set: &SetAttr, caller: Caller) -> FsResult<Inode> {
        let mut tx = self.begin()?;
        let mut inode = tx.inode(ino)?;
        let t = now();
        let mut changed = false;
        if let Some(mode) = set.mode {
            inode.perm = (mode & 0o7777) as u16;
            changed = true;
        }
        if set.uid.is_some() || set.gid.is_some() {
            if let Some(uid) = set.uid {
                inode.uid = uid;
            }
            if let Some(gid) = set.gid {
                inode.gid = gid;
            }
            // chown of a non-directory drops its privileges, whoever does it (as on ext4);
            // an explicit mode in the same request wins.
            if inode.kind != Kind::Dir {
                self.drop_privileges(&mut tx, ino, &mut inode, set.mode.is_none())?;
            }
            changed = true;
        }
        if let Some(size) = set.size {
            if inode.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            if inode.kind != Kind::File {
                return Err(FsError::Invalid("truncate of a special file"));
            }
            if size > super::MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            // Truncation drops file capabilities, and the setuid/setgid bits when the caller
            // is not root (the kernel's FATTR_KILL_SUIDGID, which the decoder does not read,
            // means "no CAP_FSETID"; root has it by default).
            let setid = caller.uid != 0 && set.mode.is_none();
            self.drop_privileges(&mut tx, ino, &mut inode, setid)?;
            self.set_size(&mut tx, &mut inode, size)?;
            if set.mtime.is_none() {
                inode.mtime = t;
            }
            changed = true;
        }
        if let Some(a) = set.atime {
            inode.atime = resolve_time(a, t);
            changed = true;
        }
        if let Some(m) = set.mtime {
            inode.mtime = resolve_time(m, t);
            changed = true;
        }
        if let Some(c) = set.crtime {
            inode.crtime = c;
        }
        if changed {
            inode.ctime = set.ctime.unwrap_or(t);
        } else if let Some(c) = set.ctime {
            inode.ctime = c;
        }
        tx.put_inode(ino, &inode);
        tx.commit()?;
        Ok(inode)
    }

    /// Checks `mask` (R_OK=4, W_OK=2, X_OK=1; 0 = existence) against the inode's mode.
    pub fn access(&self, ino: Ino, mask: i32, caller: Caller) -> FsResult<()> {
        let inode = self.getattr(ino)?;
        if mask == 0 {
            return Ok(());
        }
        let perm = inode.perm as i32;
        if caller.uid == 0 {
            // root may do anything, but executing needs some x bit (or a directory).
            if mask & 1 != 0 && inode.kind != Kind::Dir && perm & 0o111 == 0 {
                return Err(FsError::Access);
            }
            return Ok(());
        }
        let bits = if caller.uid == inode.uid {
            (perm >> 6) & 7
        } else if caller.gid == inode.gid {
            (perm >> 3) & 7
        } else {
            perm & 7
        };
        if mask & bits == mask {
            Ok(())
        } else {
            Err(FsError::Access)
        }
    }

    fn register_open(&self, ino: Ino, flags: i32) -> Fh {
        let append = flags & libc::O_APPEND != 0;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let fh = self.new_fh(ino, super::HandleKind::File { append, write });
        let mut h = self.handles.lock();
        h.map.insert(fh, Handle::File { ino, append, write });
        *h.open.entry(ino).or_insert(0) += 1;
        fh
    }

    /// Opens a file; `O_TRUNC` truncates it.
    pub fn open(&self, ino: Ino, flags: i32) -> FsResult<Fh> {
        let inode = self.getattr(ino)?;
        if inode.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if !self.is_head() && (writable || flags & libc::O_TRUNC != 0) {
            return Err(FsError::ReadOnly);
        }
        if flags & libc::O_TRUNC != 0 && writable && inode.kind == Kind::File {
            self.setattr(
                ino,
                &SetAttr {
                    size: Some(0),
                    ..Default::default()
                },
                Caller::ROOT,
            )?;
        }
        Ok(self.register_open(ino, flags))
    }

    /// Closes a file handle; the last close of a file unlinked while open frees it. Any
    /// other close takes only the handles lock, never the store's write lock.
    pub fn release(&self, fh: Fh) -> FsResult<()> {
        let ino = {
            let mut h = self.handles.lock();
            let ino = match h.map.remove(&fh) {
                Some(Handle::File { ino, .. }) => ino,
                Some(other) => {
                    h.map.insert(fh, other);
                    return Err(FsError::BadHandle);
                }
                None => return Err(FsError::BadHandle),
            };
            self.forget_fh(fh);
            match h.open.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return Ok(());
                }
                _ => {
                    h.open.remove(&ino);
                }
            }
            // Only a head's unlink records orphans, so snapshot views stop here too.
            if !h.orphans.remove(&ino) {
                return Ok(());
            }
            ino
        };
        self.free_orphan(ino)
    }

    /// Frees `ino`, unlinked while open, whose last handle was just closed.
    fn free_orphan(&self, ino: Ino) -> FsResult<()> {
        let mut tx = self.begin()?;
        {
            let mut h = self.handles.lock();
            if h.open.contains_key(&ino) {
                // Opened again meanwhile (by inode number): its last release frees it.
                h.orphans.insert(ino);
                return Ok(());
            }
        }
        let inode = match tx.inode(ino) {
            Ok(i) => i,
            Err(FsError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        // A failed unlink, or a restore since, can have left it linked.
        if inode.nlink == 0 {
            free_inode(&mut tx, ino, &inode)?;
            tx.batch
                .delete(Space::Meta, keys::orphan(&self.container, ino));
            tx.commit()?;
        }
        Ok(())
    }

    pub(super) fn handle_append(&self, fh: Fh) -> bool {
        matches!(
            self.handles.lock().map.get(&fh),
            Some(Handle::File { append: true, .. })
        )
    }
}
