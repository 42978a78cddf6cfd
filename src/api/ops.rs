//! Operations endpoints: the space report, the daemon's status (reclaim progress) and
//! Prometheus metrics.

use super::*;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DfQuery {
    #[serde(default)]
    container: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/df", tag = "operations", params(DfQuery), responses((status = 200, description = "Where the space goes", body = doc::SpaceAnswer)))]
/// `GET /df[?container=]`: where the space goes (see `store/space.rs`).
pub(super) async fn space(
    State(svc): State<Arc<Service>>,
    ApiQuery(q): ApiQuery<DfQuery>,
) -> ApiResult {
    let report = blocking(&svc, move |s| s.space(q.container.as_deref())).await?;
    let st = &report.store;
    let containers: Vec<Value> = report
        .containers
        .iter()
        .map(|(c, snaps)| {
            let mut v = container_json(c);
            v["snapshots"] = snaps
                .iter()
                .map(|s| {
                    json!({
                        "name": s.info.name,
                        "alias": s.info.record.alias,
                        "created_at": rfc3339(s.info.record.created_at),
                        "size": s.size,
                        "freed_if_deleted": s.freed_if_deleted,
                    })
                })
                .collect();
            v
        })
        .collect();
    Ok(ApiResponse::ok(
        "Space report",
        json!({
            "store": {
                "disk_bytes": st.disk_bytes,
                "data_bytes": st.data_bytes,
                "awaiting_reclaim_bytes": st.awaiting_reclaim_bytes,
                "awaiting_compaction_bytes": st.awaiting_compaction_bytes,
            },
            "containers": containers,
        }),
    ))
}

fn reclaim_stats_json(s: &crate::store::ReclaimStats) -> Value {
    json!({
        "epochs_removed": s.epochs_removed,
        "versions_dropped": s.versions_dropped,
        "versions_moved": s.versions_moved,
        "versions_scanned": s.versions_scanned,
        "bytes_dropped": s.bytes_dropped,
        "batches": s.batches,
    })
}

#[utoipa::path(get, path = "/api/v1/status", tag = "operations", responses((status = 200, description = "Version, mounts, reclaim progress, and for a store on object storage its backlog, cache and writer state", body = doc::StatusAnswer)))]
/// `GET /status`: the daemon's version, its mounts and what reclaim is doing.
pub(super) async fn status(State(svc): State<Arc<Service>>) -> ApiResult {
    let (p, mounts, remote) = blocking(&svc, |s| {
        Ok((
            s.store().reclaim_progress(),
            s.mount_count(),
            s.store().kv().status().and_then(|k| k.remote_status()),
        ))
    })
    .await?;
    Ok(ApiResponse::ok(
        "Status",
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mounts": mounts,
            "reclaim": {
                "running": p.running,
                "queued_epochs": p.queued_epochs,
                "retired_epochs": p.retired_epochs,
                "current_run": reclaim_stats_json(&p.current),
                "since_start": reclaim_stats_json(&p.total),
            },
            "object_store": remote,
        }),
    ))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus / OpenMetrics text exposition", content_type = "application/openmetrics-text", body = String)))]
/// `GET /metrics`: Prometheus text format (see `metrics.rs`).
pub(super) async fn metrics(State(svc): State<Arc<Service>>) -> axum::response::Response {
    let text = blocking(&svc, |s| {
        crate::metrics::encode(&s.scrape())
            .map_err(|e| ServiceError::Internal(format!("encoding metrics: {e}")))
    })
    .await;
    match text {
        Ok(t) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            t,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
