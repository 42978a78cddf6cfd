//! containerd's proxy snapshotter: the snapshots API over gRPC on a Unix socket, served by the
//! store's daemon (`snapfs serve STORE --containerd-socket PATH`). The only module that names
//! tonic and prost (as `fuse/` is the only one that speaks FUSE); the operations are the service's
//! [`Snapshotter`], run on blocking threads.

pub mod proto;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::codec::Ts;
use crate::service::snapshotter::{
    Info, LabelUpdate, MountSpec, Snapshotter, SnapshotterError, SnapshotterResult,
};
use crate::store::RuntimeKind;
use proto::snapshots_server::{Snapshots, SnapshotsServer};

/// Listens on `socket` (a stale socket file is replaced; mode 0600).
pub fn listen(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", socket.display()))?;
    Ok(listener)
}

/// Serves the snapshots API on `listener` until `shutdown` completes.
pub async fn serve(
    snapshotter: Arc<Snapshotter>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(Plugin { snapshotter }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

struct Plugin {
    snapshotter: Arc<Snapshotter>,
}

impl Plugin {
    /// Prepare, or View (`read_only`): the same request and answer.
    async fn prepare_as(
        &self,
        r: proto::PrepareSnapshotRequest,
        read_only: bool,
    ) -> Result<Response<proto::PrepareSnapshotResponse>, Status> {
        let m = self
            .run(move |s| s.prepare(&r.key, parent(&r.parent), labels(r.labels), read_only))
            .await?;
        Ok(Response::new(proto::PrepareSnapshotResponse {
            mounts: mounts(m),
        }))
    }

    /// Runs `f` on a blocking thread (every operation may mount, sync or scan).
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshotter) -> SnapshotterResult<T> + Send + 'static,
    ) -> Result<T, Status> {
        let s = self.snapshotter.clone();
        match tokio::task::spawn_blocking(move || f(&s)).await {
            Ok(r) => r.map_err(status),
            Err(e) => Err(Status::internal(format!("snapshotter task failed: {e}"))),
        }
    }
}

/// The status code of each error (containerd maps them back to its errdefs).
fn status(e: SnapshotterError) -> Status {
    let msg = e.to_string();
    match e {
        SnapshotterError::NotFound(_) => Status::not_found(msg),
        SnapshotterError::AlreadyExists(_) => Status::already_exists(msg),
        SnapshotterError::FailedPrecondition(_) => Status::failed_precondition(msg),
        SnapshotterError::Invalid(_) => Status::invalid_argument(msg),
        SnapshotterError::Unavailable(_) => Status::unavailable(msg),
        SnapshotterError::Internal(_) => Status::internal(msg),
    }
}

fn mounts(v: Vec<MountSpec>) -> Vec<proto::Mount> {
    v.into_iter()
        .map(|m| proto::Mount {
            r#type: m.kind,
            source: m.source.to_string_lossy().into_owned(),
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn labels(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

/// containerd passes "" for no parent.
fn parent(p: &str) -> Option<&str> {
    (!p.is_empty()).then_some(p)
}

fn timestamp(t: Ts) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.secs,
        nanos: i32::try_from(t.nsecs).unwrap_or(0),
    }
}

fn info(i: Info) -> proto::Info {
    proto::Info {
        name: i.key,
        parent: i.parent.unwrap_or_default(),
        kind: match i.kind {
            RuntimeKind::View => proto::Kind::View,
            RuntimeKind::Active => proto::Kind::Active,
            RuntimeKind::Committed => proto::Kind::Committed,
        } as i32,
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        labels: i.labels.into_iter().collect(),
    }
}

/// What an Update's field mask asks for: labels only (every other field is immutable).
fn label_update(mask: Option<prost_types::FieldMask>) -> Result<LabelUpdate, Status> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Ok(LabelUpdate::All);
    }
    let mut keys = Vec::new();
    for p in paths {
        if p == "labels" {
            return Ok(LabelUpdate::All);
        }
        match p.strip_prefix("labels.") {
            Some(k) if !k.is_empty() => keys.push(k.to_string()),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "cannot update field {p:?}: only labels can change"
                )))
            }
        }
    }
    Ok(LabelUpdate::Keys(keys))
}

type ListStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::ListSnapshotsResponse, Status>> + Send>>;

/// Infos per List message (containerd's own servers send 100 at a time).
const LIST_BATCH: usize = 100;

#[tonic::async_trait]
impl Snapshots for Plugin {
    async fn prepare(
        &self,
        req: Request<proto::PrepareSnapshotRequest>,
    ) -> Result<Response<proto::PrepareSnapshotResponse>, Status> {
        self.prepare_as(req.into_inner(), false).await
    }

    async fn view(
        &self,
        req: Request<proto::ViewSnapshotRequest>,
    ) -> Result<Response<proto::ViewSnapshotResponse>, Status> {
        self.prepare_as(req.into_inner(), true).await
    }

    async fn mounts(
        &self,
        req: Request<proto::MountsRequest>,
    ) -> Result<Response<proto::MountsResponse>, Status> {
        let r = req.into_inner();
        let m = self.run(move |s| s.mounts(&r.key)).await?;
        Ok(Response::new(proto::MountsResponse { mounts: mounts(m) }))
    }

    async fn commit(
        &self,
        req: Request<proto::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.run(move |s| s.commit(&r.name, &r.key, labels(r.labels)))
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<proto::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.run(move |s| s.remove(&r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<proto::StatSnapshotRequest>,
    ) -> Result<Response<proto::StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        let i = self.run(move |s| s.stat(&r.key)).await?;
        Ok(Response::new(proto::StatSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<proto::UpdateSnapshotRequest>,
    ) -> Result<Response<proto::UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let what = label_update(r.update_mask)?;
        let i = r
            .info
            .ok_or_else(|| Status::invalid_argument("update without an info"))?;
        let i = self
            .run(move |s| s.update(&i.name, labels(i.labels), what))
            .await?;
        Ok(Response::new(proto::UpdateSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<ListStream>, Status> {
        let r = req.into_inner();
        let all = self.run(move |s| s.list(&r.filters)).await?;
        let mut pages = Vec::new();
        let mut it = all.into_iter().map(info).peekable();
        while it.peek().is_some() {
            let page: Vec<proto::Info> = it.by_ref().take(LIST_BATCH).collect();
            pages.push(Ok(proto::ListSnapshotsResponse { info: page }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(pages))))
    }

    async fn usage(
        &self,
        req: Request<proto::UsageRequest>,
    ) -> Result<Response<proto::UsageResponse>, Status> {
        let r = req.into_inner();
        let (size, inodes) = self.run(move |s| s.usage(&r.key)).await?;
        Ok(Response::new(proto::UsageResponse {
            size: i64::try_from(size).unwrap_or(i64::MAX),
            inodes: i64::try_from(inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(&self, _req: Request<proto::CleanupRequest>) -> Result<Response<()>, Status> {
        let n = self.run(|s| s.cleanup()).await?;
        if n > 0 {
            log::info!("containerd cleanup dropped {n} objects");
        }
        Ok(Response::new(()))
    }
}
