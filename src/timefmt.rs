//! UTC calendar formatting and parsing (snapshot names, RFC 3339 times) without a time crate.

use crate::codec::Ts;

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Civil {
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
}

fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    Civil {
        y,
        mo,
        d,
        h: (rem / 3600) as u32,
        mi: (rem % 3600 / 60) as u32,
        s: (rem % 60) as u32,
    }
}

/// Length of [`snapshot_name`] (years 0–9999): names of one second share these bytes.
pub const SNAPSHOT_NAME_LEN: usize = "snap-YYYYMMDD-HHMMSS".len();

/// `snap-YYYYMMDD-HHMMSS` for the given time (UTC).
pub fn snapshot_name(t: Ts) -> String {
    let c = civil(t.secs);
    format!(
        "snap-{:04}{:02}{:02}-{:02}{:02}{:02}",
        c.y, c.mo, c.d, c.h, c.mi, c.s
    )
}

/// RFC 3339 UTC with milliseconds: `2025-11-09T14:30:45.000Z`.
pub fn rfc3339(t: Ts) -> String {
    let c = civil(t.secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.y,
        c.mo,
        c.d,
        c.h,
        c.mi,
        c.s,
        t.nsecs / 1_000_000
    )
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (also a space or lowercase `t`/`z`).
pub fn parse_rfc3339(s: &str) -> Option<Ts> {
    let s = s.trim();
    if s.len() < 20 || !s.is_ascii() {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let y = num(&date[0..4])? as i64;
    let mo = num(&date[5..7])?;
    let d = num(&date[8..10])?;
    if &date[4..5] != "-" || &date[7..8] != "-" || !(1..=12).contains(&mo) || !(1..=31).contains(&d)
    {
        return None;
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let h = num(rest.get(0..2)?)?;
    let mi = num(rest.get(3..5)?)?;
    let sec = num(rest.get(6..8)?)?;
    if rest.get(2..3)? != ":" || rest.get(5..6)? != ":" || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut tail = &rest[8..];
    let mut nsecs = 0u32;
    if let Some(frac) = tail.strip_prefix('.') {
        let digits = frac.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let mut n = 0u64;
        for (i, b) in frac.bytes().take(digits).enumerate() {
            if i < 9 {
                n = n * 10 + (b - b'0') as u64;
            }
        }
        for _ in digits..9 {
            n *= 10;
        }
        nsecs = n as u32;
        tail = &frac[digits..];
    }
    let offset: i64 = match tail {
        "Z" | "z" => 0,
        t if t.len() == 6 && (t.starts_with('+') || t.starts_with('-')) && &t[3..4] == ":" => {
            let oh = num(&t[1..3])? as i64;
            let om = num(&t[4..6])? as i64;
            let v = oh * 3600 + om * 60;
            if t.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return None; // e.g. February 30th
    }
    let secs = days * 86_400 + (h * 3600 + mi * 60 + sec.min(59)) as i64 - offset;
    Some(Ts { secs, nsecs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let t = Ts {
            secs: 1_762_698_645,
            nsecs: 7_000_000,
        };
        assert_eq!(rfc3339(t), "2025-11-09T14:30:45.007Z");
        assert_eq!(snapshot_name(t), "snap-20251109-143045");
        assert_eq!(
            rfc3339(Ts { secs: -1, nsecs: 0 }),
            "1969-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn parse_round_trips_and_handles_offsets() {
        let t = Ts {
            secs: 1_762_698_645,
            nsecs: 7_000_000,
        };
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(parse_rfc3339("2025-11-09T16:30:45.007+02:00"), Some(t));
        assert_eq!(parse_rfc3339("2025-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2025-11-09 14:30:45"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(
            parse_rfc3339("2100-01-01T00:00:00Z").map(|t| t.secs),
            Some(4_102_444_800)
        );
    }
}
