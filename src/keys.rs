//! The key schema: every key snapfs stores, in one table.
//!
//! All integers are fixed-width big-endian so that byte order equals numeric order. Names are
//! raw bytes (never NUL, which POSIX forbids in names) followed by a `0x00` terminator, so all
//! versions of one name sort together and before any longer name sharing its prefix.
//! Versioned keys end with the epoch that wrote them: `seek_for_prev(key|E)` walks a key's
//! versions downward from epoch `E`.
//!
//! | space | tag  | layout                                    | value                        |
//! |-------|------|-------------------------------------------|------------------------------|
//! | Meta  | 0x01 | tag, setting name (ASCII)                 | store settings (raw)         |
//! | Meta  | 0x02 | tag, epoch u64                            | `EpochRecord`                |
//! | Meta  | 0x03 | tag, container id                         | `ContainerRecord`            |
//! | Meta  | 0x04 | tag, container id, 0x00, snapshot name    | `SnapshotRecord`             |
//! | Meta  | 0x05 | tag, container name                       | id of the live container     |
//! | Meta  | 0x06 | tag, retired epoch u64                    | frozen child it was pruned against (u64) |
//! | Meta  | 0x07 | tag, container id, 0x00, alias            | snapshot name with that alias |
//! | Meta  | 0x08 | tag, secs u64 (sign flipped), nsecs u32, container id, 0x00, name | (empty): expiry index |
//! | Meta  | 0x09 | tag, container id                         | `Quota` (limits)             |
//! | Meta  | 0x0a | tag, epoch u64                            | usage: file data bytes of the tree (u64) |
//! | Meta  | 0x0b | tag, runtime key (any bytes, to the end)  | `RuntimeSnapshot` (containerd's snapshots) |
//! | Meta  | 0x0c | tag, parent key len u32, parent key, child key | (empty): children of a runtime snapshot |
//! | Meta  | 0x0d | tag, epoch u64                            | `ReceiveRecord`: a snapshot stream being received into that epoch |
//! | Meta  | 0x10 | tag, ino u64, epoch u64                   | versioned `Inode`            |
//! | Meta  | 0x11 | tag, parent ino u64, name, 0x00, epoch u64| versioned `Dirent`           |
//! | Meta  | 0x12 | tag, ino u64, name, 0x00, epoch u64       | versioned xattr value        |
//! | Meta  | 0x13 | tag, data id u64, epoch u64               | versioned "data id dropped"  |
//! | Meta  | 0x14 | tag, ino u64, parent ino u64, name, 0x00, epoch u64 | versioned back link (empty) |
//! | Meta  | 0x20 | tag, epoch u64, space u8, unversioned key | change index: bytes (u64)    |
//! | Meta  | 0x30 | tag, container, 0x00, ino u64             | orphan (unlinked while open) |
//! | Data  | 0x40 | tag, data id u64, block index u64, epoch  | versioned block bytes        |
//!
//! The change index (0x20) is written in the same batch as every version: its key is the
//! version's key without the trailing epoch, prefixed by that epoch, so everything one epoch
//! wrote is one contiguous range.

use crate::ids::{ContainerId, DataId, Epoch, Ino};
use crate::kv::Space;

pub const TAG_SETTING: u8 = 0x01;
pub const TAG_EPOCH: u8 = 0x02;
pub const TAG_CONTAINER: u8 = 0x03;
pub const TAG_SNAPSHOT: u8 = 0x04;
pub const TAG_CONTAINER_NAME: u8 = 0x05;
pub const TAG_PRUNED: u8 = 0x06;
pub const TAG_ALIAS: u8 = 0x07;
pub const TAG_EXPIRY: u8 = 0x08;
pub const TAG_QUOTA: u8 = 0x09;
pub const TAG_USAGE: u8 = 0x0a;
pub const TAG_RUNTIME_SNAPSHOT: u8 = 0x0b;
pub const TAG_RUNTIME_CHILD: u8 = 0x0c;
pub const TAG_RECEIVE: u8 = 0x0d;
pub const TAG_INODE: u8 = 0x10;
pub const TAG_DIRENT: u8 = 0x11;
pub const TAG_XATTR: u8 = 0x12;
pub const TAG_DATA_GONE: u8 = 0x13;
pub const TAG_LINK: u8 = 0x14;
pub const TAG_CHANGE: u8 = 0x20;
pub const TAG_ORPHAN: u8 = 0x30;
pub const TAG_BLOCK: u8 = 0x40;

/// Width of the epoch suffix of a versioned key.
pub const EPOCH_LEN: usize = 8;

fn with_u64(tag: u8, a: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + EPOCH_LEN);
    k.push(tag);
    k.extend_from_slice(&a.to_be_bytes());
    k
}

fn with_name(tag: u8, a: u64, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + name.len() + 1 + EPOCH_LEN);
    k.push(tag);
    k.extend_from_slice(&a.to_be_bytes());
    k.extend_from_slice(name);
    k.push(0);
    k
}

/// A store setting (`format`, `block_size`, `next_id`, `next_epoch`).
pub fn setting(name: &str) -> Vec<u8> {
    let mut k = vec![TAG_SETTING];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Longest name of a directory entry, in bytes.
pub const NAME_MAX: usize = 255;

/// Whether `name` can be a directory entry's name: 1-255 bytes, no `/` or NUL, not `.` or
/// `..` (what every entry key holds; `fs::check_name` says which rule a name breaks).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
}

/// A snapshot stream being received into epoch `e` (see `store/transfer.rs`).
pub fn receive(e: Epoch) -> Vec<u8> {
    with_u64(TAG_RECEIVE, e.get())
}

/// The epoch of a receive key (0x0d).
pub fn split_receive(key: &[u8]) -> Option<Epoch> {
    u64_at(tagged(key, TAG_RECEIVE, 9)?, 1).map(Epoch::new)
}

pub fn epoch(e: Epoch) -> Vec<u8> {
    with_u64(TAG_EPOCH, e.get())
}

/// Reclaim's record that retired epoch `e` holds no version its only child (a frozen
/// epoch, the value: 8 bytes) shadows; while that prune is under way, the child is followed
/// by the change-index cursor to resume from.
pub fn pruned(e: Epoch) -> Vec<u8> {
    with_u64(TAG_PRUNED, e.get())
}

/// The alias index: `alias` of a snapshot of `container`.
pub fn alias(container: &ContainerId, alias: &str) -> Vec<u8> {
    let mut k = alias_prefix(container);
    k.extend_from_slice(alias.as_bytes());
    k
}

pub fn alias_prefix(container: &ContainerId) -> Vec<u8> {
    let mut k = vec![TAG_ALIAS];
    k.extend_from_slice(container.as_bytes());
    k.push(0);
    k
}

/// Expiry-index prefix of everything expiring at (secs, nsecs): times sort as numbers (the
/// sign bit of the seconds is flipped so that times before 1970 sort first).
pub fn expiry_prefix(secs: i64, nsecs: u32) -> Vec<u8> {
    let mut k = with_u64(TAG_EXPIRY, (secs as u64) ^ (1 << 63));
    k.extend_from_slice(&nsecs.to_be_bytes());
    k
}

/// The expiry-index entry of snapshot `name` of `container`, expiring at (secs, nsecs).
pub fn expiry(secs: i64, nsecs: u32, container: &ContainerId, name: &str) -> Vec<u8> {
    let mut k = expiry_prefix(secs, nsecs);
    k.extend_from_slice(container.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Decodes an expiry-index key into (secs, nsecs, container, name).
pub fn split_expiry(key: &[u8]) -> Option<(i64, u32, ContainerId, &[u8])> {
    if key.first() != Some(&TAG_EXPIRY) || key.len() < 13 {
        return None;
    }
    let secs = (u64::from_be_bytes(key[1..9].try_into().ok()?) ^ (1 << 63)) as i64;
    let nsecs = u32::from_be_bytes(key[9..13].try_into().ok()?);
    let rest = &key[13..];
    let zero = rest.iter().position(|&b| b == 0)?;
    Some((
        secs,
        nsecs,
        ContainerId::from_bytes(&rest[..zero])?,
        &rest[zero + 1..],
    ))
}

/// The limits of container `id`.
pub fn quota(id: &ContainerId) -> Vec<u8> {
    let mut k = vec![TAG_QUOTA];
    k.extend_from_slice(id.as_bytes());
    k
}

/// The usage (file data bytes) of the tree at epoch `e`.
pub fn usage(e: Epoch) -> Vec<u8> {
    with_u64(TAG_USAGE, e.get())
}

/// A container runtime's snapshot (containerd's key, an opaque string of any length).
pub fn runtime_snapshot(key: &str) -> Vec<u8> {
    let mut k = vec![TAG_RUNTIME_SNAPSHOT];
    k.extend_from_slice(key.as_bytes());
    k
}

/// The runtime key of a [`runtime_snapshot`] key.
pub fn split_runtime_snapshot(key: &[u8]) -> Option<&str> {
    match key.split_first() {
        Some((&TAG_RUNTIME_SNAPSHOT, rest)) => std::str::from_utf8(rest).ok(),
        _ => None,
    }
}

/// The prefix of every child of runtime snapshot `parent` (length first: a key may hold
/// any byte, and one parent's children must not run into a longer parent's).
pub fn runtime_children(parent: &str) -> Vec<u8> {
    let mut k = vec![TAG_RUNTIME_CHILD];
    k.extend_from_slice(&(parent.len() as u32).to_be_bytes());
    k.extend_from_slice(parent.as_bytes());
    k
}

/// Child `child` of runtime snapshot `parent`.
pub fn runtime_child(parent: &str, child: &str) -> Vec<u8> {
    let mut k = runtime_children(parent);
    k.extend_from_slice(child.as_bytes());
    k
}

/// (parent, child) of a [`runtime_child`] key.
pub fn split_runtime_child(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(&[TAG_RUNTIME_CHILD])?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let parent = rest.get(4..4 + len)?;
    let child = rest.get(4 + len..)?;
    Some((
        std::str::from_utf8(parent).ok()?,
        std::str::from_utf8(child).ok()?,
    ))
}

pub fn container(id: &ContainerId) -> Vec<u8> {
    let mut k = vec![TAG_CONTAINER];
    k.extend_from_slice(id.as_bytes());
    k
}

/// Name index of live containers.
pub fn container_name(name: &str) -> Vec<u8> {
    let mut k = vec![TAG_CONTAINER_NAME];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Unversioned inode key (append an epoch with [`versioned`]).
pub fn inode(ino: Ino) -> Vec<u8> {
    with_u64(TAG_INODE, ino.get())
}

/// Unversioned directory entry key.
pub fn dirent(parent: Ino, name: &[u8]) -> Vec<u8> {
    with_name(TAG_DIRENT, parent.get(), name)
}

/// Prefix of every directory entry of `parent`.
pub fn dirent_prefix(parent: Ino) -> Vec<u8> {
    with_u64(TAG_DIRENT, parent.get())
}

/// Unversioned back link: directory `parent` has an entry `name` for inode `ino`. Written
/// (live or tombstone) in the same batch as every entry change, so each view finds the
/// names of any inode without walking its tree (`Fs::links`; diffs).
pub fn link(ino: Ino, parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = with_u64(TAG_LINK, ino.get());
    k.extend_from_slice(&parent.get().to_be_bytes());
    k.extend_from_slice(name);
    k.push(0);
    k
}

/// Prefix of every back link of `ino`.
pub fn link_prefix(ino: Ino) -> Vec<u8> {
    with_u64(TAG_LINK, ino.get())
}

/// (ino, parent, name) of an unversioned back-link key.
pub fn split_link(base: &[u8]) -> Option<(Ino, Ino, &[u8])> {
    if base.first() != Some(&TAG_LINK) || base.len() < 19 || *base.last()? != 0 {
        return None;
    }
    Some((
        Ino::new(u64_at(base, 1)?),
        Ino::new(u64_at(base, 9)?),
        &base[17..base.len() - 1],
    ))
}

/// Unversioned xattr key.
pub fn xattr(ino: Ino, name: &[u8]) -> Vec<u8> {
    with_name(TAG_XATTR, ino.get(), name)
}

pub fn xattr_prefix(ino: Ino) -> Vec<u8> {
    with_u64(TAG_XATTR, ino.get())
}

/// Marks, from an epoch down, that no inode refers to block storage `data_id` any more
/// (truncated to zero or freed): reclaim uses it to see those blocks are shadowed.
pub fn data_gone(data_id: DataId) -> Vec<u8> {
    with_u64(TAG_DATA_GONE, data_id.get())
}

/// Unversioned block key.
pub fn block(data_id: DataId, index: u64) -> Vec<u8> {
    let mut k = with_u64(TAG_BLOCK, data_id.get());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn block_prefix(data_id: DataId) -> Vec<u8> {
    with_u64(TAG_BLOCK, data_id.get())
}

/// The id (inode number or data id) that owns `base`, for the tables whose keys start
/// with it: inodes, directory entries (their directory), extended attributes, back links,
/// blocks and data-gone marks. Nothing under a freshly allocated id can exist yet (ids are
/// never reused).
pub fn owner_id(base: &[u8]) -> Option<u64> {
    match base.first()? {
        &TAG_INODE | &TAG_DIRENT | &TAG_XATTR | &TAG_LINK | &TAG_DATA_GONE | &TAG_BLOCK => {
            u64_at(base, 1)
        }
        _ => None,
    }
}

/// `base` with `epoch` appended: the key of one version.
pub fn versioned(base: &[u8], epoch: Epoch) -> Vec<u8> {
    let mut k = Vec::with_capacity(base.len() + EPOCH_LEN);
    k.extend_from_slice(base);
    k.extend_from_slice(&epoch.get().to_be_bytes());
    k
}

/// Splits a versioned key into its unversioned base and epoch.
pub fn split_version(key: &[u8]) -> Option<(&[u8], Epoch)> {
    if key.len() < EPOCH_LEN + 1 {
        return None;
    }
    let (base, e) = key.split_at(key.len() - EPOCH_LEN);
    Some((base, Epoch::new(u64::from_be_bytes(e.try_into().ok()?))))
}

/// Change-index key for a version of `base` (in `space`) written by `epoch`.
pub fn change(epoch: Epoch, space: Space, base: &[u8]) -> Vec<u8> {
    let mut k = with_u64(TAG_CHANGE, epoch.get());
    k.push(space_byte(space));
    k.extend_from_slice(base);
    k
}

/// The run of a data-space key, for [`crate::kv::read_keys`]: a file's blocks (every index,
/// every epoch) share one, their tag and data id, so a scan never crosses from one file's
/// blocks to another's (a deleted file's tombstones can lie between); any other key is
/// alone.
pub fn block_run(key: &[u8]) -> &[u8] {
    const ID: usize = 1 + 8; // tag, data id
    match key.first() {
        Some(&TAG_BLOCK) if key.len() >= ID + 8 => &key[..ID],
        _ => key,
    }
}

/// The run of a change-index key, for [`crate::kv::read_keys`]: the change records of a
/// file's blocks share one ([`block_run`] of the block they name), so a write's are read
/// in one scan; any other key is alone (read by a point read).
pub fn change_run(key: &[u8]) -> &[u8] {
    match split_change(key) {
        Some((_, Space::Data, base)) => &key[..key.len() - base.len() + block_run(base).len()],
        _ => key,
    }
}

/// Prefix of everything `epoch` wrote in `space`.
pub fn change_prefix(epoch: Epoch, space: Space) -> Vec<u8> {
    let mut k = with_u64(TAG_CHANGE, epoch.get());
    k.push(space_byte(space));
    k
}

/// Prefix of everything `epoch` wrote, in both spaces.
pub fn epoch_changes(epoch: Epoch) -> Vec<u8> {
    with_u64(TAG_CHANGE, epoch.get())
}

/// Decodes a change-index key into (epoch, space, unversioned base key).
pub fn split_change(key: &[u8]) -> Option<(Epoch, Space, &[u8])> {
    if key.len() < 10 || key[0] != TAG_CHANGE {
        return None;
    }
    let epoch = Epoch::new(u64::from_be_bytes(key[1..9].try_into().ok()?));
    let space = match key[9] {
        0 => Space::Meta,
        1 => Space::Data,
        _ => return None,
    };
    Some((epoch, space, &key[10..]))
}

fn space_byte(space: Space) -> u8 {
    match space {
        Space::Meta => 0,
        Space::Data => 1,
        Space::Segments => 2,
    }
}

pub fn orphan(container: &ContainerId, ino: Ino) -> Vec<u8> {
    let mut k = orphan_prefix(container);
    k.extend_from_slice(&ino.get().to_be_bytes());
    k
}

pub fn orphan_prefix(container: &ContainerId) -> Vec<u8> {
    let mut k = vec![TAG_ORPHAN];
    k.extend_from_slice(container.as_bytes());
    k.push(0);
    k
}

pub fn snapshot(container: &ContainerId, name: &str) -> Vec<u8> {
    let mut k = snapshot_prefix(container);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn snapshot_prefix(container: &ContainerId) -> Vec<u8> {
    let mut k = vec![TAG_SNAPSHOT];
    k.extend_from_slice(container.as_bytes());
    k.push(0);
    k
}

/// Reads a big-endian u64 at `at` in `key`.
fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    key.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// The key's tag, if it has `tag` and at least `len` bytes.
fn tagged(key: &[u8], tag: u8, len: usize) -> Option<&[u8]> {
    (key.first() == Some(&tag) && key.len() >= len).then_some(key)
}

/// The epoch of an epoch-record key (0x02).
pub fn split_epoch(key: &[u8]) -> Option<Epoch> {
    u64_at(tagged(key, TAG_EPOCH, 9)?, 1).map(Epoch::new)
}

/// The epoch of a usage key (0x0a).
pub fn split_usage(key: &[u8]) -> Option<Epoch> {
    u64_at(tagged(key, TAG_USAGE, 9)?, 1).map(Epoch::new)
}

/// The inode of an inode key (0x10), unversioned or versioned.
pub fn split_inode(key: &[u8]) -> Option<Ino> {
    u64_at(tagged(key, TAG_INODE, 9)?, 1).map(Ino::new)
}

/// The directory of a directory-entry key (0x11), unversioned or versioned.
pub fn split_dirent(key: &[u8]) -> Option<Ino> {
    u64_at(tagged(key, TAG_DIRENT, 9)?, 1).map(Ino::new)
}

/// The directory and name of an unversioned directory-entry key (0x11: as the change index
/// holds it, ending with the name's terminator).
pub fn split_dirent_name(key: &[u8]) -> Option<(Ino, &[u8])> {
    let dir = split_dirent(key)?;
    let name = key.get(9..)?.strip_suffix(&[0])?;
    Some((dir, name))
}

/// The inode of an xattr key (0x12), unversioned or versioned.
pub fn split_xattr(key: &[u8]) -> Option<Ino> {
    u64_at(tagged(key, TAG_XATTR, 9)?, 1).map(Ino::new)
}

/// The data id of a "data id dropped" key (0x13), unversioned or versioned.
pub fn split_data_gone(key: &[u8]) -> Option<DataId> {
    u64_at(tagged(key, TAG_DATA_GONE, 9)?, 1).map(DataId::new)
}

/// The inode a back-link key (0x14) is about, unversioned or versioned (the whole key:
/// [`split_link`]).
pub fn link_ino(key: &[u8]) -> Option<Ino> {
    u64_at(tagged(key, TAG_LINK, 9)?, 1).map(Ino::new)
}

/// (data id, block index) of a block key (0x40), unversioned or versioned.
pub fn split_block(key: &[u8]) -> Option<(DataId, u64)> {
    let key = tagged(key, TAG_BLOCK, 17)?;
    Some((DataId::new(u64_at(key, 1)?), u64_at(key, 9)?))
}

/// A data-space key for messages: "block N of data id D, epoch E", or its bytes.
pub fn describe_data(key: &[u8]) -> String {
    match split_version(key).and_then(|(base, e)| Some((split_block(base)?, e))) {
        Some(((d, idx), e)) => format!("block {idx} of data id {d}, epoch {e}"),
        None => format!("key {key:02x?}"),
    }
}

/// (container, inode) of an orphan key (0x30).
pub fn split_orphan(key: &[u8]) -> Option<(ContainerId, Ino)> {
    let rest = tagged(key, TAG_ORPHAN, 1)?.get(1..)?;
    let zero = rest.iter().position(|&b| b == 0)?;
    let ino = rest.get(zero + 1..)?;
    if ino.len() != 8 {
        return None;
    }
    Some((
        ContainerId::from_bytes(&rest[..zero])?,
        Ino::new(u64_at(ino, 0)?),
    ))
}

/// The name part of a dirent or xattr base key (without the terminator).
pub fn name_of(base: &[u8]) -> Option<&[u8]> {
    if base.len() < 10 || *base.last()? != 0 {
        return None;
    }
    Some(&base[9..base.len() - 1])
}

#[cfg(test)]
mod tests {
    fn ino(n: u64) -> Ino {
        Ino::new(n)
    }

    fn ep(n: u64) -> Epoch {
        Epoch::new(n)
    }

    #[test]
    fn link_keys_round_trip_and_group_by_inode() {
        let k = link(ino(7), ino(1), b"a\xffb");
        assert_eq!(split_link(&k), Some((ino(7), ino(1), &b"a\xffb"[..])));
        assert_eq!(link_ino(&versioned(&k, ep(3))), Some(ino(7)));
        assert!(k.starts_with(&link_prefix(ino(7))));
        assert!(!link(ino(8), ino(0), b"a").starts_with(&link_prefix(ino(7))));
        assert!(link(ino(7), ino(u64::MAX), b"z") < link(ino(8), ino(0), b"a"));
        assert_eq!(split_link(&dirent(ino(7), b"x")), None);
        assert_eq!(split_link(&link_prefix(ino(7))), None);
    }

    #[test]
    fn typed_decoders_round_trip_and_check_the_tag() {
        let c = ContainerId::new("0123456789abcdef01234567");
        assert_eq!(split_epoch(&epoch(ep(9))), Some(ep(9)));
        assert_eq!(split_usage(&usage(ep(9))), Some(ep(9)));
        assert_eq!(split_usage(&epoch(ep(9))), None);
        assert_eq!(split_inode(&versioned(&inode(ino(5)), ep(2))), Some(ino(5)));
        assert_eq!(split_inode(&xattr(ino(5), b"n")), None);
        assert_eq!(split_dirent(&dirent(ino(6), b"n")), Some(ino(6)));
        assert_eq!(split_xattr(&xattr(ino(4), b"n")), Some(ino(4)));
        let d = DataId::new(77);
        assert_eq!(split_data_gone(&data_gone(d)), Some(d));
        assert_eq!(split_block(&versioned(&block(d, 3), ep(1))), Some((d, 3)));
        assert_eq!(split_block(&block_prefix(d)), None);
        assert_eq!(
            split_orphan(&orphan(&c, ino(42))),
            Some((c.clone(), ino(42)))
        );
        assert_eq!(split_orphan(&orphan_prefix(&c)), None);
    }

    #[test]
    fn expiry_keys_round_trip_and_sort_by_time() {
        let c1 = ContainerId::new("c1");
        let k = expiry(1_700_000_000, 5, &c1, "snap-x");
        assert_eq!(
            split_expiry(&k),
            Some((1_700_000_000, 5, c1, &b"snap-x"[..]))
        );
        let times = [
            (-5i64, 0u32),
            (-1, 999_999_999),
            (0, 0),
            (0, 1),
            (1, 0),
            (i64::MAX, 0),
        ];
        let keys: Vec<Vec<u8>> = times
            .iter()
            .map(|&(s, n)| expiry(s, n, &ContainerId::new("c"), "n"))
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "byte order = time order"
        );
        let c = ContainerId::new("c");
        assert!(expiry(0, 1, &c, "n") < expiry_prefix(0, 2));
        assert!(expiry(0, 1, &c, "n") >= expiry_prefix(0, 1));
    }

    use super::*;

    #[test]
    fn versioned_keys_order_by_epoch() {
        let base = inode(ino(7));
        let a = versioned(&base, ep(1));
        let b = versioned(&base, ep(256));
        let c = versioned(&base, ep(u64::MAX));
        assert!(a < b && b < c);
        assert_eq!(split_version(&b), Some((&base[..], ep(256))));
    }

    #[test]
    fn inode_keys_order_numerically() {
        let mut last = inode(ino(0));
        for n in [1u64, 255, 256, 65535, 1 << 32, u64::MAX] {
            let k = inode(ino(n));
            assert!(k > last, "{n}");
            last = k;
        }
    }

    #[test]
    fn dirent_versions_of_one_name_are_contiguous() {
        // Versions of "a" must all sort before "a\x01" and "ab", whatever the epoch.
        let a_hi = versioned(&dirent(ino(5), b"a"), ep(u64::MAX));
        let a_lo = versioned(&dirent(ino(5), b"a"), ep(0));
        let a1 = versioned(&dirent(ino(5), b"a\x01"), ep(0));
        let ab = versioned(&dirent(ino(5), b"ab"), ep(0));
        assert!(a_lo < a_hi && a_hi < a1 && a1 < ab);
        // And never leave the parent's prefix.
        let p = dirent_prefix(ino(5));
        assert!(a_lo.starts_with(&p) && ab.starts_with(&p));
        assert!(
            versioned(&dirent(ino(6), b""), ep(0))
                > versioned(&dirent(ino(5), &[0xff; 255]), ep(u64::MAX))
        );
    }

    #[test]
    fn name_round_trips_non_utf8() {
        let name = [0xffu8, 0xfe, b'x', 0x80];
        let base = dirent(ino(9), &name);
        assert_eq!(name_of(&base), Some(&name[..]));
    }

    #[test]
    fn change_key_round_trips() {
        let base = block(DataId::new(3), 4);
        let k = change(ep(42), Space::Data, &base);
        assert_eq!(split_change(&k), Some((ep(42), Space::Data, &base[..])));
        assert!(k.starts_with(&change_prefix(ep(42), Space::Data)));
        assert!(change(ep(42), Space::Meta, &[0xff; 20]) < change_prefix(ep(42), Space::Data));
        assert!(change(ep(43), Space::Meta, &[]) > change(ep(42), Space::Data, &[0xff; 40]));
    }

    #[test]
    fn block_keys_order_by_index_then_epoch() {
        let (d1, d2) = (DataId::new(1), DataId::new(2));
        let k1 = versioned(&block(d1, 1), ep(9));
        let k2 = versioned(&block(d1, 2), ep(1));
        let k3 = versioned(&block(d2, 0), ep(0));
        assert!(k1 < k2 && k2 < k3);
    }

    #[test]
    fn a_files_block_changes_share_a_run_and_nothing_else_does() {
        let (d1, d2) = (DataId::new(1), DataId::new(2));
        let c = |d, i| change(ep(5), Space::Data, &block(d, i));
        assert_eq!(change_run(&c(d1, 0)), change_run(&c(d1, u64::MAX)));
        assert_ne!(change_run(&c(d1, 0)), change_run(&c(d2, 0)));
        // A run is a prefix: its keys lie together in a sorted list.
        assert!(c(d1, 7).starts_with(change_run(&c(d1, 7))));
        let meta = [
            change(ep(5), Space::Meta, &inode(ino(1))),
            change(ep(5), Space::Meta, &inode(ino(2))),
            change(ep(5), Space::Data, &block_prefix(d1)),
        ];
        for k in &meta {
            assert_eq!(change_run(k), &k[..], "alone");
        }
        // The data keys themselves: a file's blocks, any index and epoch, share a run.
        let v = |d, i, e| versioned(&block(d, i), ep(e));
        assert_eq!(block_run(&v(d1, 0, 1)), block_run(&v(d1, 9, 4)));
        assert_ne!(block_run(&v(d1, 0, 1)), block_run(&v(d2, 0, 1)));
        assert!(v(d1, 3, 2).starts_with(block_run(&v(d1, 3, 2))));
        assert_eq!(block_run(&block_prefix(d1)), &block_prefix(d1)[..], "alone");
    }
}

/// The length of the *base* of `key` (the key without its trailing epoch) when it is a
/// versioned key of a kind read by versions: blocks, inodes, "data dropped" markers (fixed
/// lengths), directory entries and extended attributes (up to the name's terminator);
/// `None` for every other key and for prefixes shorter than a base. A stored key and a
/// scan prefix containing its base get the same answer. SlateDB's filters hash it under
/// the name `remote.rs` gives it (a change here needs a new name there).
pub fn version_base_len(space: Space, key: &[u8]) -> Option<usize> {
    const ID: usize = 1 + 8; // tag, a u64
    match (space, *key.first()?) {
        (Space::Data, TAG_BLOCK) => (key.len() >= ID + 8).then_some(ID + 8),
        (Space::Meta, TAG_INODE | TAG_DATA_GONE) => (key.len() >= ID).then_some(ID),
        (Space::Meta, TAG_DIRENT | TAG_XATTR) => {
            let name = key.get(ID..)?;
            name.iter().position(|&b| b == 0).map(|i| ID + i + 1)
        }
        _ => None,
    }
}

#[cfg(test)]
mod version_base_tests {
    use super::*;

    /// The base is the same for every version of a key and for a scan bounded within it;
    /// other keys have none.
    #[test]
    fn version_base_is_the_key_without_its_epoch() {
        let block = block(DataId::new(7), 3);
        for e in [0, 1, u64::MAX] {
            let k = versioned(&block, Epoch::new(e));
            assert_eq!(version_base_len(Space::Data, &k), Some(block.len()));
        }
        let inode = inode(Ino::new(0x0100));
        let k = versioned(&inode, Epoch::new(9));
        assert_eq!(version_base_len(Space::Meta, &k), Some(inode.len()));
        // A parent number with zero bytes: the name's terminator is found after it.
        let dirent = dirent(Ino::new(0x0100), b"name");
        let k = versioned(&dirent, Epoch::new(9));
        assert_eq!(version_base_len(Space::Meta, &k), Some(dirent.len()));
        assert_eq!(&k[..dirent.len()], &dirent[..]);
        // A scan prefix shorter than a base has none.
        assert_eq!(
            version_base_len(Space::Data, &block_prefix(DataId::new(7))),
            None
        );
        assert_eq!(
            version_base_len(Space::Meta, &dirent_prefix(Ino::new(1))),
            None
        );
        // Unversioned keys, and block keys in the wrong space, have none.
        assert_eq!(version_base_len(Space::Meta, &setting("x")), None);
        assert_eq!(version_base_len(Space::Meta, &block), None);
        assert_eq!(version_base_len(Space::Data, b""), None);
    }
}
