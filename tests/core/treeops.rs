//! Random tree changes for the core tests of back links and diffs: entries (create, mkdir,
//! hard link, rename over, exchange, unlink, rmdir), contents (write, truncate), metadata
//! (chmod, xattr, symlinks), and the snapshot lifecycle (take, restore, delete, reclaim).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::Rng;
use snapfs::codec::Kind;
use snapfs::fs::{Fs, SetAttr, ROOT_INO};
use snapfs::store::{Chain, Store};

use super::harness::{open_default, Ino, ME};

/// (inode, directory, name) of every entry of the view, by walking its tree.
pub fn tree_links(fs: &Fs) -> BTreeSet<(Ino, Ino, Vec<u8>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        let fh = fs.opendir(dir).expect("opendir");
        let entries = fs.readdir(dir, fh, 0).expect("readdir");
        fs.releasedir(fh);
        for e in entries.iter().skip(2) {
            out.insert((e.ino, dir, e.name.clone()));
            if e.kind == Kind::Dir {
                stack.push(e.ino);
            }
        }
    }
    out
}

/// Every view of the default container with its chain: head first, then each snapshot.
pub fn views(store: &Arc<Store>) -> Vec<(String, Fs, Arc<Chain>)> {
    let head = open_default(store.clone());
    let id = head.container().clone();
    let chain = store.head(&id).expect("head chain");
    let mut out = vec![("head".to_string(), head, chain)];
    for s in store.snapshots(&id).expect("snapshots") {
        let chain = store.snapshot_chain(&s);
        let fs = Fs::frozen(store.clone(), &id, chain.clone());
        out.push((s.name.clone(), fs, chain));
    }
    out
}

/// One random change of the default container's head (or of its snapshots). `names` are
/// the names used (few, so that names collide and renames replace).
pub fn random_step(store: &Arc<Store>, rng: &mut StdRng, lifecycle: bool) {
    const NAMES: [&[u8]; 6] = [b"n0", b"n1", b"n2", b"n3", b"n4", b"n\xff5"];
    let fs = open_default(store.clone());
    let id = fs.container().clone();
    let links = tree_links(&fs);
    let dirs: Vec<Ino> = std::iter::once(ROOT_INO)
        .chain(
            links
                .iter()
                .filter(|(ino, _, _)| fs.getattr(*ino).is_ok_and(|i| i.kind == Kind::Dir))
                .map(|(ino, _, _)| *ino),
        )
        .collect();
    let files: Vec<Ino> = links
        .iter()
        .filter(|(ino, _, _)| fs.getattr(*ino).is_ok_and(|i| i.kind == Kind::File))
        .map(|(ino, _, _)| *ino)
        .collect();
    let d1 = dirs[rng.gen_range(0..dirs.len())];
    let d2 = dirs[rng.gen_range(0..dirs.len())];
    let name = NAMES[rng.gen_range(0..NAMES.len())];
    let name2 = NAMES[rng.gen_range(0..NAMES.len())];
    let file = (!files.is_empty()).then(|| files[rng.gen_range(0..files.len())]);
    let top = if lifecycle { 18 } else { 14 };
    match rng.gen_range(0..top) {
        0 | 1 => {
            let _ = fs.create(d1, name, 0o644, libc::O_RDWR, ME);
        }
        2 => {
            let _ = fs.mkdir(d1, name, 0o755, ME);
        }
        3 => {
            if let Ok((ino, _)) = fs.lookup(d1, name) {
                let _ = fs.link(ino, d2, name2);
            }
        }
        4 | 5 => {
            let _ = fs.rename(d1, name, d2, name2, 0);
        }
        6 => {
            let _ = fs.rename(d1, name, d2, name2, 2); // RENAME_EXCHANGE
        }
        7 => {
            let _ = fs.unlink(d1, name);
            let _ = fs.rmdir(d1, name);
        }
        8 | 9 => {
            if let Some(ino) = file {
                let len = rng.gen_range(1..40_000usize);
                let off = rng.gen_range(0..60_000u64);
                let byte: u8 = rng.gen();
                fs.write(ino, None, off, &vec![byte; len], false)
                    .expect("write");
            }
        }
        10 => {
            if let Some(ino) = file {
                let set = SetAttr {
                    size: Some(rng.gen_range(0..50_000)),
                    ..Default::default()
                };
                fs.setattr(ino, &set, ME).expect("truncate");
            }
        }
        11 => {
            if let Some(ino) = file.or(Some(d1)) {
                let set = SetAttr {
                    mode: Some(rng.gen_range(0o400..0o777)),
                    ..Default::default()
                };
                fs.setattr(ino, &set, ME).expect("chmod");
            }
        }
        12 => {
            if let Some(ino) = file {
                let value = [rng.gen::<u8>()];
                if rng.gen_bool(0.7) {
                    fs.setxattr(ino, b"user.k", &value, 0).expect("setxattr");
                } else {
                    let _ = fs.removexattr(ino, b"user.k");
                }
            }
        }
        13 => {
            let _ = fs.symlink(d1, name, b"target", ME);
        }
        14 | 15 => {
            store.snapshot(&id, None, None).expect("snapshot");
        }
        16 => {
            let snaps = store.snapshots(&id).expect("list");
            if !snaps.is_empty() {
                let s = &snaps[rng.gen_range(0..snaps.len())];
                store.restore(&id, &s.name).expect("restore");
            }
        }
        _ => {
            let snaps = store.snapshots(&id).expect("list");
            if snaps.len() > 3 {
                let s = &snaps[rng.gen_range(0..snaps.len())];
                store.delete_snapshot(&id, &s.name).expect("delete");
            }
            store.reclaim().expect("reclaim");
        }
    }
}
