//! The bytes of the segment layer: what the key-value store holds in place of a value (a
//! reference, or the value itself, escaped when needed) and what a segment file holds (a
//! header, then entries: a fixed header, the key the value was written for, the value).
//!
//! Everything is big-endian. A segment file never changes once written up to a given length:
//! entries are only appended, and a segment is deleted whole.

/// First byte of a stored value that is a reference into a segment.
const TAG_REF: u8 = 0xf5;
/// First byte of a value stored inline whose own first byte would read as a tag.
const TAG_ESCAPED: u8 = 0xf6;
/// Length of an encoded [`Ref`].
pub const REF_LEN: usize = 1 + 8 + 8 + 4 + 4;

/// Magic and format version at the start of every segment file.
pub const FILE_MAGIC: &[u8; 8] = b"SNFSSEG1";
/// File header: magic, segment id (u64).
pub const FILE_HEADER_LEN: u64 = 16;
/// Magic of every entry (a check that a parse is in step).
const ENTRY_MAGIC: u16 = 0x5345;
/// Entry header: magic u16, key length u16, value length u32, value CRC-32, key CRC-32.
pub const ENTRY_HEADER_LEN: u64 = 16;

/// Where a value lives: segment, offset of its first byte in the segment, length, CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
    pub crc: u32,
}

impl Ref {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(REF_LEN);
        v.push(TAG_REF);
        v.extend_from_slice(&self.seg.to_be_bytes());
        v.extend_from_slice(&self.off.to_be_bytes());
        v.extend_from_slice(&self.len.to_be_bytes());
        v.extend_from_slice(&self.crc.to_be_bytes());
        v
    }

    /// The end of the value in its segment.
    pub fn end(&self) -> u64 {
        self.off + self.len as u64
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// What a stored value is.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    /// The value itself.
    Inline(&'a [u8]),
    /// A reference to the value's bytes in a segment.
    Ref(Ref),
    /// A tagged value that does not parse (corruption).
    Bad,
}

pub fn parse(raw: &[u8]) -> Stored<'_> {
    match raw.first() {
        Some(&TAG_REF) if raw.len() == REF_LEN => Stored::Ref(Ref {
            seg: be_u64(&raw[1..]),
            off: be_u64(&raw[9..]),
            len: be_u32(&raw[17..]),
            crc: be_u32(&raw[21..]),
        }),
        Some(&TAG_REF) => Stored::Bad,
        Some(&TAG_ESCAPED) => Stored::Inline(&raw[1..]),
        _ => Stored::Inline(raw),
    }
}

/// The stored form of a value kept inline: itself, unless its first byte is a tag.
pub fn inline(value: Vec<u8>) -> Vec<u8> {
    match value.first() {
        Some(&TAG_REF) | Some(&TAG_ESCAPED) => {
            let mut v = Vec::with_capacity(value.len() + 1);
            v.push(TAG_ESCAPED);
            v.extend_from_slice(&value);
            v
        }
        _ => value,
    }
}

pub fn file_header(seg: u64) -> Vec<u8> {
    let mut v = FILE_MAGIC.to_vec();
    v.extend_from_slice(&seg.to_be_bytes());
    v
}

/// Checks a file header: the magic and that it names `seg`.
pub fn check_file_header(bytes: &[u8], seg: u64) -> bool {
    bytes.len() >= FILE_HEADER_LEN as usize
        && &bytes[..8] == FILE_MAGIC
        && be_u64(&bytes[8..16]) == seg
}

/// An entry's header for `key` and `value` (whose CRC-32 is `crc`).
pub fn entry_header(key: &[u8], value_len: u32, crc: u32) -> [u8; ENTRY_HEADER_LEN as usize] {
    let mut h = [0u8; ENTRY_HEADER_LEN as usize];
    h[0..2].copy_from_slice(&ENTRY_MAGIC.to_be_bytes());
    h[2..4].copy_from_slice(&(key.len() as u16).to_be_bytes());
    h[4..8].copy_from_slice(&value_len.to_be_bytes());
    h[8..12].copy_from_slice(&crc.to_be_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(key).to_be_bytes());
    h
}

/// A parsed entry header: key length, value length, value CRC-32, key CRC-32.
#[derive(Debug, Clone, Copy)]
pub struct EntryHeader {
    pub key_len: u16,
    pub value_len: u32,
    pub value_crc: u32,
    pub key_crc: u32,
}

impl EntryHeader {
    pub fn parse(h: &[u8]) -> Option<EntryHeader> {
        if h.len() < ENTRY_HEADER_LEN as usize || u16::from_be_bytes([h[0], h[1]]) != ENTRY_MAGIC {
            return None;
        }
        Some(EntryHeader {
            key_len: u16::from_be_bytes([h[2], h[3]]),
            value_len: be_u32(&h[4..]),
            value_crc: be_u32(&h[8..]),
            key_crc: be_u32(&h[12..]),
        })
    }

    /// Bytes of the whole entry.
    pub fn total(&self) -> u64 {
        ENTRY_HEADER_LEN + self.key_len as u64 + self.value_len as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_round_trip_and_inline_values_escape_tags() {
        let r = Ref {
            seg: 7,
            off: 1 << 40,
            len: 16384,
            crc: 0xdead_beef,
        };
        assert_eq!(parse(&r.encode()), Stored::Ref(r));
        for v in [
            vec![],
            vec![1u8, 2],
            vec![TAG_REF, 1],
            vec![TAG_ESCAPED],
            vec![0xff],
        ] {
            let stored = inline(v.clone());
            assert_eq!(parse(&stored), Stored::Inline(&v[..]), "{v:?}");
        }
        assert_eq!(parse(&[TAG_REF, 1, 2]), Stored::Bad);
    }

    #[test]
    fn entry_headers_parse() {
        let h = entry_header(b"key", 10, 42);
        let p = EntryHeader::parse(&h).expect("parses");
        assert_eq!((p.key_len, p.value_len, p.value_crc), (3, 10, 42));
        assert_eq!(p.key_crc, crc32fast::hash(b"key"));
        assert_eq!(p.total(), ENTRY_HEADER_LEN + 13);
        assert!(EntryHeader::parse(&[0u8; 16]).is_none());
        assert!(check_file_header(&file_header(9), 9));
        assert!(!check_file_header(&file_header(9), 8));
    }
}
