//! One path across trees: what a path names in a tree (`path_in`), and how it differs
//! between two trees (`compare_path`), for the history of a path over a container's
//! snapshots. Each tree costs the depth of the path (one entry and one inode per
//! component); file data is never read (block changes come from the change index).

use crate::codec::{Inode, Kind};
use crate::error::{FsError, FsResult};
use crate::ids::{DataId, Ino};
use crate::keys;
use crate::kv::{Dir, Space};
use crate::store::Chain;

use super::diff::{only_one, ChangeKind, Side};
use super::{Fs, ROOT_INO};

/// Most path components followed.
const MAX_COMPONENTS: usize = 4096;

/// How a path differs from one tree (older) to another (newer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    /// `Added`: absent before; `Deleted`: absent now; `Modified`: content or metadata
    /// differ, or the path names another file than before.
    pub change: ChangeKind,
    pub content: bool,
    pub metadata: bool,
    pub before: Option<Side>,
    pub after: Option<Side>,
}

/// Splits an absolute path into its components (empty ones and `.` skipped). `..` is
/// refused: a path names what its components name, nothing resolved through parents.
pub fn components(path: &[u8]) -> FsResult<Vec<&[u8]>> {
    if path.first() != Some(&b'/') {
        return Err(FsError::Invalid("the path must start with /"));
    }
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.iter().any(|c| *c == b"..") {
        return Err(FsError::Invalid("the path may not contain .."));
    }
    if parts.len() > MAX_COMPONENTS || path.contains(&0) {
        return Err(FsError::Invalid("bad path"));
    }
    for c in &parts {
        if c.len() > super::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
    }
    Ok(parts)
}

impl Fs {
    /// What `path` (absolute) names in the tree `chain`: None if some component is missing
    /// or not a directory.
    pub fn path_in(&self, chain: &Chain, path: &[u8]) -> FsResult<Option<(Ino, Inode)>> {
        let mut ino = ROOT_INO;
        let mut inode = self.inode_in(chain, ROOT_INO)?;
        for name in components(path)? {
            if inode.kind != Kind::Dir {
                return Ok(None);
            }
            let Some(d) = self.dirent_in(chain, ino, name)? else {
                return Ok(None);
            };
            ino = d.ino;
            inode = match self.inode_in(chain, ino) {
                Ok(i) => i,
                Err(FsError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
        }
        Ok(Some((ino, inode)))
    }

    /// How `path` differs from tree `older` (None: no tree, so the path is `Added` wherever
    /// it exists) to tree `newer`; None when it does not.
    pub fn compare_path(
        &self,
        older: Option<&Chain>,
        newer: &Chain,
        path: &[u8],
    ) -> FsResult<Option<PathChange>> {
        let before = match older {
            Some(older) => self.path_in(older, path)?,
            None => None,
        };
        let after = self.path_in(newer, path)?;
        let side = |x: &Option<(Ino, Inode)>| x.as_ref().map(|(_, i)| Side::of(i));
        let (change, content, metadata) = match (&before, &after) {
            (None, None) => return Ok(None),
            (None, Some(_)) => (ChangeKind::Added, false, false),
            (Some(_), None) => (ChangeKind::Deleted, false, false),
            (Some((ia, a)), Some((ib, b))) => {
                // Both exist, so there is an older tree.
                let Some(older) = older else {
                    return Ok(None);
                };
                let (content, metadata) = if ia == ib {
                    self.compare_inode(older, a, newer, b, *ib)?
                } else {
                    // Another file now: its data is another's even where the bytes agree.
                    (true, self.metadata_differs(older, a, *ia, newer, b, *ib)?)
                };
                if !content && !metadata {
                    return Ok(None);
                }
                (ChangeKind::Modified, content, metadata)
            }
        };
        Ok(Some(PathChange {
            change,
            content,
            metadata,
            before: side(&before),
            after: side(&after),
        }))
    }

    /// (content differs, metadata differs) of inode `ino` between two trees.
    fn compare_inode(
        &self,
        ca: &Chain,
        a: &Inode,
        cb: &Chain,
        b: &Inode,
        ino: Ino,
    ) -> FsResult<(bool, bool)> {
        let content = a.size != b.size
            || a.target != b.target
            || a.data_id != b.data_id
            || (b.kind == Kind::File && self.data_written_between(ca, cb, b.data_id)?);
        Ok((content, self.metadata_differs(ca, a, ino, cb, b, ino)?))
    }

    fn metadata_differs(
        &self,
        ca: &Chain,
        a: &Inode,
        ia: Ino,
        cb: &Chain,
        b: &Inode,
        ib: Ino,
    ) -> FsResult<bool> {
        Ok(super::diff::side_meta_differs(a, b)
            || self.xattrs_in(ca, ia)? != self.xattrs_in(cb, ib)?)
    }

    /// Did an epoch in exactly one of the two chains write a block of `data_id`?
    fn data_written_between(&self, a: &Chain, b: &Chain, data_id: DataId) -> FsResult<bool> {
        for e in only_one(a, b) {
            let start = keys::change(e, Space::Data, &keys::block_prefix(data_id));
            let end = crate::kv::prefix_end(&start);
            let mut found = false;
            self.store
                .kv()
                .scan(Space::Meta, &start, &end, Dir::Forward, &mut |_, _| {
                    found = true;
                    false
                })?;
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
