//! Operations endpoints: the space report, the daemon's status (reclaim progress) and
//! Prometheus metrics.

use super::*;

use contract::{Container, ContainerSpace, DaemonProcess, DfQuery, Space, Status};

#[utoipa::path(get, path = "/api/v1/df", tag = "operations", params(DfQuery), responses((status = 200, description = "Where the space goes", body = Envelope<Space>)))]
/// `GET /df[?container=]`: where the space goes (see `store/space.rs`).
pub(super) async fn space(
    State(svc): State<Arc<Service>>,
    ApiQuery(q): ApiQuery<DfQuery>,
) -> ApiResult<Space> {
    let report = blocking(&svc, move |s| s.space(q.container.as_deref())).await?;
    let containers = report
        .containers
        .iter()
        .map(|(c, snaps)| ContainerSpace {
            container: Container::from(c),
            snapshots: snaps.iter().map(Into::into).collect(),
        })
        .collect();
    Ok(Answer::ok(
        "Space report",
        Space {
            store: (&report.store).into(),
            containers,
        },
    ))
}

#[utoipa::path(get, path = "/api/v1/status", tag = "operations", responses((status = 200, description = "Version, mounts, reclaim progress, and for a store on object storage its backlog, cache and writer state", body = Envelope<Status>)))]
/// `GET /status`: the daemon's version, its mounts and what reclaim is doing.
pub(super) async fn status(State(svc): State<Arc<Service>>) -> ApiResult<Status> {
    let (p, mounts, remote) = blocking(&svc, |s| {
        Ok((
            s.store().reclaim_progress(),
            s.mount_count(),
            s.store().kv().status().and_then(|k| k.remote_status()),
        ))
    })
    .await?;
    Ok(Answer::ok(
        "Status",
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            format_version: crate::store::FORMAT_VERSION,
            mounts: mounts as u64,
            daemon: daemon_process(),
            reclaim: (&p).into(),
            object_store: remote.map(Into::into),
        },
    ))
}

/// The daemon process as `GET /status` shows it.
fn daemon_process() -> DaemonProcess {
    let u = crate::process::usage();
    DaemonProcess {
        pid: std::process::id(),
        started_at: crate::timefmt::rfc3339(crate::codec::Ts::from_system(
            crate::process::started_at(),
        )),
        rss_bytes: u.rss_bytes,
        threads: u.threads,
        fuse_workers: u64::try_from(crate::metrics::get().fuse_workers.get()).unwrap_or(0),
        mounts_kept: crate::fdstore::store().is_some(),
        supervisor_pid: std::env::var(crate::supervisor::SUPERVISOR_ENV)
            .ok()
            .and_then(|p| p.trim().parse().ok()),
        resumed_mounts: crate::process::resumed_mounts(),
    }
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
