//! Back links (`0x14`: inode, directory, name -> live or tombstone), versioned like the
//! directory entries they mirror: every entry change writes them in the same batch
//! (`Tx::put_dirent` / `Tx::del_dirent`), so any view finds all names of an inode from the
//! inode alone, which is what a diff between two trees needs to name what changed.
//!
//! Stores written before the back links existed get them built once, when a daemon opens
//! them (`index_links`): every entry version an epoch wrote is compared with the version
//! visible just below that epoch (its parent's chain), and the inode it now names gets a
//! live link in that epoch, the one it named before a tombstone. A view then resolves each
//! link to the last change involving that inode and that name along its own chain, which
//! is exactly whether the entry names the inode in that view. `fsck` checks the links of
//! every view against its tree, and `--repair` rebuilds them the same way.

use super::{put_version, resolve, Store};
use crate::codec::{self, Dirent};
use crate::error::{FsError, FsResult};
use crate::ids::{Epoch, Ino};
use crate::keys;
use crate::kv::{Batch, Dir, Space};

/// The setting that says the back links exist.
const LINKED: &str = "link_index";

/// Versions written per batch while building (a crash in between simply starts over).
const BUILD_BATCH: usize = 20_000;

impl Store {
    /// Whether the back links of this store are complete (built, or kept from its start).
    pub fn links_indexed(&self) -> FsResult<bool> {
        Ok(self.kv.get(Space::Meta, &keys::setting(LINKED))?.is_some())
    }

    /// Builds the back links of stores written before they existed (once).
    pub fn index_links(&self) -> FsResult<()> {
        if self.links_indexed()? {
            return Ok(());
        }
        self.rebuild_links()
    }

    /// Writes every back link anew from the directory entries' versions (for `fsck
    /// --repair` and stores written before the links existed). Holds the write lock; the
    /// setting is written last, so an interrupted build is redone from scratch.
    pub fn rebuild_links(&self) -> FsResult<()> {
        let _g = self.write_lock();
        let mut b = Batch::new();
        b.delete(Space::Meta, keys::setting(LINKED));
        let start = [keys::TAG_LINK];
        let end = [keys::TAG_LINK + 1];
        let mut old = Vec::new();
        self.kv
            .scan(Space::Meta, &start, &end, Dir::Forward, &mut |k, _| {
                old.push(k.to_vec());
                true
            })?;
        for k in old {
            if let Some((base, e)) = keys::split_version(&k) {
                b.delete(Space::Meta, keys::change(e, Space::Meta, base));
            }
            b.delete(Space::Meta, k);
            if b.len() >= BUILD_BATCH {
                self.kv.write(std::mem::take(&mut b), false)?;
            }
        }
        let mut epochs: Vec<(Epoch, Option<Epoch>)> = self
            .epochs_snapshot()
            .into_iter()
            .map(|(e, rec)| (e, rec.parent))
            .collect();
        epochs.sort_unstable();
        for (e, parent) in epochs {
            let below = parent.map(|p| self.chain(p));
            let prefix = keys::change_prefix(e, Space::Meta);
            let from = [prefix.as_slice(), &[keys::TAG_DIRENT]].concat();
            let to = [prefix.as_slice(), &[keys::TAG_DIRENT + 1]].concat();
            let mut bases = Vec::new();
            self.kv
                .scan(Space::Meta, &from, &to, Dir::Forward, &mut |k, _| {
                    if let Some((_, _, base)) = keys::split_change(k) {
                        bases.push(base.to_vec());
                    }
                    true
                })?;
            for base in bases {
                let Some(parent_dir) = keys::split_dirent(&base) else {
                    continue;
                };
                let Some(name) = keys::name_of(&base) else {
                    continue;
                };
                let now = match self.kv.get(Space::Meta, &keys::versioned(&base, e))? {
                    Some(v) => named(&v)?,
                    None => continue,
                };
                let before = match &below {
                    Some(chain) => match resolve(&*self.kv, Space::Meta, &base, chain)? {
                        Some(v) => named(&v)?,
                        None => None,
                    },
                    None => None,
                };
                if now == before {
                    continue;
                }
                if let Some(ino) = before {
                    let link = keys::link(ino, parent_dir, name);
                    put_version(&mut b, Space::Meta, &link, e, codec::tombstone());
                }
                if let Some(ino) = now {
                    let link = keys::link(ino, parent_dir, name);
                    put_version(&mut b, Space::Meta, &link, e, codec::encode_live(&()));
                }
                if b.len() >= BUILD_BATCH {
                    self.kv.write(std::mem::take(&mut b), false)?;
                }
            }
        }
        b.put(Space::Meta, keys::setting(LINKED), vec![1]);
        self.kv.write(b, true)?;
        self.cache_bump();
        Ok(())
    }
}

/// The inode a directory-entry version names (None for a tombstone).
fn named(v: &[u8]) -> FsResult<Option<Ino>> {
    match codec::decode::<Dirent>(v).map_err(FsError::from)? {
        codec::Version::Live(d) => Ok(Some(d.ino)),
        codec::Version::Tombstone => Ok(None),
    }
}
