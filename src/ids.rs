//! The id types: numbers and names that mean different things get different types, so that
//! passing one where another is expected does not compile.
//!
//! The fields are private: a raw number becomes an id only through a named constructor
//! (`Ino::new`, `KernelIno::new`, ...), which marks the places where ids enter from outside
//! (keys decoded by `keys.rs`, the kernel, counters). Serialized, each id is exactly its inner
//! value (`serde(transparent)`; postcard writes a newtype as its field), so the types change
//! no byte on disk or on the wire.
//!
//! A kernel inode number is not a store inode number (`KernelIno` holds the view's slot in
//! its top 16 bits; only `fs::volume` translates between them):
//!
//! ```compile_fail
//! use snapfs::ids::{Ino, KernelIno};
//! fn getattr(_ino: Ino) {}
//! getattr(KernelIno::new(1 << 48 | 5));
//! ```
//!
//! and an epoch is not an inode:
//!
//! ```compile_fail
//! use snapfs::ids::{Epoch, Ino};
//! fn getattr(_ino: Ino) {}
//! getattr(Epoch::new(7));
//! ```
//!
//! while the right type compiles:
//!
//! ```
//! use snapfs::ids::Ino;
//! fn getattr(ino: Ino) -> u64 { ino.get() }
//! assert_eq!(getattr(Ino::ROOT), 1);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The id whose number is `n`.
            pub const fn new(n: u64) -> $name {
                $name(n)
            }

            /// The number (for keys, the kernel, the API).
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

number_id!(
    /// A store inode number: an inode of one container's tree, the same in every view of it
    /// (head and snapshots). Below 2^48 (the top 16 bits of a kernel number name the view).
    Ino
);

number_id!(
    /// The inode number the kernel sees for a mounted container: `slot << 48 | ino`, where
    /// the slot names the view (head, a snapshot, `.snapshots`). Made and taken apart only by
    /// `fs::volume`.
    KernelIno
);

number_id!(
    /// An epoch: a node of the epoch tree (a head, a snapshot, a retired epoch). Every
    /// versioned key ends with the epoch that wrote it.
    Epoch
);

number_id!(
    /// The id of a file's block storage; a file gets a fresh one on truncation to zero, so
    /// its old blocks stay where the snapshots see them.
    DataId
);

number_id!(
    /// An open file or directory of one view: the number handed to the kernel at open and
    /// given back on every read, write, readdir and release.
    Fh
);

impl Ino {
    /// Every container's root directory.
    pub const ROOT: Ino = Ino(1);
}

/// A container's id: 24 lowercase hex digits, chosen at creation and never reused. Keys hold
/// its bytes (the same bytes as before this type: the hex text); the API shows it as a
/// string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerId(String);

impl ContainerId {
    /// The id spelled `s` (not checked: an id names a container only once the store finds
    /// its record).
    pub fn new(s: impl Into<String>) -> ContainerId {
        ContainerId(s.into())
    }

    /// The id whose key bytes are `b`; `None` if they are not text (no id ever is).
    pub fn from_bytes(b: &[u8]) -> Option<ContainerId> {
        std::str::from_utf8(b).ok().map(ContainerId::new)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bytes keys hold for this id.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContainerId({})", self.0)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ContainerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_their_inner_value() {
        assert_eq!(
            postcard::to_allocvec(&Ino::new(300)).ok(),
            postcard::to_allocvec(&300u64).ok()
        );
        assert_eq!(
            postcard::to_allocvec(&ContainerId::new("0a1b")).ok(),
            postcard::to_allocvec(&b"0a1b".to_vec()).ok()
        );
        assert_eq!(
            postcard::from_bytes::<ContainerId>(&[2, b'a', b'b']).ok(),
            Some(ContainerId::new("ab"))
        );
    }

    #[test]
    fn ids_print_their_number() {
        assert_eq!(format!("{} {:?}", Epoch::new(7), Ino::new(3)), "7 Ino(3)");
    }
}
