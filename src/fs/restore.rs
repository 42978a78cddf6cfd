//! Restoring some paths of a container's live tree to their state in a snapshot: in place,
//! online, as one atomic batch, everything else left as it is.
//!
//! Inodes keep their numbers: a restored inode is the snapshot's version of the same inode,
//! so hard links between a restored path and the rest of the tree stay links, and file data
//! is shared with the snapshot: only the blocks some epoch wrote between the two trees (the
//! epochs in exactly one of the two chains, from the change index) get the snapshot's
//! version written again. A file truncated or deleted since the snapshot comes back under
//! its old data id; its "data gone" marker gets a tombstone in the head, which tells reclaim
//! that the data id lives again below that point (see `Store::kills`).
//!
//! One exception: an inode that the live tree also names from outside the restored paths
//! with a name the snapshot did not have (moved out of the path since, or linked from
//! elsewhere since) cannot be both: the restored one becomes a new inode (a directory: a new
//! directory; a file: a copy of its data under a new data id, the one case that copies bytes).
//!
//! Cost: the metadata of the restored subtrees in both trees, plus, per restored file, one
//! short scan per epoch between the trees and the blocks changed there.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::codec::{self, Dirent, Inode, Kind};
use crate::error::{FsError, FsResult};
use crate::ids::{DataId, Ino};
use crate::keys;
use crate::kv::{Dir, Space};
use crate::store::{self, resolve, Chain, SnapshotInfo};

use super::diff::only_one;
use super::{components, now, Fs, Tx, ROOT_INO};

/// (directory, name): one directory entry.
type Link = (Ino, Vec<u8>);

/// What a path restore changed, for the kernel's caches.
#[derive(Debug, Default)]
pub struct PathRestore {
    /// Head inodes whose identity ends: rewritten from the snapshot (also those the live
    /// tree had deleted), or unlinked for good. What the kernel knows of them (and
    /// descriptors open on them) must go stale: they get new kernel numbers.
    pub replaced: Vec<Ino>,
    /// Head inodes that stay what they were but whose attributes changed (link counts,
    /// directory times).
    pub touched: Vec<Ino>,
    /// Head directory entries that changed and that the kernel may cache, present or absent.
    pub names: Vec<Link>,
    /// Inodes written from the snapshot.
    pub restored: usize,
}

/// Where an entry written from the snapshot goes: a head directory that stays, or a
/// directory of the snapshot (restored too, under its mapped number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Parent {
    Head(Ino),
    Snap(Ino),
}

/// The live tree's side: the entries the restore removes and the inodes they name.
#[derive(Default)]
struct HeadSide {
    entries: Vec<(Ino, Vec<u8>, Dirent)>,
    inside: HashSet<Link>,
    nodes: BTreeMap<Ino, Inode>,
}

/// The snapshot's side: the entries the restore writes and the inodes they name.
#[derive(Default)]
struct SnapSide {
    entries: Vec<(Parent, Vec<u8>, Dirent)>,
    /// The same entries in the snapshot's own numbering (directory, name).
    inside: HashSet<Link>,
    nodes: BTreeMap<Ino, Inode>,
}

/// The paths to restore, as components: deduplicated, none inside another, never the root.
fn targets(paths: &[Vec<u8>]) -> FsResult<Vec<Vec<Vec<u8>>>> {
    if paths.is_empty() {
        return Err(FsError::Invalid("no paths to restore"));
    }
    let mut all = Vec::new();
    for p in paths {
        let comps: Vec<Vec<u8>> = components(p)?.into_iter().map(<[u8]>::to_vec).collect();
        if comps.is_empty() {
            return Err(FsError::Invalid(
                "/ is the whole tree: restore the snapshot without paths",
            ));
        }
        all.push(comps);
    }
    all.sort();
    all.dedup();
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    for c in all {
        // Sorted, so an enclosing path comes just before what it encloses.
        if out.last().is_some_and(|p| c.starts_with(p)) {
            continue;
        }
        out.push(c);
    }
    Ok(out)
}

impl Fs {
    /// Restores `paths` (absolute) of the head to their state in snapshot `snap`, as one
    /// durable batch that also records the snapshot's `last_used_at`. A path the snapshot
    /// does not have is deleted; missing parents are recreated from the snapshot. The
    /// caller has handed the kernel's cached writes to the head first.
    pub fn restore_paths(&self, snap: &SnapshotInfo, paths: &[Vec<u8>]) -> FsResult<PathRestore> {
        crate::metrics::timed("restore_paths", || self.restore_paths_inner(snap, paths))
    }

    fn restore_paths_inner(&self, snap: &SnapshotInfo, paths: &[Vec<u8>]) -> FsResult<PathRestore> {
        let targets = targets(paths)?;
        let mut tx = self.begin()?;
        if !self.store.links_indexed()? {
            return Err(FsError::Io(
                "this store's back links are not built yet; run `snapfs fsck --repair`".into(),
            ));
        }
        // Under the write lock: the snapshot still exists, and reclaim cannot move versions.
        let mut snap = self
            .store
            .find_snapshot(&self.container, &snap.name)?
            .filter(|s| s.record.epoch == snap.record.epoch)
            .ok_or(FsError::NotFound)?;
        let sc = self.store.snapshot_chain(&snap);
        let hc = tx.chain.clone();

        let mut head = HeadSide::default();
        let mut side = SnapSide::default();
        let mut names = Vec::new();
        for comps in &targets {
            self.gather(&hc, &sc, comps, &mut head, &mut side, &mut names)?;
        }

        // Which restored inodes keep their number.
        let mut map: HashMap<Ino, Ino> = HashMap::new();
        let mut outside: HashMap<Ino, Vec<Link>> = HashMap::new();
        for (&x, inode) in &side.nodes {
            let h_out: Vec<Link> = self
                .links_in(&hc, x)?
                .into_iter()
                .filter(|l| !head.inside.contains(l))
                .collect();
            let keep = h_out.is_empty() || {
                let s_out: HashSet<Link> = self
                    .links_in(&sc, x)?
                    .into_iter()
                    .filter(|l| !side.inside.contains(l))
                    .collect();
                inode.kind != Kind::Dir && h_out.iter().all(|l| s_out.contains(l))
            };
            if keep {
                map.insert(x, x);
                outside.insert(x, h_out);
            } else {
                let fresh = tx.alloc_ino();
                map.insert(x, fresh);
            }
        }
        let mut out = PathRestore::default();

        // 1. The live entries go (tombstones of the entries and their back links).
        for (p, name, d) in &head.entries {
            tx.del_dirent(*p, name, d.ino);
        }
        // 2. Inodes of the live side that are not rewritten lose those links.
        for (&y, inode) in &head.nodes {
            if map.get(&y) == Some(&y) {
                continue;
            }
            let links = head.entries.iter().filter(|(_, _, d)| d.ino == y).count();
            let mut inode = inode.clone();
            for _ in 0..links {
                self.drop_link(&mut tx, y, &mut inode)?;
                if inode.nlink == 0 {
                    break;
                }
            }
            if inode.nlink == 0 {
                out.replaced.push(y);
            } else {
                out.touched.push(y);
            }
        }
        // 3. Head directories that keep their identity but gain or lose entries.
        self.update_parents(&mut tx, &head, &side, &mut out)?;
        // 4. The snapshot's inodes, under their numbers.
        for (&x, inode) in &side.nodes {
            let n = map.get(&x).copied().unwrap_or(x);
            let rec = self.restored_inode(&mut tx, &hc, &sc, x, n, inode, &side, &map, &outside)?;
            if n == x {
                // Also when the live tree had deleted it: the kernel may still hold the old
                // inode under that number, with cached entries below it (names unlinked
                // since), so the restored one must never be confused with it.
                out.replaced.push(x);
            }
            tx.put_inode(n, &rec);
            out.restored += 1;
        }
        // 5. The snapshot's entries.
        for (parent, name, d) in &side.entries {
            let p = match parent {
                Parent::Head(p) => *p,
                Parent::Snap(s) => map.get(s).copied().unwrap_or(*s),
            };
            let ino = map.get(&d.ino).copied().unwrap_or(d.ino);
            tx.put_dirent(p, name, Dirent { ino, kind: d.kind }, None);
        }
        for (x, links) in outside {
            if map.get(&x) == Some(&x) && !links.is_empty() {
                names.extend(links);
            }
        }
        self.store.touch_snapshot(&mut tx.batch, &mut snap);
        tx.commit_durable()?;
        names.sort();
        names.dedup();
        out.names = names;
        out.replaced.sort_unstable();
        out.replaced.dedup();
        out.touched
            .retain(|t| out.replaced.binary_search(t).is_err());
        out.touched.sort_unstable();
        out.touched.dedup();
        Ok(out)
    }

    /// Collects one path: the live entry and subtree to remove, the snapshot's entry and
    /// subtree to write, and the parents to recreate (directories of the snapshot that the
    /// live tree no longer has on the path: only the entries on the path are written).
    fn gather(
        &self,
        hc: &Chain,
        sc: &Chain,
        comps: &[Vec<u8>],
        head: &mut HeadSide,
        side: &mut SnapSide,
        names: &mut Vec<Link>,
    ) -> FsResult<()> {
        let (last, parents) = comps.split_last().ok_or(FsError::Invalid("empty path"))?;
        // The live tree: the deepest existing directory on the path.
        let mut dir = ROOT_INO;
        let mut missing = None;
        for (i, name) in parents.iter().enumerate() {
            match self.dirent_in(hc, dir, name)? {
                None => {
                    missing = Some(i);
                    break;
                }
                Some(d) if d.kind != Kind::Dir => return Err(FsError::NotDir),
                Some(d) => dir = d.ino,
            }
        }
        if missing.is_none() {
            if let Some(d) = self.dirent_in(hc, dir, last)? {
                self.collect_head(hc, (dir, last.clone(), d), head)?;
            }
            names.push((dir, last.clone()));
        }
        // The snapshot: the directories on the path, then the entry itself.
        let mut s_dir = ROOT_INO;
        let mut s_parents = Vec::with_capacity(parents.len());
        for name in parents {
            match self.dirent_in(sc, s_dir, name)? {
                Some(d) if d.kind == Kind::Dir => {
                    s_dir = d.ino;
                    s_parents.push(d.ino);
                }
                _ => return Ok(()), // not in the snapshot: only the live side goes
            }
        }
        let Some(top) = self.dirent_in(sc, s_dir, last)? else {
            return Ok(());
        };
        let parent = match missing {
            None => Parent::Head(dir),
            Some(first) => {
                // Recreate parents[first..] from the snapshot, below live directory `dir`.
                names.push((dir, parents[first].clone()));
                for j in first..parents.len() {
                    let s_parent = if j == 0 { ROOT_INO } else { s_parents[j - 1] };
                    let p = if j == first {
                        Parent::Head(dir)
                    } else {
                        Parent::Snap(s_parent)
                    };
                    if !side.inside.insert((s_parent, parents[j].clone())) {
                        continue; // recreated for an earlier path already
                    }
                    let ino = s_parents[j];
                    side.entries.push((
                        p,
                        parents[j].clone(),
                        Dirent {
                            ino,
                            kind: Kind::Dir,
                        },
                    ));
                    side.nodes.insert(ino, self.inode_in(sc, ino)?);
                }
                Parent::Snap(s_dir)
            }
        };
        self.collect_snap(sc, parent, (s_dir, last.clone(), top), side)
    }

    /// The live entry `top` and everything below it.
    fn collect_head(
        &self,
        hc: &Chain,
        top: (Ino, Vec<u8>, Dirent),
        head: &mut HeadSide,
    ) -> FsResult<()> {
        let mut stack = vec![top];
        while let Some((p, name, d)) = stack.pop() {
            head.inside.insert((p, name.clone()));
            head.entries.push((p, name, d));
            if head.nodes.contains_key(&d.ino) {
                continue; // another link of a file seen already
            }
            let inode = self.inode_in(hc, d.ino)?;
            if inode.kind == Kind::Dir {
                for (n, c) in self.list(hc, d.ino, usize::MAX)? {
                    stack.push((d.ino, n, c));
                }
            }
            head.nodes.insert(d.ino, inode);
        }
        Ok(())
    }

    /// The snapshot's entry `top` (in snapshot directory `top.0`, written to `parent`) and
    /// everything below it.
    fn collect_snap(
        &self,
        sc: &Chain,
        parent: Parent,
        top: (Ino, Vec<u8>, Dirent),
        side: &mut SnapSide,
    ) -> FsResult<()> {
        let mut stack = vec![(parent, top)];
        while let Some((p, (s_parent, name, d))) = stack.pop() {
            side.inside.insert((s_parent, name.clone()));
            side.entries.push((p, name, d));
            if side.nodes.contains_key(&d.ino) {
                continue;
            }
            let inode = self.inode_in(sc, d.ino)?;
            if inode.kind == Kind::Dir {
                for (n, c) in self.list(sc, d.ino, usize::MAX)? {
                    stack.push((Parent::Snap(d.ino), (d.ino, n, c)));
                }
            }
            side.nodes.insert(d.ino, inode);
        }
        Ok(())
    }

    /// Live directories that stay but whose entries change: link counts follow the
    /// subdirectories removed and added, times are now.
    fn update_parents(
        &self,
        tx: &mut Tx<'_>,
        head: &HeadSide,
        side: &SnapSide,
        out: &mut PathRestore,
    ) -> FsResult<()> {
        let mut delta: BTreeMap<Ino, i64> = BTreeMap::new();
        for (p, _, d) in &head.entries {
            if !head.nodes.contains_key(p) {
                *delta.entry(*p).or_default() -= i64::from(d.kind == Kind::Dir);
            }
        }
        for (p, _, d) in &side.entries {
            if let Parent::Head(p) = p {
                *delta.entry(*p).or_default() += i64::from(d.kind == Kind::Dir);
            }
        }
        let t = now();
        for (p, dn) in delta {
            let mut dir = tx.inode(p)?;
            dir.nlink = (i64::from(dir.nlink) + dn).max(2) as u32;
            dir.mtime = t;
            dir.ctime = t;
            tx.put_inode(p, &dir);
            out.touched.push(p);
        }
        Ok(())
    }

    /// The record to write for snapshot inode `x` under number `n`, after writing its data
    /// and extended attributes.
    #[allow(clippy::too_many_arguments)]
    fn restored_inode(
        &self,
        tx: &mut Tx<'_>,
        hc: &Chain,
        sc: &Chain,
        x: Ino,
        n: Ino,
        inode: &Inode,
        side: &SnapSide,
        map: &HashMap<Ino, Ino>,
        outside: &HashMap<Ino, Vec<Link>>,
    ) -> FsResult<Inode> {
        let mut rec = inode.clone();
        let named_by = side.entries.iter().filter(|(_, _, d)| d.ino == x);
        if rec.kind == Kind::Dir {
            let subdirs = side
                .entries
                .iter()
                .filter(|(p, _, d)| *p == Parent::Snap(x) && d.kind == Kind::Dir)
                .count();
            rec.nlink = 2 + subdirs as u32;
            if let Some((p, _, _)) = side.entries.iter().find(|(_, _, d)| d.ino == x) {
                rec.parent = match p {
                    Parent::Head(h) => *h,
                    Parent::Snap(s) => map.get(s).copied().unwrap_or(*s),
                };
            }
        } else {
            let kept_outside = outside.get(&x).map_or(0, Vec::len);
            rec.nlink = (named_by.count() + kept_outside) as u32;
        }
        // Extended attributes: the snapshot's, and tombstones for what the head has beyond.
        let s_x = self.xattrs_in(sc, x)?;
        if n == x {
            for (name, _) in self.xattrs_in(hc, x)? {
                if !s_x.iter().any(|(s, _)| *s == name) {
                    tx.put_xattr(n, &name, codec::tombstone());
                }
            }
        }
        for (name, value) in &s_x {
            tx.put_xattr(n, name, codec::encode_live(value));
        }
        if rec.kind != Kind::File {
            return Ok(rec);
        }
        if n == x {
            // The live inode's own data id, if another, ends here.
            if let Ok(live) = self.inode_in(hc, x) {
                if live.kind == Kind::File && live.data_id != rec.data_id {
                    tx.drop_data(live.data_id)?;
                }
            }
            self.revive_data(tx, hc, sc, rec.data_id)?;
        } else {
            rec.data_id = tx.alloc_data_id();
            self.copy_data(tx, sc, inode.data_id, rec.data_id)?;
        }
        Ok(rec)
    }

    /// Makes the head see snapshot data id `d` as the snapshot does: the snapshot's version
    /// of every block some epoch between the two trees wrote, and a tombstone for a "gone"
    /// marker the head sees.
    fn revive_data(&self, tx: &mut Tx<'_>, hc: &Chain, sc: &Chain, d: DataId) -> FsResult<()> {
        let kv = self.store.kv();
        let mut bases = Vec::new();
        for e in only_one(hc, sc) {
            let start = keys::change(e, Space::Data, &keys::block_prefix(d));
            let end = crate::kv::prefix_end(&start);
            kv.scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
                if let Some((_, _, base)) = keys::split_change(k) {
                    bases.push(base.to_vec());
                }
                true
            })?;
        }
        bases.sort();
        bases.dedup();
        let live = |v: Option<Vec<u8>>| v.filter(|v| !codec::is_tombstone(v));
        let e = tx.epoch();
        for base in bases {
            let want = live(resolve(kv, Space::Data, &base, sc)?);
            if live(resolve(kv, Space::Data, &base, hc)?) != want {
                let v = want.unwrap_or_else(codec::tombstone);
                store::put_version(&mut tx.batch, Space::Data, &base, e, v);
            }
        }
        let gone = keys::data_gone(d);
        if live(resolve(kv, Space::Meta, &gone, hc)?).is_some() {
            store::put_version(&mut tx.batch, Space::Meta, &gone, e, codec::tombstone());
        }
        Ok(())
    }

    /// Copies the blocks of snapshot data id `from` to the head's new data id `to`.
    fn copy_data(&self, tx: &mut Tx<'_>, sc: &Chain, from: DataId, to: DataId) -> FsResult<()> {
        let e = tx.epoch();
        let mut blocks = Vec::new();
        self.visible_blocks(sc, from, 0, u64::MAX, &mut |idx, bytes| {
            blocks.push((idx, codec::encode_block(bytes)));
        })?;
        for (idx, v) in blocks {
            store::put_version(&mut tx.batch, Space::Data, &keys::block(to, idx), e, v);
        }
        Ok(())
    }
}
