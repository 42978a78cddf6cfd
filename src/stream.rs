//! The snapshot stream: what `snapfs send` writes and `snapfs receive` reads (format in
//! ARCHITECTURE.md, "Snapshot streams"). A stream is a sequence of chunks, each one
//! self-checking:
//!
//! ```text
//! offset size
//!      0    4  magic "SNFS"
//!      4    1  kind: 1 header, 2 records, 3 trailer
//!      5    8  stream id (random, the same in every chunk of one stream)
//!     13    4  sequence number (the header is 0, then 1, 2, ...)
//!     17    4  payload length n (at most MAX_PAYLOAD)
//!     21    n  payload
//!   21+n    4  CRC-32 (IEEE) of bytes 0 .. 21+n
//! ```
//!
//! All integers are big-endian. The header's payload is the format version (u16) followed by
//! the postcard encoding of [`Header`]; a records chunk holds records `space u8 (0 meta,
//! 1 data) | key length u32 | key | value length u32 | value`; the trailer holds the number of
//! records (u64), of records chunks (u32) and of record payload bytes (u64). A reader checks
//! every chunk's checksum, kind, stream id and sequence number, and the trailer's counts, so a
//! truncated, corrupted, reordered or spliced stream is refused; nothing in this module knows
//! what the records mean (that is `store/transfer.rs`).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::codec::Ts;
use crate::kv::Space;

/// Format version written by this build; a reader refuses newer ones. Version 2: an
/// incremental stream carries every block the snapshot sees of a data id the base sees as
/// gone and the snapshot does not (its receiver drops the base's other blocks of it);
/// version 1 streams are still read (their receiver keeps the base's blocks).
pub const FORMAT: u16 = 2;
const MAGIC: &[u8; 4] = b"SNFS";
const HEAD_LEN: usize = 21;
/// Largest payload of one chunk.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// A records chunk is closed once its payload reaches this size.
const CHUNK_TARGET: usize = 4 << 20;

const KIND_HEADER: u8 = 1;
const KIND_RECORDS: u8 = 2;
const KIND_TRAILER: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("not a snapfs snapshot stream (bad magic)")]
    NotAStream,
    #[error("the stream ends early (chunk {0} is incomplete or missing): truncated")]
    Truncated(u32),
    #[error("chunk {0} of the stream is corrupted (checksum mismatch)")]
    Checksum(u32),
    #[error("chunk out of order: expected chunk {expected}, found {found}")]
    OutOfOrder { expected: u32, found: u32 },
    #[error("chunk {0} belongs to another stream")]
    Foreign(u32),
    #[error("stream format version {0} is newer than this snapfs reads ({FORMAT}): upgrade the receiver")]
    NewerFormat(u16),
    #[error("malformed stream: {0}")]
    Malformed(String),
    #[error("stream I/O: {0}")]
    Io(#[from] io::Error),
}

pub type StreamResult<T> = Result<T, StreamError>;

/// A snapshot as the stream carries it: the sender's name and times.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub name: String,
    pub alias: Option<String>,
    pub created_at: Ts,
    pub expires_at: Option<Ts>,
    pub last_used_at: Option<Ts>,
}

/// Which snapshot an incremental stream builds on (the receiver must hold it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    pub name: String,
    pub created_at: Ts,
}

/// What the stream is: the first chunk.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Block size of the sending store (blocks travel as they are stored).
    pub block_size: u32,
    /// The sender's next inode / data id: every id in the stream is below it.
    pub next_id: u64,
    /// Name of the container the snapshot was taken of.
    pub container: String,
    pub snapshot: SnapshotMeta,
    /// `None`: a full stream; else the snapshot the records apply to.
    pub base: Option<BaseRef>,
    /// What the records weigh, as the sender estimates it before sending (for progress).
    pub total_bytes: u64,
    /// Set when the stream continues a receive that was cut: its records start after this
    /// key (space: 0 meta, 1 data; the key), the last one the receiver holds.
    pub resume_after: Option<(u8, Vec<u8>)>,
}

/// One versioned key with the value visible in the sent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub space: Space,
    /// The key without its epoch.
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// How far a send or receive got, readable while it runs: bytes of records (keys and
/// values) done, and the total the stream's header announced (an estimate).
#[derive(Debug, Default)]
pub struct Progress {
    pub done: std::sync::atomic::AtomicU64,
    pub total: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_total(&self, n: u64) {
        self.total.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// (done, total).
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.done.load(Relaxed), self.total.load(Relaxed))
    }
}

/// Totals a complete stream carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    pub chunks: u32,
    pub bytes: u64,
}

/// A space as the stream writes it.
pub fn space_byte(s: Space) -> u8 {
    match s {
        Space::Meta => 0,
        Space::Data => 1,
        Space::Segments => 2,
    }
}

fn random_id() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Writes a stream: the header at once, records as they come, the trailer at
/// [`StreamWriter::finish`].
pub struct StreamWriter<W: Write> {
    out: W,
    id: u64,
    seq: u32,
    buf: Vec<u8>,
    totals: Totals,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(out: W, header: &Header) -> StreamResult<StreamWriter<W>> {
        let mut w = StreamWriter {
            out,
            id: random_id(),
            seq: 0,
            buf: Vec::with_capacity(CHUNK_TARGET + 64 * 1024),
            totals: Totals::default(),
        };
        let body = postcard::to_allocvec(header)
            .map_err(|e| StreamError::Malformed(format!("cannot encode the header: {e}")))?;
        let mut payload = FORMAT.to_be_bytes().to_vec();
        payload.extend_from_slice(&body);
        w.chunk(KIND_HEADER, &payload)?;
        Ok(w)
    }

    fn chunk(&mut self, kind: u8, payload: &[u8]) -> StreamResult<()> {
        let mut head = [0u8; HEAD_LEN];
        head[..4].copy_from_slice(MAGIC);
        head[4] = kind;
        head[5..13].copy_from_slice(&self.id.to_be_bytes());
        head[13..17].copy_from_slice(&self.seq.to_be_bytes());
        head[17..21].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(payload);
        self.out.write_all(&head)?;
        self.out.write_all(payload)?;
        self.out.write_all(&crc.finalize().to_be_bytes())?;
        self.seq += 1;
        Ok(())
    }

    /// Adds one record; a chunk is written once enough records are buffered.
    pub fn record(&mut self, space: Space, key: &[u8], value: &[u8]) -> StreamResult<()> {
        let len = 1 + 4 + key.len() + 4 + value.len();
        if len > MAX_PAYLOAD {
            return Err(StreamError::Malformed(format!(
                "a record of {len} bytes does not fit in a chunk"
            )));
        }
        if !self.buf.is_empty() && self.buf.len() + len > MAX_PAYLOAD {
            self.flush_records()?;
        }
        self.buf.push(space_byte(space));
        self.buf
            .extend_from_slice(&(key.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.totals.records += 1;
        if self.buf.len() >= CHUNK_TARGET {
            self.flush_records()?;
        }
        Ok(())
    }

    fn flush_records(&mut self) -> StreamResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        self.chunk(KIND_RECORDS, &buf)?;
        self.totals.chunks += 1;
        self.totals.bytes += buf.len() as u64;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last records and the trailer; returns the totals and the writer.
    pub fn finish(mut self) -> StreamResult<(Totals, W)> {
        self.flush_records()?;
        let t = self.totals;
        let mut payload = Vec::with_capacity(20);
        payload.extend_from_slice(&t.records.to_be_bytes());
        payload.extend_from_slice(&t.chunks.to_be_bytes());
        payload.extend_from_slice(&t.bytes.to_be_bytes());
        self.chunk(KIND_TRAILER, &payload)?;
        self.out.flush()?;
        Ok((t, self.out))
    }
}

/// The header of a stream from its first bytes, if they hold the whole header chunk (for a
/// progress bar; nothing is checked beyond what decoding needs).
pub fn peek_header(prefix: &[u8]) -> Option<Header> {
    let mut input = prefix;
    let (kind, _, seq, payload) = read_chunk(&mut input, 0).ok()??;
    if kind != KIND_HEADER || seq != 0 {
        return None;
    }
    let (format, body) = payload.split_first_chunk::<2>()?;
    if !(1..=FORMAT).contains(&u16::from_be_bytes(*format)) {
        return None;
    }
    postcard::from_bytes(body).ok()
}

/// Reads a stream chunk by chunk, checking each before handing out its records.
pub struct StreamReader<R: Read> {
    input: R,
    /// The format version the stream was written in.
    format: u16,
    id: u64,
    next_seq: u32,
    totals: Totals,
    done: bool,
}

/// Reads until `buf` is full or the input ends; how many bytes came.
fn read_upto(r: &mut impl Read, buf: &mut [u8]) -> StreamResult<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(at)
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the input ends before the first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8], seq: u32) -> StreamResult<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            Ok(0) => return Err(StreamError::Truncated(seq)),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header chunk.
    pub fn open(mut input: R) -> StreamResult<(StreamReader<R>, Header)> {
        let (kind, id, seq, payload) = match read_chunk(&mut input, 0)? {
            Some(c) => c,
            None => return Err(StreamError::Truncated(0)),
        };
        if seq != 0 || kind != KIND_HEADER {
            return Err(StreamError::Malformed(
                "the stream does not start with its header".into(),
            ));
        }
        let (format, body) = match payload.split_first_chunk::<2>() {
            Some((f, body)) => (u16::from_be_bytes(*f), body),
            None => return Err(StreamError::Malformed("empty header".into())),
        };
        if format > FORMAT {
            return Err(StreamError::NewerFormat(format));
        }
        if format == 0 {
            return Err(StreamError::Malformed("format version 0".into()));
        }
        let header: Header = postcard::from_bytes(body)
            .map_err(|e| StreamError::Malformed(format!("header does not decode: {e}")))?;
        let reader = StreamReader {
            input,
            format,
            id,
            next_seq: 1,
            totals: Totals::default(),
            done: false,
        };
        Ok((reader, header))
    }

    /// The format version the stream was written in (at most [`FORMAT`]).
    pub fn format(&self) -> u16 {
        self.format
    }

    /// The records of the next chunk; `None` once the trailer has been read and its counts
    /// match what came before it.
    pub fn next_chunk(&mut self) -> StreamResult<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        let seq = self.next_seq;
        let (kind, id, found, payload) = match read_chunk(&mut self.input, seq)? {
            Some(c) => c,
            None => return Err(StreamError::Truncated(seq)),
        };
        if id != self.id {
            return Err(StreamError::Foreign(found));
        }
        if found != seq {
            return Err(StreamError::OutOfOrder {
                expected: seq,
                found,
            });
        }
        self.next_seq += 1;
        match kind {
            KIND_RECORDS => {
                let records = parse_records(&payload)?;
                self.totals.records += records.len() as u64;
                self.totals.chunks += 1;
                self.totals.bytes += payload.len() as u64;
                Ok(Some(records))
            }
            KIND_TRAILER => {
                let t = parse_trailer(&payload)?;
                if t != self.totals {
                    return Err(StreamError::Malformed(format!(
                        "the trailer counts {} records in {} chunks, the stream held {} in {}",
                        t.records, t.chunks, self.totals.records, self.totals.chunks
                    )));
                }
                // Nothing may follow the trailer.
                let mut extra = [0u8; 1];
                if read_full(&mut self.input, &mut extra, seq + 1)? {
                    return Err(StreamError::Malformed("data after the trailer".into()));
                }
                self.done = true;
                Ok(None)
            }
            KIND_HEADER => Err(StreamError::Malformed(format!(
                "a second header at chunk {seq}"
            ))),
            k => Err(StreamError::Malformed(format!("unknown chunk kind {k}"))),
        }
    }

    /// What the chunks read so far held.
    pub fn totals(&self) -> Totals {
        self.totals
    }
}

/// One chunk as read: (kind, stream id, sequence number, payload).
type Chunk = (u8, u64, u32, Vec<u8>);

/// Reads one chunk, checksum verified; `None` at a clean end of input.
fn read_chunk(r: &mut impl Read, seq: u32) -> StreamResult<Option<Chunk>> {
    let mut head = [0u8; HEAD_LEN];
    // The magic first, so that a short input that is no stream is called that.
    let got = read_upto(r, &mut head[..4])?;
    if got == 0 {
        return Ok(None);
    }
    if seq == 0 && !MAGIC.starts_with(&head[..got]) {
        return Err(StreamError::NotAStream);
    }
    if got < 4 || !read_full(r, &mut head[4..], seq)? {
        return Err(StreamError::Truncated(seq));
    }
    if &head[..4] != MAGIC {
        return Err(if seq == 0 {
            StreamError::NotAStream
        } else {
            StreamError::Checksum(seq)
        });
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let len = be32(&head[17..21]) as usize;
    if len > MAX_PAYLOAD {
        return Err(StreamError::Checksum(seq));
    }
    let mut payload = vec![0u8; len];
    let mut crc = [0u8; 4];
    if !read_full(r, &mut payload, seq)? && len > 0 {
        return Err(StreamError::Truncated(seq));
    }
    if !read_full(r, &mut crc, seq)? {
        return Err(StreamError::Truncated(seq));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&head);
    h.update(&payload);
    if h.finalize() != u32::from_be_bytes(crc) {
        return Err(StreamError::Checksum(seq));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[5..13]);
    Ok(Some((
        head[4],
        u64::from_be_bytes(id),
        be32(&head[13..17]),
        payload,
    )))
}

fn parse_records(mut p: &[u8]) -> StreamResult<Vec<Record>> {
    let bad = || StreamError::Malformed("a record runs past its chunk".into());
    let mut out = Vec::new();
    while let Some((&space, rest)) = p.split_first() {
        let space = match space {
            0 => Space::Meta,
            1 => Space::Data,
            s => return Err(StreamError::Malformed(format!("unknown space {s}"))),
        };
        let (klen, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let klen = u32::from_be_bytes(*klen) as usize;
        let (key, rest) = rest.split_at_checked(klen).ok_or_else(bad)?;
        let (vlen, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let vlen = u32::from_be_bytes(*vlen) as usize;
        let (value, rest) = rest.split_at_checked(vlen).ok_or_else(bad)?;
        out.push(Record {
            space,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        p = rest;
    }
    Ok(out)
}

fn parse_trailer(p: &[u8]) -> StreamResult<Totals> {
    if p.len() != 20 {
        return Err(StreamError::Malformed("trailer of the wrong size".into()));
    }
    let mut r = [0u8; 8];
    r.copy_from_slice(&p[..8]);
    let mut c = [0u8; 4];
    c.copy_from_slice(&p[8..12]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[12..20]);
    Ok(Totals {
        records: u64::from_be_bytes(r),
        chunks: u32::from_be_bytes(c),
        bytes: u64::from_be_bytes(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            block_size: 16384,
            next_id: 100,
            container: "web".into(),
            snapshot: SnapshotMeta {
                name: "snap-20261206-100000".into(),
                alias: Some("before".into()),
                created_at: Ts { secs: 5, nsecs: 6 },
                expires_at: None,
                last_used_at: None,
            },
            base: None,
            total_bytes: 20 << 20,
            resume_after: Some((1, b"key".to_vec())),
        }
    }

    /// A stream of `n` records, small chunks forced by large values.
    fn stream(n: usize, value_len: usize) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), &header()).expect("header");
        for i in 0..n {
            let key = format!("k{i:05}");
            w.record(Space::Data, key.as_bytes(), &vec![i as u8; value_len])
                .expect("record");
        }
        w.finish().expect("finish").1
    }

    fn read_all(bytes: &[u8]) -> StreamResult<(Header, Vec<Record>)> {
        let (mut r, h) = StreamReader::open(bytes)?;
        let mut all = Vec::new();
        while let Some(c) = r.next_chunk()? {
            all.extend(c);
        }
        Ok((h, all))
    }

    /// Offsets of every chunk in a stream.
    fn chunk_starts(bytes: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            out.push(at);
            let len = u32::from_be_bytes(bytes[at + 17..at + 21].try_into().unwrap()) as usize;
            at += HEAD_LEN + len + 4;
        }
        out
    }

    #[test]
    fn records_round_trip_across_chunks() {
        let bytes = stream(20, 1 << 20);
        assert!(chunk_starts(&bytes).len() >= 6, "several records chunks");
        let (h, recs) = read_all(&bytes).expect("read");
        assert_eq!(h, header());
        assert_eq!(recs.len(), 20);
        assert_eq!(recs[7].key, b"k00007");
        assert_eq!(recs[7].value, vec![7u8; 1 << 20]);
    }

    #[test]
    fn the_header_can_be_peeked_from_the_first_bytes() {
        let bytes = stream(3, 1000);
        assert_eq!(peek_header(&bytes), Some(header()));
        assert_eq!(peek_header(&bytes[..10]), None);
        assert_eq!(peek_header(b"junk"), None);
    }

    #[test]
    fn an_empty_stream_has_header_and_trailer_only() {
        let bytes = stream(0, 0);
        assert_eq!(chunk_starts(&bytes).len(), 2);
        let (_, recs) = read_all(&bytes).expect("read");
        assert!(recs.is_empty());
    }

    #[test]
    fn truncation_anywhere_is_refused() {
        let bytes = stream(12, 1 << 20);
        for cut in [
            0,
            10,
            21,
            500,
            bytes.len() / 2,
            bytes.len() - 25,
            bytes.len() - 1,
        ] {
            let err = read_all(&bytes[..cut]).expect_err("truncated");
            assert!(
                matches!(err, StreamError::Truncated(_)),
                "cut at {cut}: {err}"
            );
        }
        // Cut exactly at a chunk boundary before the trailer: the trailer is missing.
        let starts = chunk_starts(&bytes);
        let last = *starts.last().unwrap();
        assert!(matches!(
            read_all(&bytes[..last]),
            Err(StreamError::Truncated(_))
        ));
    }

    #[test]
    fn a_flipped_bit_is_refused() {
        let bytes = stream(12, 1 << 20);
        for at in [30, bytes.len() / 2 + 12_345, bytes.len() - 3] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let err = read_all(&bad).expect_err("corrupted");
            assert!(matches!(err, StreamError::Checksum(_)), "at {at}: {err}");
        }
    }

    #[test]
    fn reordered_dropped_and_foreign_chunks_are_refused() {
        let bytes = stream(12, 1 << 20);
        let s = chunk_starts(&bytes);
        assert!(s.len() >= 5);
        let piece = |i: usize| &bytes[s[i]..s.get(i + 1).copied().unwrap_or(bytes.len())];
        // Swap chunks 1 and 2.
        let mut swapped = piece(0).to_vec();
        swapped.extend_from_slice(piece(2));
        swapped.extend_from_slice(piece(1));
        for i in 3..s.len() {
            swapped.extend_from_slice(piece(i));
        }
        assert!(matches!(
            read_all(&swapped),
            Err(StreamError::OutOfOrder {
                expected: 1,
                found: 2
            })
        ));
        // Drop chunk 2.
        let mut dropped = Vec::new();
        for i in (0..s.len()).filter(|&i| i != 2) {
            dropped.extend_from_slice(piece(i));
        }
        assert!(matches!(
            read_all(&dropped),
            Err(StreamError::OutOfOrder { .. })
        ));
        // Chunk 2 of another stream of the same content (another random id).
        let other = stream(12, 1 << 20);
        let o = chunk_starts(&other);
        let mut spliced = Vec::new();
        for i in 0..s.len() {
            if i == 2 {
                spliced.extend_from_slice(&other[o[2]..o[3]]);
            } else {
                spliced.extend_from_slice(piece(i));
            }
        }
        assert!(matches!(read_all(&spliced), Err(StreamError::Foreign(2))));
        // Anything after the trailer.
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(read_all(&extra), Err(StreamError::Malformed(_))));
    }

    #[test]
    fn a_newer_format_and_foreign_bytes_are_refused() {
        let mut bytes = stream(1, 10);
        for junk in [&b"hello, this is not a stream at all"[..], b"GIF89a", b"x"] {
            assert!(
                matches!(read_all(junk), Err(StreamError::NotAStream)),
                "{junk:?}"
            );
        }
        // Rewrite the header's format to the next version and fix its checksum.
        bytes[HEAD_LEN..HEAD_LEN + 2].copy_from_slice(&(FORMAT + 1).to_be_bytes());
        let len = u32::from_be_bytes(bytes[17..21].try_into().unwrap()) as usize;
        let crc = crc32fast::hash(&bytes[..HEAD_LEN + len]);
        bytes[HEAD_LEN + len..HEAD_LEN + len + 4].copy_from_slice(&crc.to_be_bytes());
        let err = read_all(&bytes).expect_err("newer");
        assert!(
            matches!(err, StreamError::NewerFormat(n) if n == FORMAT + 1),
            "{err}"
        );
        assert!(err.to_string().contains("newer"));
        // A version 1 stream is still read, and says so.
        bytes[HEAD_LEN..HEAD_LEN + 2].copy_from_slice(&1u16.to_be_bytes());
        let crc = crc32fast::hash(&bytes[..HEAD_LEN + len]);
        bytes[HEAD_LEN + len..HEAD_LEN + len + 4].copy_from_slice(&crc.to_be_bytes());
        let (r, _) = StreamReader::open(&bytes[..]).expect("version 1");
        assert_eq!(r.format(), 1);
        assert_eq!(peek_header(&bytes), Some(header()));
        let current = stream(1, 10);
        let (r, _) = StreamReader::open(&current[..]).expect("current");
        assert_eq!(r.format(), FORMAT);
    }
}
