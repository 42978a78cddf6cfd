//! Extended attributes.

use crate::codec;
use crate::error::{FsError, FsResult};
use crate::keys;
use crate::kv::Space;
use crate::store;

use super::{now, resolve, scan_visible, Fs, XATTR_VALUE_MAX};

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

impl Fs {
    fn xattr_in(&self, chain: &store::Chain, ino: u64, name: &[u8]) -> FsResult<Option<Vec<u8>>> {
        match resolve(self.store.kv(), Space::Meta, &keys::xattr(ino, name), chain)? {
            None => Ok(None),
            Some(v) => Ok(codec::decode::<Vec<u8>>(&v)?.live()),
        }
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_xattr_name(name)?;
        let chain = self.chain()?;
        self.inode_in(&chain, ino)?;
        self.xattr_in(&chain, ino, name)?.ok_or(FsError::NoData)
    }

    /// Attribute names, each followed by a NUL, as `listxattr(2)` returns them.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
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

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
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
        let e = tx.epoch();
        store::put_version(
            &mut tx.batch,
            Space::Meta,
            &keys::xattr(ino, name),
            e,
            codec::encode_live(&value.to_vec()),
        );
        inode.ctime = now();
        tx.put_inode(ino, &inode);
        tx.commit()
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        check_xattr_name(name)?;
        let mut tx = self.begin()?;
        let mut inode = tx.inode(ino)?;
        if self.xattr_in(&tx.chain, ino, name)?.is_none() {
            return Err(FsError::NoData);
        }
        let e = tx.epoch();
        store::put_version(
            &mut tx.batch,
            Space::Meta,
            &keys::xattr(ino, name),
            e,
            codec::tombstone(),
        );
        inode.ctime = now();
        tx.put_inode(ino, &inode);
        tx.commit()
    }
}
