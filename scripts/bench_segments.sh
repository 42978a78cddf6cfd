#!/usr/bin/env bash
# A/B of snapfs binaries and backends on what file data in segments changes (issue 28): a
# sequential write of SEG_SMALL and of SEG_BIG (fio, bs=1M, end_fsync) with the bytes written
# per byte of file data (embedded: the device's, from /proc/diskstats after a sync; object
# storage: the bytes PUT, from `snapfs status`), random 4 KiB writes each followed by fsync,
# sequential 1 MiB writes each followed by fsync,
# cold random 4 KiB reads (after a remount with every cache of the store emptied and the page
# cache dropped), and the store's size (embedded: the store directory; object storage on
# file://: the objects directory, the bucket) after a file is written three times with a
# snapshot each and every snapshot is deleted, sampled at 0, 20 and 60 s of idle. Each target
# on a fresh store, interleaved round by round (A B C A B C ...). Prints every measurement and
# the median and range per target and row. Never passes or fails on speed.
# The sequential writes run twice, through the page cache and with direct I/O (fio
# --direct=1: the FUSE file's pages out of the picture), each after the page cache was
# dropped and SEG_SETTLE_SECS of idle: on this VM a page of memory not touched lately costs
# ~30 us to hand out (its hypervisor takes freed memory back), so a write that grows the page
# cache past the few GiB still warm runs at ~150 MiB/s whatever writes it, the host's own
# filesystem too; the settling gives every target the same start, and the target `host` (a
# plain directory beside the stores) shows what the machine does.
# The target `s3put` is the loopback S3 server alone: SEG_SMALL PUT as objects shaped as
# snapfs's parts (4 MiB, 4 in flight) by curl (unsigned payload: the client hashes nothing),
# after the same drop and settle: the most any client can write to that server on this
# machine, which shares its 2 vCPUs with the server.
# Usage: scripts/bench_segments.sh TARGET...   where TARGET is BIN[@BACKEND], BACKEND one of
#   disk (embedded, the default), s3 (a loopback SeaweedFS started by scripts/s3.sh), file
#   (objects in a local directory); or `host` (sequential writes only); or `s3put`
# Environment: SEG_ROUNDS [3], SEG_SMALL [1G], SEG_BIG [10G; empty skips the row],
#   SEG_FSYNC_SECS [10], SEG_READ_SECS (cold random reads) [15], SEG_SPACE_MIB (the file of
#   the space row; 0 skips it) [1024], SEG_SETTLE_SECS (idle before each sequential write)
#   [30], BENCH_DIR (parent of the temp dir) [/var/tmp]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

[ $# -ge 1 ] || die "usage: scripts/bench_segments.sh BIN[@disk|s3|file]..."
BINS=() BACKENDS=() LABELS=()
LETTERS=ABCDEFGHIJ
for t in "$@"; do
    if [ "$t" = host ] || [ "$t" = s3put ]; then
        bin="" backend="$t"
    else
        bin="${t%@*}" backend=disk
        [ "$bin" != "$t" ] && backend="${t##*@}"
        case "$backend" in disk | s3 | file) ;; *) die "unknown backend in $t (disk, s3, file)" ;; esac
        bin="$(abspath "$bin")"
        [ -x "$bin" ] || die "$bin is not an executable"
    fi
    BINS+=("$bin") BACKENDS+=("$backend")
    LABELS+=("${LETTERS:${#LABELS[@]}:1}")
done
ROUNDS="${SEG_ROUNDS:-3}" SMALL="${SEG_SMALL:-1G}" BIG="${SEG_BIG-10G}"
FSYNC_SECS="${SEG_FSYNC_SECS:-10}" READ_SECS="${SEG_READ_SECS:-15}"
SPACE_MIB="${SEG_SPACE_MIB:-1024}" SETTLE="${SEG_SETTLE_SECS:-30}"

setup
ensure_packages fio

WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/snapfs-seg.XXXXXX")"
MNT="$WORK/mnt"
STORE="$WORK/store"
OBJECTS="$WORK/objects"
HOSTDIR="$WORK/host"
CUR_BIN="" CUR_BACKEND="" S3_UP=0 N_STORE=0
cleanup() {
    if is_mounted "$MNT"; then
        "$CUR_BIN" umount "$MNT" || umount -l "$MNT" || true
    fi
    [ "$S3_UP" = 1 ] && bash scripts/s3.sh stop "$WORK/s3"
    rm -rf -- "$WORK"
}
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
DISK="$(basename "$(readlink -f "$(df --output=source "$WORK" | tail -1)")")"
for b in "${BACKENDS[@]}"; do
    if { [ "$b" = s3 ] || [ "$b" = s3put ]; } && [ "$S3_UP" = 0 ]; then
        eval "$(bash scripts/s3.sh start "$WORK/s3")"
        S3_UP=1
    fi
done

disk_written() { awk -v d="$DISK" '$3 == d { print $10 * 512 }' /proc/diskstats; }
# written: bytes the store wrote where it keeps its data (the disk, or PUTs).
written() {
    case "$CUR_BACKEND" in
    disk | host) disk_written ;;
    *) "$CUR_BIN" status --store "$STORE" --json |
        python3 -c "import json,sys; print(json.load(sys.stdin)['object_store']['put_bytes'])" ;;
    esac
}
record() { # LABEL ROW VALUE
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"
    printf '  %s  %-48s %s\n' "$1" "$2" "$3" >&2
}

fresh() { # INDEX: a fresh store of target INDEX mounted at $MNT
    CUR_BIN="${BINS[$1]}" CUR_BACKEND="${BACKENDS[$1]}"
    rm -rf -- "$STORE" "$OBJECTS"
    mkdir -p "$MNT"
    N_STORE=$((N_STORE + 1))
    case "$CUR_BACKEND" in
    disk) "$CUR_BIN" init "$STORE" >/dev/null ;;
    s3) "$CUR_BIN" init "$STORE" --object-store "s3://snapfs/seg-$N_STORE" >/dev/null ;;
    file) "$CUR_BIN" init "$STORE" --object-store "file://$OBJECTS" >/dev/null ;;
    esac
    "$CUR_BIN" mount "$STORE" "$MNT" >/dev/null
}

done_with() {
    "$CUR_BIN" umount "$MNT"
    rm -rf -- "$STORE" "$OBJECTS"
}

# drop_caches: writes out and drops the page cache.
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# settle: the start every sequential write gets: the page cache dropped, then SETTLE idle
# seconds.
settle() {
    drop_caches
    sleep "$SETTLE"
}

# seq_write LABEL SIZE DIRECT [DIR]: fio's sequential write of SIZE into a new DIR/f (DIR:
# the mount), through the page cache (DIRECT 0) or not (1); prints MiB/s. The file stays.
seq_write() {
    local before bw what mode dir="${4:-$MNT}"
    rm -f -- "$dir/f"
    settle
    before="$(written)"
    bw="$(fio --name=w --filename="$dir/f" --size="$2" --rw=write --bs=1M --end_fsync=1 \
        --direct="$3" --ioengine=psync --output-format=json |
        python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['write']['bw_bytes']/2**20))")"
    sync
    what="disk"
    [ "$CUR_BACKEND" = disk ] || [ "$CUR_BACKEND" = host ] || what="PUT"
    mode=""
    [ "$3" = 1 ] && mode=" direct=1"
    record "$1" "seq write $2$mode (MiB/s)" "$bw"
    [ "$3" = 1 ] || record "$1" "$what bytes per byte, seq write $2" \
        "$(python3 -c "print(round(($(written) - $before) / $(numfmt --from=iec "$2"), 2))")"
    echo "$bw"
}

# s3_puts LABEL: SMALL bytes PUT to the loopback server as 4 MiB objects, 4 in flight, after
# the same settle as seq_write; records MiB/s in the row of the sequential write.
s3_puts() {
    local part="$WORK/part" n t0 t1
    head -c 4M /dev/urandom >"$part"
    n=$(($(numfmt --from=iec "$SMALL") / 4194304))
    N_STORE=$((N_STORE + 1))
    settle
    t0="$(date +%s.%N)"
    seq "$n" | xargs -P4 -I{} curl -sSf -o /dev/null -T "$part" --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        "$AWS_ENDPOINT_URL/snapfs/put-$N_STORE/{}"
    t1="$(date +%s.%N)"
    record "$1" "seq write $SMALL (MiB/s)" "$(python3 -c "print(round($n * 4 / ($t1 - $t0)))")"
    rm -f -- "$part"
}

# seq_rows LABEL [DIR]: the sequential writes, SMALL and BIG, cached and direct, with the
# BIG / SMALL ratio of each (same round); DIR/f is left, at least SMALL long.
seq_rows() {
    local direct small big
    for direct in 0 1; do
        small="$(seq_write "$1" "$SMALL" "$direct" "${2:-}")"
        [ -n "$BIG" ] || continue
        big="$(seq_write "$1" "$BIG" "$direct" "${2:-}")"
        record "$1" "seq write $BIG / $SMALL$([ "$direct" = 1 ] && echo " direct=1") (same round)" \
            "$(python3 -c "print(round($big / $small, 2))")"
    done
}

# cold_reads LABEL: random 4 KiB reads of $MNT/f after a remount with the store's caches
# (object storage: the SlateDB disk cache and the segment cache) and the page cache emptied.
cold_reads() {
    "$CUR_BIN" umount "$MNT"
    rm -rf -- "$STORE/cache" "$STORE/segcache"
    drop_caches
    "$CUR_BIN" mount "$STORE" "$MNT" >/dev/null
    record "$1" "cold rand read 4k (IOPS)" "$(fio --name=r --filename="$MNT/f" --size="$SMALL" \
        --rw=randread --bs=4k --time_based --runtime="$READ_SECS" --ioengine=psync \
        --output-format=json |
        python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['read']['iops']))")"
}

fsync_writes() { # LABEL
    fio --name=w --filename="$MNT/g" --size=256M --rw=write --bs=1M --end_fsync=1 \
        --ioengine=psync --output-format=terse >/dev/null
    record "$1" "rand write 4k fsync=1 (IOPS)" "$(fio --name=r --filename="$MNT/g" --size=256M \
        --rw=randwrite --bs=4k --fsync=1 --time_based --runtime="$FSYNC_SECS" --ioengine=psync \
        --output-format=json |
        python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['write']['iops']))")"
    # Each fsync with 1 MiB behind it: past a journal record (256 KiB), so on object storage
    # the fsync uploads a part (beside its log write since 288211d, before it until then).
    record "$1" "seq write 1M fsync=1 (MiB/s)" "$(fio --name=s --filename="$MNT/g" --size=256M \
        --rw=write --bs=1M --fsync=1 --time_based --runtime="$FSYNC_SECS" --ioengine=psync \
        --output-format=json |
        python3 -c "import json,sys; print(round(json.load(sys.stdin)['jobs'][0]['write']['bw_bytes']/2**20, 1))")"
    rm -f -- "$MNT/g"
}

# stored_bytes: what the store occupies (embedded: its directory; file://: the objects
# directory; s3: not measurable here, SeaweedFS frees deleted objects only when it vacuums).
stored_bytes() {
    case "$CUR_BACKEND" in
    disk) du -sb "$STORE" | cut -f1 ;;
    file) du -sb "$OBJECTS" | cut -f1 ;;
    s3) echo "" ;;
    esac
}

space_after_deletes() { # LABEL
    local i s t0 d n
    if [ "$SPACE_MIB" = 0 ] || [ "$CUR_BACKEND" = s3 ]; then return 0; fi
    for i in 1 2 3; do
        dd if=/dev/urandom of="$MNT/f" bs=1M count="$SPACE_MIB" conv=fsync status=none
        mkdir "$MNT/.snapshots/s$i"
    done
    for d in "$MNT"/.snapshots/snap-*; do rmdir "$d"; done
    t0="$(date +%s)"
    for s in 0 20 60; do
        while [ $(($(date +%s) - t0)) -lt "$s" ]; do sleep 1; done
        n="$(stored_bytes)"
        record "$1" "store / live data, ${s}s after deleting the snapshots" \
            "$(python3 -c "print(round($n / ($SPACE_MIB * 2**20), 2))")"
    done
}

for round in $(seq 1 "$ROUNDS"); do
    for i in "${!BINS[@]}"; do
        label="${LABELS[$i]}"
        log "round $round/$ROUNDS: $label (${BINS[$i]} on ${BACKENDS[$i]})"
        if [ "${BACKENDS[$i]}" = host ]; then
            CUR_BIN="" CUR_BACKEND=host
            mkdir -p "$HOSTDIR"
            seq_rows "$label" "$HOSTDIR"
            rm -rf -- "$HOSTDIR"
            continue
        fi
        if [ "${BACKENDS[$i]}" = s3put ]; then
            s3_puts "$label"
            continue
        fi
        fresh "$i"
        seq_rows "$label"
        cold_reads "$label" # of the first SMALL bytes of the last file written
        rm -f -- "$MNT/f"
        fsync_writes "$label"
        done_with
        fresh "$i"
        space_after_deletes "$label"
        done_with
    done
done

for i in "${!BINS[@]}"; do
    if [ "${BACKENDS[$i]}" = host ]; then
        echo "${LABELS[$i]} = the host's filesystem (a directory beside the stores)"
    elif [ "${BACKENDS[$i]}" = s3put ]; then
        echo "${LABELS[$i]} = the loopback S3 server alone (curl PUTs, 4 MiB x 4 in flight)"
    else
        echo "${LABELS[$i]} = ${BINS[$i]} on ${BACKENDS[$i]}"
    fi
done
python3 - "$RESULTS" "${LABELS[@]}" <<'PY'
import sys, statistics
labels = sys.argv[2:]
rows = {}
order = []
for line in open(sys.argv[1]):
    label, row, value = line.rstrip("\n").split("\t")
    if row not in rows:
        rows[row] = {l: [] for l in labels}
        order.append(row)
    rows[row][label].append(float(value))
def cell(v):
    if not v:
        return "-"
    return f"{statistics.median(v):g} ({min(v):g}-{max(v):g})"
print("| row | " + " | ".join(f"{l} median (range)" for l in labels) + " |")
print("|---|" + "---:|" * len(labels))
for row in order:
    print(f"| {row} | " + " | ".join(cell(rows[row][l]) for l in labels) + " |")
PY
