#!/usr/bin/env bash
# Side-by-side benchmark: the same fixed workload on a snapfs mount (fresh store)
# and on a plain host directory, both on the same disk. Prints absolute figures
# and a Markdown table with snapfs/host and snapfs/fuse-overlayfs ratios. Never passes or fails on speed:
# exits non-zero only when something crashes (fio, metabench, mount, ...).
#
# Environment (defaults in brackets; BENCH_QUICK=1 gives a smoke-test version):
#   BENCH_QUICK=1        small sizes and 3 s runs                       [0]
#   BENCH_ROUNDS         rounds of the fio / metabench and container-workload sections:
#                        every target once per round, interleaved (ABCABC), each round on
#                        fresh state; tables give medians (min-max) and per-round ratios
#                                                                      [3; quick 1]
#   BENCH_SIZE           file size for the fio jobs                     [1G; quick 64M]
#   BENCH_RUNTIME        seconds per time-based random job              [15; quick 3]
#   BENCH_META_FILES     files for examples/metabench.rs                [20000; quick 2000]
#   BENCH_DIR            parent of the temp dir (must be a real disk)   [/var/tmp]
#   BENCH_TARGETS        what to compare, in column order   ["host snapfs fuse-overlayfs"]
#                        snapfs-s3: a store on object storage (a loopback SeaweedFS, started
#                        by scripts/s3.sh); it adds rows for its snapshot latency and the
#                        bytes sent to object storage per byte written; snapfs-file: the
#                        same backend with its objects in local files (no S3 server)
#   BENCH_BLOCK_SIZE     --block-size for `snapfs init`                 [snapfs default]
#   BENCH_QUOTA          set both quotas of the snapfs container to this size (e.g. 1T):
#                        the cost of enforcing them                     [none]
#   BENCH_OUT            also write the Markdown table to this file     []
#   BENCH_KEEP=1         keep the temp dir (fio JSON, store) afterwards [0]
#   BENCH_MICRO=0        skip the fio / metabench section              [1]
#   BENCH_WORKLOAD=0     skip the container-workload section (Debian minbase rootfs,
#                        built once with debootstrap into BENCH_ROOTFS_CACHE) [1]
#   BENCH_SNAPSHOTS=0    skip the snapshot section                      [1]
#   BENCH_SNAP_FILES     files (~52 KiB each) of the "filled" container [20000; quick 2000]
#   BENCH_SNAP_COUNT     snapshots present for the "head with N snapshots" run [1000; quick 30]
#   BENCH_SCALE=0        skip the snapshot-scale section                [1]
#   BENCH_FULL=1         snapshot-scale section with 10,000 snapshots   [1,000; quick 200]
#   BENCH_SUSTAINED      size of the sustained sequential write row; empty skips it
#                                                                      [10G; quick none]
#   BENCH_URING=0        FUSE over /dev/fuse, daemons under their supervisor (the default
#                        setup); by default the host-wide switch
#                        /sys/module/fuse/parameters/enable_uring is set to Y for the
#                        run (put back on exit) and daemons run without a supervisor
#                        (SNAPFS_SUPERVISOR=0) so snapfs mounts use io_uring [1]
#   BENCH_CONTAINERD=0   skip the containerd snapshotter section (scripts/bench_containerd.sh,
#                        with its own BENCH_CTR_* settings)             [1]
#   BENCH_DENSITY=0      skip the density section (scripts/bench_density.sh: N containers
#                        mounted on one daemon, both transports; BENCH_DENSITY_N [1000;
#                        quick 50])                                      [1]
#   BENCH_RESTART=0      skip the restart section: the stall a workload sees across kill -9
#                        of the daemon and across `snapfs restart` (tests/fuse_restart.rs,
#                        BENCH_RESTART_N of each [20]) and the steady-state cost of keeping
#                        mounts (scripts/bench_restart.sh)             [1]
#   BENCH_PINNED=0       skip the metabench rerun with the program and the FUSE daemon
#                        pinned to one CPU (shows what cross-CPU wakeups cost) [1]
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    SIZE="${BENCH_SIZE:-64M}" RUNTIME="${BENCH_RUNTIME:-3}" META_FILES="${BENCH_META_FILES:-2000}"
    SNAP_FILES="${BENCH_SNAP_FILES:-2000}" SNAP_COUNT="${BENCH_SNAP_COUNT:-30}"
    SCALE_SNAPS=200 SCALE_BIG_MIB=16 SCALE_FILES=1000 SUSTAINED="${BENCH_SUSTAINED-}"
    ROUNDS="${BENCH_ROUNDS:-1}"
else
    ROUNDS="${BENCH_ROUNDS:-3}"
    SIZE="${BENCH_SIZE:-1G}" RUNTIME="${BENCH_RUNTIME:-15}" META_FILES="${BENCH_META_FILES:-20000}"
    SNAP_FILES="${BENCH_SNAP_FILES:-20000}" SNAP_COUNT="${BENCH_SNAP_COUNT:-1000}"
    SCALE_SNAPS=1000 SCALE_BIG_MIB=100 SCALE_FILES=5000 SUSTAINED="${BENCH_SUSTAINED-10G}"
    [ "${BENCH_FULL:-0}" = 1 ] && SCALE_SNAPS=10000
fi
BASE="${BENCH_DIR:-/var/tmp}"
read -r -a TARGETS <<<"${BENCH_TARGETS:-host snapfs fuse-overlayfs}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive number: $ROUNDS"
ROUND=1 # the round being measured (record tags every figure with it)
[ "${#TARGETS[@]}" -gt 0 ] || die "BENCH_TARGETS is empty"

extra_pkgs=()
for t in "${TARGETS[@]}"; do
    case "$t" in
    host | snapfs | snapfs-s3 | snapfs-file) ;;
    fuse-overlayfs) extra_pkgs+=(fuse-overlayfs) ;;
    *) die "unknown target in BENCH_TARGETS: $t (known: host snapfs snapfs-s3 snapfs-file fuse-overlayfs)" ;;
    esac
done
setup
ensure_packages "${extra_pkgs[@]}"
command -v python3 >/dev/null 2>&1 || ensure_packages python3

log "cargo build --release --bin snapfs --example metabench --example snapbench --example snapscale"
cargo build --release --bin snapfs --example metabench --example snapbench --example snapscale
METABENCH="$CARGO_TARGET_DIR/release/examples/metabench"
SNAPBENCH="$CARGO_TARGET_DIR/release/examples/snapbench"
SNAPSCALE="$CARGO_TARGET_DIR/release/examples/snapscale"

mkdir -p "$BASE"
WORK="$(mktemp -d "$BASE/snapfs-bench.XXXXXX")"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
MOUNTS=() # mount points to take down on exit
PIN=()    # command prefix for daemons and programs: empty, or `taskset -c 0` (pinned rerun)

cleanup() {
    local rc=$? m busy=0
    set +e
    for m in "${MOUNTS[@]}"; do
        if is_mounted "$m"; then
            case "$m" in
            */snapfs-mnt | */s3-mnt | */file-mnt) snapfs_unmount "$m" ;;
            *) fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" ;;
            esac
        fi
        is_mounted "$m" && busy=1
    done
    if [ -n "${URING_WAS:-}" ]; then
        echo "$URING_WAS" >"$URING_SWITCH"
    fi
    [ -d "$WORK/s3" ] && bash "$REPO_ROOT/scripts/s3.sh" stop "$WORK/s3"
    if [ "$busy" = 1 ]; then
        log "a mount under $WORK is still live; leaving $WORK in place"
    elif [ "${BENCH_KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

URING_SWITCH=/sys/module/fuse/parameters/enable_uring
TRANSPORT=dev_fuse
if [ "${BENCH_URING:-1}" = 1 ]; then
    if [ -w "$URING_SWITCH" ]; then
        URING_WAS="$(cat "$URING_SWITCH")"
        echo Y >"$URING_SWITCH"
        TRANSPORT=io_uring
        # A daemon under its supervisor (the default) mounts over /dev/fuse, its mounts
        # outliving it; io_uring mounts need one without.
        export SNAPFS_SUPERVISOR=0
    else
        log "warning: $URING_SWITCH missing or read-only: snapfs runs over /dev/fuse"
    fi
elif [ -w "$URING_SWITCH" ]; then
    URING_WAS="$(cat "$URING_SWITCH")"
    echo N >"$URING_SWITCH"
fi

CAN_DROP=1
drop_caches() {
    sync
    if [ "$CAN_DROP" = 1 ] && ! (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        log "warning: cannot write /proc/sys/vm/drop_caches: 'cold' reads may hit the page cache"
        CAN_DROP=0
    fi
}

# --- targets: mount / cold restart / unmount ------------------------------------

mount_target() { # TARGET; sets TARGET_DIR, the directory to benchmark in
    local t="$1"
    case "$t" in
    host)
        TARGET_DIR="$WORK/host"
        rm -rf -- "$TARGET_DIR"
        mkdir -p "$TARGET_DIR"
        ;;
    snapfs)
        rm -rf -- "$WORK/snapfs-store"
        local init_args=()
        if [ -n "${BENCH_BLOCK_SIZE:-}" ]; then
            init_args=(--block-size "$BENCH_BLOCK_SIZE")
        fi
        "$SNAPFS_BIN" init "$WORK/snapfs-store" "${init_args[@]}"
        TARGET_DIR="$WORK/snapfs-mnt"
        mkdir -p "$TARGET_DIR"
        MOUNTS+=("$TARGET_DIR")
        remount_target snapfs
        if [ -n "${BENCH_QUOTA:-}" ]; then
            # Both limits, far above what the bench writes: what enforcing them costs.
            "$SNAPFS_BIN" containers set default --store "$WORK/snapfs-store" \
                --quota "$BENCH_QUOTA" --quota-including-snapshots "$BENCH_QUOTA" >/dev/null
        fi
        ;;
    snapfs-s3)
        # The same store on a loopback S3 server: its data is in $WORK/s3 (same disk); one
        # server for every round, a prefix per round.
        if [ -z "${S3_STARTED:-}" ]; then
            eval "$(bash "$REPO_ROOT/scripts/s3.sh" start "$WORK/s3")"
            S3_STARTED=1
        fi
        rm -rf -- "$WORK/s3-store"
        local init_args=(--object-store "s3://snapfs/bench-r$ROUND")
        if [ -n "${BENCH_BLOCK_SIZE:-}" ]; then
            init_args+=(--block-size "$BENCH_BLOCK_SIZE")
        fi
        "$SNAPFS_BIN" init "$WORK/s3-store" "${init_args[@]}"
        TARGET_DIR="$WORK/s3-mnt"
        mkdir -p "$TARGET_DIR"
        MOUNTS+=("$TARGET_DIR")
        remount_target snapfs-s3
        ;;
    snapfs-file)
        rm -rf -- "$WORK/file-store" "$WORK/objects"
        "$SNAPFS_BIN" init "$WORK/file-store" --object-store "file://$WORK/objects"
        TARGET_DIR="$WORK/file-mnt"
        mkdir -p "$TARGET_DIR"
        MOUNTS+=("$TARGET_DIR")
        remount_target snapfs-file
        ;;
    fuse-overlayfs)
        rm -rf -- "$WORK/ovl-lower" "$WORK/ovl-upper" "$WORK/ovl-work"
        mkdir -p "$WORK/ovl-lower" "$WORK/ovl-upper" "$WORK/ovl-work"
        TARGET_DIR="$WORK/ovl-mnt"
        mkdir -p "$TARGET_DIR"
        MOUNTS+=("$TARGET_DIR")
        remount_target fuse-overlayfs
        ;;
    esac
}

unmount_target() {
    case "$1" in
    host) ;;
    snapfs) snapfs_unmount "$WORK/snapfs-mnt" ;;
    snapfs-s3) snapfs_unmount "$WORK/s3-mnt" ;;
    snapfs-file) snapfs_unmount "$WORK/file-mnt" ;;
    fuse-overlayfs) fusermount3 -u "$WORK/ovl-mnt" ;;
    esac
}

remount_target() {
    case "$1" in
    host) return 0 ;;
    snapfs) "${PIN[@]}" "$SNAPFS_BIN" mount "$WORK/snapfs-store" "$WORK/snapfs-mnt" ;;
    snapfs-s3) "${PIN[@]}" "$SNAPFS_BIN" mount "$WORK/s3-store" "$WORK/s3-mnt" ;;
    snapfs-file) "${PIN[@]}" "$SNAPFS_BIN" mount "$WORK/file-store" "$WORK/file-mnt" ;;
    fuse-overlayfs)
        "${PIN[@]}" fuse-overlayfs -o "lowerdir=$WORK/ovl-lower,upperdir=$WORK/ovl-upper,workdir=$WORK/ovl-work" \
            "$WORK/ovl-mnt"
        ;;
    esac
    is_mounted "$TARGET_DIR" || die "$1: mount returned but $TARGET_DIR is not mounted"
}

# Cold cache: restart the daemon (drops its own caches) and drop the kernel's.
cold_cache() {
    unmount_target "$1"
    drop_caches
    remount_target "$1"
}

# --- measurements -----------------------------------------------------------------

record() { # TARGET WORKLOAD VALUE UNIT (in round ROUND)
    printf '%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" "$4" >>"$RESULTS"
    printf '    %-28s %12s %s\n' "$2" "$3" "$4" >&2
}

# fio_job TARGET DIR WORKLOAD DIRECTION(read|write) UNIT(MiB/s|IOPS) FIO_ARGS...
fio_job() {
    local t="$1" dir="$2" workload="$3" direction="$4" unit="$5" json value
    shift 5
    json="$WORK/fio-r$ROUND-$t-${workload// /_}.json"
    fio --name="${workload// /_}" --filename="$dir/fio.dat" --size="$SIZE" \
        --ioengine=psync --iodepth=1 --numjobs=1 --fallocate=none \
        --output-format=json --output="$json" "$@" >&2
    value="$(python3 - "$json" "$direction" "$unit" <<'PY'
import json, sys
path, direction, unit = sys.argv[1:]
job = json.load(open(path))["jobs"][0]
if job.get("error"):
    sys.exit(f"fio job {job.get('jobname')} failed: error {job['error']}")
d = job[direction]
if d["io_bytes"] <= 0:
    sys.exit(f"fio job {job.get('jobname')}: no {direction} I/O done")
print(f"{d['bw_bytes'] / 2**20:.1f}" if unit == "MiB/s" else f"{d['iops']:.0f}")
PY
)"
    record "$t" "$workload" "$value" "$unit"
}

# The block device holding DIR, as /proc/diskstats names it.
disk_of() {
    local src
    src="$(df --output=source "$1" | tail -1)"
    basename "$(readlink -f "$src")"
}

# Bytes the device of BENCH_DIR has written so far (/proc/diskstats, 512-byte sectors).
disk_written() {
    : "${DISK:=$(disk_of "$WORK")}"
    awk -v d="$DISK" '$3 == d { print $10 * 512 }' /proc/diskstats
}

# disk_per_byte TARGET WORKLOAD BYTES BEFORE: records the device's bytes written since
# BEFORE (after a sync) per byte the workload wrote.
disk_per_byte() {
    sync
    local after
    after="$(disk_written)"
    record "$1" "disk bytes per byte, $2" \
        "$(python3 -c "print(f'{($after - $4) / $3:.2f}')")" x
}

size_bytes() { numfmt --from=iec "$1"; }

run_target() {
    local t="$1" dir rt="$RUNTIME" before
    log "target $t: mounting"
    mount_target "$t"
    dir="$TARGET_DIR"
    log "target $t: fio on $dir (size $SIZE, ${rt}s random jobs)"

    sync
    before="$(disk_written)"
    fio_job "$t" "$dir" "seq write $SIZE bs=1M end_fsync" write MiB/s \
        --rw=write --bs=1M --end_fsync=1
    disk_per_byte "$t" "seq write $SIZE" "$(size_bytes "$SIZE")" "$before"
    cold_cache "$t"
    fio_job "$t" "$dir" "seq read $SIZE bs=1M cold" read MiB/s \
        --rw=read --bs=1M
    fio_job "$t" "$dir" "rand write 4k" write IOPS \
        --rw=randwrite --bs=4k --time_based --runtime="$rt"
    fio_job "$t" "$dir" "rand write 4k fsync=1" write IOPS \
        --rw=randwrite --bs=4k --fsync=1 --time_based --runtime="$rt"
    cold_cache "$t"
    fio_job "$t" "$dir" "rand read 4k cold" read IOPS \
        --rw=randread --bs=4k --time_based --runtime="$rt"
    rm -f -- "$dir/fio.dat"
    case "$t" in snapfs | snapfs-s3 | snapfs-file) snapfs_rows "$t" "$dir" ;; esac
    if [ -n "$SUSTAINED" ]; then
        # Far past the memtables and the page cache's dirty limits: compare with the first row.
        sync
        before="$(disk_written)"
        fio_job "$t" "$dir" "seq write $SUSTAINED bs=1M end_fsync" write MiB/s \
            --rw=write --bs=1M --end_fsync=1 --size="$SUSTAINED"
        disk_per_byte "$t" "seq write $SUSTAINED" "$(size_bytes "$SUSTAINED")" "$before"
        rm -f -- "$dir/fio.dat"
        # The same two sizes with direct I/O: the file's own page cache out of the picture.
        # On this VM a page of memory not touched lately costs ~30 us to hand out, so a write
        # that grows the page cache past the few GiB still warm runs at ~150 MiB/s whatever
        # the filesystem (README "File data in segments"); these rows show the write path.
        fio_job "$t" "$dir" "seq write $SIZE bs=1M direct=1" write MiB/s \
            --rw=write --bs=1M --end_fsync=1 --direct=1
        rm -f -- "$dir/fio.dat"
        fio_job "$t" "$dir" "seq write $SUSTAINED bs=1M direct=1" write MiB/s \
            --rw=write --bs=1M --end_fsync=1 --direct=1 --size="$SUSTAINED"
        rm -f -- "$dir/fio.dat"
    fi

    metabench "$t" "$dir" ""
    if [ "${BENCH_PINNED:-1}" = 1 ] && [ "$(nproc)" -gt 1 ] && command -v taskset >/dev/null; then
        # Same run with the program and the FUSE daemon on CPU 0: a FUSE round trip is then a
        # context switch instead of a wakeup on the other vCPU.
        unmount_target "$t"
        PIN=(taskset -c 0)
        remount_target "$t"
        metabench "$t" "$dir" ", one CPU"
        PIN=()
    fi

    unmount_target "$t"
}

median_ms() { # reads one number per line (ns), prints the median in ms
    sort -n | awk '{v[NR]=$1} END {printf "%.2f", v[int((NR+1)/2)]/1e6}'
}

mkdir_latency() { # DIR ROUNDS TAG: median ms of `mkdir .snapshots/...` after a fresh write
    local dir="$1" rounds="$2" tag="$3" i t0 t1
    for ((i = 0; i < rounds; i++)); do
        head -c 65536 /dev/urandom >"$dir/fresh-$tag-$i"
        t0=$(date +%s%N)
        mkdir "$dir/.snapshots/$tag-$i"
        t1=$(date +%s%N)
        echo $((t1 - t0))
    done | median_ms
}

# snapfs_rows TARGET DIR: snapshot latency after the fio jobs, and for a store on object
# storage the traffic of one daemon lifetime: a sequential file and random 4 KiB overwrites
# of it, synced, then 30 s idle for compaction; bytes PUT per byte the daemon wrote (keys and
# values), and per byte of file data.
snapfs_rows() {
    local t="$1" dir="$2" store status
    record "$t" "mkdir .snapshots/X, median ms" "$(mkdir_latency "$dir" 15 "bench-$t")" ms
    case "$t" in
    snapfs-s3) store="$WORK/s3-store" ;;
    snapfs-file) store="$WORK/file-store" ;;
    *) return 0 ;;
    esac
    cold_cache "$t"
    fio --name=amp --filename="$dir/amp.dat" --size="$SIZE" --rw=write --bs=1M \
        --fallocate=none --end_fsync=1 --output=/dev/null
    fio --name=amp-rand --filename="$dir/amp.dat" --size="$SIZE" --rw=randwrite --bs=4k \
        --time_based --runtime="$RUNTIME" --fallocate=none --end_fsync=1 --output=/dev/null
    sleep 30
    status="$("$SNAPFS_BIN" status --store "$store" --json)"
    read -r per_written per_data < <(python3 - "$status" "$SIZE" <<'PY'
import json, sys
o = json.loads(sys.argv[1])["object_store"]
print(f"{o['put_bytes'] / max(o['written_bytes'], 1):.2f} {o['put_bytes'] / 2**20:.0f}")
PY
)
    record "$t" "object store: bytes PUT per byte written" "$per_written" x
    record "$t" "object store: MiB PUT for the amp run" "$per_data" MiB
    rm -f -- "$dir/amp.dat"
}

metabench() { # TARGET DIR LABEL_SUFFIX
    local t="$1" dir="$2" suffix="$3" meta workload ops
    meta="$WORK/metabench-r$ROUND-$t${suffix:+-pinned}.jsonl"
    log "target $t: metabench ($META_FILES files in 100 dirs${suffix})"
    "${PIN[@]}" "$METABENCH" "$dir" --files "$META_FILES" --dirs 100 >"$meta"
    while IFS=$'\t' read -r workload ops; do
        record "$t" "$workload$suffix" "$ops" "ops/s"
    done < <(python3 - "$meta" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"meta {r['phase']} {r['files']} files\t{r['ops_per_sec']:.0f}")
PY
)
}

commit="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
fstype="$(stat -f -c %T "$WORK")"
{
    echo "snapfs bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit, $(uname -sr), $(nproc) cores"
    echo "work dir $WORK ($fstype), fio size $SIZE, random jobs ${RUNTIME}s, metabench $META_FILES files, $ROUNDS round(s)"
    echo "targets: ${TARGETS[*]}; snapfs FUSE transport: $TRANSPORT"
} >&2

micro_bench() {
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "round $ROUND/$ROUNDS"
    for t in "${TARGETS[@]}"; do
        run_target "$t"
    done
done

TABLE="$(python3 "$REPO_ROOT/scripts/bench_table.py" "$RESULTS" workload "${TARGETS[@]}")
fio: psync, iodepth 1, file $SIZE; random jobs $RUNTIME s each; metabench: $META_FILES files of 100 B in 100 dirs."
if [ "$CAN_DROP" != 1 ]; then
    TABLE+=$'\n'"Warning: page cache could not be dropped, 'cold' reads may be warm."
fi

echo
echo "$TABLE"
if [ -n "${BENCH_OUT:-}" ]; then
    printf '%s\n' "$TABLE" >"$BENCH_OUT"
    log "table written to $BENCH_OUT"
fi
}

if [ "${BENCH_MICRO:-1}" = 1 ]; then
    micro_bench
fi

# --- container workloads (scripts/bench_workload.sh) -------------------------------
# shellcheck source=scripts/bench_workload.sh
source "$REPO_ROOT/scripts/bench_workload.sh"
if [ "${BENCH_WORKLOAD:-1}" = 1 ]; then
    workload_bench
fi

# --- snapshots ------------------------------------------------------------------
# Snapshot create / restore / copy latency (in-process on a real store, empty vs filled),
# `mkdir .snapshots/X` latency through a mount (empty vs filled, fresh unsynced writes just
# before each), and head speed with 0 vs SNAP_COUNT snapshots present.

fill_tree() { # DIR FILES: FILES files of ~52 KiB in 100 directories (about 1 GiB at 20,000)
    python3 - "$1" "$2" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
block = os.urandom(53687)
for d in range(100):
    os.makedirs(os.path.join(root, f"d{d}"), exist_ok=True)
for i in range(n):
    with open(os.path.join(root, f"d{i % 100}", f"f{i}"), "wb") as f:
        f.write(block)
PY
}

snapshot_bench() {
    local store="$WORK/snap-store" mnt="$WORK/snapfs-mnt" empty filled
    log "snapshots: in-process create/restore/copy latency ($SNAP_FILES files filled)"
    SNAP_TABLE="$("$SNAPBENCH" "$WORK/snapbench-store" --files "$SNAP_FILES" --rounds 15)"
    rm -rf -- "$WORK/snapbench-store"

    log "snapshots: mkdir .snapshots/X latency through the mount"
    "$SNAPFS_BIN" init "$store"
    mkdir -p "$mnt"
    MOUNTS+=("$mnt")
    "$SNAPFS_BIN" mount "$store" "$mnt"
    empty="$(mkdir_latency "$mnt" 15 empty)"
    fill_tree "$mnt" "$SNAP_FILES"
    filled="$(mkdir_latency "$mnt" 15 filled)"

    log "snapshots: head speed with 0 vs $SNAP_COUNT snapshots"
    local dir="$mnt/speed" r0w r0r rNw rNr i
    mkdir -p "$dir"
    fio --name=prep --filename="$dir/fio.dat" --size=256M --rw=write --bs=1M \
        --fallocate=none --output=/dev/null
    speed() { # prints "write_iops read_iops"
        local w r
        w="$(fio --name=w --filename="$dir/fio.dat" --size=256M --rw=randwrite --bs=4k \
            --time_based --runtime="$RUNTIME" --fallocate=none --output-format=json |
            python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["iops"]))')"
        r="$(fio --name=r --filename="$dir/fio.dat" --size=256M --rw=randread --bs=4k \
            --time_based --runtime="$RUNTIME" --fallocate=none --output-format=json |
            python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))')"
        echo "$w $r"
    }
    read -r r0w r0r < <(speed)
    for ((i = 0; i < SNAP_COUNT; i++)); do
        dd if=/dev/urandom of="$dir/fio.dat" bs=4k count=4 seek=$((RANDOM * 2)) \
            conv=notrunc status=none
        mkdir "$mnt/.snapshots/s$i"
    done
    read -r rNw rNr < <(speed)
    snapfs_unmount "$mnt"

    echo
    echo "$SNAP_TABLE"
    echo
    echo "| through the mount | empty | filled ($SNAP_FILES files) | filled/empty |"
    echo "|---|---:|---:|---:|"
    awk -v a="$empty" -v b="$filled" \
        'BEGIN {printf "| mkdir .snapshots/X, median ms | %.2f | %.2f | %.2f |\n", a, b, b / a}'
    echo
    echo "| head, 4 KiB random (IOPS) | 0 snapshots | $SNAP_COUNT snapshots | ratio |"
    echo "|---|---:|---:|---:|"
    awk -v a="$r0w" -v b="$rNw" 'BEGIN {printf "| write | %d | %d | %.2f |\n", a, b, b / a}'
    awk -v a="$r0r" -v b="$rNr" 'BEGIN {printf "| read | %d | %d | %.2f |\n", a, b, b / a}'
}

if [ "${BENCH_SNAPSHOTS:-1}" = 1 ]; then
    snapshot_bench
fi

# --- snapshots at scale -----------------------------------------------------------
# In-process (examples/snapscale.rs): create latency per hundred snapshots, list / restore /
# copy / delete at 1 vs N snapshots, oldest-first deletion of N - 10 with reclaim after each.
# Through a mount (the daemon): the daily pattern with `mkdir`/`rmdir` in .snapshots, then the
# store's size sampled until it is back near its size before the snapshots, and the unmount.

store_bytes() { du -sb "$1" | cut -f1; }

scale_bench() {
    log "snapshot scale: $SCALE_SNAPS snapshots in-process ($SCALE_BIG_MIB MiB + $SCALE_FILES files)"
    "$SNAPSCALE" "$WORK/snapscale-store" --snapshots "$SCALE_SNAPS" \
        --big-mib "$SCALE_BIG_MIB" --files "$SCALE_FILES"
    rm -rf -- "$WORK/snapscale-store"

    log "snapshot scale: $SCALE_SNAPS snapshots through a mount, oldest-first rmdir"
    local store="$WORK/scale-store" mnt="$WORK/scale-mnt" i t0 t1 base full after back=""
    "$SNAPFS_BIN" init "$store"
    mkdir -p "$mnt"
    MOUNTS+=("$mnt")
    "$SNAPFS_BIN" mount "$store" "$mnt"
    head -c "$((SCALE_BIG_MIB << 20))" /dev/urandom >"$mnt/big"
    mkdir -p "$mnt/small"
    for ((i = 0; i < SCALE_FILES; i++)); do echo "file $i" >"$mnt/small/f$i"; done
    sync
    sleep 12 # the daemon flushes its memtables once idle (the log goes)
    base="$(store_bytes "$store")"
    t0=$(date +%s%N)
    for ((i = 0; i < SCALE_SNAPS; i++)); do
        mkdir "$mnt/.snapshots/day$i"
        echo "changed $i" >"$mnt/small/f$((i % SCALE_FILES))"
        echo "day $i" >>"$mnt/log"
        dd if=/dev/urandom of="$mnt/big" bs=4k count=1 seek=$(((i * 7919) % (SCALE_BIG_MIB * 256))) \
            conv=notrunc status=none
    done
    t1=$(date +%s%N)
    local t_create=$(((t1 - t0) / 1000000))
    sync
    full="$(store_bytes "$store")"
    local names
    mapfile -t names < <(ls "$mnt/.snapshots" | grep '^snap-' | sort)
    t0=$(date +%s%N)
    for ((i = 0; i < ${#names[@]} - 10; i++)); do
        rmdir "$mnt/.snapshots/${names[$i]}"
    done
    t1=$(date +%s%N)
    local t_rmdir=$(((t1 - t0) / 1000000)) waited=0 max="$full" cur
    while [ "$waited" -lt 180 ]; do
        sleep 1
        waited=$((waited + 1))
        cur="$(store_bytes "$store")"
        [ "$cur" -gt "$max" ] && max="$cur"
        if [ "$cur" -le $((base * 5 / 4)) ]; then
            back="$waited"
            break
        fi
    done
    after="$(store_bytes "$store")"
    local live
    live="$(SNAPFS_STORE="$store" "$SNAPFS_BIN" containers show default --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_used"])')"
    t0=$(date +%s%N)
    snapfs_unmount "$mnt"
    t1=$(date +%s%N)
    local t_umount=$(((t1 - t0) / 1000000))

    echo
    echo "| daily pattern through the mount ($SCALE_SNAPS snapshots, $SCALE_BIG_MIB MiB + $SCALE_FILES files) | value |"
    echo "|---|---:|"
    echo "| mkdir .snapshots/X + small changes, per snapshot ms | $((t_create / SCALE_SNAPS)) |"
    echo "| rmdir of the oldest $(( ${#names[@]} - 10 )), total ms | $t_rmdir |"
    echo "| store MB: before snapshots / with all / peak after deletion / at the end | $((base / 1000000)) / $((full / 1000000)) / $((max / 1000000)) / $((after / 1000000)) |"
    echo "| container's live bytes at the end (tree + 10 snapshots), MB | $((live / 1000000)) |"
    echo "| seconds until the store is within 1.25x of its size before snapshots | ${back:-not within 180 s} |"
    echo "| store MB after the unmount | $(($(store_bytes "$store") / 1000000)) |"
    echo "| snapfs umount right after, ms | $t_umount |"
}

if [ "${BENCH_SCALE:-1}" = 1 ]; then
    scale_bench
fi

# containerd: snapfs as a snapshotter against containerd's overlayfs and native (its own
# script: a private containerd per round, examples/ctrbench.rs).
if [ "${BENCH_CONTAINERD:-1}" = 1 ]; then
    if [ "${BENCH_QUICK:-0}" = 1 ]; then
        BENCH_CTR_ROUNDS="${BENCH_CTR_ROUNDS:-1}" BENCH_CTR_N="${BENCH_CTR_N:-5}" \
            BENCH_CTR_USAGE_MIB="${BENCH_CTR_USAGE_MIB:-64}" bash scripts/bench_containerd.sh
    else
        bash scripts/bench_containerd.sh
    fi
fi

# Restart without unmount: the stall across a daemon's replacement, as the fsync writer of
# tests/fuse_restart.rs sees it, and what keeping the mounts costs in steady state.
if [ "${BENCH_RESTART:-1}" = 1 ]; then
    echo
    echo "## Restart without unmount (tests/fuse_restart.rs, scripts/bench_restart.sh)"
    SNAPFS_RESTART_KILLS="${BENCH_RESTART_N:-20}" SNAPFS_RESTART_RESTARTS="${BENCH_RESTART_N:-20}" \
        cargo test --release --test fuse_restart -- --test-threads=1 --nocapture a_workload 2>&1 |
        grep -E "replacements:|test result" || echo "fuse_restart failed"
    bash scripts/bench_restart.sh "$SNAPFS_BIN"
fi

# Density: N mounted containers on one daemon, both transports (its own script).
if [ "${BENCH_DENSITY:-1}" = 1 ]; then
    echo
    echo "## Density (scripts/bench_density.sh)"
    if [ "${BENCH_QUICK:-0}" = 1 ]; then
        BENCH_DENSITY_N="${BENCH_DENSITY_N:-50}" bash scripts/bench_density.sh "$SNAPFS_BIN"
    else
        bash scripts/bench_density.sh "$SNAPFS_BIN"
    fi
fi
