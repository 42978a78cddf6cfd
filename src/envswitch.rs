//! On/off switches read from the daemon's environment (for measuring, and for turning off a
//! feature that misbehaves): each is on unless its variable says `0`, `off`, `false` or `no`.

/// Whether the environment variable `var` turns its switch off.
pub fn switched_off(var: &str) -> bool {
    matches!(
        std::env::var(var).as_deref().map(str::trim),
        Ok("0") | Ok("off") | Ok("false") | Ok("no")
    )
}
