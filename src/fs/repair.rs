//! Repairs `fsck --repair` makes to a container's head. Each fix is one atomic batch written
//! into the head epoch, so snapshots (frozen history) never change, and each is idempotent:
//! re-running a repair that was interrupted is safe.

use crate::codec::{Dirent, Kind};
use crate::error::FsResult;
use crate::ids::Ino;

use super::Fs;

/// One repair of a head tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Set the link count of an inode to what the tree holds.
    Nlink { ino: Ino, nlink: u32 },
    /// Record the directory that actually lists directory `ino` as its parent (`..`).
    Parent { ino: Ino, parent: Ino },
    /// Make a file's allocated-bytes count equal the bytes its blocks hold.
    Alloc { ino: Ino },
    /// Drop the bytes a file's blocks hold at or past its size (they were never readable).
    CutPastSize { ino: Ino },
    /// Remove a directory entry (to an inode that does not exist, or a second name of a
    /// directory).
    DropEntry { parent: Ino, name: Vec<u8> },
    /// Make an entry's recorded type match its inode.
    EntryKind {
        parent: Ino,
        name: Vec<u8>,
        ino: Ino,
        kind: Kind,
    },
}

impl Fs {
    /// Applies `fix` to the head in one batch.
    pub fn repair(&self, fix: &Fix) -> FsResult<()> {
        match fix {
            Fix::Nlink { ino, nlink } => {
                let mut tx = self.begin()?;
                let mut inode = tx.inode(*ino)?;
                inode.nlink = *nlink;
                tx.put_inode(*ino, &inode);
                tx.commit()
            }
            Fix::Parent { ino, parent } => {
                let mut tx = self.begin()?;
                let mut inode = tx.inode(*ino)?;
                inode.parent = *parent;
                tx.put_inode(*ino, &inode);
                tx.commit()
            }
            Fix::Alloc { ino } => {
                let (_, stored) = self.block_extent(*ino)?;
                let mut tx = self.begin()?;
                let mut inode = tx.inode(*ino)?;
                inode.alloc = stored;
                tx.put_inode(*ino, &inode);
                tx.commit()
            }
            Fix::CutPastSize { ino } => {
                let mut tx = self.begin()?;
                let mut inode = tx.inode(*ino)?;
                let size = inode.size;
                self.clear_range(&mut tx, &mut inode, size, u64::MAX)?;
                tx.put_inode(*ino, &inode);
                tx.commit()?;
                // `clear_range` adjusted `alloc` from a count that may itself have been wrong.
                self.repair(&Fix::Alloc { ino: *ino })
            }
            Fix::DropEntry { parent, name } => {
                let mut tx = self.begin()?;
                if let Some(d) = tx.dirent(*parent, name)? {
                    tx.del_dirent(*parent, name, d.ino);
                }
                tx.commit()
            }
            Fix::EntryKind {
                parent,
                name,
                ino,
                kind,
            } => {
                let mut tx = self.begin()?;
                let prev = tx.dirent(*parent, name)?.map(|d| d.ino);
                tx.put_dirent(
                    *parent,
                    name,
                    Dirent {
                        ino: *ino,
                        kind: *kind,
                    },
                    prev,
                );
                tx.commit()
            }
        }
    }
}

impl std::fmt::Display for Fix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fix::Nlink { ino, nlink } => write!(f, "set the link count of inode {ino} to {nlink}"),
            Fix::Parent { ino, parent } => {
                write!(f, "set the parent of directory {ino} to {parent}")
            }
            Fix::Alloc { ino } => write!(f, "recount the allocated bytes of file {ino}"),
            Fix::CutPastSize { ino } => write!(f, "drop the bytes past the size of file {ino}"),
            Fix::DropEntry { parent, name } => write!(
                f,
                "remove entry {:?} from directory {parent}",
                String::from_utf8_lossy(name)
            ),
            Fix::EntryKind {
                parent, name, kind, ..
            } => write!(
                f,
                "set the type of entry {:?} in directory {parent} to {kind:?}",
                String::from_utf8_lossy(name)
            ),
        }
    }
}
