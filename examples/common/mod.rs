//! Helpers shared by the benchmark examples (`snapbench`, `snapscale`).

use std::time::Instant;

use snapfs::fs::Caller;

/// Root, the caller of every in-process operation.
pub const ME: Caller = Caller { uid: 0, gid: 0 };

/// The number after `name` in `args`, or `default`.
pub fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Milliseconds since `start`.
pub fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
