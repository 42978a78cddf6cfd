//! Human-readable tables and cells (times, sizes).

use super::*;

// ---------------------------------------------------------------------------------------
// Tables

/// A JSON value as a table cell: strings as they are (control characters escaped), `null`
/// as `-`.
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC); `-` for null.
pub(super) fn time_cell(v: &Value) -> String {
    match v.as_str() {
        Some(s) if s.len() >= 19 && s.as_bytes()[10] == b'T' => {
            format!("{} {}", &s[..10], &s[11..19])
        }
        _ => cell(v),
    }
}

pub(super) fn size_cell(v: &Value) -> String {
    v.as_u64().map_or_else(|| cell(v), human_size)
}

/// `n` bytes in binary units: `512 B`, `4.0 KiB`, `1.5 MiB`, `12 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Align {
    Left,
    Right,
}

/// Aligned columns separated by two spaces; the header row first.
pub(super) fn render_table(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| width(h)).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(c));
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(width(c));
            let last = i + 1 == n;
            if header[i].1 == Align::Right {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if !last {
                    out.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                out.push_str("  ");
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|(h, _)| *h).collect())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// NAME, ALIAS, CREATED, EXPIRES, LAST USED, SIZE.
pub(super) fn snapshot_table(snaps: &[Value]) -> String {
    use Align::{Left, Right};
    let header = [
        ("NAME", Left),
        ("ALIAS", Left),
        ("CREATED", Left),
        ("EXPIRES", Left),
        ("LAST USED", Left),
        ("SIZE", Right),
    ];
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|s| {
            vec![
                cell(&s["name"]),
                cell(&s["alias"]),
                time_cell(&s["created_at"]),
                time_cell(&s["expires_at"]),
                time_cell(&s["last_used_at"]),
                size_cell(&s["size"]),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// ID, NAME, PROJECT, STATUS, SNAPSHOTS, USED, CREATED, MOUNTPOINT.
pub(super) fn container_table(cs: &[Value]) -> String {
    use Align::{Left, Right};
    let header = [
        ("ID", Left),
        ("NAME", Left),
        ("PROJECT", Left),
        ("STATUS", Left),
        ("SNAPSHOTS", Right),
        ("USED", Right),
        ("CREATED", Left),
        ("MOUNTPOINT", Left),
    ];
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            vec![
                cell(&c["id"]),
                cell(&c["name"]),
                cell(&c["project_id"]),
                cell(&c["status"]),
                cell(&c["snapshot_count"]),
                size_cell(&c["bytes_used"]),
                time_cell(&c["created_at"]),
                cell(&c["mountpoint"]),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// One container, one field a line.
pub(super) fn container_details(c: &Value) -> String {
    let fields = [
        ("ID", cell(&c["id"])),
        ("NAME", cell(&c["name"])),
        ("PROJECT", cell(&c["project_id"])),
        ("STATUS", cell(&c["status"])),
        ("MOUNTPOINT", cell(&c["mountpoint"])),
        ("CREATED", time_cell(&c["created_at"])),
        ("DELETED", time_cell(&c["deleted_at"])),
        ("SNAPSHOTS", cell(&c["snapshot_count"])),
        ("USED", size_cell(&c["bytes_used"])),
        ("LIVE DATA", size_cell(&c["live_bytes"])),
        ("QUOTA", size_cell(&c["quota_bytes"])),
        (
            "QUOTA WITH SNAPSHOTS",
            size_cell(&c["quota_including_snapshots_bytes"]),
        ),
    ];
    let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{k:<w$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `snapfs df`: NAME, STATUS, LIVE DATA, SNAPSHOTS, SNAPSHOT BYTES, USED, QUOTA,
/// QUOTA WITH SNAPSHOTS, AVAILABLE.
pub(super) fn space_table(cs: &[Value]) -> String {
    use Align::{Left, Right};
    let header = [
        ("NAME", Left),
        ("STATUS", Left),
        ("LIVE DATA", Right),
        ("SNAPSHOTS", Right),
        ("SNAPSHOT BYTES", Right),
        ("USED", Right),
        ("QUOTA", Right),
        ("QUOTA WITH SNAPSHOTS", Right),
        ("AVAILABLE", Right),
    ];
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            vec![
                cell(&c["name"]),
                cell(&c["status"]),
                size_cell(&c["live_bytes"]),
                cell(&c["snapshot_count"]),
                size_cell(&c["snapshots_bytes"]),
                size_cell(&c["bytes_used"]),
                size_cell(&c["quota_bytes"]),
                size_cell(&c["quota_including_snapshots_bytes"]),
                size_cell(&c["available_bytes"]),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// The snapshots of one container in `snapfs df`: NAME, ALIAS, CREATED, SIZE, FREED IF
/// DELETED.
pub(super) fn snapshot_space_table(ss: &[Value]) -> String {
    use Align::{Left, Right};
    let header = [
        ("SNAPSHOT", Left),
        ("ALIAS", Left),
        ("CREATED", Left),
        ("SIZE", Right),
        ("FREED IF DELETED", Right),
    ];
    let rows: Vec<Vec<String>> = ss
        .iter()
        .map(|s| {
            vec![
                cell(&s["name"]),
                cell(&s["alias"]),
                time_cell(&s["created_at"]),
                size_cell(&s["size"]),
                size_cell(&s["freed_if_deleted"]),
            ]
        })
        .collect();
    render_table(&header, &rows)
}
