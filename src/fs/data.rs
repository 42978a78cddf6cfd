//! File contents: blocks, read, write, truncate, hole punching, SEEK_DATA/SEEK_HOLE, copies.
//!
//! Invariant: no visible block holds bytes at or past its file's size, so growing a file never
//! needs to clear anything, and `alloc` is the sum of the visible blocks' lengths.

use crate::codec::{self, Inode, Kind, Version};
use crate::error::{FsError, FsResult};
use crate::ids::{DataId, Epoch, Ino};
use crate::keys;
use crate::kv::Space;
use crate::store::{self, Chain};

use super::{now, scan_visible, Fh, Fs, Tx, MAX_FILE_SIZE};

/// fallocate modes we support.
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;

impl Fs {
    /// Calls `f(index, bytes)` for every visible, non-hole block of `data_id` with index in
    /// `[first, last]`, in descending index order.
    pub(super) fn visible_blocks(
        &self,
        chain: &Chain,
        data_id: DataId,
        first: u64,
        last: u64,
        f: &mut dyn FnMut(u64, &[u8]),
    ) -> FsResult<()> {
        let start = keys::versioned(&keys::block(data_id, first), Epoch::new(0));
        let end = match last.checked_add(1) {
            Some(n) => keys::versioned(&keys::block(data_id, n), Epoch::new(0)),
            None => crate::kv::prefix_end(&keys::block_prefix(data_id)),
        };
        let mut err = None;
        scan_visible(
            self.store.kv(),
            Space::Data,
            &start,
            &end,
            chain,
            &mut |base, v| {
                let Some((_, idx)) = keys::split_block(base) else {
                    return true;
                };
                match codec::decode_block(v) {
                    Ok(Version::Live(bytes)) => f(idx, bytes),
                    Ok(Version::Tombstone) => {}
                    Err(e) => {
                        err = Some(FsError::from(e));
                        return false;
                    }
                }
                true
            },
        )?;
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// For checking: (end of the last visible block's bytes, total visible bytes) of a file.
    pub fn block_extent(&self, ino: Ino) -> FsResult<(u64, u64)> {
        let chain = self.chain()?;
        let inode = self.inode_in(&chain, ino)?;
        let bs = self.block_size() as u64;
        let (mut end, mut total) = (0u64, 0u64);
        self.visible_blocks(&chain, inode.data_id, 0, u64::MAX, &mut |idx, bytes| {
            end = end.max(idx * bs + bytes.len() as u64);
            total += bytes.len() as u64;
        })?;
        Ok((end, total))
    }

    /// One block's visible bytes (a point read of its versions: see [`store::resolve`]).
    fn block(&self, chain: &Chain, data_id: DataId, idx: u64) -> FsResult<Option<Vec<u8>>> {
        let base = keys::block(data_id, idx);
        match store::resolve(self.store.kv(), Space::Data, &base, chain)? {
            None => Ok(None),
            Some(v) => match codec::decode_block(&v)? {
                Version::Live(bytes) => Ok(Some(bytes.to_vec())),
                Version::Tombstone => Ok(None),
            },
        }
    }

    fn check_file(inode: &Inode) -> FsResult<()> {
        match inode.kind {
            Kind::File => Ok(()),
            Kind::Dir => Err(FsError::IsDir),
            _ => Err(FsError::Invalid("not a regular file")),
        }
    }

    /// Reads up to `size` bytes at `offset`; holes read as zeros.
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let chain = self.chain()?;
        let inode = self.inode_in(&chain, ino)?;
        Self::check_file(&inode)?;
        if offset >= inode.size || size == 0 {
            return Ok(Vec::new());
        }
        let end = inode.size.min(offset.saturating_add(size as u64));
        let bs = self.block_size() as u64;
        let mut out = vec![0u8; (end - offset) as usize];
        let (first, last) = (offset / bs, (end - 1) / bs);
        self.visible_blocks(&chain, inode.data_id, first, last, &mut |idx, bytes| {
            let bstart = idx * bs;
            let lo = offset.max(bstart);
            let hi = end.min(bstart + bytes.len() as u64);
            if lo < hi {
                let src = &bytes[(lo - bstart) as usize..(hi - bstart) as usize];
                out[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(src);
            }
        })?;
        Ok(out)
    }

    /// Writes `data` at `offset` (at the end of file for an `O_APPEND` handle). Returns the
    /// number of bytes written. A write drops file capabilities, and with `kill_priv` (the
    /// writer may not keep them: no `CAP_FSETID`) the setuid/setgid bits.
    pub fn write(
        &self,
        ino: Ino,
        fh: Option<Fh>,
        offset: u64,
        data: &[u8],
        kill_priv: bool,
    ) -> FsResult<u32> {
        self.write_at(ino, fh, offset, data, kill_priv, true)
    }

    /// [`Fs::write`] of pages the kernel's writeback cache writes back: the kernel owns the
    /// file's mtime and ctime under that cache (it stamped them when the page was dirtied
    /// and sends them in a SETATTR of its own, which may be served before this write), so
    /// the write leaves them alone. Stamping them here would let a late write-back
    /// overwrite the times `stat` showed with the later time of its arrival.
    pub fn write_back(
        &self,
        ino: Ino,
        fh: Option<Fh>,
        offset: u64,
        data: &[u8],
        kill_priv: bool,
    ) -> FsResult<u32> {
        self.write_at(ino, fh, offset, data, kill_priv, false)
    }

    fn write_at(
        &self,
        ino: Ino,
        fh: Option<Fh>,
        offset: u64,
        data: &[u8],
        kill_priv: bool,
        stamp_times: bool,
    ) -> FsResult<u32> {
        let mut tx = self.begin()?;
        let mut inode = tx.inode(ino)?;
        Self::check_file(&inode)?;
        let offset = match fh {
            Some(fh) if self.handle_append(fh) => inode.size,
            _ => offset,
        };
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        if !data.is_empty() {
            self.store.check_space(data.len() as u64)?;
            self.drop_privileges(&mut tx, ino, &mut inode, kill_priv)?;
            self.write_blocks(&mut tx, &mut inode, offset, data)?;
            inode.size = inode.size.max(end);
        }
        if stamp_times {
            let t = now();
            inode.mtime = t;
            inode.ctime = t;
        }
        tx.put_inode(ino, &inode);
        tx.commit()?;
        Ok(data.len() as u32)
    }

    fn write_blocks(
        &self,
        tx: &mut Tx<'_>,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
    ) -> FsResult<()> {
        let bs = self.block_size() as u64;
        let end = offset + data.len() as u64;
        let e = tx.epoch();
        let mut idx = offset / bs;
        // Blocks at or past EOF hold nothing (see the module invariant): no read needed.
        // Below EOF, when a write spans several blocks, one look at the keys of all of them
        // may tell that none was ever written, in any epoch (a hole, fallocated space): then
        // no old block is read (a 1 MiB write into fallocated space read 64 blocks, a point
        // read and a scan each: 15% of the serving thread's time).
        let below_eof = inode.size.min(end).saturating_sub(idx * bs).div_ceil(bs);
        let none_stored = below_eof > 1
            && !self.store.kv().any_key_in(
                Space::Data,
                &keys::block(inode.data_id, idx),
                &keys::block(inode.data_id, idx + below_eof),
            )?;
        while idx * bs < end {
            let bstart = idx * bs;
            let lo = offset.max(bstart) - bstart;
            let hi = end.min(bstart + bs) - bstart;
            let src = &data[(bstart + lo - offset) as usize..(bstart + hi - offset) as usize];
            let old = if !none_stored && bstart < inode.size {
                self.block(&tx.chain, inode.data_id, idx)?
            } else {
                None
            };
            let old_len = old.as_ref().map_or(0, |b| b.len());
            // A write that covers the whole block (the common sequential case) is encoded
            // straight from `data`: no block-sized copy first.
            let merged = match old {
                Some(mut b) if !(lo == 0 && hi as usize >= b.len()) => {
                    if b.len() < hi as usize {
                        b.resize(hi as usize, 0);
                    }
                    b[lo as usize..hi as usize].copy_from_slice(src);
                    Some(b)
                }
                _ if lo == 0 => None,
                _ => {
                    let mut b = vec![0u8; hi as usize];
                    b[lo as usize..].copy_from_slice(src);
                    Some(b)
                }
            };
            let block = merged.as_deref().unwrap_or(src);
            inode.alloc = (inode.alloc + block.len() as u64).saturating_sub(old_len as u64);
            store::put_version(
                &mut tx.batch,
                Space::Data,
                &keys::block(inode.data_id, idx),
                e,
                codec::encode_block(block),
            );
            idx += 1;
        }
        Ok(())
    }

    /// Removes (as of this epoch) the bytes in `[from, to)` of the file: whole blocks become
    /// holes, partial blocks are zeroed (or cut when the range reaches their end).
    pub(super) fn clear_range(
        &self,
        tx: &mut Tx<'_>,
        inode: &mut Inode,
        from: u64,
        to: u64,
    ) -> FsResult<()> {
        if from >= to {
            return Ok(());
        }
        let bs = self.block_size() as u64;
        let e = tx.epoch();
        let mut found = Vec::new();
        self.visible_blocks(
            &tx.chain,
            inode.data_id,
            from / bs,
            (to - 1) / bs,
            &mut |i, b| found.push((i, b.to_vec())),
        )?;
        for (idx, mut bytes) in found {
            let bstart = idx * bs;
            let lo = from.max(bstart) - bstart;
            let hi = (to.min(bstart + bs) - bstart).min(bytes.len() as u64);
            if lo >= hi {
                continue;
            }
            let old_len = bytes.len() as u64;
            if hi == old_len {
                bytes.truncate(lo as usize);
            } else {
                bytes[lo as usize..hi as usize].fill(0);
            }
            let base = keys::block(inode.data_id, idx);
            if bytes.iter().all(|b| *b == 0) {
                bytes.clear(); // all zeros: a hole reads the same and takes no space
            }
            let value = if bytes.is_empty() {
                codec::tombstone()
            } else {
                codec::encode_block(&bytes)
            };
            inode.alloc = inode.alloc.saturating_sub(old_len) + bytes.len() as u64;
            store::put_version(&mut tx.batch, Space::Data, &base, e, value);
        }
        Ok(())
    }

    /// Changes a file's size inside `tx` (truncate down clears the cut bytes).
    pub(super) fn set_size(&self, tx: &mut Tx<'_>, inode: &mut Inode, size: u64) -> FsResult<()> {
        if size < inode.size {
            if size == 0 {
                // O(1) in what ancestors hold: the file gets fresh block storage; only this
                // head's own blocks of the old storage are freed.
                tx.drop_data(inode.data_id)?;
                inode.data_id = tx.alloc_data_id();
                inode.alloc = 0;
            } else {
                self.clear_range(tx, inode, size, inode.size)?;
            }
        }
        inode.size = size;
        Ok(())
    }

    /// `fallocate`: mode 0 and KEEP_SIZE reserve nothing (copy-on-write cannot promise space)
    /// but extend the size; PUNCH_HOLE|KEEP_SIZE deallocates. Anything else: EOPNOTSUPP.
    /// `fallocate(2)` modes 0, KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE. Like a write, it drops file
    /// capabilities and with `kill_priv` the setuid/setgid bits.
    pub fn fallocate(
        &self,
        ino: Ino,
        offset: u64,
        len: u64,
        mode: i32,
        kill_priv: bool,
    ) -> FsResult<()> {
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        if len == 0 {
            return Err(FsError::Invalid("zero length"));
        }
        if ![
            0,
            FALLOC_FL_KEEP_SIZE,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
        ]
        .contains(&mode)
        {
            return Err(FsError::NotSupported);
        }
        let mut tx = self.begin()?;
        let mut inode = tx.inode(ino)?;
        Self::check_file(&inode)?;
        self.drop_privileges(&mut tx, ino, &mut inode, kill_priv)?;
        match mode {
            0 => {
                if end > inode.size {
                    inode.size = end;
                    inode.ctime = now();
                }
            }
            FALLOC_FL_KEEP_SIZE => {}
            _ => {
                let to = end.min(inode.size);
                self.clear_range(&mut tx, &mut inode, offset, to)?;
                let t = now();
                inode.mtime = t;
                inode.ctime = t;
            }
        }
        tx.put_inode(ino, &inode);
        tx.commit()
    }

    /// `lseek` with SEEK_DATA (3) or SEEK_HOLE (4); other whences are the kernel's business.
    pub fn lseek(&self, ino: Ino, offset: u64, whence: i32) -> FsResult<u64> {
        let chain = self.chain()?;
        let inode = self.inode_in(&chain, ino)?;
        Self::check_file(&inode)?;
        if offset >= inode.size {
            return Err(FsError::NoDataAfter);
        }
        let bs = self.block_size() as u64;
        let first = offset / bs;
        let last = (inode.size - 1) / bs;
        // Data extents as (start, end) in ascending order.
        let mut extents = Vec::new();
        self.visible_blocks(&chain, inode.data_id, first, last, &mut |i, b| {
            extents.push((i * bs, i * bs + b.len() as u64))
        })?;
        extents.reverse();
        match whence {
            libc::SEEK_DATA => extents
                .iter()
                .find(|(_, e)| *e > offset)
                .map(|(s, _)| (*s).max(offset))
                .ok_or(FsError::NoDataAfter),
            libc::SEEK_HOLE => {
                let mut pos = offset;
                for (s, e) in extents {
                    if e <= pos {
                        continue;
                    }
                    if s > pos {
                        break;
                    }
                    pos = e;
                }
                Ok(pos.min(inode.size))
            }
            _ => Err(FsError::Invalid("whence")),
        }
    }

    /// Copies `len` bytes between files (same store); returns the bytes copied.
    pub fn copy_file_range(
        &self,
        ino_in: Ino,
        off_in: u64,
        ino_out: Ino,
        off_out: u64,
        len: u64,
        kill_priv: bool,
    ) -> FsResult<u64> {
        const CHUNK: u64 = 1 << 20;
        let mut done = 0u64;
        while done < len {
            let n = CHUNK.min(len - done) as u32;
            let buf = self.read(ino_in, off_in.saturating_add(done), n)?;
            if buf.is_empty() {
                break;
            }
            self.write(ino_out, None, off_out.saturating_add(done), &buf, kill_priv)?;
            done += buf.len() as u64;
            if (buf.len() as u32) < n {
                break;
            }
        }
        Ok(done)
    }
}
