#!/usr/bin/env bash
# A/B of two snapfs binaries on the rows a refactor must not slow down: metadata
# (examples/metabench.rs: create, stat, unlink...) and fio random 4 KiB writes (plain and each
# followed by fsync) and a cold sequential read of that file after a remount, each binary
# on a fresh store, interleaved round by round (A B A B ...) so that the VM's speed drift hits
# both alike. Prints every round and the median and range per binary and row. Never passes
# or fails on speed.
# Usage: scripts/bench_ab.sh BIN_A BIN_B
# Environment: AB_ROUNDS [3], AB_FILES (metabench files) [5000], AB_RUNTIME (fio seconds) [10],
#   AB_SIZE (fio file) [256M], BENCH_DIR (parent of the temp dir) [/var/tmp], AB_ENV_A and
#   AB_ENV_B (VAR=value words for A's and B's `snapfs mount`: the same binary with and
#   without its supervisor is `AB_ENV_A=SNAPFS_SUPERVISOR=0 AB_ENV_B=SNAPFS_SUPERVISOR=1`).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

[ $# -eq 2 ] || die "usage: scripts/bench_ab.sh BIN_A BIN_B"
BINS=("$(abspath "$1")" "$(abspath "$2")")
for b in "${BINS[@]}"; do [ -x "$b" ] || die "$b is not an executable"; done
ROUNDS="${AB_ROUNDS:-3}" FILES="${AB_FILES:-5000}" RUNTIME="${AB_RUNTIME:-10}" SIZE="${AB_SIZE:-256M}"

setup
ensure_packages fio
cargo build --release --example metabench
METABENCH="$CARGO_TARGET_DIR/release/examples/metabench"

WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/snapfs-ab.XXXXXX")"
MNT="$WORK/mnt"
CUR_BIN=""
cleanup() {
    if is_mounted "$MNT"; then
        "$CUR_BIN" umount "$MNT" || umount -l "$MNT" || true
    fi
    rm -rf -- "$WORK"
}
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# metabench's JSON lines, and fio's JSON, as rows: LABEL<TAB>ROW<TAB>VALUE.
META_ROWS='
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(sys.argv[1], "meta %s (ops/s)" % r["phase"], "%.0f" % r["ops_per_sec"], sep="\t")
'
FIO_ROW='
import json, sys
j = json.load(open(sys.argv[2]))["jobs"][0]
d = j[sys.argv[4] if len(sys.argv) > 4 else "write"]
value = d["bw_bytes"] / 2**20 if "MiB/s" in sys.argv[3] else d["iops"]
print(sys.argv[1], sys.argv[3], "%.0f" % value, sep="\t")
'

# one_run LABEL BIN ENV: a fresh store, metabench then fio, one line per row into RESULTS.
one_run() {
    local label="$1" bin="$2" store="$WORK/store"
    local -a extra
    read -r -a extra <<<"$3"
    CUR_BIN="$bin"
    rm -rf -- "$store"
    mkdir -p "$MNT"
    "$bin" init "$store" >/dev/null
    env "${extra[@]}" "$bin" mount "$store" "$MNT"
    "$METABENCH" "$MNT" --files "$FILES" --dirs 100 | python3 -c "$META_ROWS" "$label" >>"$RESULTS"
    fio --name=rw --filename="$MNT/fio.dat" --size="$SIZE" --ioengine=psync --iodepth=1 \
        --numjobs=1 --fallocate=none --rw=randwrite --bs=4k --time_based \
        --runtime="$RUNTIME" --output-format=json --output="$WORK/fio.json" >/dev/null
    python3 -c "$FIO_ROW" "$label" "$WORK/fio.json" "rand write 4k (IOPS)" >>"$RESULTS"
    fio --name=rw --filename="$MNT/fio.dat" --size="$SIZE" --ioengine=psync --iodepth=1 \
        --numjobs=1 --fallocate=none --rw=randwrite --bs=4k --fsync=1 --time_based \
        --runtime="$RUNTIME" --output-format=json --output="$WORK/fio.json" >/dev/null
    python3 -c "$FIO_ROW" "$label" "$WORK/fio.json" "rand write 4k fsync=1 (IOPS)" >>"$RESULTS"
    # Cold sequential read of the same file: remount, drop the host's page cache.
    "$bin" umount "$MNT"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    env "${extra[@]}" "$bin" mount "$store" "$MNT"
    fio --name=rw --filename="$MNT/fio.dat" --size="$SIZE" --ioengine=psync --iodepth=1 \
        --numjobs=1 --rw=read --bs=1M --output-format=json --output="$WORK/fio.json" >/dev/null
    python3 -c "$FIO_ROW" "$label" "$WORK/fio.json" "seq read 1M cold (MiB/s)" read >>"$RESULTS"
    "$bin" umount "$MNT"
}

for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1; do
        label=$([ "$i" = 0 ] && echo A || echo B)
        envs=$([ "$i" = 0 ] && echo "${AB_ENV_A:-}" || echo "${AB_ENV_B:-}")
        log "round $round/$ROUNDS: $label (${BINS[$i]} ${envs})"
        one_run "$label" "${BINS[$i]}" "$envs"
    done
done

echo "A = ${BINS[0]} ${AB_ENV_A:-}"
echo "B = ${BINS[1]} ${AB_ENV_B:-}"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, row, value = line.rstrip("\n").split("\t")
    rows.setdefault(row, {}).setdefault(label, []).append(float(value))
print(f"| row | A median (range) | B median (range) | B/A |")
print("|---|---:|---:|---:|")
for row, by in rows.items():
    a, b = by.get("A", []), by.get("B", [])
    ma, mb = statistics.median(a), statistics.median(b)
    fmt = lambda v, m: f"{m:,.0f} ({min(v):,.0f}-{max(v):,.0f})"
    print(f"| {row} | {fmt(a, ma)} | {fmt(b, mb)} | {mb / ma:.2f} |")
PY
