//! The `snapshots` and `containers` subcommands: one API call each, printed as a table or
//! as the API's JSON `data`.

use super::*;
use crate::contract::{
    ChangeKind, Container, ContainerList, Copy, CreateContainer, CreateSnapshot, DeleteContainer,
    DeletedSnapshot, Diff, DiffQuery, History, HistoryQuery, RestoreBody, SetAlias, SnapshotData,
    SnapshotList, Space, Start, Status, UpdateContainer,
};
use std::os::unix::ffi::OsStrExt;

/// `?k=v&...` of a query type (values percent-encoded), or nothing when it has no field set.
pub(super) fn query<Q: Serialize>(q: &Q) -> Result<String> {
    let serde_json::Value::Object(fields) = serde_json::to_value(q).context("encode a query")?
    else {
        bail!("a query must be an object");
    };
    let pairs: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some(format!("{k}={}", url_segment(&v)))
        })
        .collect();
    Ok(match pairs.is_empty() {
        true => String::new(),
        false => format!("?{}", pairs.join("&")),
    })
}

pub(super) fn snapshots(common: Common, cmd: SnapshotsCmd) -> Result<()> {
    let json = common.json;
    let mut d = Daemon::connect(common.store)?;
    match cmd {
        SnapshotsCmd::Create {
            target,
            alias,
            expiry,
        } => {
            let body = CreateSnapshot {
                alias,
                expiry: expiry.map(serde_json::Value::from),
                expires_at: None,
            };
            let data: SnapshotData = d.call(
                "POST",
                &format!("{}/snapshots", container_path(&target.container)),
                Some(&body),
            )?;
            emit(json, &data, |d| {
                snapshot_table(std::slice::from_ref(&d.snapshot))
            })
        }
        SnapshotsCmd::List { target } => {
            let data: SnapshotList =
                d.get(&format!("{}/snapshots", container_path(&target.container)))?;
            emit(json, &data, |d| snapshot_table(&d.snapshots))
        }
        SnapshotsCmd::Restore {
            target,
            name,
            paths,
        } => {
            let body = RestoreBody::of_paths(paths.iter().map(|p| p.as_bytes()));
            let data: SnapshotData = d.call(
                "PATCH",
                &snapshot_path(&target.container, &name),
                Some(&body),
            )?;
            if !paths.is_empty() {
                return emit(json, &data, |d| {
                    format!(
                        "restored {} path(s) from snapshot {} ({} inodes)",
                        paths.len(),
                        text(&d.snapshot.name),
                        d.restored_inodes
                            .map_or_else(|| "-".to_string(), |n| n.to_string())
                    )
                });
            }
            emit(json, &data, |d| {
                snapshot_table(std::slice::from_ref(&d.snapshot))
            })
        }
        SnapshotsCmd::Delete { target, name } => {
            let data: DeletedSnapshot =
                d.call("DELETE", &snapshot_path(&target.container, &name), NO_BODY)?;
            emit(json, &data, |d| {
                format!(
                    "deleted snapshot {} of container {}",
                    text(&d.name),
                    text(&d.container_id)
                )
            })
        }
        SnapshotsCmd::Diff { target, from, to } => {
            let base = format!("{}/diff", snapshot_path(&target.container, &from));
            let mut q = DiffQuery {
                to,
                limit: Some(10_000),
                cursor: None,
            };
            let mut all: Diff = d.get(&format!("{base}{}", query(&q)?))?;
            while let Some(cursor) = all.next_cursor.take() {
                q.cursor = Some(cursor);
                let page: Diff = d.get(&format!("{base}{}", query(&q)?))?;
                all.changes.extend(page.changes);
                all.next_cursor = page.next_cursor;
            }
            emit(json, &all, |d| {
                d.changes
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
            let data: SnapshotData = d.call(
                "PATCH",
                &format!("{}/alias", snapshot_path(&target.container, &name)),
                Some(&SetAlias { alias }),
            )?;
            emit(json, &data, |d| {
                snapshot_table(std::slice::from_ref(&d.snapshot))
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
            let body = CreateContainer {
                name,
                project_id: project,
                quota_bytes: quota,
                quota_including_snapshots_bytes: quota_including_snapshots,
            };
            let data: Container = d.call("POST", "/containers", Some(&body))?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
        ContainersCmd::List => {
            let mut d = Daemon::connect(common.store)?;
            let data: ContainerList = d.get("/containers")?;
            emit(json, &data, |d| container_table(&d.containers))
        }
        ContainersCmd::Set {
            container,
            quota,
            quota_including_snapshots,
        } => {
            let body = UpdateContainer {
                quota_bytes: quota.map(|q| q.0),
                quota_including_snapshots_bytes: quota_including_snapshots.map(|q| q.0),
            };
            if body == UpdateContainer::default() {
                return Err(anyhow::anyhow!(
                    "nothing to set: give --quota and/or --quota-including-snapshots"
                ));
            }
            let mut d = Daemon::connect(common.store)?;
            let data: Container = d.call("PATCH", &container_path(&container), Some(&body))?;
            emit(json, &data, container_details)
        }
        ContainersCmd::Show { container } => {
            let mut d = Daemon::connect(common.store)?;
            let data: Container = d.get(&container_path(&container))?;
            emit(json, &data, container_details)
        }
        ContainersCmd::Copy {
            container,
            name,
            project,
            snapshot,
        } => {
            let mut d = Daemon::connect(common.store)?;
            let body = Copy {
                target_project_id: project,
                name,
                source_snapshot: snapshot,
                target_server: None,
            };
            let data: Container = d.call(
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
            let path = format!(
                "{}{}",
                container_path(&container),
                query(&DeleteContainer { force })?
            );
            let data: Container = d.call("DELETE", &path, NO_BODY)?;
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
            let body = Start {
                mountpoint: mnt_str.to_string(),
                snapdir: Some(snapdir.as_str().to_string()),
                admin_uid,
                read_only: false,
            };
            let data: Container = d.call(
                "POST",
                &format!("{}/start", container_path(&container)),
                Some(&body),
            )?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
        ContainersCmd::Stop { container } => {
            let mut d = Daemon::connect(common.store)?;
            let was_running = d.running(&container)?;
            let data: Container = d.call(
                "POST",
                &format!("{}/stop", container_path(&container)),
                Some(&crate::contract::AnyObject::new()),
            )?;
            d.settle(was_running)?;
            emit(json, &data, |c| container_table(std::slice::from_ref(c)))
        }
    }
}

/// One `git diff --name-status`-like line of a diff change.
fn diff_line(c: &crate::contract::Change) -> String {
    let path = escape_bytes(&c.path_bytes());
    match c.change {
        ChangeKind::Added => format!("A\t{path}"),
        ChangeKind::Deleted => format!("D\t{path}"),
        ChangeKind::Renamed => {
            let old = c
                .old_path_bytes()
                .map_or_else(|| "?".to_string(), |o| escape_bytes(&o));
            format!("R\t{old} -> {path}")
        }
        ChangeKind::Modified => format!("M\t{path}"),
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

/// `snapfs history`: where a path changed, as a table or the API's JSON. The path may be
/// inside a snapfs mount (`target.rs`).
pub(super) fn history(common: Common, container: Option<&str>, path: &OsStr) -> Result<()> {
    let given = given_store(common.store);
    let t = target::history_target(given.as_deref(), container, path)?;
    let q = query(&HistoryQuery::of_path(&t.path))?;
    let mut d = Daemon::connect(t.store)?;
    let data: History = d.get(&format!("{}/history{q}", container_path(&t.container)))?;
    emit(common.json, &data, |d| {
        let rows: Vec<Vec<String>> = d
            .history
            .iter()
            .map(|e| {
                let what = match (e.change, e.content_changed) {
                    (ChangeKind::Modified, true) => "modified",
                    (ChangeKind::Modified, false) => "metadata",
                    (c, _) => c.as_str(),
                };
                vec![
                    e.snapshot
                        .as_deref()
                        .map_or_else(|| "(current)".to_string(), text),
                    cell(e.alias.as_deref()),
                    time_cell(e.created_at.as_deref()),
                    what.to_string(),
                    size_cell(e.size),
                    time_cell(e.mtime.as_deref()),
                ]
            })
            .collect();
        if rows.is_empty() {
            return format!("{}: no version in any tree", escape_bytes(&t.path));
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
    let q = query(&crate::contract::DfQuery {
        container: container.map(str::to_string),
    })?;
    let data: Space = d.get(&format!("/df{q}"))?;
    emit(json, &data, |d| {
        let st = &d.store;
        let mut out = format!(
            "store: {} on disk, {} of data, {} awaiting reclaim, {} awaiting compaction\n\n",
            human_size(st.disk_bytes),
            human_size(st.data_bytes),
            human_size(st.awaiting_reclaim_bytes),
            human_size(st.awaiting_compaction_bytes),
        );
        out.push_str(&space_table(&d.containers));
        if container.is_some() {
            for c in &d.containers {
                out.push_str("\n\n");
                out.push_str(&snapshot_space_table(&c.snapshots));
            }
        }
        out
    })
}

/// `snapfs status`.
pub(super) fn status(common: Common) -> Result<()> {
    let json = common.json;
    let mut d = Daemon::connect(common.store)?;
    let data: Status = d.get("/status")?;
    emit(json, &data, |d| {
        let r = &d.reclaim;
        let p = &d.daemon;
        let mut out = format!(
            "snapfs {}, {} mounted, reclaim {} ({} snapshots queued)\n\
             daemon pid {}, started {}, {} resident, {} threads ({} FUSE workers)",
            d.version,
            d.mounts,
            if r.running { "running" } else { "idle" },
            r.queued_epochs,
            p.pid,
            p.started_at,
            human_size(p.rss_bytes),
            p.threads,
            p.fuse_workers,
        );
        out.push_str(&match (p.mounts_kept, p.supervisor_pid) {
            (true, Some(s)) => format!(
                "\nmounts kept across daemon restarts (supervisor pid {s}; {} taken over at start)",
                p.resumed_mounts
            ),
            (true, None) => format!(
                "\nmounts kept across daemon restarts (systemd fd store; {} taken over at start)",
                p.resumed_mounts
            ),
            (false, _) => "\nmounts end with this daemon (no supervisor, no fd store)".to_string(),
        });
        if let Some(o) = &d.object_store {
            let role = if o.fenced {
                "FENCED: another host took this store over; writes fail here"
            } else if o.read_only {
                "reader"
            } else {
                "writer"
            };
            out.push_str(&format!(
                "\nobject store {}: {role}\n  backlog {} of {}, pushed every {} ms\n  cache {} of {}",
                o.url,
                human_size(o.backlog_bytes),
                human_size(o.backlog_limit_bytes),
                o.push_interval_ms,
                human_size(o.cache_bytes),
                human_size(o.cache_limit_bytes),
            ));
            out.push_str(&format!(
                "\n  since start: {} written, {} sent in {} PUTs{}; {} GETs, {} LISTs",
                human_size(o.written_bytes),
                human_size(o.put_bytes),
                o.put_requests,
                if o.written_bytes > 0 {
                    format!(
                        " ({:.2} bytes sent per byte written)",
                        o.put_bytes as f64 / o.written_bytes as f64
                    )
                } else {
                    String::new()
                },
                o.get_requests,
                o.list_requests,
            ));
            if o.segment_bytes > 0 || o.segments_deleted > 0 {
                out.push_str(&format!(
                    "\n  file data: {} in segments, {} of it live; {} segments deleted since start",
                    human_size(o.segment_bytes),
                    human_size(o.segment_live_bytes),
                    o.segments_deleted,
                ));
            }
        }
        out
    })
}
