#!/usr/bin/env bash
# Build snapfs, create a store (once) and mount its container `default`.
# Usage: scripts/run.sh [--object-store] [STORE_DIR] [MOUNTPOINT]
#   defaults: ./data and ./mnt in the repository root (./data-s3 with --object-store);
#   paths given as arguments are taken relative to the current directory.
#   Builds snapfs for embedded stores only (RocksDB: no object-store client), unless
#   --object-store: the store's data lives in object storage, at $SNAPFS_OBJECT_STORE
#   (default s3://snapfs/demo). Without AWS_ENDPOINT_URL in the environment, a loopback S3
#   server (SeaweedFS, scripts/s3.sh) is started with its data in ./s3-data, and its AWS_*
#   settings are written to ./s3-data/env.
# Idempotent: an existing store is reused, a live mount is left as it is.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OBJECT_STORE=""
if [ "${1:-}" = "--object-store" ]; then
    OBJECT_STORE="${SNAPFS_OBJECT_STORE:-s3://snapfs/demo}"
    shift
fi
if [ -n "$OBJECT_STORE" ]; then
    STORE="$(abspath "${1:-$REPO_ROOT/data-s3}")"
else
    STORE="$(abspath "${1:-$REPO_ROOT/data}")"
fi
MNT="$(abspath "${2:-$REPO_ROOT/mnt}")"
CONTAINER=default

cd "$REPO_ROOT"
setup

# The embedded default needs RocksDB only: the object-store stack (SlateDB, the S3 client)
# is built when --object-store asks for it (README, "The first run"). Same profile and
# RocksDB features as scripts/test.sh, so the two share one build of RocksDB.
if [ -n "$OBJECT_STORE" ]; then
    FEATURES=(--features slatedb)
else
    FEATURES=(--no-default-features)
fi
log "cargo build --release --bin snapfs ${FEATURES[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release --bin snapfs "${FEATURES[@]}"
[ -x "$SNAPFS_BIN" ] || die "build finished but $SNAPFS_BIN is missing"
install_mount_helper

S3_NOTE=""
if [ -n "$OBJECT_STORE" ] && [ -z "${AWS_ENDPOINT_URL:-}" ]; then
    log "starting a loopback S3 server (scripts/s3.sh start $REPO_ROOT/s3-data)"
    eval "$(bash "$REPO_ROOT/scripts/s3.sh" start "$REPO_ROOT/s3-data")"
    S3_NOTE="  S3 server:  SeaweedFS on $AWS_ENDPOINT_URL (stop: scripts/s3.sh stop $REPO_ROOT/s3-data)
  its AWS_* settings, for other snapfs commands: source $REPO_ROOT/s3-data/env
"
fi

# A store is a non-empty directory; `snapfs init` refuses an existing path, so an
# empty directory (e.g. made by hand) is removed first.
if [ -d "$STORE" ] && [ -z "$(ls -A "$STORE")" ]; then
    rmdir "$STORE"
fi
if [ -e "$STORE" ]; then
    log "using existing store $STORE"
else
    mkdir -p "$(dirname "$STORE")"
    if [ -n "$OBJECT_STORE" ]; then
        if "$SNAPFS_BIN" init "$STORE" --object-store "$OBJECT_STORE" 2>"$STORE.err"; then
            log "snapfs init $STORE --object-store $OBJECT_STORE"
        elif grep -q -- "--attach" "$STORE.err"; then
            # The store exists in object storage (made from another directory or host).
            log "snapfs init $STORE --object-store $OBJECT_STORE --attach"
            "$SNAPFS_BIN" init "$STORE" --object-store "$OBJECT_STORE" --attach
        else
            cat "$STORE.err" >&2
            rm -f -- "$STORE.err"
            die "snapfs init failed"
        fi
        rm -f -- "$STORE.err"
    else
        log "snapfs init $STORE"
        "$SNAPFS_BIN" init "$STORE"
    fi
fi

mkdir -p "$MNT" 2>/dev/null || true
if is_mounted "$MNT" && ! stat -- "$MNT" >/dev/null 2>&1; then
    # The daemon died (e.g. kill -9): "Transport endpoint is not connected".
    log "$MNT is a dead mount; cleaning it up"
    snapfs_unmount "$MNT"
fi
if is_mounted "$MNT"; then
    log "$MNT is already mounted; leaving it as it is"
else
    mkdir -p "$MNT"
    log "snapfs mount $STORE $MNT --container $CONTAINER"
    "$SNAPFS_BIN" mount "$STORE" "$MNT" --container "$CONTAINER"
    is_mounted "$MNT" || die "snapfs mount returned but $MNT is not mounted"
fi

cat <<EOF

snapfs is running.
  binary:     $SNAPFS_BIN
  store:      $STORE
  container:  $CONTAINER, mounted at $MNT
${OBJECT_STORE:+  data in:    $OBJECT_STORE
}$S3_NOTE
Next steps:
  write into it like any directory:
      echo hello > $MNT/hello.txt; cp -a /etc $MNT/
  take a snapshot (O(1), read-only, browsable):
      mkdir $MNT/.snapshots/before-upgrade
      ls $MNT/.snapshots/                # snapshots are read-only directories
  unmount (waits for the daemon to exit):
      $SNAPFS_BIN umount $MNT
  mount it again later:
      $REPO_ROOT/scripts/run.sh ${OBJECT_STORE:+--object-store }$(printf '%q %q' "$STORE" "$MNT")
EOF
