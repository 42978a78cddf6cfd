#!/usr/bin/env bash
# Build snapfs, create a store (once) and mount its container `default`.
# Usage: scripts/run.sh [STORE_DIR] [MOUNTPOINT]
#   defaults: ./data and ./mnt in the repository root; paths given as arguments
#   are taken relative to the current directory.
# Idempotent: an existing store is reused, a live mount is left as it is.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STORE="$(abspath "${1:-$REPO_ROOT/data}")"
MNT="$(abspath "${2:-$REPO_ROOT/mnt}")"
CONTAINER=default

cd "$REPO_ROOT"
setup

log "cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release --bin snapfs
[ -x "$SNAPFS_BIN" ] || die "build finished but $SNAPFS_BIN is missing"
install_mount_helper

# A store is a non-empty directory; `snapfs init` refuses an existing path, so an
# empty directory (e.g. made by hand) is removed first.
if [ -d "$STORE" ] && [ -z "$(ls -A "$STORE")" ]; then
    rmdir "$STORE"
fi
if [ -e "$STORE" ]; then
    log "using existing store $STORE"
else
    log "snapfs init $STORE"
    mkdir -p "$(dirname "$STORE")"
    "$SNAPFS_BIN" init "$STORE"
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

Next steps:
  write into it like any directory:
      echo hello > $MNT/hello.txt; cp -a /etc $MNT/
  take a snapshot (O(1), read-only, browsable):
      mkdir $MNT/.snapshots/before-upgrade
      ls $MNT/.snapshots/                # snapshots are read-only directories
  unmount (waits for the daemon to exit):
      $SNAPFS_BIN umount $MNT
  mount it again later:
      $REPO_ROOT/scripts/run.sh $(printf '%q %q' "$STORE" "$MNT")
EOF
