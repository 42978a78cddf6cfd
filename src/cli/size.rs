//! Sizes on the command line: bytes with an optional K, M, G or T suffix, and quotas
//! (a size or `none`).

/// A quota given on the command line: a size, or `none`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quota(pub(super) Option<u64>);

/// Sizes: a number of bytes with an optional K, M, G or T suffix (powers of 1024).
pub(super) fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(not_a_size(s)),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| not_a_size(s))
}

fn not_a_size(s: &str) -> String {
    format!("{s:?} is not a size (bytes, or a number with K, M, G or T)")
}

pub(super) fn parse_quota(s: &str) -> std::result::Result<Quota, String> {
    if s.eq_ignore_ascii_case("none") {
        Ok(Quota(None))
    } else {
        parse_size(s).map(|n| Quota(Some(n)))
    }
}
