//! Extended attributes.

use crate::codec::{self, Inode};
use crate::error::{FsError, FsResult};
use crate::ids::Ino;
use crate::keys;
use crate::kv::Space;
use crate::store;

use super::{now, scan_live, scan_visible, Fs, Tx, XATTR_VALUE_MAX};

const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

fn check_xattr_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(FsError::Range);
    }
    if name.contains(&0) {
        return Err(FsError::Invalid("NUL in attribute name"));
    }
    // POSIX ACLs are not supported: tools fall back to mode bits on EOPNOTSUPP.
    if name.starts_with(b"system.") {
        return Err(FsError::NotSupported);
    }
    Ok(())
}

/// File capabilities (`setcap`): dropped whenever a file's contents or owner change.
const CAPABILITY: &[u8] = b"security.capability";

/// Permission bits after a change that drops privileges, as the kernel's
/// `should_remove_suid` decides: setuid goes, setgid only with group execute (without it,
/// setgid marks mandatory locking, not a privilege).
pub(super) fn without_setid(perm: u16) -> u16 {
    let mut perm = perm & !0o4000;
    if perm & 0o010 != 0 {
        perm &= !0o2000;
    }
    perm
}

impl Tx<'_> {
    /// Writes this epoch's version of attribute `name` (an encoded value or a tombstone).
    pub(super) fn put_xattr(&mut self, ino: Ino, name: &[u8], version: Vec<u8>) {
        let e = self.epoch();
        store::put_version(
            &mut self.batch,
            Space::Meta,
            &keys::xattr(ino, name),
            e,
            version,
        );
    }
}

impl Fs {
    /// Drops what a write, truncation or chown of a non-directory must drop. The mount asks
    /// the kernel to leave this to us (`FUSE_HANDLE_KILLPRIV_V2`, which spares a
    /// `security.capability` lookup round trip before every write): file capabilities always,
    /// and with `setid` the setuid/setgid bits (see [`without_setid`]).
    pub(super) fn drop_privileges(
        &self,
        tx: &mut Tx<'_>,
        ino: Ino,
        inode: &mut Inode,
        setid: bool,
    ) -> FsResult<()> {
        if setid {
            inode.perm = without_setid(inode.perm);
        }
        if self.xattr_in(&tx.chain, ino, CAPABILITY)?.is_some() {
            tx.put_xattr(ino, CAPABILITY, codec::tombstone());
        }
        Ok(())
    }

    fn xattr_in(&self, chain: &store::Chain, ino: Ino, name: &[u8]) -> FsResult<Option<Vec<u8>>> {
        match self.resolve_meta(&keys::xattr(ino, name), chain)? {
            None => Ok(None),
            Some(v) => Ok(codec::decode::<Vec<u8>>(&v)?.live()),
        }
    }

    /// Every extended attribute (name, value) of `ino` in `chain`, descending by name.
    pub(super) fn xattrs_in(
        &self,
        chain: &store::Chain,
        ino: Ino,
    ) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = keys::xattr_prefix(ino);
        let end = crate::kv::prefix_end(&prefix);
        let mut out = Vec::new();
        scan_live(self.store.kv(), &prefix, &end, chain, &mut |base,
                                                               value: Vec<
            u8,
        >| {
            if let Some(name) = keys::name_of(base) {
                out.push((name.to_vec(), value));
            }
            true
        })?;
        Ok(out)
    }

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> FsResult<Vec<u8>> {
        check_xattr_name(name)?;
        let chain = self.chain()?;
        self.inode_in(&chain, ino)?;
        self.xattr_in(&chain, ino, name)?.ok_or(FsError::NoData)
    }

    /// Attribute names, each followed by a NUL, as `listxattr(2)` returns them.
    pub fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let chain = self.chain()?;
        self.inode_in(&chain, ino)?;
        let prefix = keys::xattr_prefix(ino);
        let end = crate::kv::prefix_end(&prefix);
        let mut names: Vec<Vec<u8>> = Vec::new();
        scan_visible(
            self.store.kv(),
            Space::Meta,
            &prefix,
            &end,
            &chain,
            &mut |base, v| {
                if let (Some(name), Ok(codec::Version::Live(_))) =
                    (keys::name_of(base), codec::decode::<Vec<u8>>(v))
                {
                    names.push(name.to_vec());
                }
                true
            },
        )?;
        names.reverse();
        let mut out = Vec::new();
        for n in names {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::TooBig);
        }
        let mut tx = self.begin()?;
        let mut inode = tx.inode(ino)?;
        let exists = self.xattr_in(&tx.chain, ino, name)?.is_some();
        if flags & XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoData);
        }
        tx.put_xattr(ino, name, codec::encode_live(&value.to_vec()));
        inode.ctime = now();
        tx.put_inode(ino, &inode);
        tx.commit()
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> FsResult<()> {
        check_xattr_name(name)?;
        let mut tx = self.begin()?;
        let mut inode = tx.inode(ino)?;
        if self.xattr_in(&tx.chain, ino, name)?.is_none() {
            return Err(FsError::NoData);
        }
        tx.put_xattr(ino, name, codec::tombstone());
        inode.ctime = now();
        tx.put_inode(ino, &inode);
        tx.commit()
    }
}
