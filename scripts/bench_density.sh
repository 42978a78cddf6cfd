#!/usr/bin/env bash
# Density: what N mounted containers cost the daemon (memory, threads) and how long a mount and
# an unmount take among many, on both FUSE transports.
#
#   bash scripts/bench_density.sh [BIN]      (BIN: a built snapfs; default: builds release)
#
# Per transport (/dev/fuse: enable_uring=N; io_uring: Y), one fresh store and daemon:
#   - containers c1..cN are mounted one by one with `snapfs mount STORE MNT --container cI`
#     (the CLI: a process and an API call each, as a user or a runtime does); the time of each
#     is kept (p50, p90, max; and of the last 10 % alone, to see whether it grows with N);
#   - the daemon's RSS (VmRSS) and thread count are read idle after the mounts, and after a small
#     workload in every mount (a 64 KiB file written and fsync'd, /usr/bin/ls and
#     /etc/os-release copied, the directory listed), per mount = (RSS_N - RSS_1) / (N - 1);
#   - every container is unmounted with `snapfs umount` (timed the same way).
# Knobs: BENCH_DENSITY_N (default 1000), BENCH_DENSITY_URING_N (default: BENCH_DENSITY_N),
# BENCH_DENSITY_TRANSPORTS (default "dev_fuse io_uring").
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-}"
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN="${CARGO_TARGET_DIR:-target}/release/snapfs"
fi
N="${BENCH_DENSITY_N:-1000}"
URING_N="${BENCH_DENSITY_URING_N:-$N}"
TRANSPORTS="${BENCH_DENSITY_TRANSPORTS:-dev_fuse io_uring}"
SWITCH=/sys/module/fuse/parameters/enable_uring
SWITCH_WAS="$(cat "$SWITCH" 2>/dev/null || echo N)"
WORK="$(mktemp -d /tmp/snapfs-density.XXXXXX)"

cleanup() {
    set +e
    for m in $(awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null
    done
    pkill -f "serve $WORK/" 2>/dev/null
    [ -w "$SWITCH" ] && echo "$SWITCH_WAS" >"$SWITCH"
    rm -rf -- "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
proc_field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# Prints "p50 p90 max last10%p50" of the numbers (ms) in file $1.
stats() {
    python3 - "$1" <<'EOF'
import sys, statistics
v = [float(x) for x in open(sys.argv[1]) if x.strip()]
s = sorted(v)
q = lambda p: s[min(len(s) - 1, int(p * len(s)))]
tail = v[-max(1, len(v) // 10):]
print(f"{statistics.median(v):.1f} {q(0.9):.1f} {max(v):.1f} {statistics.median(tail):.1f}")
EOF
}

run() {
    local transport="$1" n="$2"
    local dir="$WORK/$transport"
    mkdir -p "$dir"
    # The default daemon runs under its supervisor and mounts over /dev/fuse (mounts that
    # outlive it); io_uring mounts need a daemon without one.
    local supervisor=1
    case "$transport" in
    dev_fuse) echo N >"$SWITCH" ;;
    io_uring)
        echo Y >"$SWITCH"
        supervisor=0
        ;;
    esac
    "$BIN" init "$dir/store" >/dev/null
    : >"$dir/mount.ms"
    local pid="" rss1="" i t0
    for i in $(seq 1 "$n"); do
        mkdir -p "$dir/m$i"
        t0=$(now_ms)
        SNAPFS_SUPERVISOR=$supervisor "$BIN" mount "$dir/store" "$dir/m$i" --container "c$i" >/dev/null
        echo $(($(now_ms) - t0)) >>"$dir/mount.ms"
        if [ "$i" = 1 ]; then
            pid="$(head -n1 "$dir/store/snapfs.pid")"
            rss1="$(proc_field "$pid" VmRSS)"
        fi
    done
    grep -q "$dir/m1 fuse" /proc/mounts || { echo "m1 is not mounted" >&2; exit 1; }
    local kind
    kind="$(awk -v m="$dir/m1" '$2 == m { print $3 }' /proc/mounts)"
    sleep 1
    local rss_idle thr_idle
    rss_idle="$(proc_field "$pid" VmRSS)"
    thr_idle="$(proc_field "$pid" Threads)"
    for i in $(seq 1 "$n"); do
        head -c 65536 /dev/urandom >"$dir/m$i/data"
        sync "$dir/m$i/data"
        cp -a /usr/bin/ls /etc/os-release "$dir/m$i/"
        ls -la "$dir/m$i" >/dev/null
    done
    local rss_busy thr_busy sup sup_rss=0
    rss_busy="$(proc_field "$pid" VmRSS)"
    thr_busy="$(proc_field "$pid" Threads)"
    sup="$(awk '$1 == "supervisor" { print $2 }' "$dir/store/snapfs.pid")"
    [ -n "$sup" ] && sup_rss="$(proc_field "$sup" VmRSS)"
    # the transport the mounts really used: io_uring mounts are served by snapfs-ring-N threads
    local rings
    rings="$(cat /proc/"$pid"/task/*/comm 2>/dev/null | grep -c '^snapfs-ring' || true)"
    if [ "$transport" = io_uring ] && [ "$rings" = 0 ]; then
        echo "io_uring was not used (no ring thread; enable_uring: $(cat "$SWITCH"))" >&2
        exit 1
    fi
    if [ "$transport" = dev_fuse ] && [ "$rings" != 0 ]; then
        echo "io_uring was used with enable_uring=N" >&2
        exit 1
    fi
    : >"$dir/umount.ms"
    for i in $(seq 1 "$n"); do
        t0=$(now_ms)
        "$BIN" umount "$dir/m$i" >/dev/null
        echo $(($(now_ms) - t0)) >>"$dir/umount.ms"
    done
    local per_idle per_busy
    per_idle=$(((rss_idle - rss1) / (n > 1 ? n - 1 : 1)))
    per_busy=$(((rss_busy - rss1) / (n > 1 ? n - 1 : 1)))
    printf '| %s | %d | %d MiB | %d | %d KiB | %d MiB | %d | %d KiB | %s | %s | %s |\n' \
        "$transport" "$n" $((rss_idle / 1024)) "$thr_idle" "$per_idle" $((rss_busy / 1024)) \
        "$thr_busy" "$per_busy" "$(stats "$dir/mount.ms" | tr ' ' '/')" \
        "$(stats "$dir/umount.ms" | tr ' ' '/')" \
        "$([ -n "$sup" ] && echo "$((sup_rss / 1024)) MiB" || echo none)"
    pkill -f "serve $dir/store" 2>/dev/null || true
    sleep 1
}

echo "snapfs $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, $(uname -r), $(date -u +%FT%TZ)"
echo
echo "| transport | mounts | RSS idle | threads idle | per mount idle | RSS after workload | threads | per mount | mount ms p50/p90/max/last-10%-p50 | umount ms p50/p90/max/last-10%-p50 | supervisor RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
for t in $TRANSPORTS; do
    case "$t" in
    dev_fuse) run dev_fuse "$N" ;;
    io_uring) run io_uring "$URING_N" ;;
    *) echo "unknown transport $t" >&2; exit 2 ;;
    esac
done
