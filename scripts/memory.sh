#!/usr/bin/env bash
# Memory report: the daemon's resident memory while a big write and a big file tree go
# through one snapfs mount. Samples VmRSS of the daemon every second and prints the peak
# (VmHWM) after each phase. Reports; never fails on the figures.
#
# Environment (defaults in brackets):
#   MEM_WRITE_GIB     size of the sequential write (fio, bs 1 MiB, final fsync)   [10]
#   MEM_FILES         files of 100 B created (metabench create/stat/unlink)     [1000000]
#   MEM_DIRS          directories they are spread over                          [1000]
#   MEM_DIR           parent of the temp dir (must be a real disk)              [/var/tmp]
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

WRITE_GIB="${MEM_WRITE_GIB:-10}"
FILES="${MEM_FILES:-1000000}"
DIRS="${MEM_DIRS:-1000}"
BASE="${MEM_DIR:-/var/tmp}"

setup
ensure_packages fio
cargo build --release --bin snapfs --example metabench
METABENCH="$CARGO_TARGET_DIR/release/examples/metabench"

WORK="$(mktemp -d "$BASE/snapfs-mem.XXXXXX")"
MNT="$WORK/mnt"
STORE="$WORK/store"
mkdir -p "$MNT"
cleanup() {
    local rc=$?
    set +e
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
    is_mounted "$MNT" && snapfs_unmount "$MNT"
    is_mounted "$MNT" || rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT

"$SNAPFS_BIN" init "$STORE" >/dev/null
"$SNAPFS_BIN" mount "$STORE" "$MNT"
PID="$(head -n1 "$STORE/snapfs.pid")"
kib() { awk -v k="$1" '$1 == k ":" {print $2}' "/proc/$PID/status"; }

# Peak RSS per phase: VmHWM cannot be reset without privileges on every kernel, so a
# sampler keeps the maximum of VmRSS since the phase began.
PEAK_FILE="$WORK/peak"
echo 0 >"$PEAK_FILE"
(
    while kill -0 "$PID" 2>/dev/null; do
        r="$(kib VmRSS)"
        p="$(cat "$PEAK_FILE")"
        [ "${r:-0}" -gt "$p" ] && echo "$r" >"$PEAK_FILE"
        sleep 1
    done
) &
SAMPLER=$!

phase() { # NAME CMD...
    local name="$1" start
    shift
    echo 0 >"$PEAK_FILE"
    start=$(date +%s)
    "$@" >/dev/null
    printf '%-44s %8.0f MiB peak RSS, %6.0f MiB after, %5d s\n' "$name" \
        "$(($(cat "$PEAK_FILE") / 1024))" "$(($(kib VmRSS) / 1024))" "$(($(date +%s) - start))"
}

log "daemon $PID, store $STORE; block cache and memtables are the configured bulk"
printf '%-44s %8.0f MiB\n' "idle after mount" "$(($(kib VmRSS) / 1024))"
phase "write ${WRITE_GIB} GiB (fio bs=1M, end_fsync)" \
    fio --name=w --filename="$MNT/big" --size="${WRITE_GIB}G" --rw=write --bs=1M \
    --ioengine=psync --end_fsync=1
phase "read it back (dd bs=1M)" dd if="$MNT/big" of=/dev/null bs=1M
rm -f "$MNT/big"
phase "create+stat+unlink $FILES files in $DIRS dirs" \
    "$METABENCH" "$MNT" --files "$FILES" --dirs "$DIRS"
printf '%-44s %8.0f MiB (VmHWM, whole run)\n' "peak" "$(($(kib VmHWM) / 1024))"
