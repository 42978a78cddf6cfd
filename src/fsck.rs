//! `snapfs fsck`: checks every invariant of a store that is not in use, and reports.
//!
//! Checked: every view (each live container's head and every snapshot) is a tree — each
//! directory entry points to a live inode of the entry's type, each directory is reached once
//! (one parent, no cycle) and records that parent, link counts equal the entries (directories:
//! 2 + subdirectories), no file has block bytes past its size and its allocated bytes match its
//! blocks; the epoch tree is a tree (parents exist, no cycle) whose heads and frozen epochs are
//! referenced by containers, snapshots or children; every version has its change-index entry
//! and every change-index entry its version; snapshot records point at frozen epochs and
//! aliases are unique per container; every visible block's checksum verifies; each view's
//! back links (inode -> directory, name) name exactly its entries.
//!
//! `--repair` ([`repair`]) fixes what can be fixed without losing or inventing data, then
//! checks again:
//! - the change index: entries are added for versions that lack one and dropped where their
//!   version is gone (the index is derived data);
//! - back links: rebuilt for every epoch from the entries' versions (derived data);
//! - epochs nothing references are retired (no view can read them; reclaim frees them);
//! - in each live container's head, as new versions in the head epoch: link counts set to the
//!   entries that exist, a directory's `..` set to the directory listing it, a file's allocated
//!   count recounted, block bytes past a file's size dropped (never readable), entries to
//!   inodes that do not exist removed, an entry's type set to its inode's, and the second name
//!   of a directory reached twice (or through a cycle) removed — it stays reachable by the
//!   first.
//!
//! Not repaired, only reported: snapshots (immutable history — copy the snapshot into a new
//! container and repair that), blocks whose checksum fails (the bytes are lost; the file
//! answers EIO until it is rewritten or removed), and an epoch tree with a missing parent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::codec::Kind;
use crate::error::{FsError, FsResult};
use crate::fs::{Fix, Fs, ROOT_INO};
use crate::ids::{Epoch, Ino};
use crate::keys;
use crate::kv::{Batch, Dir, Space};
use crate::store::{EpochKind, Store};

/// Problems found, one readable line each.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub views: usize,
    pub inodes: usize,
    pub versions: usize,
    /// How many of the problems are back links that disagree with the entries.
    pub back_link_problems: usize,
    /// What `repair` changed, one line each.
    pub repaired: Vec<String>,
}

impl Report {
    fn bad(&mut self, msg: String) {
        self.problems.push(msg);
    }
}

/// (stored, counted) when the usage counter of the tree at `epoch` disagrees with its
/// inodes; None when it agrees or was never stored (a store from before the accounting).
fn usage_mismatch(store: &Store, epoch: Epoch) -> FsResult<Option<(u64, u64)>> {
    let Some(stored) = store.stored_usage(epoch)? else {
        return Ok(None);
    };
    let counted = store.count_usage(epoch)?;
    Ok((stored != counted).then_some((stored, counted)))
}

/// Told how far a check is (the CLI draws a progress bar on a terminal).
pub trait Progress {
    /// The check will walk `trees` trees (live trees and snapshots).
    fn start(&self, _trees: u64) {}
    /// One more tree walked; `entries` checked so far in all.
    fn tree_done(&self, _entries: u64) {}
}

/// No progress shown.
pub struct Quiet;
impl Progress for Quiet {}

/// Runs every check on `store`.
pub fn check(store: &Arc<Store>) -> FsResult<Report> {
    check_with(store, &Quiet)
}

/// [`check`], telling `progress` as it goes.
pub fn check_with(store: &Arc<Store>, progress: &dyn Progress) -> FsResult<Report> {
    let mut r = Report::default();
    let containers = store.containers()?;
    let mut trees = 0u64;
    for c in &containers {
        trees += u64::from(c.deleted_at.is_none()) + store.snapshot_summary(&c.id)?.0;
    }
    progress.start(trees);
    check_epochs(store, &mut r)?;
    check_change_index(store, &mut r)?;
    for c in containers {
        let label = format!("container {} ({})", c.name, c.id);
        if c.deleted_at.is_none() {
            // Checking writes nothing (not even the orphan purge an open does).
            match Fs::head_unchanged(store.clone(), &c.id) {
                Ok(fs) => check_view(&fs, &label, &mut r, None)?,
                Err(e) => r.bad(format!("{label}: cannot open head: {e}")),
            }
            if let Some((stored, counted)) = usage_mismatch(store, c.head)? {
                r.bad(format!(
                    "{label}: usage counter says {stored} bytes of file data, its files hold {counted}"
                ));
            }
            progress.tree_done(r.inodes as u64);
        }
        let mut aliases = HashSet::new();
        for s in store.snapshots(&c.id)? {
            let label = match &s.record.alias {
                Some(a) => format!("snapshot {} (alias {a}) of {}", s.name, c.name),
                None => format!("snapshot {} of {}", s.name, c.name),
            };
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
            let fs = Fs::frozen(store.clone(), &c.id, store.snapshot_chain(&s));
            check_view(&fs, &label, &mut r, None)?;
            if let Some((stored, counted)) = usage_mismatch(store, s.record.epoch)? {
                r.bad(format!(
                    "{label}: usage counter says {stored} bytes of file data, its files hold {counted}"
                ));
            }
            progress.tree_done(r.inodes as u64);
        }
        check_alias_index(store, &c, &mut r)?;
    }
    check_expiry_index(store, &mut r)?;
    check_runtime_snapshots(store, &mut r)?;
    check_segments(store, &mut r)?;
    Ok(r)
}

/// File data in segments: every reference against its segment (record, file, range, CRC),
/// live counters, orphan files.
fn check_segments(store: &Store, r: &mut Report) -> FsResult<()> {
    let Some(seg) = store.kv().segments() else {
        return Ok(());
    };
    let report = seg.check()?;
    for (key, what) in &report.bad_refs {
        r.bad(format!("file data {}: {what}", keys::describe_data(key)));
    }
    for (s, recorded, counted) in &report.miscounted {
        r.bad(format!(
            "segment {s:016x}: live counter says {recorded} bytes, its references hold {counted}"
        ));
    }
    for (s, len) in &report.orphans {
        r.bad(format!(
            "segment {s:016x}: orphan ({len} bytes, no record names it; `--repair` deletes it)"
        ));
    }
    Ok(())
}

/// containerd's snapshot records name what exists (a live container for an active snapshot
/// or view, a snapshot for a committed one, a committed parent), and the child index is
/// exactly the records' parents. Returns whether the child index is wrong (`--repair`
/// rebuilds it; records are the runtime's state and are only reported).
fn check_runtime_snapshots(store: &Store, r: &mut Report) -> FsResult<bool> {
    use crate::store::RuntimeKind;
    let records = store.runtime_snapshots()?;
    let kinds: std::collections::HashMap<&str, RuntimeKind> = records
        .iter()
        .map(|(k, rec)| (k.as_str(), rec.kind))
        .collect();
    let mut expected = HashSet::new();
    for (key, rec) in &records {
        let label = format!("containerd snapshot {key:?}");
        match rec.kind {
            RuntimeKind::Active | RuntimeKind::View => match store.container(&rec.container)? {
                Some(c) if c.deleted_at.is_none() => {}
                _ => r.bad(format!("{label}: its container {} is gone", rec.container)),
            },
            RuntimeKind::Committed => match &rec.snapshot {
                Some(name) if store.find_snapshot(&rec.container, name)?.is_some() => {}
                Some(name) => r.bad(format!(
                    "{label}: its snapshot {name} of {} is gone",
                    rec.container
                )),
                None => r.bad(format!("{label}: committed, but names no snapshot")),
            },
        }
        if let Some(p) = &rec.parent {
            match kinds.get(p.as_str()) {
                Some(RuntimeKind::Committed) => {}
                Some(_) => r.bad(format!("{label}: parent {p:?} is not committed")),
                None => r.bad(format!("{label}: parent {p:?} does not exist")),
            }
            expected.insert((p.clone(), key.clone()));
        }
    }
    let index: HashSet<(String, String)> = store.runtime_child_index()?.into_iter().collect();
    let wrong = index != expected;
    if wrong {
        let extra = index.difference(&expected).count();
        let missing = expected.difference(&index).count();
        r.bad(format!(
            "containerd child index: {extra} entries no record has, {missing} missing"
        ));
    }
    Ok(wrong)
}

/// The view's back links name exactly its directory entries. (Not a head fix: `--repair`
/// rebuilds the links of every epoch from the entries' history.)
fn check_back_links(
    fs: &Fs,
    label: &str,
    mut names: HashSet<(Ino, Ino, Vec<u8>)>,
    r: &mut Report,
) -> FsResult<()> {
    let mut stale = Vec::new();
    fs.all_links(&mut |ino, dir, name| {
        if !names.remove(&(ino, dir, name.to_vec())) {
            stale.push((ino, dir, name.to_vec()));
        }
    })?;
    r.back_link_problems += stale.len() + names.len();
    for (ino, dir, name) in stale {
        r.bad(format!(
            "{label}: back link of inode {ino} to {:?} in dir {dir}, which has no such entry",
            String::from_utf8_lossy(&name)
        ));
    }
    let mut missing: Vec<_> = names.into_iter().collect();
    missing.sort_unstable();
    for (ino, dir, name) in missing {
        r.bad(format!(
            "{label}: entry {:?} in dir {dir} (inode {ino}) has no back link",
            String::from_utf8_lossy(&name)
        ));
    }
    Ok(())
}

/// The expiry index says exactly what the snapshot records' expiry times say.
fn check_expiry_index(store: &Store, r: &mut Report) -> FsResult<()> {
    let Some(index) = store.expiry_index()? else {
        return Ok(());
    };
    let mut want = Vec::new();
    for c in store.containers()? {
        for s in store.snapshots(&c.id)? {
            if let Some(t) = s.record.expires_at {
                want.push(((t.secs, t.nsecs), c.id.clone(), s.name));
            }
        }
    }
    want.sort();
    let mut have: Vec<_> = index
        .into_iter()
        .map(|(t, c, n)| ((t.secs, t.nsecs), c, n))
        .collect();
    have.sort();
    for e in &have {
        if want.binary_search(e).is_err() {
            r.bad(format!(
                "expiry index names snapshot {:?} of {} at {:?}, which does not expire then",
                e.2, e.1, e.0
            ));
        }
    }
    for e in &want {
        if have.binary_search(e).is_err() {
            r.bad(format!(
                "expiry of snapshot {:?} of {} missing from the expiry index",
                e.2, e.1
            ));
        }
    }
    Ok(())
}

/// The alias index of container `c` says exactly what its snapshot records say.
fn check_alias_index(
    store: &Store,
    c: &crate::store::ContainerRecord,
    r: &mut Report,
) -> FsResult<()> {
    let Some(index) = store.alias_index(&c.id)? else {
        return Ok(());
    };
    let mut want: Vec<(String, String)> = store
        .snapshots(&c.id)?
        .into_iter()
        .filter_map(|s| s.record.alias.map(|a| (a, s.name)))
        .collect();
    want.sort();
    for pair in &index {
        if want.binary_search(pair).is_err() {
            r.bad(format!(
                "container {} ({}): alias index names {:?} for snapshot {:?}, which does not have it",
                c.name, c.id, pair.0, pair.1
            ));
        }
    }
    for pair in &want {
        if !index.contains(pair) {
            r.bad(format!(
                "container {} ({}): alias {:?} of snapshot {:?} missing from the alias index",
                c.name, c.id, pair.0, pair.1
            ));
        }
    }
    Ok(())
}

/// Repairs what can be repaired safely (see the module documentation), then checks again:
/// the report's `problems` are what is left, `repaired` what was changed.
pub fn repair(store: &Arc<Store>) -> FsResult<Report> {
    let mut repaired = Vec::new();
    let diff = change_index_diff(store)?;
    if !diff.missing.is_empty() || !diff.stale.is_empty() {
        let mut b = Batch::new();
        for (e, space, base, len) in &diff.missing {
            b.put(
                Space::Meta,
                keys::change(*e, *space, base),
                len.to_be_bytes().to_vec(),
            );
        }
        for (e, space, base) in &diff.stale {
            b.delete(Space::Meta, keys::change(*e, *space, base));
        }
        store.kv().write(b, true)?;
        repaired.push(format!(
            "change index: added {} entries, removed {}",
            diff.missing.len(),
            diff.stale.len()
        ));
    }
    let mut aliases = Report::default();
    for c in store.containers()? {
        check_alias_index(store, &c, &mut aliases)?;
    }
    check_expiry_index(store, &mut aliases)?;
    if !aliases.problems.is_empty() {
        store.rebuild_snapshot_indexes()?;
        repaired.push(format!(
            "snapshot indexes rebuilt ({} problems)",
            aliases.problems.len()
        ));
    }
    if check_runtime_snapshots(store, &mut Report::default())? {
        store.rebuild_runtime_children()?;
        repaired.push("containerd child index rebuilt from the records".to_string());
    }
    let before = check(store)?;
    if before.back_link_problems > 0 || !store.links_indexed()? {
        store.rebuild_links()?;
        repaired.push(format!(
            "back links rebuilt from the entries' history ({} problems)",
            before.back_link_problems
        ));
    }
    let mut scratch = Report::default();
    for e in check_epochs(store, &mut scratch)? {
        store.retire_epoch(e).map_err(|e| match e {
            crate::store::StoreError::Fs(e) => e,
            other => FsError::Corrupt(other.to_string()),
        })?;
        repaired.push(format!("epoch {e}: referenced by nothing, retired"));
    }
    for c in store.containers()? {
        if c.deleted_at.is_some() {
            continue;
        }
        let label = format!("container {} ({})", c.name, c.id);
        let fs = Fs::new(store.clone(), &c.id)?;
        // A fix can change what the next walk counts (a removed second name of a directory
        // changes its parent's link count), so walk until nothing more is found.
        for _ in 0..8 {
            let mut fixes = Vec::new();
            check_view(&fs, &label, &mut Report::default(), Some(&mut fixes))?;
            if fixes.is_empty() {
                break;
            }
            for fix in fixes {
                fs.repair(&fix)?;
                repaired.push(format!("{label}: {fix}"));
            }
        }
        fs.fsync()?;
    }
    for c in store.containers()? {
        let mut epochs: Vec<Epoch> = store
            .snapshots(&c.id)?
            .iter()
            .map(|s| s.record.epoch)
            .collect();
        if c.deleted_at.is_none() {
            epochs.push(c.head);
        }
        for e in epochs {
            if let Some((stored, counted)) = usage_mismatch(store, e)? {
                store.set_usage(e, counted)?;
                repaired.push(format!(
                    "container {}: usage of epoch {e} set to {counted} bytes (was {stored})",
                    c.name
                ));
            }
        }
    }
    if let Some(seg) = store.kv().segments() {
        let report = seg.check()?;
        if !report.miscounted.is_empty() || !report.orphans.is_empty() {
            let fixes = seg.repair(&report)?;
            repaired.push(format!(
                "segments: {} live counters recounted, orphans deleted ({fixes} fixes)",
                report.miscounted.len()
            ));
        }
    }
    let mut r = check(store)?;
    r.repaired = repaired;
    Ok(r)
}

/// Checks the epoch tree; returns the epochs (not retired) that nothing references.
fn check_epochs(store: &Store, r: &mut Report) -> FsResult<Vec<Epoch>> {
    let epochs = store.epochs_snapshot();
    let mut referenced: HashSet<Epoch> = HashSet::new();
    for c in store.containers()? {
        if c.deleted_at.is_none() {
            referenced.insert(c.head);
            match epochs.get(&c.head).map(|e| &e.kind) {
                Some(EpochKind::Head { container }) if *container == c.id => {}
                other => r.bad(format!(
                    "container {}: head epoch {} is {other:?}",
                    c.name, c.head
                )),
            }
        }
        for s in store.snapshots(&c.id)? {
            referenced.insert(s.record.epoch);
        }
    }
    // A receive in progress writes into an epoch nothing names yet.
    for (e, _) in store.receives().map_err(|e| FsError::Io(e.to_string()))? {
        referenced.insert(e);
    }
    for (e, rec) in &epochs {
        if let Some(parent) = rec.parent {
            referenced.insert(parent);
            if !epochs.contains_key(&parent) {
                r.bad(format!("epoch {e}: parent {parent} does not exist"));
            }
            if parent >= *e {
                r.bad(format!("epoch {e}: parent {parent} is not older"));
            }
        }
    }
    let mut unreferenced = Vec::new();
    for (e, rec) in &epochs {
        match rec.kind {
            EpochKind::Retired => {} // waiting for reclaim
            _ if !referenced.contains(e) => {
                r.bad(format!(
                    "epoch {e} ({:?}) is referenced by nothing",
                    rec.kind
                ));
                unreferenced.push(*e);
            }
            _ => {}
        }
    }
    unreferenced.sort_unstable();
    Ok(unreferenced)
}

/// Versions without a change-index entry (epoch, space, key, value length), and entries
/// without a version.
#[derive(Default)]
struct IndexDiff {
    missing: Vec<(Epoch, Space, Vec<u8>, u64)>,
    stale: Vec<(Epoch, Space, Vec<u8>)>,
    versions: usize,
}

fn change_index_diff(store: &Store) -> FsResult<IndexDiff> {
    let kv = store.kv();
    let mut index: HashSet<(Epoch, Space, Vec<u8>)> = HashSet::new();
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
        (Space::Meta, keys::TAG_LINK),
        (Space::Data, keys::TAG_BLOCK),
    ];
    let mut diff = IndexDiff::default();
    for (space, tag) in versioned {
        kv.scan(space, &[tag], &[tag + 1], Dir::Forward, &mut |k, v| {
            diff.versions += 1;
            if let Some((base, e)) = keys::split_version(k) {
                if !index.remove(&(e, space, base.to_vec())) {
                    diff.missing.push((e, space, base.to_vec(), v.len() as u64));
                }
            }
            true
        })?;
    }
    diff.stale = index.into_iter().collect();
    diff.stale.sort();
    Ok(diff)
}

/// Every versioned key has its change-index entry, and the other way round.
fn check_change_index(store: &Store, r: &mut Report) -> FsResult<()> {
    let diff = change_index_diff(store)?;
    r.versions += diff.versions;
    if let Some((e, space, base, _)) = diff.missing.first() {
        r.bad(format!(
            "{} versions have no change-index entry (first: epoch {e} {space:?} {base:02x?})",
            diff.missing.len()
        ));
    }
    if let Some((e, space, base)) = diff.stale.first() {
        r.bad(format!(
            "{} change-index entries have no version (first: epoch {e} {space:?} {base:02x?})",
            diff.stale.len()
        ));
    }
    Ok(())
}

/// Walks one view from its root. With `fixes`, collects the repairs of what it finds.
fn check_view(
    fs: &Fs,
    label: &str,
    r: &mut Report,
    mut fixes: Option<&mut Vec<Fix>>,
) -> FsResult<()> {
    let mut fix = |f: Fix| {
        if let Some(v) = fixes.as_deref_mut() {
            v.push(f);
        }
    };
    r.views += 1;
    let mut links: HashMap<Ino, u32> = HashMap::new();
    let mut seen_dirs: HashSet<Ino> = HashSet::from([ROOT_INO]);
    let mut stack = vec![ROOT_INO];
    let mut nlink_of: HashMap<Ino, u32> = HashMap::new();
    // (inode, directory, name) of every entry, to check the back links against.
    let mut names: HashSet<(Ino, Ino, Vec<u8>)> = HashSet::new();
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
            names.insert((e.ino, dir, e.name.clone()));
            let name = String::from_utf8_lossy(&e.name);
            let attr = match fs.getattr(e.ino) {
                Ok(a) => a,
                Err(err) => {
                    r.bad(format!(
                        "{label}: {name:?} in dir {dir} -> inode {}: {err}",
                        e.ino
                    ));
                    if matches!(err, FsError::NotFound) {
                        fix(Fix::DropEntry {
                            parent: dir,
                            name: e.name.clone(),
                        });
                    }
                    continue;
                }
            };
            r.inodes += 1;
            if attr.kind != e.kind {
                r.bad(format!(
                    "{label}: {name:?} in dir {dir}: entry says {:?}, inode {} is {:?}",
                    e.kind, e.ino, attr.kind
                ));
                fix(Fix::EntryKind {
                    parent: dir,
                    name: e.name.clone(),
                    ino: e.ino,
                    kind: attr.kind,
                });
            }
            if attr.kind == Kind::Dir {
                if !seen_dirs.insert(e.ino) {
                    r.bad(format!(
                        "{label}: directory {} reached twice (or a cycle)",
                        e.ino
                    ));
                    fix(Fix::DropEntry {
                        parent: dir,
                        name: e.name.clone(),
                    });
                    continue;
                }
                subdirs += 1;
                if attr.parent != dir {
                    r.bad(format!(
                        "{label}: directory {} records parent {}, listed in {dir}",
                        e.ino, attr.parent
                    ));
                    fix(Fix::Parent {
                        ino: e.ino,
                        parent: dir,
                    });
                }
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
                        fix(Fix::CutPastSize { ino: e.ino });
                    } else if stored != attr.alloc {
                        r.bad(format!(
                            "{label}: file {} records {} allocated bytes, blocks hold {stored}",
                            e.ino, attr.alloc
                        ));
                        fix(Fix::Alloc { ino: e.ino });
                    }
                }
            }
        }
        if dattr.nlink != 2 + subdirs {
            r.bad(format!(
                "{label}: directory {dir} has nlink {} but {subdirs} subdirectories",
                dattr.nlink
            ));
            fix(Fix::Nlink {
                ino: dir,
                nlink: 2 + subdirs,
            });
        }
    }
    if fs.store().links_indexed()? {
        check_back_links(fs, label, names, r)?;
    }
    let mut links: Vec<_> = links.into_iter().collect();
    links.sort_unstable();
    for (ino, n) in links {
        if nlink_of.get(&ino) != Some(&n) {
            r.bad(format!(
                "{label}: inode {ino} has nlink {:?} but {n} entries",
                nlink_of.get(&ino)
            ));
            fix(Fix::Nlink { ino, nlink: n });
        }
    }
    Ok(())
}
