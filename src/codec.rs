//! On-disk values. Every value starts with a format-version byte; versioned values then carry a
//! kind byte (live or tombstone). Metadata bodies are postcard; block bodies are raw bytes.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ids::{DataId, Ino};

/// Format version of every value written by this build.
pub const VALUE_VERSION: u8 = 1;
const KIND_TOMBSTONE: u8 = 0;
const KIND_LIVE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("value has unsupported format version {0}")]
    Version(u8),
    #[error("value is truncated or malformed")]
    Malformed,
    #[error("block checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
}

/// One version of an object: live data or a tombstone (deleted in this epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version<T> {
    Tombstone,
    Live(T),
}

impl<T> Version<T> {
    pub fn live(self) -> Option<T> {
        match self {
            Version::Live(v) => Some(v),
            Version::Tombstone => None,
        }
    }
}

pub fn tombstone() -> Vec<u8> {
    vec![VALUE_VERSION, KIND_TOMBSTONE]
}

/// Is this stored value a tombstone (any value type)?
pub fn is_tombstone(bytes: &[u8]) -> bool {
    matches!(header(bytes), Ok((KIND_TOMBSTONE, _)))
}

fn header(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    match bytes {
        [VALUE_VERSION, kind, rest @ ..] => Ok((*kind, rest)),
        [v, ..] if *v != VALUE_VERSION => Err(CodecError::Version(*v)),
        _ => Err(CodecError::Malformed),
    }
}

pub fn encode_live<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION, KIND_LIVE];
    // postcard cannot fail on our plain structs with Vec output; an error would be a bug in
    // a type definition, surfaced as an empty body that decoding reports as malformed.
    if let Ok(body) = postcard::to_allocvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Version<T>, CodecError> {
    match header(bytes)? {
        (KIND_TOMBSTONE, _) => Ok(Version::Tombstone),
        (KIND_LIVE, body) => postcard::from_bytes(body)
            .map(Version::Live)
            .map_err(|_| CodecError::Malformed),
        _ => Err(CodecError::Malformed),
    }
}

/// Encodes a block: after the header, the CRC-32 of the bytes (big-endian), then the bytes.
pub fn encode_block(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 6);
    out.push(VALUE_VERSION);
    out.push(KIND_LIVE);
    out.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Decodes a block, verifying its checksum: corrupted bytes are never returned.
pub fn decode_block(bytes: &[u8]) -> Result<Version<&[u8]>, CodecError> {
    match header(bytes)? {
        (KIND_TOMBSTONE, _) => Ok(Version::Tombstone),
        (KIND_LIVE, body) if body.len() >= 4 => {
            let (sum, data) = body.split_at(4);
            let stored = u32::from_be_bytes([sum[0], sum[1], sum[2], sum[3]]);
            let computed = crc32fast::hash(data);
            if stored != computed {
                return Err(CodecError::Checksum { stored, computed });
            }
            Ok(Version::Live(data))
        }
        _ => Err(CodecError::Malformed),
    }
}

/// Unversioned plain values (epochs, containers) share the version byte but no kind.
pub fn encode_plain<T: Serialize>(value: &T) -> Vec<u8> {
    encode_live(value)
}

pub fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode(bytes)?.live().ok_or(CodecError::Malformed)
}

/// A timestamp: seconds since the epoch (negative before 1970) and nanoseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ts {
    pub secs: i64,
    pub nsecs: u32,
}

impl Ts {
    pub fn now() -> Ts {
        Ts::from_system(std::time::SystemTime::now())
    }

    pub fn from_system(t: std::time::SystemTime) -> Ts {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Ts {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Ts {
                        secs: -(d.as_secs() as i64),
                        nsecs: 0,
                    }
                } else {
                    Ts {
                        secs: -(d.as_secs() as i64) - 1,
                        nsecs: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    pub fn to_system(self) -> std::time::SystemTime {
        use std::time::{Duration, UNIX_EPOCH};
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nsecs)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(self.nsecs as u64)
        }
    }
}

/// File type of an inode.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
            Kind::Socket => libc::S_IFSOCK,
        }
    }

    pub fn from_mode(mode: u32) -> Option<Kind> {
        match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Some(Kind::File),
            libc::S_IFDIR => Some(Kind::Dir),
            libc::S_IFLNK => Some(Kind::Symlink),
            libc::S_IFIFO => Some(Kind::Fifo),
            libc::S_IFCHR => Some(Kind::CharDev),
            libc::S_IFBLK => Some(Kind::BlockDev),
            libc::S_IFSOCK => Some(Kind::Socket),
            _ => None,
        }
    }
}

/// An inode's attributes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Bytes of block data actually stored (for `st_blocks`; holes take none).
    pub alloc: u64,
    pub atime: Ts,
    pub mtime: Ts,
    pub ctime: Ts,
    pub crtime: Ts,
    pub rdev: u32,
    /// Identifies this file's blocks; replaced on truncation to zero.
    pub data_id: DataId,
    /// Parent directory (directories only; `..`).
    pub parent: Ino,
    /// Symlink target.
    pub target: Vec<u8>,
}

/// A directory entry.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirent {
    pub ino: Ino,
    pub kind: Kind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirent_encoding_is_pinned() {
        let d = Dirent {
            ino: Ino::new(300),
            kind: Kind::Dir,
        };
        let bytes = encode_live(&d);
        assert_eq!(bytes, vec![1, 1, 0xac, 0x02, 1]);
        assert_eq!(decode::<Dirent>(&bytes).ok(), Some(Version::Live(d)));
    }

    #[test]
    fn block_encoding_is_pinned_and_checked() {
        let v = encode_block(b"abc");
        assert_eq!(v, vec![1, 1, 0x35, 0x24, 0x41, 0xc2, b'a', b'b', b'c']);
        assert!(matches!(decode_block(&v), Ok(Version::Live(b"abc"))));
        let mut bad = v.clone();
        bad[7] ^= 1;
        assert!(matches!(
            decode_block(&bad),
            Err(CodecError::Checksum { .. })
        ));
    }

    #[test]
    fn tombstone_decodes_as_tombstone() {
        assert_eq!(
            decode::<Dirent>(&tombstone()).ok(),
            Some(Version::Tombstone)
        );
        assert!(matches!(decode_block(&tombstone()), Ok(Version::Tombstone)));
    }

    #[test]
    fn unknown_version_is_refused() {
        assert!(matches!(
            decode::<Dirent>(&[9, 1, 0]),
            Err(CodecError::Version(9))
        ));
        assert!(matches!(decode::<Dirent>(&[]), Err(CodecError::Malformed)));
    }

    #[test]
    fn ts_round_trips_before_1970() {
        for ts in [
            Ts { secs: -1, nsecs: 5 },
            Ts {
                secs: -100,
                nsecs: 0,
            },
            Ts {
                secs: 4_000_000_000,
                nsecs: 999_999_999,
            },
        ] {
            assert_eq!(Ts::from_system(ts.to_system()), ts);
        }
    }
}
