# Container workloads for scripts/bench.sh (sourced by it; uses its WORK, MOUNTS, SNAPFS_BIN,
# TARGETS, log, die, drop_caches, is_mounted and snapfs_unmount). Not run on its own.
#
# A Debian minbase root file system (debootstrap, ~200 MB, ~6,800 files) is built once and
# cached as a tarball outside the repository (BENCH_ROOTFS_CACHE, default
# /var/cache/snapfs-bench). On each target (host directory, snapfs, fuse-overlayfs): untar
# it (with a final sync), `find` with sizes cold and warm, `tar -c` of the tree cold,
# `grep -r` warm, 200 execs of /bin/true in a chroot, 20 runs of `dpkg-query -W` in the
# chroot, `cp -a` of /usr inside the mount, `git add -A && git commit` of the copy of
# /usr/share, `rm -rf` of the copy. Every target once per round (bench.sh's ROUNDS),
# interleaved, each round on fresh state; prints seconds per target (median and min-max)
# and per-round speed ratios (host or fuse-overlayfs time / snapfs time: above 1, snapfs is
# faster; scripts/bench_table.py).
# shellcheck shell=bash

ROOTFS_CACHE="${BENCH_ROOTFS_CACHE:-/var/cache/snapfs-bench}"
ROOTFS_TAR="$ROOTFS_CACHE/rootfs-bookworm-minbase.tar"

ensure_rootfs() {
    [ -s "$ROOTFS_TAR" ] && return 0
    command -v debootstrap >/dev/null || ensure_packages debootstrap
    log "building the Debian minbase root file system once (cached in $ROOTFS_CACHE)"
    local build="$ROOTFS_CACHE/rootfs-build"
    mkdir -p "$ROOTFS_CACHE"
    rm -rf -- "$build"
    debootstrap --variant=minbase bookworm "$build" "${BENCH_MIRROR:-$(debian_mirror)}" \
        >"$ROOTFS_CACHE/debootstrap.log" 2>&1 ||
        die "debootstrap failed (see $ROOTFS_CACHE/debootstrap.log)"
    tar -C "$build" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf -- "$build"
}

WL_RESULTS=""

wl_dir() { # TARGET: where the workload runs
    case "$1" in
    host) echo "$WORK/wl/host" ;;
    snapfs) echo "$WORK/wl/snapfs-mnt" ;;
    fuse-overlayfs) echo "$WORK/wl/ovl-mnt" ;;
    esac
}

wl_mount() {
    local t="$1" d
    d="$(wl_dir "$t")"
    mkdir -p "$d"
    case "$t" in
    host) ;;
    snapfs)
        [ -d "$WORK/wl/store" ] || "$SNAPFS_BIN" init "$WORK/wl/store"
        MOUNTS+=("$d")
        "$SNAPFS_BIN" mount "$WORK/wl/store" "$d"
        ;;
    fuse-overlayfs)
        mkdir -p "$WORK/wl/ovl-lower" "$WORK/wl/ovl-upper" "$WORK/wl/ovl-work"
        MOUNTS+=("$d")
        fuse-overlayfs -o "lowerdir=$WORK/wl/ovl-lower,upperdir=$WORK/wl/ovl-upper,workdir=$WORK/wl/ovl-work" "$d"
        ;;
    esac
}

wl_unmount() {
    case "$1" in
    host) ;;
    snapfs) snapfs_unmount "$(wl_dir snapfs)" ;;
    fuse-overlayfs) fusermount3 -u "$(wl_dir fuse-overlayfs)" ;;
    esac
}

wl_cold() { # restart the daemon and drop the kernel's caches
    wl_unmount "$1"
    drop_caches
    wl_mount "$1"
}

wl_time() { # TARGET NAME CMD...: runs CMD, records its seconds
    local t="$1" name="$2" t0 t1
    shift 2
    t0=$(date +%s%N)
    "$@" >/dev/null 2>"$WORK/wl-last.err" || log "warning: $name on $t failed: $* ($(tail -c 300 "$WORK/wl-last.err"))"
    t1=$(date +%s%N)
    WL_RESULTS+="$ROUND"$'\t'"$t"$'\t'"$name"$'\t'"$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.3f", ns / 1e9}')"$'\t'"s"$'\n'
}

wl_target() {
    local t="$1" d
    log "workload on $t (round $ROUND/$ROUNDS)"
    # Fresh state every round.
    rm -rf -- "$WORK/wl/store" "$WORK/wl/ovl-lower" "$WORK/wl/ovl-upper" "$WORK/wl/ovl-work" \
        "$(wl_dir host)"
    wl_mount "$t"
    d="$(wl_dir "$t")"
    mkdir -p "$d/root"
    wl_time "$t" "untar rootfs + sync" sh -c "tar -xf '$ROOTFS_TAR' -C '$d/root' && sync"
    wl_cold "$t"
    wl_time "$t" "find with sizes, cold" find "$d/root" -printf '%s %p\n'
    wl_time "$t" "find with sizes, warm" find "$d/root" -printf '%s %p\n'
    wl_cold "$t"
    wl_time "$t" "tar -c, cold" sh -c "tar -C '$d' -cf - root | cat >/dev/null"
    grep -r snapfs-no-such-text "$d/root/usr" >/dev/null 2>&1 || true # warm-up
    wl_time "$t" "grep -r /usr, warm" sh -c "grep -r snapfs-no-such-text '$d/root/usr'; [ \$? -le 1 ]"
    wl_time "$t" "200 execs of /bin/true (chroot)" chroot "$d/root" /bin/sh -c \
        'i=0; while [ $i -lt 200 ]; do /bin/true || exit 1; i=$((i + 1)); done'
    wl_time "$t" "20 x dpkg-query -W (chroot)" chroot "$d/root" /bin/sh -c \
        'i=0; while [ $i -lt 20 ]; do dpkg-query -W >/tmp/dpkg-query.out || exit 1; i=$((i + 1)); done'
    wl_time "$t" "cp -a /usr" cp -a "$d/root/usr" "$d/usr-copy"
    wl_time "$t" "git add -A + commit (/usr/share)" sh -c "cd '$d/usr-copy/share' && git init -q && \
        git add -A && git -c user.name=bench -c user.email=bench@localhost commit -qm snapshot"
    wl_time "$t" "rm -rf of the copy" rm -rf "$d/usr-copy"
    rm -rf "${d:?}/root"
    wl_unmount "$t"
}

workload_bench() {
    ensure_rootfs
    local t
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        for t in "${TARGETS[@]}"; do
            wl_target "$t"
        done
    done
    echo
    printf '%s' "$WL_RESULTS" >"$WORK/workload.tsv"
    python3 "$REPO_ROOT/scripts/bench_table.py" "$WORK/workload.tsv" \
        "container workload (seconds)" "${TARGETS[@]}"
}
