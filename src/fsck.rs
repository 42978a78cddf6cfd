//! `snapfs fsck`: checks every invariant of a store that is not in use, and reports.
//!
//! Checked: every view (each live container's head and every snapshot) is a tree — each
//! directory entry points to a live inode of the entry's type, each directory is reached once
//! (one parent, no cycle) and records that parent, link counts equal the entries (directories:
//! 2 + subdirectories), no file has block bytes past its size and its allocated bytes match its
//! blocks; the epoch tree is a tree (parents exist, no cycle) whose heads and frozen epochs are
//! referenced by containers, snapshots or children; every version has its change-index entry
//! and every change-index entry its version; snapshot records point at frozen epochs and
//! aliases are unique per container; every visible block's checksum verifies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::codec::Kind;
use crate::error::FsResult;
use crate::fs::{Fs, ROOT_INO};
use crate::keys;
use crate::kv::{Dir, Space};
use crate::store::{EpochKind, Store};

/// Problems found, one readable line each.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub views: usize,
    pub inodes: usize,
    pub versions: usize,
}

impl Report {
    fn bad(&mut self, msg: String) {
        self.problems.push(msg);
    }
}

/// Runs every check on `store`.
pub fn check(store: &Arc<Store>) -> FsResult<Report> {
    let mut r = Report::default();
    check_epochs(store, &mut r)?;
    check_change_index(store, &mut r)?;
    for c in store.containers()? {
        let label = format!("container {} ({})", c.name, c.id);
        if c.deleted_at.is_none() {
            match Fs::new(store.clone(), c.id.as_bytes()) {
                Ok(fs) => check_view(&fs, &label, &mut r)?,
                Err(e) => r.bad(format!("{label}: cannot open head: {e}")),
            }
        }
        let mut aliases = HashSet::new();
        for s in store.snapshots(c.id.as_bytes())? {
            let label = format!("snapshot {} of {}", s.name, c.name);
            if !matches!(
                store.epoch(s.record.epoch).map(|e| e.kind),
                Some(EpochKind::Frozen)
            ) {
                r.bad(format!("{label}: epoch {} is not frozen", s.record.epoch));
                continue;
            }
            if let Some(a) = &s.record.alias {
                if !aliases.insert(a.clone()) {
                    r.bad(format!("{label}: alias {a:?} used twice"));
                }
            }
            let fs = Fs::frozen(store.clone(), c.id.as_bytes(), store.snapshot_chain(&s));
            check_view(&fs, &label, &mut r)?;
        }
    }
    Ok(r)
}

fn check_epochs(store: &Store, r: &mut Report) -> FsResult<()> {
    let epochs = store.epochs_snapshot();
    let mut referenced: HashSet<u64> = HashSet::new();
    for c in store.containers()? {
        if c.deleted_at.is_none() {
            referenced.insert(c.head);
            match epochs.get(&c.head).map(|e| &e.kind) {
                Some(EpochKind::Head { container }) if container == c.id.as_bytes() => {}
                other => r.bad(format!(
                    "container {}: head epoch {} is {other:?}",
                    c.name, c.head
                )),
            }
        }
        for s in store.snapshots(c.id.as_bytes())? {
            referenced.insert(s.record.epoch);
        }
    }
    for (e, rec) in &epochs {
        if rec.parent != 0 {
            referenced.insert(rec.parent);
            if !epochs.contains_key(&rec.parent) {
                r.bad(format!("epoch {e}: parent {} does not exist", rec.parent));
            }
            if rec.parent >= *e {
                r.bad(format!("epoch {e}: parent {} is not older", rec.parent));
            }
        }
    }
    for (e, rec) in &epochs {
        match rec.kind {
            EpochKind::Retired => {} // waiting for reclaim
            _ if !referenced.contains(e) => r.bad(format!(
                "epoch {e} ({:?}) is referenced by nothing",
                rec.kind
            )),
            _ => {}
        }
    }
    Ok(())
}

/// Every versioned key has its change-index entry, and the other way round.
fn check_change_index(store: &Store, r: &mut Report) -> FsResult<()> {
    let kv = store.kv();
    let mut index: HashSet<(u64, Space, Vec<u8>)> = HashSet::new();
    kv.scan(
        Space::Meta,
        &[keys::TAG_CHANGE],
        &[keys::TAG_CHANGE + 1],
        Dir::Forward,
        &mut |k, _| {
            if let Some((e, space, base)) = keys::split_change(k) {
                index.insert((e, space, base.to_vec()));
            }
            true
        },
    )?;
    let versioned = [
        (Space::Meta, keys::TAG_INODE),
        (Space::Meta, keys::TAG_DIRENT),
        (Space::Meta, keys::TAG_XATTR),
        (Space::Meta, keys::TAG_DATA_GONE),
        (Space::Data, keys::TAG_BLOCK),
    ];
    let mut missing = 0u64;
    let mut first_missing = None;
    for (space, tag) in versioned {
        kv.scan(space, &[tag], &[tag + 1], Dir::Forward, &mut |k, _| {
            r.versions += 1;
            if let Some((base, e)) = keys::split_version(k) {
                if !index.remove(&(e, space, base.to_vec())) {
                    missing += 1;
                    first_missing.get_or_insert_with(|| format!("{k:02x?}"));
                }
            }
            true
        })?;
    }
    if missing > 0 {
        r.bad(format!(
            "{missing} versions have no change-index entry (first: {})",
            first_missing.unwrap_or_default()
        ));
    }
    if !index.is_empty() {
        let (e, space, base) = index
            .iter()
            .next()
            .cloned()
            .unwrap_or((0, Space::Meta, vec![]));
        r.bad(format!(
            "{} change-index entries have no version (first: epoch {e} {space:?} {base:02x?})",
            index.len()
        ));
    }
    Ok(())
}

/// Walks one view from its root.
fn check_view(fs: &Fs, label: &str, r: &mut Report) -> FsResult<()> {
    r.views += 1;
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut seen_dirs: HashSet<u64> = HashSet::from([ROOT_INO]);
    let mut stack = vec![ROOT_INO];
    let mut nlink_of: HashMap<u64, u32> = HashMap::new();
    while let Some(dir) = stack.pop() {
        let dattr = match fs.getattr(dir) {
            Ok(a) => a,
            Err(e) => {
                r.bad(format!("{label}: directory {dir}: {e}"));
                continue;
            }
        };
        let fh = fs.opendir(dir)?;
        let entries = fs.readdir(dir, fh, 0)?;
        fs.releasedir(fh);
        let mut subdirs = 0u32;
        for e in entries.iter().skip(2) {
            let name = String::from_utf8_lossy(&e.name);
            let attr = match fs.getattr(e.ino) {
                Ok(a) => a,
                Err(err) => {
                    r.bad(format!(
                        "{label}: {name:?} in dir {dir} -> inode {}: {err}",
                        e.ino
                    ));
                    continue;
                }
            };
            r.inodes += 1;
            if attr.kind != e.kind {
                r.bad(format!(
                    "{label}: {name:?} in dir {dir}: entry says {:?}, inode {} is {:?}",
                    e.kind, e.ino, attr.kind
                ));
            }
            if attr.kind == Kind::Dir {
                subdirs += 1;
                if !seen_dirs.insert(e.ino) {
                    r.bad(format!(
                        "{label}: directory {} reached twice (or a cycle)",
                        e.ino
                    ));
                    continue;
                }
                if attr.parent != dir {
                    r.bad(format!(
                        "{label}: directory {} records parent {}, listed in {dir}",
                        e.ino, attr.parent
                    ));
                }
                nlink_of.insert(e.ino, attr.nlink);
                stack.push(e.ino);
            } else {
                *links.entry(e.ino).or_insert(0) += 1;
                nlink_of.insert(e.ino, attr.nlink);
                if attr.kind == Kind::File {
                    let (end, stored) = match fs.block_extent(e.ino) {
                        Ok(x) => x,
                        Err(err) => {
                            r.bad(format!("{label}: file {} ({name:?}): {err}", e.ino));
                            continue;
                        }
                    };
                    if end > attr.size {
                        r.bad(format!(
                            "{label}: file {} has block bytes up to {end}, past its size {}",
                            e.ino, attr.size
                        ));
                    }
                    if stored != attr.alloc {
                        r.bad(format!(
                            "{label}: file {} records {} allocated bytes, blocks hold {stored}",
                            e.ino, attr.alloc
                        ));
                    }
                }
            }
        }
        if dattr.nlink != 2 + subdirs {
            r.bad(format!(
                "{label}: directory {dir} has nlink {} but {subdirs} subdirectories",
                dattr.nlink
            ));
        }
    }
    for (ino, n) in links {
        if nlink_of.get(&ino) != Some(&n) {
            r.bad(format!(
                "{label}: inode {ino} has nlink {:?} but {n} entries",
                nlink_of.get(&ino)
            ));
        }
    }
    Ok(())
}
