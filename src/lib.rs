//! snapfs: a copy-on-write filesystem in user space with O(1) snapshots.
//!
//! Layers, each knowing only the ones below: `fuse` (adapter) → `fs` (POSIX core) →
//! `store` + `keys` + `codec` (epoch tree, key schema, values) → `kv` (ordered KV boundary).

pub mod api;
pub mod cli;
pub mod client;
pub mod codec;
pub mod containerd;
pub mod contract;
pub mod daemon;
pub mod envswitch;
pub mod error;
pub mod fdstore;
pub mod fs;
pub mod fsck;
pub mod fuse;
pub mod ids;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod mount;
pub mod peer;
pub mod perms;
pub mod process;
pub mod remote;
pub mod service;
pub mod store;
pub mod storedir;
pub mod stream;
pub mod supervisor;
pub mod timefmt;
pub mod tls;
