//! Container endpoints: list, create, show, change quotas, delete, start (mount), stop,
//! copy.

use super::*;

use contract::{
    Container, ContainerList, Copy, CreateContainer, DeleteContainer, Start, UpdateContainer,
};

#[utoipa::path(get, path = "/api/v1/containers", tag = "containers", responses((status = 200, description = "Every container, deleted ones too", body = Envelope<ContainerList>)))]
pub(super) async fn list_containers(State(svc): State<Arc<Service>>) -> ApiResult<ContainerList> {
    let all = blocking(&svc, |s| s.containers()).await?;
    Ok(Answer::ok(
        "Containers retrieved successfully",
        ContainerList {
            containers: all.iter().map(Container::from).collect(),
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/containers", tag = "containers", request_body = CreateContainer, responses((status = 200, description = "The new, empty container", body = Envelope<Container>)))]
pub(super) async fn create_container(
    State(svc): State<Arc<Service>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Container> {
    let req: CreateContainer = body(raw)?;
    let quota = crate::store::Quota {
        bytes: req.quota_bytes,
        including_snapshots: req.quota_including_snapshots_bytes,
    };
    container_answer(&svc, "Container created successfully", move |s| {
        s.create_container(&req.name, req.project_id.as_deref(), quota)
    })
    .await
}

#[utoipa::path(patch, path = "/api/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "container id or name")), request_body = UpdateContainer, responses((status = 200, description = "The container with its new quotas", body = Envelope<Container>)))]
pub(super) async fn update_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Container> {
    let req: UpdateContainer = body(raw)?;
    if req.quota_bytes.is_none() && req.quota_including_snapshots_bytes.is_none() {
        return Err(bad(
            "nothing to change: give quota_bytes and/or quota_including_snapshots_bytes",
        ));
    }
    container_answer(&svc, "Container updated successfully", move |s| {
        s.set_quota(&id, req.quota_bytes, req.quota_including_snapshots_bytes)
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "container id or name")), responses((status = 200, description = "The container", body = Envelope<Container>)))]
pub(super) async fn get_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Container> {
    container_answer(&svc, "Container retrieved successfully", move |s| {
        s.container(&id)
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "container id or name"), DeleteContainer), responses((status = 200, description = "The deleted container (its snapshots stay)", body = Envelope<Container>)))]
pub(super) async fn delete_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteContainer>,
) -> ApiResult<Container> {
    container_answer(&svc, "Container deleted successfully", move |s| {
        s.delete_container(&id, q.force)
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/containers/{id}/start", tag = "containers", params(("id" = String, Path, description = "container id or name")), request_body = Start, responses((status = 200, description = "The mounted container", body = Envelope<Container>)))]
pub(super) async fn start_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Container> {
    let req: Start = body(raw)?;
    let snapdir_visible = match req.snapdir.as_deref() {
        None | Some("hidden") => false,
        Some("visible") => true,
        Some(other) => {
            return Err(bad(format!(
                "snapdir must be hidden or visible, not {other:?}"
            )))
        }
    };
    let mnt = PathBuf::from(&req.mountpoint);
    if !mnt.is_absolute() {
        return Err(bad("mountpoint must be an absolute path"));
    }
    let opts = VolumeOptions {
        snapdir_visible,
        admin_uid: req.admin_uid,
        read_only: req.read_only,
    };
    container_answer(&svc, "Container started successfully", move |s| {
        s.start(&id, &mnt, opts)
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/containers/{id}/stop", tag = "containers", params(("id" = String, Path, description = "container id or name")), responses((status = 200, description = "The unmounted container", body = Envelope<Container>)))]
pub(super) async fn stop_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Container> {
    let _: contract::AnyObject = body(raw)?;
    container_answer(&svc, "Container stopped successfully", move |s| s.stop(&id)).await
}

#[utoipa::path(post, path = "/api/v1/containers/{id}/copy", tag = "containers", params(("id" = String, Path, description = "container id or name")), request_body = Copy, responses((status = 200, description = "The new container (O(1)); with target_server, the container on the other daemon", body = Envelope<Container>)))]
pub(super) async fn copy_container(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Container> {
    let req: Copy = body(raw)?;
    if let Some(target) = &req.target_server {
        return super::sync::copy_to_server(
            &svc,
            &id,
            &req.name,
            req.source_snapshot.as_deref(),
            target,
        )
        .await;
    }
    container_answer(&svc, "Container copied successfully", move |s| {
        s.copy(
            &id,
            req.source_snapshot.as_deref(),
            &req.name,
            req.target_project_id.as_deref(),
        )
    })
    .await
}

/// Runs `f` on the blocking pool and answers with the container it returns.
async fn container_answer(
    svc: &Arc<Service>,
    message: &'static str,
    f: impl FnOnce(&Service) -> Result<ContainerRecord, ServiceError> + Send + 'static,
) -> ApiResult<Container> {
    let info = blocking(svc, move |s| {
        let c = f(s)?;
        s.info(c)
    })
    .await?;
    Ok(Answer::ok(message, Container::from(&info)))
}
