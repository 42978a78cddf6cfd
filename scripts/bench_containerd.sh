#!/usr/bin/env bash
# snapfs as containerd's snapshotter against containerd's own `overlayfs` and `native`, side
# by side on the same disk, through a private containerd (scripts/containerd.sh). Never
# passes or fails on speed: exits non-zero only when something breaks.
#
# Per round (fresh containerd and fresh snapfs store each time), for each snapshotter:
#   import   `ctr images import` of a one-layer image of the Debian minbase tree (~200 MB,
#            ~6,800 files; built once with debootstrap, see scripts/bench_workload.sh):
#            seconds, unpack included;
#   prepare  N active snapshots on the image (examples/ctrbench.rs: Prepare + the mount
#            containerd would do, straight over containerd's snapshots API): p50 / p99 ms;
#   bytes    what N containers add on disk (`du -sbx` of the snapshotter's directory: the
#            snapfs store, or containerd's snapshotter root), per container;
#   usage    Usage of a container after USAGE_MIB MiB written into it: p50 ms of 20 calls;
#   workload the container workload rows of scripts/bench_workload.sh, inside a container
#            started with `ctr run` on the image (commands timed by the container's bash,
#            run with `ctr tasks exec`; caches dropped on the host before the cold rows).
# Rounds interleave the snapshotters; the table shows medians with [min-max] over rounds.
#
# Environment: BENCH_CTR_ROUNDS [3], BENCH_CTR_N [20], BENCH_CTR_USAGE_MIB [1024],
# BENCH_CTR_WORKLOAD=0 (skip the workload rows),
# BENCH_CTR_TARGETS ["snapfs overlayfs native"], BENCH_DIR [/var/tmp], BENCH_OUT (also write
# the table there), BENCH_ROOTFS_CACHE (see bench_workload.sh).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=scripts/bench_workload.sh
source "$REPO_ROOT/scripts/bench_workload.sh"
cd "$REPO_ROOT"

ROUNDS="${BENCH_CTR_ROUNDS:-3}" N="${BENCH_CTR_N:-20}" USAGE_MIB="${BENCH_CTR_USAGE_MIB:-1024}"
read -r -a CTR_TARGETS <<<"${BENCH_CTR_TARGETS:-snapfs overlayfs native}"
# runc keeps container state per namespace and id for every containerd on the machine: a
# namespace of this run's own.
NS="bench-$$" IMAGE=snapfs.bench/minbase:1

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

setup
bash scripts/containerd.sh install
ensure_rootfs
log "cargo build --release --bin snapfs --example ctrbench"
cargo build --release --bin snapfs --example ctrbench >/dev/null
CTRBENCH="$CARGO_TARGET_DIR/release/examples/ctrbench"

CWORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/snapfs-ctr.XXXXXX")"
SNAPFS_PID=""
cleanup() {
    set +e
    for d in "$CWORK"/c-*/ctrd; do [ -d "$d" ] && bash scripts/containerd.sh stop "$d" >/dev/null 2>&1; done
    [ -n "$SNAPFS_PID" ] && kill "$SNAPFS_PID" 2>/dev/null && wait "$SNAPFS_PID" 2>/dev/null
    grep -F " $CWORK/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
    rm -rf -- "$CWORK"
}
trap cleanup EXIT

bash scripts/containerd.sh image-from-tar "$CWORK/minbase.tar" "$IMAGE" "$ROOTFS_TAR" >/dev/null
# One uncompressed layer: its chain id is its digest.
PARENT="sha256:$(sha256sum "$ROOTFS_TAR" | cut -d' ' -f1)"

# start_snapfs DIR: a fresh store served with the snapshotter socket DIR/snap.sock.
start_snapfs() {
    local d="$1"
    "$SNAPFS_BIN" init "$d/store" >/dev/null
    "$SNAPFS_BIN" serve "$d/store" --containerd-socket "$d/snap.sock" \
        --containerd-mounts "$d/mnts" >"$d/serve.log" 2>&1 &
    SNAPFS_PID=$!
    for _ in $(seq 100); do [ -S "$d/snap.sock" ] && return 0; sleep 0.1; done
    die "snapfs serve did not start: $(cat "$d/serve.log")"
}

stop_snapfs() {
    [ -n "$SNAPFS_PID" ] || return 0
    kill "$SNAPFS_PID" && wait "$SNAPFS_PID" || true
    SNAPFS_PID=""
}

# The workload rows, as "LABEL@COMMAND@cold" (cold: drop the host's caches first).
WL_ROWS=(
    "find cold@find / -xdev -printf '%s\\n' | wc -l@cold"
    "find warm@find / -xdev -printf '%s\\n' | wc -l@"
    "tar -c, cold@tar -C / --one-file-system -cf - usr etc var | wc -c@cold"
    "grep -r warm@grep -r -c snapfs-no-such-word /usr/share || true@"
    "200 execs of /bin/true@for i in \$(seq 200); do /bin/true; done@"
    "20 dpkg-query -W@for i in \$(seq 20); do dpkg-query -W; done@"
    "cp -a /usr + sync@cp -a /usr /usr-copy && sync@"
    "rm -rf the copy + sync@rm -rf /usr-copy && sync@"
)

# workload SNAPSHOTTER ROUND CTR...: the rows above in a container of the image; appends
# "SNAPSHOTTER|ROUND|LABEL|SECONDS" lines to $WL_RESULTS.
workload() {
    local s="$1" round="$2" row label cmd cold secs n=0
    shift 2
    local ctr_cmd=("$@")
    "${ctr_cmd[@]}" run -d --null-io --snapshotter "$s" "$IMAGE" wl sleep infinity >/dev/null
    for row in "${WL_ROWS[@]}"; do
        IFS='@' read -r label cmd cold <<<"$row"
        [ -n "$cold" ] && drop_caches
        n=$((n + 1))
        secs="$("${ctr_cmd[@]}" tasks exec --exec-id "wl$n" wl bash -c \
            "TIMEFORMAT=%R; { time ( { $cmd ; } >/dev/null 2>&1 ) ; } 2>&1")"
        echo "$s|$round|$label|$secs" >>"$WL_RESULTS"
    done
    "${ctr_cmd[@]}" tasks kill -s SIGKILL wl >/dev/null
    for _ in $(seq 100); do
        "${ctr_cmd[@]}" tasks delete wl >/dev/null 2>&1 && break
        sleep 0.1
    done
    "${ctr_cmd[@]}" containers delete wl >/dev/null
}

RESULTS="$CWORK/results" WL_RESULTS="$CWORK/wl-results"
: >"$RESULTS"
: >"$WL_RESULTS"
for round in $(seq "$ROUNDS"); do
    for s in "${CTR_TARGETS[@]}"; do
        d="$CWORK/c-$s-$round"
        mkdir -p "$d"
        sync
        drop_caches
        case "$s" in
        snapfs)
            start_snapfs "$d"
            measured="$d/store"
            ;;
        *) measured="$d/ctrd/root/io.containerd.snapshotter.v1.$s" ;;
        esac
        bash scripts/containerd.sh start "$d/ctrd" snapfs "$d/snap.sock" >/dev/null
        ctr_cmd=(ctr -a "$d/ctrd/containerd.sock" -n "$NS")
        t0=$(date +%s.%N)
        "${ctr_cmd[@]}" images import --snapshotter "$s" "$CWORK/minbase.tar" >/dev/null
        t1=$(date +%s.%N)
        if ! out="$("$CTRBENCH" "$d/ctrd/containerd.sock" "$NS" "$s" "$PARENT" "$N" "$d/m" \
            --usage-mib "$USAGE_MIB" --du "$measured")"; then
            [ -f "$d/store/snapfs.log" ] && grep -v 'Failed to send FUSE reply' "$d/store/snapfs.log" | tail -30 >&2
            [ -f "$d/serve.log" ] && tail -20 "$d/serve.log" >&2
            die "ctrbench failed on $s (round $round)"
        fi
        import_s=$(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }")
        echo "$s $round $import_s $out" | tr '\n' ' ' >>"$RESULTS"
        echo >>"$RESULTS"
        log "round $round $s: import ${import_s}s; $(echo "$out" | tr '\n' ' ')"
        if [ "${BENCH_CTR_WORKLOAD:-1}" = 1 ]; then
            workload "$s" "$round" "${ctr_cmd[@]}"
            log "round $round $s: workload $(grep "^$s|$round|" "$WL_RESULTS" | cut -d'|' -f3- | tr '\n' ' ')"
        fi
        bash scripts/containerd.sh stop "$d/ctrd" >/dev/null
        stop_snapfs
        rm -rf -- "$d"
    done
done

python3 - "$WL_RESULTS" "${BENCH_OUT:-}" <<'PY'
import statistics, sys
path, out = sys.argv[1], sys.argv[2]
data, order, targets = {}, [], []
for line in open(path):
    s, _, label, secs = line.rstrip("\n").split("|", 3)
    try:
        v = float(secs)
    except ValueError:
        continue
    if label not in order:
        order.append(label)
    if s not in targets:
        targets.append(s)
    data.setdefault((label, s), []).append(v)
if data:
    def cell(v):
        m = statistics.median(v)
        return f"{m:.2f} [{min(v):.2f}-{max(v):.2f}]" if len(v) > 1 else f"{m:.2f}"
    head = "| inside `ctr run` (s) | " + " | ".join(targets)
    ratio = "snapfs" in targets and "overlayfs" in targets
    head += " | overlayfs / snapfs |" if ratio else " |"
    lines = [head, "|---|" + "---:|" * (len(targets) + int(ratio))]
    for label in order:
        row = f"| {label} | " + " | ".join(cell(data.get((label, t), [0.0])) for t in targets)
        if ratio:
            a = statistics.median(data.get((label, "overlayfs"), [0.0]))
            b = statistics.median(data.get((label, "snapfs"), [0.0]))
            row += f" | {a / b:.2f} |" if b > 0 else " | - |"
        else:
            row += " |"
        lines.append(row)
    text = "\n".join(lines)
    print("\ncontainer workload inside `ctr run`, medians [min-max] over rounds (above 1: snapfs faster):\n")
    print(text)
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")
PY

python3 - "$RESULTS" "$N" "$USAGE_MIB" "${BENCH_OUT:-}" <<'PY'
import json, statistics, sys
path, n, mib, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = {}
for line in open(path):
    parts = line.split(" ", 3)
    if len(parts) < 4:
        continue
    s, _, imp, rest = parts
    r = rows.setdefault(s, {"import": [], "p50": [], "p99": [], "bytes": [], "usage": []})
    r["import"].append(float(imp))
    dec = json.JSONDecoder()
    i = 0
    while i < len(rest):
        j = rest.find("{", i)
        if j < 0:
            break
        obj, i = dec.raw_decode(rest, j)
        if obj["phase"] == "prepare":
            r["p50"].append(obj["p50_ms"]); r["p99"].append(obj["p99_ms"])
            r["bytes"].append(obj["du_added"] / max(obj["n"], 1))
        elif obj["phase"] == "usage":
            r["usage"].append(obj["p50_ms"])
def cell(v, fmt):
    if not v:
        return "-"
    m = statistics.median(v)
    return f"{fmt(m)} [{fmt(min(v))}-{fmt(max(v))}]" if len(v) > 1 else fmt(m)
kib = lambda b: f"{b/1024:,.0f} KiB"
lines = [
    f"| snapshotter | import (s) | Prepare+mount p50 (ms) | p99 (ms) | bytes per container | Usage p50 after {mib} MiB (ms) |",
    "|---|---:|---:|---:|---:|---:|",
]
for s, r in rows.items():
    lines.append(f"| {s} | {cell(r['import'], lambda x: f'{x:.2f}')} | {cell(r['p50'], lambda x: f'{x:.1f}')} | "
                 f"{cell(r['p99'], lambda x: f'{x:.1f}')} | {cell(r['bytes'], kib)} | {cell(r['usage'], lambda x: f'{x:.2f}')} |")
text = "\n".join(lines)
print(f"\ncontainerd snapshotters, {n} containers per round, medians [min-max] over rounds:\n")
print(text)
if out:
    with open(out, "a") as f:
        f.write(text + "\n")
PY
