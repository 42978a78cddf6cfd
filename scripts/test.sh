#!/usr/bin/env bash
# Everything CI checks: formatting, clippy, then all tests (unit and FUSE
# integration), all in the release profile so RocksDB is built only once.
# Usage: scripts/test.sh [extra args for the test binaries, e.g. a name filter]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

setup
log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR ($(cargo --version))"

log "cargo fmt --all -- --check"
cargo fmt --all -- --check

log "cargo clippy --release --all-targets -- -D warnings"
cargo clippy --release --all-targets -- -D warnings

# The CLI tests run `mount -t fuse.snapfs`: the helper links to the binary cargo test builds.
install_mount_helper

# Integration tests mount FUSE file systems: two test threads are safe on 2 cores.
# --no-fail-fast: run every test binary and report all failures, still exit non-zero.
log "cargo test --release --no-fail-fast -- --test-threads=2"
cargo test --release --no-fail-fast -- --test-threads=2 "$@"

log "all checks passed"
