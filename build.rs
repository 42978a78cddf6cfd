//! Generates the gRPC service of containerd's snapshots API (`containerd.services.snapshots.v1
//! .Snapshots`) from a Rust description: no `.proto` file and no `protoc`. The messages are
//! hand-written prost structs in `src/containerd/proto.rs`; the generated server (and the
//! client the tests use) land in `$OUT_DIR/containerd.services.snapshots.v1.Snapshots.rs`.

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // (method, request, response, server streaming)
    let methods = [
        (
            "Prepare",
            "PrepareSnapshotRequest",
            "PrepareSnapshotResponse",
            false,
        ),
        ("View", "ViewSnapshotRequest", "ViewSnapshotResponse", false),
        ("Mounts", "MountsRequest", "MountsResponse", false),
        ("Commit", "CommitSnapshotRequest", "Empty", false),
        ("Remove", "RemoveSnapshotRequest", "Empty", false),
        ("Stat", "StatSnapshotRequest", "StatSnapshotResponse", false),
        (
            "Update",
            "UpdateSnapshotRequest",
            "UpdateSnapshotResponse",
            false,
        ),
        (
            "List",
            "ListSnapshotsRequest",
            "ListSnapshotsResponse",
            true,
        ),
        ("Usage", "UsageRequest", "UsageResponse", false),
        ("Cleanup", "CleanupRequest", "Empty", false),
    ];
    let mut service = Service::builder()
        .name("Snapshots")
        .package("containerd.services.snapshots.v1");
    for (route, input, output, streaming) in methods {
        let path = |t: &str| format!("crate::containerd::proto::{t}");
        let mut m = Method::builder()
            .name(route.to_lowercase())
            .route_name(route)
            .input_type(path(input))
            .output_type(path(output))
            .codec_path("tonic_prost::ProstCodec");
        if streaming {
            m = m.server_streaming();
        }
        service = service.method(m.build());
    }
    Builder::new()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile(&[service.build()]);
}
