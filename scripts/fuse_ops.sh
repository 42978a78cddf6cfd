#!/usr/bin/env bash
# What a command costs a snapfs mount, per FUSE request: mounts a fresh store, runs the
# command (with $M set to the mount point), and prints for each request type how many the
# kernel sent and their mean service time in the daemon (from `GET /metrics`:
# snapfs_fuse_request_duration_seconds). Round trips are what the daemon does not see: compare
# the command's wall time with the sum. Never passes or fails on speed.
# Usage: scripts/fuse_ops.sh 'COMMAND using $M'   e.g. 'tar -xf rootfs.tar -C $M'
# Environment: SNAPFS_BIN (the binary) [release build], BENCH_DIR (parent of the temp dir)
#   [/var/tmp]; the daemon's own knobs (SNAPFS_WRITEBACK, ...) pass through.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

[ $# -eq 1 ] || die "usage: scripts/fuse_ops.sh 'COMMAND using \$M'"
setup
cargo build --release --bin snapfs
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/snapfs-ops.XXXXXX")"
M="$WORK/mnt"
cleanup() {
    snapfs_unmount "$M" || true
    rm -rf -- "$WORK"
}
trap cleanup EXIT
mkdir -p "$M"
"$SNAPFS_BIN" init "$WORK/store" >/dev/null
"$SNAPFS_BIN" mount "$WORK/store" "$M"
metrics() { curl -sf --unix-socket "$WORK/store/snapfs.sock" http://snapfs/metrics; }
metrics >"$WORK/before"
t0=$(date +%s%N)
M="$M" bash -c "$1"
t1=$(date +%s%N)
metrics >"$WORK/after"
python3 - "$WORK/before" "$WORK/after" "$(((t1 - t0) / 1000))" <<'PY'
import re, sys
def parse(path):
    d = {}
    for line in open(path):
        m = re.match(r'snapfs_fuse_request_duration_seconds_(sum|count)\{op="(\w+)"\} (\S+)', line)
        if m:
            d[(m[2], m[1])] = float(m[3])
    return d
a, b, wall_us = parse(sys.argv[1]), parse(sys.argv[2]), int(sys.argv[3])
total_n, total_s = 0, 0.0
print(f"{'request':<14}{'count':>10}{'mean us':>10}{'total ms':>10}")
for op in sorted({k[0] for k in b}):
    n = b.get((op, "count"), 0) - a.get((op, "count"), 0)
    s = b.get((op, "sum"), 0) - a.get((op, "sum"), 0)
    if n:
        total_n += n
        total_s += s
        print(f"{op:<14}{n:>10.0f}{s / n * 1e6:>10.1f}{s * 1e3:>10.1f}")
print(f"{'all':<14}{total_n:>10.0f}{'':>10}{total_s * 1e3:>10.1f}")
print(f"wall time of the command: {wall_us / 1e3:.1f} ms")
PY
