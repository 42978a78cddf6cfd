#!/bin/bash
# What keeping mounts across daemon restarts costs in steady state: the same binary, a mount
# with and without the supervisor (SNAPFS_SUPERVISOR=1: every open and close also writes a
# 16-byte handle record into the mount's state file), interleaved rounds (plain, supervised,
# plain, ...) of N create+write+close and 3N open+close in one directory.
#   bash scripts/bench_restart.sh [BIN]      (ROUNDS [3], N [5000])
# The stall a workload sees across `kill -9` of the daemon and across `snapfs restart` is
# printed by `cargo test --release --test fuse_restart -- --test-threads=1 --nocapture`.
set -euo pipefail
B=${1:-target/release/snapfs}
ROUNDS=${ROUNDS:-3}
N=${N:-5000}
run() { # $1: SNAPFS_SUPERVISOR (0 or 1)
    local d
    d=$(mktemp -d)
    mkdir "$d/m"
    "$B" init "$d/s" >/dev/null
    SNAPFS_SUPERVISOR=$1 SNAPFS_FUSE_URING=0 "$B" mount "$d/s" "$d/m"
    python3 - "$d/m" "$N" <<'PY'
import os, sys, time
m, n = sys.argv[1], int(sys.argv[2])
os.mkdir(f"{m}/d")
t0 = time.perf_counter()
for i in range(n):
    fd = os.open(f"{m}/d/f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x")
    os.close(fd)
t1 = time.perf_counter()
for r in range(3):
    for i in range(n):
        os.close(os.open(f"{m}/d/f{i}", os.O_RDONLY))
t2 = time.perf_counter()
print(f"create+close {n / (t1 - t0):8.0f}/s   open+close {3 * n / (t2 - t1):8.0f}/s")
PY
    "$B" umount "$d/m"
    rm -rf "$d"
}
for r in $(seq "$ROUNDS"); do
    echo -n "round $r plain      "
    run 0
    echo -n "round $r supervised "
    run 1
done
