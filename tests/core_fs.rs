//! Core filesystem tests (no mount), run on both kv backends: the in-memory one and RocksDB.
//! The cases live in `core/cases.rs` and are included once per backend.

#[path = "core/harness.rs"]
mod harness;

use harness::*;
use rand::{Rng, SeedableRng};
use snapfs::codec::Kind;
use snapfs::fs::{Fs, SetAttr, ROOT_INO};

mod mem {
    use super::*;
    fn new_fs() -> T {
        make(mem_backend())
    }
    include!("core/cases.rs");
    include!("core/repair_cases.rs");
    include!("core/privilege_cases.rs");
}

mod rocks {
    use super::*;
    fn new_fs() -> T {
        make(rocks_backend())
    }
    include!("core/cases.rs");
    include!("core/repair_cases.rs");
    include!("core/privilege_cases.rs");
}
