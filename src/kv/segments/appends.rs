//! Appending to the open segment: a batch queues its entries (`SegmentedKv::append`, which
//! gives each its reference and starts a new segment when the open one is full), held until
//! one vectored write (`SegmentedKv::flush_appends`): each value is moved in, never copied
//! into a staging buffer (at a sustained write's speed, the user-space copies of each block
//! took about a fifth of the FUSE thread's time, this one among them).

use std::fs::File;
use std::io::{self, IoSlice};

use std::sync::atomic::Ordering;

use super::format::{self, Ref};
use super::{SegmentedKv, State};
use crate::kv::{KvError, KvResult};

impl SegmentedKv {
    /// Appends the queued entries (starting at the open segment's length) to its file.
    pub(super) fn flush_appends(&self, st: &mut State, queued: &mut Appends) -> KvResult<()> {
        if queued.is_empty() {
            return Ok(());
        }
        let Some(open) = st.open.as_mut() else {
            return Err(KvError::Io("no open segment".into()));
        };
        let parts = queued.parts();
        let len = queued.len();
        self.store
            .append_parts(open.seg, open.len, &parts)
            .map_err(|e| super::io_err(&format!("writing segment {:016x}", open.seg), e))?;
        open.len += len;
        self.total_len.fetch_add(len, Ordering::Relaxed);
        if open.tail_whole && open.len - open.tail_start <= self.opts.journal_max {
            for p in &parts {
                open.tail.extend_from_slice(p);
            }
        } else {
            open.tail.clear();
            open.tail_whole = false;
        }
        queued.clear();
        if let Some(info) = st.segs.get_mut(&open.seg) {
            info.rec.len = open.len;
        }
        st.dirty.insert(open.seg);
        Ok(())
    }

    /// Queues `value` (for `key`) for appending; returns its reference.
    pub(super) fn append(
        &self,
        st: &mut State,
        queued: &mut Appends,
        key: &[u8],
        value: Vec<u8>,
    ) -> KvResult<Ref> {
        let entry = format::ENTRY_HEADER_LEN + key.len() as u64 + value.len() as u64;
        let start = match &st.open {
            Some(o) => o.len + queued.len(),
            None => 0,
        };
        if st.open.is_none()
            || (start + entry > self.opts.segment_bytes && start > format::FILE_HEADER_LEN)
        {
            self.flush_appends(st, queued)?;
            self.rotate(st)?;
        }
        let open = st
            .open
            .as_ref()
            .ok_or_else(|| KvError::Io("no open segment".into()))?;
        let at = open.len + queued.len();
        let crc = crc32fast::hash(&value);
        let len = u32::try_from(value.len())
            .map_err(|_| KvError::Io("value too large for a segment".into()))?;
        let key_len = u16::try_from(key.len())
            .map_err(|_| KvError::Io("key too long for a segment entry".into()))?;
        self.appended
            .fetch_add((key.len() + value.len()) as u64, Ordering::Relaxed);
        queued.push(&format::entry_header(key, len, crc), key, value);
        Ok(Ref {
            seg: open.seg,
            off: at + format::ENTRY_HEADER_LEN + key_len as u64,
            len,
            crc,
        })
    }
}

/// Entries waiting to be appended, in order: per entry its header and key, then its value.
#[derive(Default)]
pub(super) struct Appends {
    /// Entry headers and keys, back to back.
    heads: Vec<u8>,
    /// Per entry: where its header and key end in `heads`, and its value.
    entries: Vec<(usize, Vec<u8>)>,
    len: u64,
}

impl Appends {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes queued.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn push(
        &mut self,
        header: &[u8; format::ENTRY_HEADER_LEN as usize],
        key: &[u8],
        value: Vec<u8>,
    ) {
        self.heads.extend_from_slice(header);
        self.heads.extend_from_slice(key);
        self.len += (header.len() + key.len() + value.len()) as u64;
        self.entries.push((self.heads.len(), value));
    }

    /// The queued bytes, in order, as slices.
    pub fn parts(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(self.entries.len() * 2);
        let mut at = 0;
        for (end, value) in &self.entries {
            out.push(&self.heads[at..*end]);
            out.push(value.as_slice());
            at = *end;
        }
        out
    }

    pub fn clear(&mut self) {
        self.heads.clear();
        self.entries.clear();
        self.len = 0;
    }
}

/// `parts` without their first `n` bytes.
pub fn skip_bytes<'a>(parts: &[&'a [u8]], mut n: u64) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let len = p.len() as u64;
        if n >= len {
            n -= len;
        } else {
            out.push(&p[n as usize..]);
            n = 0;
        }
    }
    out
}

/// Writes `parts`, back to back, at `off` of `file`: `write_all_at` for a list of slices
/// (short writes and EINTR are retried).
pub fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut off: u64) -> io::Result<()> {
    let (mut idx, mut skip) = (0usize, 0usize);
    while idx < parts.len() {
        if skip >= parts[idx].len() {
            idx += 1;
            skip = 0;
            continue;
        }
        let iov: Vec<IoSlice<'_>> = std::iter::once(&parts[idx][skip..])
            .chain(parts[idx + 1..].iter().copied())
            .take(libc::UIO_MAXIOV as usize)
            .map(IoSlice::new)
            .collect();
        let at = i64::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut n = match nix::sys::uio::pwritev(file, &iov, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        off += n as u64;
        while n > 0 && idx < parts.len() {
            let left = parts[idx].len() - skip;
            if n >= left {
                n -= left;
                idx += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn queued_entries_are_written_in_order_and_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .expect("open");
        let mut a = Appends::default();
        let mut want = Vec::new();
        // More slices than one pwritev takes, some values empty.
        for i in 0..1500u32 {
            let header = [i as u8; format::ENTRY_HEADER_LEN as usize];
            let key = i.to_be_bytes();
            let value = vec![(i * 7) as u8; (i % 5) as usize * 100];
            want.extend_from_slice(&header);
            want.extend_from_slice(&key);
            want.extend_from_slice(&value);
            a.push(&header, &key, value);
        }
        assert_eq!(a.len(), want.len() as u64);
        let parts = a.parts();
        assert_eq!(parts.concat(), want);
        write_all_vectored_at(&file, &parts, 100).expect("write");
        let mut got = vec![0u8; want.len()];
        file.read_exact_at(&mut got, 100).expect("read back");
        assert_eq!(got, want);
        let skipped = skip_bytes(&parts, 1000);
        assert_eq!(skipped.concat(), want[1000..]);
        assert!(skip_bytes(&parts, want.len() as u64).is_empty());
        a.clear();
        assert!(a.is_empty());
        assert_eq!(a.len(), 0);
        assert!(a.parts().is_empty());
    }
}
