#!/usr/bin/env bash
# A/B of two snapfs binaries on what file data in segments changes (issue 28): a sequential
# write of SEG_SMALL and of SEG_BIG (fio, bs=1M, end_fsync) with the device's bytes written per
# byte (/proc/diskstats, after a sync), random 4 KiB writes each followed by fsync, and the
# store's size after a file is written three times with a snapshot each and every snapshot is
# deleted (sampled every 10 s for 60 s while the daemon is idle). Each binary on a fresh store,
# interleaved round by round (A B A B ...). Prints every measurement and the median and range
# per binary and row. Never passes or fails on speed.
# Usage: scripts/bench_segments.sh BIN_A BIN_B
# Environment: SEG_ROUNDS [3], SEG_SMALL [1G], SEG_BIG [10G], SEG_FSYNC_SECS [10],
#   SEG_SPACE_MIB (the file of the space row) [1024], BENCH_DIR (parent of the temp dir)
#   [/var/tmp]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

[ $# -eq 2 ] || die "usage: scripts/bench_segments.sh BIN_A BIN_B"
BINS=("$(abspath "$1")" "$(abspath "$2")")
for b in "${BINS[@]}"; do [ -x "$b" ] || die "$b is not an executable"; done
ROUNDS="${SEG_ROUNDS:-3}" SMALL="${SEG_SMALL:-1G}" BIG="${SEG_BIG:-10G}"
FSYNC_SECS="${SEG_FSYNC_SECS:-10}" SPACE_MIB="${SEG_SPACE_MIB:-1024}"

setup
ensure_packages fio

WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/snapfs-seg.XXXXXX")"
MNT="$WORK/mnt"
STORE="$WORK/store"
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
DISK="$(basename "$(readlink -f "$(df --output=source "$WORK" | tail -1)")")"

written() { awk -v d="$DISK" '$3 == d { print $10 * 512 }' /proc/diskstats; }
record() { # LABEL ROW VALUE
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"
    printf '  %s  %-44s %s\n' "$1" "$2" "$3" >&2
}

fresh() { # BIN: a fresh store mounted at $MNT
    CUR_BIN="$1"
    rm -rf -- "$STORE"
    mkdir -p "$MNT"
    "$CUR_BIN" init "$STORE" >/dev/null
    "$CUR_BIN" mount "$STORE" "$MNT" >/dev/null
}

done_with() {
    "$CUR_BIN" umount "$MNT"
    rm -rf -- "$STORE"
}

seq_write() { # LABEL SIZE
    local before bw
    sync
    before="$(written)"
    bw="$(fio --name=w --filename="$MNT/f" --size="$2" --rw=write --bs=1M --end_fsync=1 \
        --ioengine=psync --output-format=json |
        python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['write']['bw_bytes']/2**20))")"
    sync
    record "$1" "seq write $2 (MiB/s)" "$bw"
    record "$1" "disk bytes per byte, seq write $2" \
        "$(python3 -c "print(round(($(written) - $before) / $(numfmt --from=iec "$2"), 2))")"
    rm -f -- "$MNT/f"
}

fsync_writes() { # LABEL
    fio --name=w --filename="$MNT/g" --size=256M --rw=write --bs=1M --end_fsync=1 \
        --ioengine=psync --output-format=terse >/dev/null
    record "$1" "rand write 4k fsync=1 (IOPS)" "$(fio --name=r --filename="$MNT/g" --size=256M \
        --rw=randwrite --bs=4k --fsync=1 --time_based --runtime="$FSYNC_SECS" --ioengine=psync \
        --output-format=json |
        python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['write']['iops']))")"
    rm -f -- "$MNT/g"
}

space_after_deletes() { # LABEL
    local i s t0 d
    for i in 1 2 3; do
        dd if=/dev/urandom of="$MNT/f" bs=1M count="$SPACE_MIB" conv=fsync status=none
        mkdir "$MNT/.snapshots/s$i"
    done
    for d in "$MNT"/.snapshots/snap-*; do rmdir "$d"; done
    t0="$(date +%s)"
    for s in 0 20 60; do
        while [ $(($(date +%s) - t0)) -lt "$s" ]; do sleep 1; done
        record "$1" "store / live data, ${s}s after deleting the snapshots" \
            "$(python3 -c "print(round($(du -sb "$STORE" | cut -f1) / ($SPACE_MIB * 2**20), 2))")"
    done
}

for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1; do
        label="$([ "$i" = 0 ] && echo A || echo B)"
        log "round $round/$ROUNDS: $label (${BINS[$i]})"
        fresh "${BINS[$i]}"
        seq_write "$label" "$SMALL"
        seq_write "$label" "$BIG"
        fsync_writes "$label"
        done_with
        fresh "${BINS[$i]}"
        space_after_deletes "$label"
        done_with
    done
done

echo "A = ${BINS[0]}"
echo "B = ${BINS[1]}"
python3 - "$RESULTS" <<'PY'
import sys, statistics
rows = {}
order = []
for line in open(sys.argv[1]):
    label, row, value = line.rstrip("\n").split("\t")
    if row not in rows:
        rows[row] = {"A": [], "B": []}
        order.append(row)
    rows[row][label].append(float(value))
def cell(v):
    if not v:
        return "-"
    return f"{statistics.median(v):g} ({min(v):g}-{max(v):g})"
print("| row | A median (range) | B median (range) |")
print("|---|---:|---:|")
for row in order:
    print(f"| {row} | {cell(rows[row]['A'])} | {cell(rows[row]['B'])} |")
PY
