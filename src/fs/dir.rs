//! Directories: listing with stable offsets, emptiness, and rename.

use std::sync::Arc;

use crate::codec::{Dirent, Kind};
use crate::error::{FsError, FsResult};
use crate::ids::Ino;
use crate::keys;
use crate::store::Chain;

use super::{check_name, now, scan_live, Fh, Fs, Handle, ROOT_INO};

/// One listed entry. `offset` names the position of the *next* entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry<I = Ino> {
    /// A store inode number; a kernel number in `Volume`'s listings.
    pub ino: I,
    pub kind: Kind,
    pub name: Vec<u8>,
    pub offset: u64,
}

const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;
const RENAME_WHITEOUT: u32 = 4;

impl Fs {
    /// Live entries of directory `ino`, in name order.
    pub(super) fn list(
        &self,
        chain: &Chain,
        ino: Ino,
        limit: usize,
    ) -> FsResult<Vec<(Vec<u8>, Dirent)>> {
        let prefix = keys::dirent_prefix(ino);
        let end = crate::kv::prefix_end(&prefix);
        let mut out = Vec::new();
        scan_live(
            self.store.kv(),
            &prefix,
            &end,
            chain,
            &mut |base, d: Dirent| {
                if let Some(name) = keys::name_of(base) {
                    out.push((name.to_vec(), d));
                }
                out.len() < limit
            },
        )?;
        out.reverse();
        Ok(out)
    }

    /// Every (directory, name) entry naming inode `ino` in this view, from the back links
    /// (ascending): the paths of an inode without walking the tree.
    pub fn links(&self, ino: Ino) -> FsResult<Vec<(Ino, Vec<u8>)>> {
        let chain = self.chain()?;
        self.links_in(&chain, ino)
    }

    pub(super) fn links_in(&self, chain: &Chain, ino: Ino) -> FsResult<Vec<(Ino, Vec<u8>)>> {
        let prefix = keys::link_prefix(ino);
        let mut out = Vec::new();
        let end = crate::kv::prefix_end(&prefix);
        self.visit_links(chain, &prefix, &end, &mut |_, p, n| {
            out.push((p, n.to_vec()))
        })?;
        out.reverse();
        Ok(out)
    }

    /// Calls `f(ino, directory, name)` for every live back link of this view (for checks),
    /// in descending key order.
    pub fn all_links(&self, f: &mut dyn FnMut(Ino, Ino, &[u8])) -> FsResult<()> {
        let chain = self.chain()?;
        self.visit_links(&chain, &[keys::TAG_LINK], &[keys::TAG_LINK + 1], f)
    }

    fn visit_links(
        &self,
        chain: &Chain,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(Ino, Ino, &[u8]),
    ) -> FsResult<()> {
        scan_live(self.store.kv(), start, end, chain, &mut |base, ()| {
            if let Some((ino, parent, name)) = keys::split_link(base) {
                f(ino, parent, name);
            }
            true
        })
    }

    pub(super) fn dir_is_empty(&self, chain: &Chain, ino: Ino) -> FsResult<bool> {
        Ok(self.list(chain, ino, 1)?.is_empty())
    }

    pub fn opendir(&self, ino: Ino) -> FsResult<Fh> {
        let inode = self.getattr(ino)?;
        if inode.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let fh = self.new_fh(ino, super::HandleKind::Dir);
        self.handles
            .lock()
            .map
            .insert(fh, Handle::Dir { ino, entries: None });
        Ok(fh)
    }

    /// Entries of the open directory `fh` from `offset` on. The listing is taken once per
    /// handle (at offset 0), so offsets stay stable while the directory changes.
    pub fn readdir(&self, ino: Ino, fh: Fh, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let cached = match self.handles.lock().map.get(&fh) {
            Some(Handle::Dir { ino: i, entries }) if *i == ino => entries.clone(),
            _ => return Err(FsError::BadHandle),
        };
        let entries = match cached {
            Some(e) if offset != 0 => e,
            _ => {
                let chain = self.chain()?;
                let dir = self.inode_in(&chain, ino)?;
                let mut v = vec![
                    DirEntry {
                        ino,
                        kind: Kind::Dir,
                        name: b".".to_vec(),
                        offset: 1,
                    },
                    DirEntry {
                        ino: dir.parent.max(ROOT_INO),
                        kind: Kind::Dir,
                        name: b"..".to_vec(),
                        offset: 2,
                    },
                ];
                for (name, d) in self.list(&chain, ino, usize::MAX)? {
                    let offset = v.len() as u64 + 1;
                    v.push(DirEntry {
                        ino: d.ino,
                        kind: d.kind,
                        name,
                        offset,
                    });
                }
                let v = Arc::new(v);
                if let Some(Handle::Dir { entries, .. }) = self.handles.lock().map.get_mut(&fh) {
                    *entries = Some(v.clone());
                }
                v
            }
        };
        Ok(entries)
    }

    pub fn releasedir(&self, fh: Fh) {
        if self.handles.lock().map.remove(&fh).is_some() {
            self.forget_fh(fh);
        }
    }

    /// Is `dir` equal to `ancestor` or below it?
    fn is_within(&self, chain: &Chain, mut dir: Ino, ancestor: Ino) -> FsResult<bool> {
        for _ in 0..100_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = self.inode_in(chain, dir)?.parent;
        }
        Err(FsError::Corrupt("directory parent chain too deep".into()))
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(newname)?;
        if flags & RENAME_WHITEOUT != 0 || flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
            return Err(FsError::NotSupported);
        }
        if flags & RENAME_NOREPLACE != 0 && flags & RENAME_EXCHANGE != 0 {
            return Err(FsError::Invalid("NOREPLACE with EXCHANGE"));
        }
        let mut tx = self.begin()?;
        let src = tx.dirent(parent, name)?.ok_or(FsError::NotFound)?;
        let mut pdir = tx.inode(parent)?;
        let mut npdir = tx.inode(newparent)?;
        if npdir.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let dst = tx.dirent(newparent, newname)?;
        let same_dir = parent == newparent;
        if same_dir && name == newname {
            return if flags & RENAME_NOREPLACE != 0 {
                Err(FsError::Exists)
            } else {
                Ok(())
            };
        }
        let t = now();
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(FsError::NotFound)?;
            // A directory may not end up inside itself.
            if src.kind == Kind::Dir
                && !same_dir
                && self.is_within(&tx.chain, newparent, src.ino)?
            {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            if dst.kind == Kind::Dir && !same_dir && self.is_within(&tx.chain, parent, dst.ino)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            tx.put_dirent(parent, name, dst, Some(src.ino));
            tx.put_dirent(newparent, newname, src, Some(dst.ino));
            for (moved, to) in [(src, newparent), (dst, parent)] {
                let mut i = tx.inode(moved.ino)?;
                i.ctime = t;
                if moved.kind == Kind::Dir {
                    i.parent = to;
                }
                tx.put_inode(moved.ino, &i);
            }
            if !same_dir {
                let delta = (src.kind == Kind::Dir) as i64 - (dst.kind == Kind::Dir) as i64;
                pdir.nlink = (pdir.nlink as i64 - delta).max(2) as u32;
                npdir.nlink = (npdir.nlink as i64 + delta).max(2) as u32;
            }
        } else {
            if src.kind == Kind::Dir
                && !same_dir
                && self.is_within(&tx.chain, newparent, src.ino)?
            {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            if let Some(d) = dst {
                if flags & RENAME_NOREPLACE != 0 {
                    return Err(FsError::Exists);
                }
                if d.ino == src.ino {
                    // Two links to the same inode: POSIX says do nothing.
                    return Ok(());
                }
                match (src.kind == Kind::Dir, d.kind == Kind::Dir) {
                    (true, false) => return Err(FsError::NotDir),
                    (false, true) => return Err(FsError::IsDir),
                    (true, true) => {
                        if !self.dir_is_empty(&tx.chain, d.ino)? {
                            return Err(FsError::NotEmpty);
                        }
                        npdir.nlink = npdir.nlink.saturating_sub(1).max(2);
                    }
                    (false, false) => {}
                }
                let mut victim = tx.inode(d.ino)?;
                self.drop_link(&mut tx, d.ino, &mut victim)?;
            }
            tx.del_dirent(parent, name, src.ino);
            tx.put_dirent(newparent, newname, src, dst.map(|d| d.ino));
            let mut moved = tx.inode(src.ino)?;
            moved.ctime = t;
            if src.kind == Kind::Dir {
                moved.parent = newparent;
                if !same_dir {
                    pdir.nlink = pdir.nlink.saturating_sub(1).max(2);
                    npdir.nlink += 1;
                }
            }
            tx.put_inode(src.ino, &moved);
        }
        pdir.mtime = t;
        pdir.ctime = t;
        npdir.mtime = t;
        npdir.ctime = t;
        if same_dir {
            // Both handles are the same directory: keep one consistent record.
            tx.put_inode(parent, &npdir);
        } else {
            tx.put_inode(parent, &pdir);
            tx.put_inode(newparent, &npdir);
        }
        tx.commit()
    }
}
