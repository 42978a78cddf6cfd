//! Human-readable tables and cells (times, sizes).

use crate::contract::{Container, ContainerSpace, Snapshot, SnapshotSpace};

// ---------------------------------------------------------------------------------------
// Tables

/// A string as a table cell: control characters escaped, so a row stays one line.
pub(super) fn text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An optional string as a cell: `-` when absent.
pub(super) fn cell(v: Option<&str>) -> String {
    v.map_or_else(|| "-".to_string(), text)
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC); `-` when absent.
pub(super) fn time_cell(v: Option<&str>) -> String {
    match v {
        Some(s) if s.len() >= 19 && s.as_bytes()[10] == b'T' && s.is_char_boundary(19) => {
            format!("{} {}", &s[..10], &s[11..19])
        }
        _ => cell(v),
    }
}

/// A size in bytes as a cell (binary units); `-` when absent.
pub(super) fn size_cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), human_size)
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
pub(super) fn snapshot_table(snaps: &[Snapshot]) -> String {
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
                text(&s.name),
                cell(s.alias.as_deref()),
                time_cell(Some(&s.created_at)),
                time_cell(s.expires_at.as_deref()),
                time_cell(s.last_used_at.as_deref()),
                size_cell(Some(s.size)),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// ID, NAME, PROJECT, STATUS, SNAPSHOTS, USED, CREATED, MOUNTPOINT.
pub(super) fn container_table(cs: &[Container]) -> String {
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
                text(&c.id),
                text(&c.name),
                cell(c.project_id.as_deref()),
                c.status.as_str().to_string(),
                c.snapshot_count.to_string(),
                size_cell(Some(c.bytes_used)),
                time_cell(Some(&c.created_at)),
                cell(c.mountpoint.as_deref()),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// One container, one field a line.
pub(super) fn container_details(c: &Container) -> String {
    let fields = [
        ("ID", text(&c.id)),
        ("NAME", text(&c.name)),
        ("PROJECT", cell(c.project_id.as_deref())),
        ("STATUS", c.status.as_str().to_string()),
        ("MOUNTPOINT", cell(c.mountpoint.as_deref())),
        ("CREATED", time_cell(Some(&c.created_at))),
        ("DELETED", time_cell(c.deleted_at.as_deref())),
        ("SNAPSHOTS", c.snapshot_count.to_string()),
        ("USED", size_cell(Some(c.bytes_used))),
        ("LIVE DATA", size_cell(c.live_bytes)),
        ("QUOTA", size_cell(c.quota_bytes)),
        (
            "QUOTA WITH SNAPSHOTS",
            size_cell(c.quota_including_snapshots_bytes),
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
pub(super) fn space_table(cs: &[ContainerSpace]) -> String {
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
        .map(|s| {
            let c = &s.container;
            vec![
                text(&c.name),
                c.status.as_str().to_string(),
                size_cell(c.live_bytes),
                c.snapshot_count.to_string(),
                size_cell(Some(c.snapshots_bytes)),
                size_cell(Some(c.bytes_used)),
                size_cell(c.quota_bytes),
                size_cell(c.quota_including_snapshots_bytes),
                size_cell(c.available_bytes),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// The snapshots of one container in `snapfs df`: NAME, ALIAS, CREATED, SIZE, FREED IF
/// DELETED.
pub(super) fn snapshot_space_table(ss: &[SnapshotSpace]) -> String {
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
                text(&s.name),
                cell(s.alias.as_deref()),
                time_cell(Some(&s.created_at)),
                size_cell(Some(s.size)),
                size_cell(Some(s.freed_if_deleted)),
            ]
        })
        .collect();
    render_table(&header, &rows)
}
