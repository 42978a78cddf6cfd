//! Copies and syncs to another snapfs daemon (`target_server`): each snapshot is sent as a
//! stream straight into the other daemon's receive endpoint (`peer.rs`), the local send on a
//! blocking thread and the upload on the runtime, joined by a bounded channel.

use std::io;

use tokio::sync::mpsc;

use super::transfer::BodyWriter;
use super::*;
use crate::contract::{Received, Sync, Synced, TargetServer};
use crate::peer::Peer;

/// The peer of a request, or 400.
fn peer(target: &TargetServer) -> Result<Peer, ApiError> {
    Peer::new(target).map_err(|e| bad(format!("{e:#}")))
}

/// A failure talking to the target: its own status when it refused (4xx), 502 otherwise.
fn gateway(e: anyhow::Error) -> ApiError {
    let status = e
        .downcast_ref::<crate::peer::Refused>()
        .and_then(|r| StatusCode::from_u16(r.status).ok())
        .filter(|s| s.is_client_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    ApiError::new(status, format!("{e:#}"))
}

/// The token of the target's cut receive into `name` if it is of this very stream
/// (snapshot, creation time, base): then only the rest is sent.
async fn resumable(
    peer: &Peer,
    name: &str,
    snapshot: &str,
    created_at: &str,
    from: Option<&str>,
) -> Result<Option<String>, ApiError> {
    Ok(match peer.pending(name).await.map_err(gateway)? {
        Some(p)
            if p.snapshot == snapshot
                && p.base.as_deref() == from
                && p.created_at == created_at =>
        {
            p.token
        }
        _ => None,
    })
}

/// Streams snapshot `snapshot` of container `id` (incremental from `from`, or the rest of a
/// cut stream with `resume`) to the target's container `name`.
#[allow(clippy::too_many_arguments)]
async fn push(
    svc: &Arc<Service>,
    peer: &Peer,
    id: &str,
    snapshot: &str,
    from: Option<&str>,
    resume: Option<String>,
    name: &str,
    rollback: bool,
) -> Result<(Received, crate::stream::Totals), ApiError> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
    let (worker, id, snapshot, from) = (
        svc.clone(),
        id.to_string(),
        snapshot.to_string(),
        from.map(str::to_string),
    );
    let send = tokio::task::spawn_blocking(move || {
        let mut w = BodyWriter::new(tx.clone(), None);
        let r = match &resume {
            Some(token) => worker.send_resumed(&id, token, &mut w),
            None => worker.send_snapshot(&id, &snapshot, from.as_deref(), &mut w),
        };
        match &r {
            Ok(_) => {
                let _ = w.flush_all();
            }
            // The target must see a broken stream, never a short one that looks whole.
            Err(e) => {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
        r
    });
    let (sent, received) = tokio::join!(send, peer.receive(name, rollback, rx));
    match sent {
        Ok(Ok(sent)) => Ok((received.map_err(gateway)?, sent.totals)),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )),
    }
}

/// A copy to another server: snapshot `source_snapshot` becomes container `name` there.
pub(super) async fn copy_to_server(
    svc: &Arc<Service>,
    id: &str,
    name: &str,
    source_snapshot: Option<&str>,
    target: &TargetServer,
) -> ApiResult<contract::Container> {
    let Some(snapshot) = source_snapshot else {
        return Err(bad(
            "a copy to another server needs source_snapshot (take a snapshot first)",
        ));
    };
    let peer = peer(target)?;
    let (got, _) = push(svc, &peer, id, snapshot, None, None, name, false).await?;
    Ok(Answer::ok("Container copied successfully", got.container))
}

#[utoipa::path(post, path = "/api/v1/containers/{id}/sync", tag = "containers", params(("id" = String, Path, description = "container id or name")), request_body = Sync, responses((status = 200, description = "What was sent (nothing when the target was current)", body = Envelope<Synced>), (status = 409, description = "The target's copy shares no snapshot with this container, or diverged (see rollback)", body = ErrorAnswer), (status = 502, description = "The target could not be reached", body = ErrorAnswer)))]
pub(super) async fn sync_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Synced> {
    let req: Sync = body(raw)?;
    let peer = peer(&req.target_server)?;
    let key = id.clone();
    let (c, mut local) = blocking(&svc, move |s| s.snapshots(&key)).await?;
    local.sort_by_key(|s| s.record.epoch);
    let name = req.name.unwrap_or_else(|| c.name.clone());
    let theirs = peer.snapshots(&name).await.map_err(gateway)?;
    let base = match &theirs {
        None => None,
        Some(list) => {
            let held: std::collections::HashSet<(&str, &str)> = list
                .snapshots
                .iter()
                .map(|s| (s.name.as_str(), s.created_at.as_str()))
                .collect();
            let common = local.iter().rposition(|s| {
                held.contains(&(
                    s.name.as_str(),
                    crate::timefmt::rfc3339(s.record.created_at).as_str(),
                ))
            });
            if common.is_none() && !local.is_empty() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "container {name:?} on the target shares no snapshot with {}: it is not a copy of it (sync to another name)",
                        c.name
                    ),
                ));
            }
            common
        }
    };
    let mut out = Synced {
        container: name.clone(),
        base: base.map(|i| local[i].name.clone()),
        sent: Vec::new(),
        records: 0,
        bytes: 0,
    };
    let start = base.map_or(0, |i| i + 1);
    let mut from = out.base.clone();
    // Only the first stream of a sync can have been cut before (each later one starts after
    // the one before it completed): the target is asked once.
    let mut resume = match local.get(start) {
        Some(s) => {
            let created = crate::timefmt::rfc3339(s.record.created_at);
            resumable(&peer, &name, &s.name, &created, from.as_deref()).await?
        }
        None => None,
    };
    for s in &local[start..] {
        let (_, sent) = push(
            &svc,
            &peer,
            &c.id.to_string(),
            &s.name,
            from.as_deref(),
            resume.take(),
            &name,
            req.rollback && out.sent.is_empty(),
        )
        .await
        .map_err(|e| {
            if out.sent.is_empty() {
                e
            } else {
                ApiError::new(
                    e.status,
                    format!(
                        "{} (after sending {} of {} snapshots)",
                        e.message,
                        out.sent.len(),
                        local.len() - start
                    ),
                )
            }
        })?;
        out.records += sent.records;
        out.bytes += sent.bytes;
        out.sent.push(s.name.clone());
        from = Some(s.name.clone());
    }
    Ok(Answer::ok("Container synced successfully", out))
}
