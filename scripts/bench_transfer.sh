#!/usr/bin/env bash
# Snapshot streams (issue 27): a full `snapfs send | snapfs receive` between two stores of a
# tree of TRANSFER_FILES files (TRANSFER_SIZE in all) against `tar -c | tar -x` of the same
# tree between two directories of the same disk (both cold: caches dropped before each), and
# incremental streams of 10 MiB of changes in that container and, with TRANSFER_BIG, in one
# TRANSFER_BIG times larger (the time must stay flat; sources and the incremental target
# have daemons running for the whole bench), and the full stream cut at half and
# resumed (what a resume costs). Each measurement runs
# TRANSFER_ROUNDS times, interleaved; prints every run and the medians. Never passes or
# fails on speed.
# Usage: scripts/bench_transfer.sh
# Environment: TRANSFER_FILES [20000], TRANSFER_SIZE (MiB) [1024], TRANSFER_ROUNDS [3],
#   TRANSFER_BIG (factor of the larger container, 0: skip) [10], TRANSFER_BTRFS (1: also
#   `btrfs send | btrfs receive` of the same tree on a loop-mounted btrfs, installing
#   btrfs-progs; 0: skip) [1], BENCH_DIR [/var/tmp], SNAPFS_BIN (the binary) [release build].
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

FILES="${TRANSFER_FILES:-20000}" SIZE_MB="${TRANSFER_SIZE:-1024}"
ROUNDS="${TRANSFER_ROUNDS:-3}" BIG="${TRANSFER_BIG:-10}" BTRFS="${TRANSFER_BTRFS:-1}"
setup
cargo build --release --bin snapfs
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/snapfs-transfer.XXXXXX")"
# stop_store STORE: stops the store's daemon and its supervisor (started on demand by send
# and receive) and waits for them.
stop_store() {
    pkill -TERM -f -- "snapfs serve $1( |\$)" 2>/dev/null || true
    for _ in $(seq 100); do
        pgrep -f -- "snapfs serve $1( |\$)" >/dev/null || return 0
        sleep 0.1
    done
    pkill -KILL -f -- "snapfs serve $1( |\$)" 2>/dev/null || true
}
# serve STORE: runs the store's daemon for the whole bench (as on a server), so that no run
# pays for a daemon's start or for the cold caches of a fresh one.
serve() {
    "$SNAPFS_BIN" serve "$1" >/dev/null 2>&1 &
    for _ in $(seq 100); do
        [ -S "$1/snapfs.sock" ] && "$SNAPFS_BIN" status --store "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "the daemon of $1 did not start"
}
cleanup() {
    if [ -d "$WORK/bt" ] && mountpoint -q "$WORK/bt"; then
        umount "$WORK/bt" || umount -l "$WORK/bt" || true
    fi
    for m in "$WORK"/m-*; do
        [ -d "$m" ] && snapfs_unmount "$m" >/dev/null 2>&1 || true
    done
    for s in "$WORK"/store-*; do
        [ -d "$s" ] && stop_store "$s"
    done
    rm -rf -- "$WORK"
}
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
record() { # ROW VALUE
    printf '%s\t%s\n' "$1" "$2" >>"$RESULTS"
    printf '%-48s %s\n' "$1" "$2"
}

# fill DIR FILES MB SEED: FILES files of random bytes, MB MiB in all, in 100 directories.
fill() {
    python3 - "$1" "$2" "$3" "$4" <<'PY'
import os, random, sys
root, files, mb, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
size = mb * 1024 * 1024 // files
block = os.urandom(1 << 20)
for i in range(files):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    off = rng.randrange(0, len(block) - size) if size < len(block) else 0
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block) - off)
            f.write(block[off:off + n])
            left -= n
            off = 0
PY
}

# A store with container `c` holding the tree, snapshot `base`; then 10 MiB changed and
# snapshot `next`. Prints the store path.
make_store() { # NAME FILES MB
    local s="$WORK/store-$1" m="$WORK/m-$1"
    mkdir -p "$m"
    "$SNAPFS_BIN" init "$s" >/dev/null
    "$SNAPFS_BIN" mount "$s" "$m"
    fill "$m" "$2" "$3" 1
    "$SNAPFS_BIN" snapshots create --store "$s" --alias base >/dev/null
    # 10 MiB of changes: 10 files rewritten.
    for i in $(seq 0 9); do
        head -c $((1 << 20)) /dev/urandom >"$m/d0$i/f0000$i"
    done
    "$SNAPFS_BIN" snapshots create --store "$s" --alias next >/dev/null
    snapfs_unmount "$m"
    echo "$s"
}

log "building the source trees ($FILES files, $SIZE_MB MiB)"
SRC="$(make_store src "$FILES" "$SIZE_MB")"
serve "$SRC"
mkdir -p "$WORK/host-src"
fill "$WORK/host-src" "$FILES" "$SIZE_MB" 1
BIGSRC=""
if [ "$BIG" -gt 0 ]; then
    log "building the larger source ($((FILES * BIG)) files, $((SIZE_MB * BIG)) MiB)"
    BIGSRC="$(make_store big $((FILES * BIG)) $((SIZE_MB * BIG)))"
    serve "$BIGSRC"
fi

full_snapfs() {
    local dst="$WORK/store-dst"
    [ -d "$dst" ] && stop_store "$dst"
    rm -rf "$dst"
    "$SNAPFS_BIN" init "$dst" >/dev/null
    drop
    local t0 t1
    t0=$(now)
    "$SNAPFS_BIN" send "$SRC" --snapshot base | "$SNAPFS_BIN" receive "$dst" --container c >/dev/null
    t1=$(now)
    record "full send|receive, s" "$(awk "BEGIN{print $t1 - $t0}")"
    echo "$dst"
}
full_tar() {
    rm -rf "$WORK/host-dst"
    mkdir -p "$WORK/host-dst"
    drop
    local t0 t1
    t0=$(now)
    tar -C "$WORK/host-src" -cf - . | tar -C "$WORK/host-dst" -xf -
    sync
    t1=$(now)
    record "full tar -c | tar -x, s" "$(awk "BEGIN{print $t1 - $t0}")"
}
# The full stream cut at half and resumed: both parts timed together.
resumed() {
    local dst="$WORK/store-res"
    [ -d "$dst" ] && stop_store "$dst"
    rm -rf "$dst"
    "$SNAPFS_BIN" init "$dst" >/dev/null
    local half=$(((SIZE_MB << 20) / 2))
    drop
    local t0 t1 token
    t0=$(now)
    { "$SNAPFS_BIN" send "$SRC" --snapshot base | head -c "$half" \
        | "$SNAPFS_BIN" receive "$dst" --container c >/dev/null 2>&1; } || true
    token="$("$SNAPFS_BIN" receive "$dst" --container c --status --json \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
    "$SNAPFS_BIN" send "$SRC" --container default --resume "$token" \
        | "$SNAPFS_BIN" receive "$dst" --container c >/dev/null
    t1=$(now)
    record "full, cut at half and resumed, s" "$(awk "BEGIN{print $t1 - $t0}")"
    stop_store "$dst"
    rm -rf "$dst"
}

incremental() { # ROW SRC
    local dst="$WORK/store-inc"
    [ -d "$dst" ] && stop_store "$dst"
    rm -rf "$dst"
    "$SNAPFS_BIN" init "$dst" >/dev/null
    serve "$dst"
    "$SNAPFS_BIN" send "$2" --snapshot base | "$SNAPFS_BIN" receive "$dst" --container c >/dev/null
    drop
    local t0 t1
    t0=$(now)
    "$SNAPFS_BIN" send "$2" --snapshot next --from base | "$SNAPFS_BIN" receive "$dst" --container c >/dev/null
    t1=$(now)
    record "$1" "$(awk "BEGIN{print $t1 - $t0}")"
    stop_store "$dst"
    rm -rf "$dst"
}

# btrfs: the same tree in a subvolume of a loop-mounted btrfs image on the same disk,
# snapshot `base`, 10 MiB changed, snapshot `next`; streams into another directory of it.
BT="$WORK/bt"
if [ "$BTRFS" = 1 ]; then
    ensure_packages btrfs-progs
    truncate -s $((SIZE_MB * 3 + 2048))M "$WORK/btrfs.img"
    mkfs.btrfs -q "$WORK/btrfs.img"
    mkdir -p "$BT"
    mount -o loop "$WORK/btrfs.img" "$BT"
    btrfs -q subvolume create "$BT/src"
    fill "$BT/src" "$FILES" "$SIZE_MB" 1
    btrfs -q subvolume snapshot -r "$BT/src" "$BT/base"
    for i in $(seq 0 9); do head -c $((1 << 20)) /dev/urandom >"$BT/src/d0$i/f0000$i"; done
    btrfs -q subvolume snapshot -r "$BT/src" "$BT/next"
    sync
fi
btrfs_full() {
    [ -d "$BT/dst" ] && btrfs -q subvolume delete "$BT"/dst/* 2>/dev/null || true
    rm -rf "$BT/dst"
    mkdir -p "$BT/dst"
    drop
    local t0 t1
    t0=$(now)
    btrfs send -q "$BT/base" | btrfs receive -q "$BT/dst"
    sync
    t1=$(now)
    record "full btrfs send | btrfs receive, s" "$(awk "BEGIN{print $t1 - $t0}")"
    drop
    t0=$(now)
    btrfs send -q -p "$BT/base" "$BT/next" | btrfs receive -q "$BT/dst"
    sync
    t1=$(now)
    record "incremental 10 MiB, btrfs, s" "$(awk "BEGIN{print $t1 - $t0}")"
}

for r in $(seq "$ROUNDS"); do
    log "round $r"
    full_snapfs >/dev/null
    full_tar
    if [ "$BTRFS" = 1 ]; then btrfs_full; fi
    resumed
    incremental "incremental 10 MiB in $SIZE_MB MiB, s" "$SRC"
    if [ -n "$BIGSRC" ]; then
        incremental "incremental 10 MiB in $((SIZE_MB * BIG)) MiB, s" "$BIGSRC"
    fi
done
python3 - "$RESULTS" "$SIZE_MB" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, v = line.rstrip("\n").split("\t")
    rows.setdefault(k, []).append(float(v))
print()
print("| row | median | min-max | runs |")
print("|---|---:|---:|---:|")
for k, v in rows.items():
    print(f"| {k} | {statistics.median(v):.2f} | {min(v):.2f}-{max(v):.2f} | {len(v)} |")
mb = int(sys.argv[2])
b = rows.get("full btrfs send | btrfs receive, s")
s, t = rows.get("full send|receive, s"), rows.get("full tar -c | tar -x, s")
if s and b:
    ratios = sorted(y / x for x, y in zip(s, b))
    print(f"\nfull stream vs btrfs send | receive: {statistics.median(ratios):.2f}x "
          f"(per round {', '.join(f'{x:.2f}' for x in ratios)})")
if s and t:
    ratios = sorted(b / a for a, b in zip(s, t))
    print(f"\nfull stream throughput vs the tar pipe: {statistics.median(ratios):.2f}x "
          f"(per round {', '.join(f'{x:.2f}' for x in ratios)}); "
          f"snapfs {mb / statistics.median(s):.0f} MiB/s, tar {mb / statistics.median(t):.0f} MiB/s")
PY
