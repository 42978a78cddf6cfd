//! What changed between two trees of a store (two snapshots, or a snapshot and a live
//! head), at a cost that follows what changed, never the size of the trees.
//!
//! Two views differ only in keys that have a version in an epoch one chain holds and the
//! other does not (their common ancestors resolve every other key identically). The change
//! index lists, per epoch, every key that epoch wrote: its inodes, back links, extended
//! attributes and blocks. Each inode found there is resolved in both trees and named by its
//! back links (a path is its links up to the root), so the work is the changed inodes
//! times the depth of their paths.
//!
//! What is listed: inodes added or deleted (every path of each), inodes whose own names
//! changed (`renamed`, when one name became another; otherwise the names that went and
//! came), and inodes whose content (size, data, symlink target) or metadata (type,
//! permissions, owner, mtime, device, extended attributes) differ. A renamed directory is
//! one entry: what lies below it moved with it and is only listed if it changed itself.
//! Link counts and ctime follow other changes and are not compared on their own; atime is
//! never compared.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::codec::{Inode, Kind, Ts};
use crate::error::{FsError, FsResult};
use crate::ids::{DataId, Ino};
use crate::keys;
use crate::kv::{Dir, Space};
pub(super) use crate::store::only_one;
use crate::store::Chain;

use super::{Fs, ROOT_INO};

/// Deepest path followed (a cycle in a damaged tree ends here).
const MAX_DEPTH: usize = 4096;

/// How a path differs between the two trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Deleted,
    Modified,
    Renamed,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Modified => "modified",
            ChangeKind::Renamed => "renamed",
        }
    }
}

/// What one side shows of a changed inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub kind: Kind,
    pub size: u64,
    pub mtime: Ts,
}

/// Metadata an inode carries itself (extended attributes apart) differ.
pub(super) fn side_meta_differs(a: &Inode, b: &Inode) -> bool {
    a.kind != b.kind
        || a.perm != b.perm
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime != b.mtime
        || a.rdev != b.rdev
}

impl Side {
    pub fn of(i: &Inode) -> Side {
        Side {
            kind: i.kind,
            size: i.size,
            mtime: i.mtime,
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The path in the newer tree (in the older one for `Deleted`), from the root, with a
    /// leading `/`; raw bytes (names need not be UTF-8).
    pub path: Vec<u8>,
    /// For `Renamed`: the path in the older tree.
    pub old_path: Option<Vec<u8>>,
    pub change: ChangeKind,
    pub ino: Ino,
    /// Size, data or symlink target differ (for `Modified` and `Renamed`).
    pub content: bool,
    /// Type, permissions, owner, mtime, device or extended attributes differ.
    pub metadata: bool,
    pub before: Option<Side>,
    pub after: Option<Side>,
}

impl Change {
    /// The file type: the newer tree's, or the older one's for a deleted path.
    pub fn kind(&self) -> Kind {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .map_or(Kind::File, |s| s.kind)
    }
}

/// Inodes and data ids some epoch of a set wrote.
#[derive(Default)]
struct Touched {
    inodes: BTreeSet<Ino>,
    xattrs: HashSet<Ino>,
    data: HashSet<DataId>,
}

/// Memoized paths of directories, per tree.
struct Namer<'a> {
    fs: &'a Fs,
    chain: &'a Chain,
    dirs: HashMap<Ino, Option<Vec<u8>>>,
}

impl<'a> Namer<'a> {
    fn new(fs: &'a Fs, chain: &'a Chain) -> Self {
        Namer {
            fs,
            chain,
            dirs: HashMap::from([(ROOT_INO, Some(Vec::new()))]),
        }
    }

    /// The path of directory `dir` (the root is empty), None if it is not reachable.
    fn dir_path(&mut self, dir: Ino, depth: usize) -> FsResult<Option<Vec<u8>>> {
        if let Some(p) = self.dirs.get(&dir) {
            return Ok(p.clone());
        }
        if depth > MAX_DEPTH {
            return Err(FsError::Corrupt(format!("directory {dir}: path too deep")));
        }
        let path = match self.fs.links_in(self.chain, dir)?.first() {
            Some((parent, name)) => self.dir_path(*parent, depth + 1)?.map(|p| join(&p, name)),
            None => None,
        };
        self.dirs.insert(dir, path.clone());
        Ok(path)
    }

    fn path_of(&mut self, link: &(Ino, Vec<u8>)) -> FsResult<Option<Vec<u8>>> {
        Ok(self.dir_path(link.0, 0)?.map(|p| join(&p, &link.1)))
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl Fs {
    /// Every path that differs between the trees `from` (older) and `to` (newer) of this
    /// store, sorted by path. Reads what the epochs between them wrote, nothing else.
    pub fn diff(&self, from: &Chain, to: &Chain) -> FsResult<Vec<Change>> {
        let touched = self.touched_between(from, to)?;
        let mut old_names = Namer::new(self, from);
        let mut new_names = Namer::new(self, to);
        let mut out = Vec::new();
        for &ino in &touched.inodes {
            let before = self.inode_opt(from, ino)?;
            let after = self.inode_opt(to, ino)?;
            let (content, metadata) = match (&before, &after) {
                (Some(a), Some(b)) => {
                    let xattrs = touched.xattrs.contains(&ino)
                        && self.xattrs_in(from, ino)? != self.xattrs_in(to, ino)?;
                    (
                        a.size != b.size
                            || a.target != b.target
                            || a.data_id != b.data_id
                            || (b.kind == Kind::File && touched.data.contains(&b.data_id)),
                        xattrs || side_meta_differs(a, b),
                    )
                }
                _ => (false, false),
            };
            let change = |path: Vec<u8>, old_path: Option<Vec<u8>>, kind: ChangeKind| Change {
                path,
                old_path,
                change: kind,
                ino,
                content,
                metadata,
                before: before.as_ref().map(Side::of),
                after: after.as_ref().map(Side::of),
            };
            if ino == ROOT_INO {
                if content || metadata {
                    out.push(change(b"/".to_vec(), None, ChangeKind::Modified));
                }
                continue;
            }
            let old_links: BTreeSet<_> = match before {
                Some(_) => self.links_in(from, ino)?.into_iter().collect(),
                None => BTreeSet::new(),
            };
            let new_links: BTreeSet<_> = match after {
                Some(_) => self.links_in(to, ino)?.into_iter().collect(),
                None => BTreeSet::new(),
            };
            let gone: Vec<_> = old_links.difference(&new_links).collect();
            let came: Vec<_> = new_links.difference(&old_links).collect();
            let stayed: Vec<_> = new_links.intersection(&old_links).collect();
            if before.is_some() && after.is_some() && gone.len() == 1 && came.len() == 1 {
                if let (Some(old), Some(new)) =
                    (old_names.path_of(gone[0])?, new_names.path_of(came[0])?)
                {
                    out.push(change(new, Some(old), ChangeKind::Renamed));
                }
            } else {
                for l in gone {
                    if let Some(p) = old_names.path_of(l)? {
                        out.push(change(p, None, ChangeKind::Deleted));
                    }
                }
                for l in came {
                    if let Some(p) = new_names.path_of(l)? {
                        out.push(change(p, None, ChangeKind::Added));
                    }
                }
            }
            if content || metadata {
                for l in stayed {
                    if let Some(p) = new_names.path_of(l)? {
                        out.push(change(p, None, ChangeKind::Modified));
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            a.path
                .cmp(&b.path)
                .then(a.change.as_str().cmp(b.change.as_str()))
        });
        Ok(out)
    }

    fn inode_opt(&self, chain: &Chain, ino: Ino) -> FsResult<Option<Inode>> {
        match self.inode_in(chain, ino) {
            Ok(i) => Ok(Some(i)),
            Err(FsError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What the epochs in exactly one of the two chains wrote.
    fn touched_between(&self, a: &Chain, b: &Chain) -> FsResult<Touched> {
        let kv = self.store.kv();
        let mut t = Touched::default();
        for e in only_one(a, b) {
            // Inodes, entries, extended attributes, gone markers and back links: one range.
            let prefix = keys::change_prefix(e, Space::Meta);
            let start = [prefix.as_slice(), &[keys::TAG_INODE]].concat();
            let end = [prefix.as_slice(), &[keys::TAG_LINK + 1]].concat();
            kv.scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
                if let Some((_, _, base)) = keys::split_change(k) {
                    if let Some(ino) = keys::split_inode(base).or_else(|| keys::link_ino(base)) {
                        t.inodes.insert(ino);
                    } else if let Some(ino) = keys::split_xattr(base) {
                        t.inodes.insert(ino);
                        t.xattrs.insert(ino);
                    }
                }
                true
            })?;
            // Blocks: one seek per data id, not one step per block.
            let prefix = keys::change_prefix(e, Space::Data);
            let mut from = [prefix.as_slice(), &[keys::TAG_BLOCK]].concat();
            let end = [prefix.as_slice(), &[keys::TAG_BLOCK + 1]].concat();
            loop {
                let mut next = None;
                kv.scan(Space::Meta, &from, &end, Dir::Forward, &mut |k, _| {
                    next = keys::split_change(k)
                        .and_then(|(_, _, base)| keys::split_block(base))
                        .map(|(d, _)| d);
                    false
                })?;
                let Some(id) = next else { break };
                t.data.insert(id);
                let past = crate::kv::prefix_end(&keys::block_prefix(id));
                from = [prefix.as_slice(), past.as_slice()].concat();
            }
        }
        Ok(t)
    }
}

/// What the kernel must forget when a mounted head switches from one tree to another (a
/// whole restore): see [`Fs::tree_switch`].
#[derive(Debug, Default)]
pub struct TreeSwitch {
    /// Changed inodes that are not directories in either tree.
    pub files: Vec<Ino>,
    /// Changed directories (in either tree).
    pub dirs: Vec<Ino>,
    /// Entries (directory, name) that differ, and every name of a changed file in the old
    /// tree.
    pub entries: Vec<(Ino, Vec<u8>)>,
}

impl Fs {
    /// The inodes and entries that differ between trees `old` and `new`, from the change
    /// index of the epochs in exactly one chain: costs what changed, never the trees' size.
    pub fn tree_switch(&self, old: &Chain, new: &Chain) -> FsResult<TreeSwitch> {
        let kv = self.store.kv();
        let mut inodes = BTreeSet::new();
        let mut entries = BTreeSet::new();
        for e in only_one(old, new) {
            let prefix = keys::change_prefix(e, Space::Meta);
            let start = [prefix.as_slice(), &[keys::TAG_INODE]].concat();
            let end = [prefix.as_slice(), &[keys::TAG_LINK + 1]].concat();
            kv.scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
                if let Some((_, _, base)) = keys::split_change(k) {
                    if let Some((dir, name)) = keys::split_dirent_name(base) {
                        entries.insert((dir, name.to_vec()));
                    } else if let Some(ino) = keys::split_inode(base)
                        .or_else(|| keys::link_ino(base))
                        .or_else(|| keys::split_xattr(base))
                    {
                        inodes.insert(ino);
                    }
                }
                true
            })?;
        }
        let mut t = TreeSwitch::default();
        for ino in inodes {
            let is_dir = |c: &Chain| -> FsResult<bool> {
                Ok(self.inode_opt(c, ino)?.is_some_and(|i| i.kind == Kind::Dir))
            };
            if is_dir(old)? || is_dir(new)? {
                t.dirs.push(ino);
            } else {
                for link in self.links_in(old, ino)? {
                    entries.insert(link);
                }
                t.files.push(ino);
            }
        }
        t.entries = entries.into_iter().collect();
        Ok(t)
    }
}
