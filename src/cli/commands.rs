//! The `snapshots` and `containers` subcommands: one API call each, printed as a table or
//! as the API's JSON `data`.

use super::*;
use base64::Engine;
use std::os::unix::ffi::OsStrExt;

pub(super) fn snapshots(common: Common, cmd: SnapshotsCmd) -> Result<()> {
    let json = common.json;
    let mut d = Daemon::connect(common.store)?;
    match cmd {
        SnapshotsCmd::Create {
            target,
            alias,
            expiry,
        } => {
            let mut body = json!({});
            if let Some(a) = alias {
                body["alias"] = json!(a);
            }
            if let Some(days) = expiry {
                body["expiry"] = json!(days);
            }
            let data = d.call(
                "POST",
                &format!("{}/snapshots", container_path(&target.container)),
                Some(&body),
            )?;
            emit(json, &data, |d| {
                snapshot_table(std::slice::from_ref(&d["snapshot"]))
            })
        }
        SnapshotsCmd::List { target } => {
            let data = d.call(
                "GET",
                &format!("{}/snapshots", container_path(&target.container)),
                None,
            )?;
            emit(json, &data, |d| {
                snapshot_table(d["snapshots"].as_array().map_or(&[], Vec::as_slice))
            })
        }
        SnapshotsCmd::Restore {
            target,
            name,
            paths,
        } => {
            let body = restore_body(&paths);
            let data = d.call(
                "PATCH",
                &snapshot_path(&target.container, &name),
                Some(&body),
            )?;
            if !paths.is_empty() {
                return emit(json, &data, |d| {
                    format!(
                        "restored {} path(s) from snapshot {} ({} inodes)",
                        paths.len(),
                        cell(&d["snapshot"]["name"]),
                        cell(&d["restored_inodes"])
                    )
                });
            }
            emit(json, &data, |d| {
                snapshot_table(std::slice::from_ref(&d["snapshot"]))
            })
        }
        SnapshotsCmd::Delete { target, name } => {
            let data = d.call("DELETE", &snapshot_path(&target.container, &name), None)?;
            emit(json, &data, |d| {
                format!(
                    "deleted snapshot {} of container {}",
                    cell(&d["name"]),
                    cell(&d["container_id"])
                )
            })
        }
        SnapshotsCmd::Diff { target, from, to } => {
            let base = format!("{}/diff", snapshot_path(&target.container, &from));
            let mut changes = Vec::new();
            let mut cursor: Option<String> = None;
            let mut last;
            loop {
                let mut query = vec!["limit=10000".to_string()];
                if let Some(t) = &to {
                    query.push(format!("to={}", url_segment(t)));
                }
                if let Some(c) = &cursor {
                    query.push(format!("cursor={}", url_segment(c)));
                }
                last = d.call("GET", &format!("{base}?{}", query.join("&")), None)?;
                if let Some(page) = last["changes"].as_array() {
                    changes.extend(page.iter().cloned());
                }
                match last["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            last["changes"] = Value::Array(changes);
            last["next_cursor"] = Value::Null;
            emit(json, &last, |d| {
                d["changes"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .map(diff_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        SnapshotsCmd::Alias {
            target,
            name,
            alias,
            clear: _,
        } => {
            let data = d.call(
                "PATCH",
                &format!("{}/alias", snapshot_path(&target.container, &name)),
                Some(&json!({ "alias": alias })),
            )?;
            emit(json, &data, |d| {
                snapshot_table(std::slice::from_ref(&d["snapshot"]))
            })
        }
    }
}

pub(super) fn containers(common: Common, cmd: ContainersCmd) -> Result<()> {
    let json = common.json;
    match cmd {
        ContainersCmd::Create {
            name,
            project,
            quota,
            quota_including_snapshots,
        } => {
            let mut d = Daemon::connect(common.store)?;
            let body = json!({
                "name": name,
                "project_id": project,
                "quota_bytes": quota,
                "quota_including_snapshots_bytes": quota_including_snapshots,
            });
            let data = d.call("POST", "/containers", Some(&body))?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
        ContainersCmd::List => {
            let mut d = Daemon::connect(common.store)?;
            let data = d.call("GET", "/containers", None)?;
            emit(json, &data, |d| {
                container_table(d["containers"].as_array().map_or(&[], Vec::as_slice))
            })
        }
        ContainersCmd::Set {
            container,
            quota,
            quota_including_snapshots,
        } => {
            let mut body = json!({});
            if let Some(q) = quota {
                body["quota_bytes"] = json!(q.0);
            }
            if let Some(q) = quota_including_snapshots {
                body["quota_including_snapshots_bytes"] = json!(q.0);
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                return Err(anyhow::anyhow!(
                    "nothing to set: give --quota and/or --quota-including-snapshots"
                ));
            }
            let mut d = Daemon::connect(common.store)?;
            let data = d.call("PATCH", &container_path(&container), Some(&body))?;
            emit(json, &data, container_details)
        }
        ContainersCmd::Show { container } => {
            let mut d = Daemon::connect(common.store)?;
            let data = d.call("GET", &container_path(&container), None)?;
            emit(json, &data, container_details)
        }
        ContainersCmd::Copy {
            container,
            name,
            project,
            snapshot,
        } => {
            let mut d = Daemon::connect(common.store)?;
            let mut body = json!({ "name": name });
            if let Some(p) = project {
                body["target_project_id"] = json!(p);
            }
            if let Some(s) = snapshot {
                body["source_snapshot"] = json!(s);
            }
            let data = d.call(
                "POST",
                &format!("{}/copy", container_path(&container)),
                Some(&body),
            )?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
        ContainersCmd::Delete { container, force } => {
            let mut d = Daemon::connect(common.store)?;
            let was_running = d.running(&container)?;
            if was_running && !force {
                bail!(
                    "container {container} is running; stop it first \
                     (snapfs containers stop {container}), or pass --force"
                );
            }
            let path = match force {
                true => format!("{}?force=true", container_path(&container)),
                false => container_path(&container),
            };
            let data = d.call("DELETE", &path, None)?;
            d.settle(was_running)?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
        ContainersCmd::Start {
            container,
            mountpoint,
            snapdir,
            admin_uid,
        } => {
            let mnt = std::path::absolute(&mountpoint)
                .with_context(|| format!("bad mountpoint {}", mountpoint.display()))?;
            crate::mount::check_mountpoint(&mnt)?;
            let mnt_str = mnt
                .to_str()
                .ok_or_else(|| anyhow!("mountpoint {} is not UTF-8", mnt.display()))?;
            let mut d = Daemon::connect(common.store)?;
            let mut body = json!({ "mountpoint": mnt_str, "snapdir": snapdir.as_str() });
            if let Some(uid) = admin_uid {
                body["admin_uid"] = json!(uid);
            }
            let data = d.call(
                "POST",
                &format!("{}/start", container_path(&container)),
                Some(&body),
            )?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
        ContainersCmd::Stop { container } => {
            let mut d = Daemon::connect(common.store)?;
            let was_running = d.running(&container)?;
            let data = d.call(
                "POST",
                &format!("{}/stop", container_path(&container)),
                Some(&json!({})),
            )?;
            d.settle(was_running)?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
    }
}

/// One `git diff --name-status`-like line of a diff change.
fn diff_line(c: &Value) -> String {
    let path = |field: &str| -> String {
        let raw = c[format!("{field}_base64")]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        match raw {
            Some(bytes) => escape_bytes(&bytes),
            None => escape_bytes(c[field].as_str().unwrap_or("?").as_bytes()),
        }
    };
    match c["change"].as_str() {
        Some("added") => format!("A\t{}", path("path")),
        Some("deleted") => format!("D\t{}", path("path")),
        Some("renamed") => format!("R\t{} -> {}", path("old_path"), path("path")),
        _ => format!("M\t{}", path("path")),
    }
}

/// Printable UTF-8 as is; control characters, backslashes and bytes that are not UTF-8 as
/// escapes (`\\`, `\n`, `\xNN`), so every name prints on one line and unambiguously.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `snapfs history`: where a path changed, as a table or the API's JSON.
/// The body of a restore: `{}` for the whole container, else the paths (UTF-8 ones as
/// strings, others as base64).
fn restore_body(paths: &[OsString]) -> Value {
    if paths.is_empty() {
        return json!({});
    }
    let (mut text, mut raw) = (Vec::new(), Vec::new());
    for p in paths {
        match std::str::from_utf8(p.as_bytes()) {
            Ok(s) => text.push(json!(s)),
            Err(_) => raw.push(json!(
                base64::engine::general_purpose::STANDARD.encode(p.as_bytes())
            )),
        }
    }
    let mut body = json!({ "paths": text });
    if !raw.is_empty() {
        body["paths_base64"] = json!(raw);
    }
    body
}

pub(super) fn history(common: Common, container: &str, path: &OsStr) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let query = match std::str::from_utf8(bytes) {
        Ok(p) => format!("path={}", url_segment(p)),
        Err(_) => format!(
            "path_base64={}",
            url_segment(&base64::engine::general_purpose::STANDARD.encode(bytes))
        ),
    };
    let mut d = Daemon::connect(common.store)?;
    let data = d.call(
        "GET",
        &format!("{}/history?{query}", container_path(container)),
        None,
    )?;
    emit(common.json, &data, |d| {
        let rows: Vec<Vec<String>> = d["history"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|e| {
                let what = match (e["change"].as_str(), e["content_changed"].as_bool()) {
                    (Some("modified"), Some(true)) => "modified".to_string(),
                    (Some("modified"), _) => "metadata".to_string(),
                    (Some(c), _) => c.to_string(),
                    (None, _) => "-".to_string(),
                };
                vec![
                    e["snapshot"]
                        .as_str()
                        .map_or_else(|| "(current)".to_string(), str::to_string),
                    cell(&e["alias"]),
                    time_cell(&e["created_at"]),
                    what,
                    size_cell(&e["size"]),
                    time_cell(&e["mtime"]),
                ]
            })
            .collect();
        if rows.is_empty() {
            return format!("{}: no version in any tree", escape_bytes(bytes));
        }
        render_table(
            &[
                ("SNAPSHOT", Align::Left),
                ("ALIAS", Align::Left),
                ("CREATED", Align::Left),
                ("CHANGE", Align::Left),
                ("SIZE", Align::Right),
                ("MTIME", Align::Left),
            ],
            &rows,
        )
    })
}

/// `snapfs df`: the store's line, a table of containers, and with `--container` a table of
/// its snapshots.
pub(super) fn df(common: Common, container: Option<&str>) -> Result<()> {
    let json = common.json;
    let mut d = Daemon::connect(common.store)?;
    let path = match container {
        Some(c) => format!("/df?container={}", url_segment(c)),
        None => "/df".to_string(),
    };
    let data = d.call("GET", &path, None)?;
    emit(json, &data, |d| {
        let st = &d["store"];
        let mut out = format!(
            "store: {} on disk, {} of data, {} awaiting reclaim, {} awaiting compaction\n\n",
            size_cell(&st["disk_bytes"]),
            size_cell(&st["data_bytes"]),
            size_cell(&st["awaiting_reclaim_bytes"]),
            size_cell(&st["awaiting_compaction_bytes"]),
        );
        let cs = d["containers"].as_array().map_or(&[][..], Vec::as_slice);
        out.push_str(&space_table(cs));
        if container.is_some() {
            for c in cs {
                let snaps = c["snapshots"].as_array().map_or(&[][..], Vec::as_slice);
                out.push_str("\n\n");
                out.push_str(&snapshot_space_table(snaps));
            }
        }
        out
    })
}

/// `snapfs status`.
pub(super) fn status(common: Common) -> Result<()> {
    let json = common.json;
    let mut d = Daemon::connect(common.store)?;
    let data = d.call("GET", "/status", None)?;
    emit(json, &data, |d| {
        let r = &d["reclaim"];
        let mut out = format!(
            "snapfs {}, {} mounted, reclaim {} ({} snapshots queued)",
            d["version"].as_str().unwrap_or("?"),
            d["mounts"],
            if r["running"] == true {
                "running"
            } else {
                "idle"
            },
            r["queued_epochs"],
        );
        let o = &d["object_store"];
        if o.is_object() {
            let role = if o["fenced"] == true {
                "FENCED: another host took this store over; writes fail here"
            } else if o["read_only"] == true {
                "reader"
            } else {
                "writer"
            };
            out.push_str(&format!(
                "\nobject store {}: {role}\n  backlog {} of {}, pushed every {} ms\n  cache {} of {}",
                o["url"].as_str().unwrap_or("?"),
                size_cell(&o["backlog_bytes"]),
                size_cell(&o["backlog_limit_bytes"]),
                o["push_interval_ms"],
                size_cell(&o["cache_bytes"]),
                size_cell(&o["cache_limit_bytes"]),
            ));
            let (written, put) = (
                o["written_bytes"].as_u64().unwrap_or(0),
                o["put_bytes"].as_u64().unwrap_or(0),
            );
            out.push_str(&format!(
                "\n  since start: {} written, {} sent in {} PUTs{}; {} GETs, {} LISTs",
                size_cell(&o["written_bytes"]),
                size_cell(&o["put_bytes"]),
                o["put_requests"],
                if written > 0 {
                    format!(
                        " ({:.2} bytes sent per byte written)",
                        put as f64 / written as f64
                    )
                } else {
                    String::new()
                },
                o["get_requests"],
                o["list_requests"],
            ));
        }
        out
    })
}
