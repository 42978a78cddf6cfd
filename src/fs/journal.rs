//! What a mounted volume keeps outside the daemon's memory so that another daemon can take
//! the mount over after a crash or an upgrade: the open handles (the kernel keeps using
//! their numbers), the snapshot views' slots and the inode numbers a restore moved (the
//! kernel keeps using those too). Everything else a mount knows is derived from the store.
//!
//! The core only calls the [`MountJournal`] it is given; where the journal lives is the
//! mount adapter's business (a memory file whose descriptor outlives the daemon, see
//! `fuse/state.rs`). A volume without a journal keeps all of this in memory only.

use crate::ids::{Epoch, Fh, Ino, KernelIno};

/// What an open handle is, as a new daemon needs it to serve the handle again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleKind {
    File { append: bool, write: bool },
    Dir,
}

/// One open handle: the view it was opened in (0: the head, else a snapshot view's slot),
/// the store inode and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleRecord {
    pub slot: u64,
    pub ino: Ino,
    pub kind: HandleKind,
}

/// Where a volume writes down what must survive its daemon. Every call returns before the
/// kernel can learn of the change it records (the number of a new handle, a new slot), so
/// what the kernel knows is always in the journal. A failure to record is logged by the
/// journal: the mount keeps working, and only a takeover would lose that record.
pub trait MountJournal: Send + Sync {
    /// Records a new open handle and returns its number, unique within the mount.
    fn open(&self, rec: HandleRecord) -> Fh;
    /// The handle is closed; its number may be given out again.
    fn close(&self, fh: Fh);
    /// Snapshot `epoch` (named `name`) is shown in view slot `slot`.
    fn view(&self, slot: u64, epoch: Epoch, name: &str);
    /// The lowest slot given to a head generation is now `floor`.
    fn generation(&self, floor: u64);
    /// Head inodes `inos` are known to the kernel in slot `slot` from now on.
    fn renumbered(&self, slot: u64, inos: &[Ino]);
    /// A restore of the head is about to commit: what the kernel must learn once it has.
    fn restore_begun(&self, intent: &RestoreIntent);
    /// The kernel was told (or the restore failed): nothing of it is pending any more.
    fn restore_done(&self);
}

/// A restore of the head to another tree, journaled before its batch commits. If the daemon
/// dies after the commit and before the kernel dropped what it cached of the old tree, the
/// next daemon finishes it (the restore committed if the head is no longer `old_head`).
/// Serialized as the journal keeps it (postcard; each id is its number).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreIntent {
    /// The head epoch the restore replaces.
    pub old_head: Epoch,
    /// Files given a new kernel number, in head generation `slot`.
    pub slot: Option<u64>,
    pub files: Vec<Ino>,
    /// (directory, name) entries and inodes the kernel must drop, in kernel numbers.
    pub entries: Vec<(KernelIno, Vec<u8>)>,
    pub inodes: Vec<KernelIno>,
}

/// What a journal held when a new daemon took its mount over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// Snapshot views: (slot, epoch, name), slots 1, 2, ... in order.
    pub views: Vec<(u64, Epoch, String)>,
    /// The lowest head generation slot given out (0: none).
    pub gen_floor: u64,
    /// Head inodes and the slot the kernel knows them in (the last record of each wins).
    pub renumbered: Vec<(Ino, u64)>,
    /// Handles open when the old daemon stopped.
    pub handles: Vec<(Fh, HandleRecord)>,
    /// A restore begun and not known to be done: finished by the daemon that takes over.
    pub restore: Option<RestoreIntent>,
    /// A restore was begun whose intent was too large for the journal: the kernel's caches
    /// cannot be put right if it committed.
    pub restore_unrecorded: Option<Epoch>,
}
