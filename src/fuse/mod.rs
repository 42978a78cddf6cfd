//! The FUSE adapter: the kernel protocol, spoken by us (no FUSE library). The operations
//! are transport-neutral (`ops.rs`), decoded and encoded once (`abi.rs`, `dispatch.rs`) for
//! both transports: `/dev/fuse`, read by the daemon's shared workers (`conn.rs` one
//! connection: mount(2), INIT, requests, notifications; `pool.rs` the workers), and
//! FUSE-over-io_uring (`uring/`). `session.rs` mounts, picks the transport and unmounts;
//! `notify.rs` sends the kernel every mount's invalidations from one thread.

mod abi;
mod config;
mod conn;
mod dispatch;
mod fusectl;
mod notify;
mod ops;
mod pool;
mod session;
mod state;
mod uring;
mod writeback;

pub use config::{readdirplus, writeback_cache};

/// Stops serving every mount, leaving them mounted for the next daemon (see
/// `Pool::quiesce`); true if every request being served was answered within `timeout`.
pub fn quiesce(timeout: std::time::Duration) -> bool {
    match pool::get() {
        Ok(p) => p.quiesce(timeout),
        Err(_) => true,
    }
}
pub(crate) use conn::{answer_eio, resend_unanswered, BUF_SIZE as REQUEST_BUF_SIZE};
pub use session::{
    abandon, inherited, mount, resume, FuseMounter, Inherited, MountHandle, Transport,
};
