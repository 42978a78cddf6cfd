//! Kernel inode numbers of a mounted container, and the only place that builds or takes
//! them apart: `slot << 48 | ino`, where the slot names the view (0 = head, 1..=0xfffe = a
//! snapshot view or a head generation, 0xffff = `.snapshots` and its alias symlinks) and
//! the low 48 bits are the store's inode number.

use std::sync::Arc;

use std::sync::atomic::Ordering;

use crate::codec::Kind;
use crate::error::{FsError, FsResult};
use crate::fs::{DirEntry, Fh, ROOT_INO};
use crate::ids::{Ino, KernelIno};

use super::{Node, Volume, SNAPDIR_NAME};

pub(super) const SLOT_SHIFT: u32 = 48;
const LOW_MASK: u64 = (1 << SLOT_SHIFT) - 1;
pub(super) const SPECIAL_SLOT: u64 = 0xffff;
/// The `.snapshots` directory.
pub const SNAPDIR_INO: KernelIno = KernelIno::new((SPECIAL_SLOT << SLOT_SHIFT) | 1);
/// Alias symlinks: `ALIAS_BASE | slot`.
const ALIAS_BASE: u64 = (SPECIAL_SLOT << SLOT_SHIFT) | (1 << 32);
/// The kernel number of every container's root (slot 0, whatever the head generation).
pub const ROOT: KernelIno = KernelIno::new(Ino::ROOT.get());

/// The kernel number of store inode `ino` in the view of `slot`.
pub(super) fn kernel(slot: u64, ino: Ino) -> KernelIno {
    KernelIno::new((slot << SLOT_SHIFT) | ino.get())
}

/// (slot, store inode) of a kernel number.
pub(super) fn split(k: KernelIno) -> (u64, Ino) {
    (k.get() >> SLOT_SHIFT, Ino::new(k.get() & LOW_MASK))
}

/// The kernel number of the alias symlink of the snapshot in `slot`.
pub(super) fn alias(slot: u64) -> KernelIno {
    KernelIno::new(ALIAS_BASE | slot)
}

/// The snapshot slot whose alias symlink `k` is, if it is one.
pub(super) fn alias_slot(k: KernelIno) -> Option<u64> {
    (k.get() & !0xffff == ALIAS_BASE).then_some(k.get() & 0xffff)
}

/// A directory listing with kernel inode numbers. A head listing whose numbers need no
/// change (no restore since the mount) is the head's own cached listing, not a copy.
#[derive(Debug, Clone)]
pub enum Listing {
    /// The head's listing, kernel numbers equal to store numbers (slot 0).
    Same(Arc<Vec<DirEntry>>),
    Kernel(Arc<Vec<DirEntry<KernelIno>>>),
}

/// One entry of a [`Listing`].
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    pub ino: KernelIno,
    pub kind: Kind,
    pub name: &'a [u8],
    pub offset: u64,
}

impl Listing {
    pub fn len(&self) -> usize {
        match self {
            Listing::Same(v) => v.len(),
            Listing::Kernel(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`, with its kernel number.
    pub fn get(&self, i: usize) -> Option<Listed<'_>> {
        match self {
            Listing::Same(v) => v.get(i).map(|e| Listed {
                ino: kernel(0, e.ino),
                kind: e.kind,
                name: &e.name,
                offset: e.offset,
            }),
            Listing::Kernel(v) => v.get(i).map(|e| Listed {
                ino: e.ino,
                kind: e.kind,
                name: &e.name,
                offset: e.offset,
            }),
        }
    }

    /// The entries from position `from` on.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = Listed<'_>> {
        (from..self.len()).map_while(|i| self.get(i))
    }
}

impl Volume {
    /// Directory entries from `offset`, with kernel inode numbers.
    pub fn readdir(&self, ino: KernelIno, fh: Fh, offset: u64) -> FsResult<Listing> {
        match self.resolve(ino)? {
            Node::Head(i) => {
                let entries = self.head.readdir(i, fh, offset)?;
                let plain = i != ROOT_INO || !self.opts.snapdir_visible;
                if plain
                    && self.head_slot.load(Ordering::SeqCst) == 0
                    && !self.any_renumbered.load(Ordering::SeqCst)
                {
                    return Ok(Listing::Same(entries)); // kernel numbers equal store numbers
                }
                let mut v: Vec<DirEntry<KernelIno>> = entries
                    .iter()
                    .map(|e| DirEntry {
                        ino: self.out(e.ino),
                        kind: e.kind,
                        name: e.name.clone(),
                        offset: e.offset,
                    })
                    .collect();
                if plain {
                    return Ok(Listing::Kernel(Arc::new(v)));
                }
                v.push(DirEntry {
                    ino: SNAPDIR_INO,
                    kind: Kind::Dir,
                    name: SNAPDIR_NAME.to_vec(),
                    offset: 0,
                });
                renumber(&mut v);
                Ok(Listing::Kernel(Arc::new(v)))
            }
            Node::Snap { slot, fs, ino: i } => {
                let entries = fs.readdir(i, fh, offset)?;
                let v = entries
                    .iter()
                    .map(|e| {
                        let ino = if i == ROOT_INO && e.name == b".." {
                            SNAPDIR_INO
                        } else {
                            kernel(slot, e.ino)
                        };
                        DirEntry {
                            ino,
                            kind: e.kind,
                            name: e.name.clone(),
                            offset: e.offset,
                        }
                    })
                    .collect();
                Ok(Listing::Kernel(Arc::new(v)))
            }
            Node::SnapDir => {
                let mut v = vec![
                    DirEntry {
                        ino: SNAPDIR_INO,
                        kind: Kind::Dir,
                        name: b".".to_vec(),
                        offset: 0,
                    },
                    DirEntry {
                        ino: ROOT,
                        kind: Kind::Dir,
                        name: b"..".to_vec(),
                        offset: 0,
                    },
                ];
                for s in self.snapshots()? {
                    let slot = self.slot_of(&s);
                    v.push(DirEntry {
                        ino: kernel(slot, ROOT_INO),
                        kind: Kind::Dir,
                        name: s.name.clone().into_bytes(),
                        offset: 0,
                    });
                    if let Some(a) = &s.record.alias {
                        v.push(DirEntry {
                            ino: alias(slot),
                            kind: Kind::Symlink,
                            name: a.clone().into_bytes(),
                            offset: 0,
                        });
                    }
                }
                renumber(&mut v);
                Ok(Listing::Kernel(Arc::new(v)))
            }
            Node::Alias(_) => Err(FsError::NotDir),
        }
    }
}

/// Gives synthetic listings their stable offsets (each names the next entry).
fn renumber(v: &mut [DirEntry<KernelIno>]) {
    for (i, e) in v.iter_mut().enumerate() {
        e.offset = i as u64 + 1;
    }
}
