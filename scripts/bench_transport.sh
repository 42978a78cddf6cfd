#!/usr/bin/env bash
# A/B of the FUSE transports on one build: /dev/fuse (enable_uring=N) against FUSE-over-io_uring
# (enable_uring=Y), each unpinned and with the program and the daemon on CPU 0
# (`taskset -c 0`), REPS times each (default 3), every run on a fresh store. Prints one TSV
# line per run and the medians. The kernel switch is put back as it was on exit.
#
# Workloads: examples/metabench.rs (create, stat, unlink of FILES files of 100 B in 100
# dirs, one thread), a cold `find` over a tree of FILES empty files (remounted first), and
# fio 4 KiB O_DIRECT random reads and writes (psync, 1 job, RUNTIME s, SIZE file).
#
# Environment: REPS [3], FILES [10000], RUNTIME [10], SIZE [256M], BENCH_DIR [/var/tmp],
# TRANSPORTS ["dev_fuse io_uring"]. The daemons inherit the environment (SNAPFS_*).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

REPS="${REPS:-3}" FILES="${FILES:-10000}" RUNTIME="${RUNTIME:-10}" SIZE="${SIZE:-256M}"
SWITCH=/sys/module/fuse/parameters/enable_uring
[ -w "$SWITCH" ] || die "$SWITCH missing or read-only (needs Linux 6.14+, root)"
command -v fio >/dev/null || die "fio is not installed"
command -v taskset >/dev/null || die "taskset is not installed"

setup
cargo build --release --bin snapfs --example metabench >&2
METABENCH="$CARGO_TARGET_DIR/release/examples/metabench"

WAS="$(cat "$SWITCH")"
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/snapfs-transport.XXXXXX")"
MNT="$WORK/mnt"
cleanup() {
    snapfs_unmount "$MNT" || true
    echo "$WAS" >"$SWITCH"
    rm -rf -- "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"
RESULTS="$WORK/results.tsv"

fio_value() { # DIRECTION JSON
    python3 - "$1" "$2" <<'PY'
import json, sys
direction, path = sys.argv[1:]
job = json.load(open(path))["jobs"][0]
if job.get("error"):
    sys.exit(f"fio failed: error {job['error']}")
print(f"{job[direction]['iops']:.0f}")
PY
}

one_run() { # TRANSPORT(dev_fuse|io_uring) PINNED(0|1) REP
    local transport="$1" pinned="$2" rep="$3" pin=() store="$WORK/store" t0 t1 got
    [ "$pinned" = 1 ] && pin=(taskset -c 0)
    if [ "$transport" = io_uring ]; then echo Y >"$SWITCH"; else echo N >"$SWITCH"; fi
    # io_uring mounts need a daemon without a supervisor (a supervised one, the default,
    # keeps its mounts over /dev/fuse so that they outlive it).
    if [ "$transport" = io_uring ]; then export SNAPFS_SUPERVISOR=0; else unset SNAPFS_SUPERVISOR; fi
    rm -rf -- "$store"
    "$SNAPFS_BIN" init "$store" >/dev/null
    "${pin[@]}" "$SNAPFS_BIN" mount "$store" "$MNT"
    got="$("$SNAPFS_BIN" containers list --store "$store" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["containers"][0]["fuse"]["transport"])')"
    [ "$got" = "$transport" ] || die "wanted $transport, the mount uses $got"
    local label="$transport pinned=$pinned"
    while read -r line; do
        python3 - "$label" "$rep" "$line" >>"$RESULTS" <<'PY'
import json, sys
label, rep, line = sys.argv[1:]
j = json.loads(line)
print(f"{label}\t{rep}\tmetabench {j['phase']} ops/s\t{j['ops_per_sec']:.0f}")
PY
    done < <("${pin[@]}" "$METABENCH" "$MNT" --files "$FILES" --dirs 100)
    # A tree of FILES empty files, then a cold find (remounted: no kernel caches).
    "${pin[@]}" python3 - "$MNT/tree" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(100):
    os.makedirs(f"{root}/d{d}")
    for f in range(n // 100):
        open(f"{root}/d{d}/f{f}", "w").close()
PY
    snapfs_unmount "$MNT"
    "${pin[@]}" "$SNAPFS_BIN" mount "$store" "$MNT"
    t0=$(date +%s.%N)
    "${pin[@]}" find "$MNT/tree" >/dev/null
    t1=$(date +%s.%N)
    printf '%s\t%s\tcold find %s entries ms\t%s\n' "$label" "$rep" "$FILES" \
        "$(awk "BEGIN { printf \"%.0f\", ($t1 - $t0) * 1000 }")" >>"$RESULTS"
    for rw in randread randwrite; do
        local dir=read
        [ "$rw" = randwrite ] && dir=write
        "${pin[@]}" fio --name="$rw" --filename="$MNT/fio.dat" --size="$SIZE" --rw="$rw" --bs=4k \
            --direct=1 --ioengine=psync --iodepth=1 --numjobs=1 --fallocate=none --time_based \
            --runtime="$RUNTIME" --output-format=json --output="$WORK/fio.json" >/dev/null
        printf '%s\t%s\tfio %s 4k direct IOPS\t%s\n' "$label" "$rep" "$rw" \
            "$(fio_value "$dir" "$WORK/fio.json")" >>"$RESULTS"
    done
    snapfs_unmount "$MNT"
}

for rep in $(seq 1 "$REPS"); do
    for pinned in 0 1; do
        for transport in ${TRANSPORTS:-dev_fuse io_uring}; do
            log "run $rep: $transport pinned=$pinned"
            one_run "$transport" "$pinned" "$rep"
        done
    done
done

cat "$RESULTS"
echo
python3 - "$RESULTS" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    label, rep, what, value = line.rstrip("\n").split("\t")
    runs[(what, label)].append(float(value))
whats = sorted({w for w, _ in runs})
labels = ["dev_fuse pinned=0", "io_uring pinned=0", "dev_fuse pinned=1", "io_uring pinned=1"]
print("| workload | " + " | ".join(labels) + " |")
print("|---|" + "---|" * len(labels))
for w in whats:
    cells = []
    for l in labels:
        v = runs.get((w, l), [])
        cells.append(f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})" if v else "-")
    print(f"| {w} | " + " | ".join(cells) + " |")
PY
