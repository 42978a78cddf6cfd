#!/usr/bin/env bash
# A private containerd (Debian's 1.6, with runc) for the tests that drive snapfs as an
# external ("proxy") snapshotter: its root, state, sockets and log all under one directory,
# never the system's /var/lib/containerd or /run/containerd/containerd.sock; CRI and the
# snapshotters/plugins that could touch the machine are disabled.
# Usage:
#   scripts/containerd.sh install                  install containerd, runc and busybox-static
#   scripts/containerd.sh image OUT_TAR [NAME]     build the test image (an OCI archive, offline,
#                                                  byte-for-byte reproducible) named NAME
#                                                  (default snapfs.test/busybox:1)
#   scripts/containerd.sh config DIR NAME SOCKET   write DIR/config.toml with the proxy snapshotter
#                                                  NAME at SOCKET; prints its path
#   scripts/containerd.sh start DIR NAME SOCKET    config, then start containerd in the background
#                                                  (DIR/containerd.sock, log DIR/containerd.log,
#                                                  pid DIR/containerd.pid) and wait until it answers
#   scripts/containerd.sh stop DIR                 kill its containers and shims, containerd, and
#                                                  unmount everything under DIR (idempotent)
#   scripts/containerd.sh stop-daemon DIR          stop containerd only: its shims (and containers)
#                                                  keep running and reconnect on the next start
# Then: ctr -a DIR/containerd.sock images import --snapshotter NAME IMG.tar, and
#       ctr -a DIR/containerd.sock run --rm --snapshotter NAME REF ID CMD...
# What 1.6 still writes outside DIR, by design (nothing configures it): the shims' sockets in
# /run/containerd/s/ (named by a hash of DIR's socket, namespace and id), runc's state in
# /run/containerd/runc/NAMESPACE/ID, ctr's I/O fifos in /run/containerd/fifo (unless
# `ctr run --fifo-dir`), and the containers' cgroups /NAMESPACE/ID. Deleting a container
# removes its own; `stop` removes what a killed shim left, and the then empty runc root and
# cgroup directories of a namespace other than `default` (use a namespace per instance: runc's
# /run/containerd/runc/NAMESPACE/ID is shared by every containerd on the machine).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONTAINERD_PACKAGES=(containerd runc busybox-static)
DEFAULT_IMAGE=snapfs.test/busybox:1
# The default runc root of containerd-shim-runc-v2 (per namespace below it).
RUNC_ROOT=/run/containerd/runc

# ---------------------------------------------------------------------------------------
# The test image

# write_tar OUT SRC: a reproducible uncompressed tar of the entries under SRC (not SRC
# itself), names relative (`bin/busybox`), sorted, uid/gid 0, mtime 0.
write_tar() {
    local out="$1" src="$2"
    (cd "$src" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) |
        tar -C "$src" --create --file="$out" --format=gnu --no-recursion --files-from=- \
            --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner
}

# add_blob DIR FILE: move FILE into DIR/blobs/sha256/ under its digest; sets BLOB (its
# `"digest":…,"size":…` JSON fields) and DIGEST.
add_blob() {
    local dir="$1" file="$2" hex size
    hex="$(sha256sum "$file" | cut -d' ' -f1)"
    size="$(stat -c %s "$file")"
    mv -- "$file" "$dir/blobs/sha256/$hex"
    DIGEST="sha256:$hex"
    BLOB="\"digest\":\"$DIGEST\",\"size\":$size"
}

# build_image OUT NAME: the 2-layer busybox image. Layer 1: busybox with its applet links,
# /etc/passwd and /etc/group, the usual top dirs, /etc/layer1-only, /etc/deleted-by-layer2 and
# a 1 MiB /data/blob; layer 2: /etc/layer2 and the whiteout of /etc/deleted-by-layer2.
build_image() {
    local out="$1" name="$2"
    [[ "$name" =~ ^[A-Za-z0-9._/:@-]+$ ]] || die "bad image name: $name"
    [ -x /bin/busybox ] || die "/bin/busybox missing: run scripts/containerd.sh install"
    WORK="$(mktemp -d)" OUT_TMP="$out.tmp.$$"
    trap 'rm -rf -- "$WORK" "$OUT_TMP"' EXIT
    local work="$WORK"
    umask 022

    local l1="$work/layer1" l2="$work/layer2" applet d
    mkdir -p "$l1"/{bin,tmp,proc,sys,dev,etc,root,var,data} "$l2/etc"
    chmod 1777 "$l1/tmp"
    chmod 0700 "$l1/root"
    install -m 0755 /bin/busybox "$l1/bin/busybox"
    for applet in sh ls cat echo rm mkdir sleep sync dd stat du test true false grep wc head \
        tail touch mv cp ln find df md5sum sha256sum seq; do
        ln -s busybox "$l1/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$l1/etc/passwd"
    printf 'root:x:0:\n' >"$l1/etc/group"
    printf 'from layer 1\n' >"$l1/etc/layer1-only"
    printf 'should be gone\n' >"$l1/etc/deleted-by-layer2"
    # 1 MiB that neither compresses nor repeats: SHA-256 in counter mode.
    python3 - "$l1/data/blob" <<'PY'
import hashlib, sys
with open(sys.argv[1], "wb") as f:
    f.write(b"".join(hashlib.sha256(b"snapfs-blob-%d" % i).digest() for i in range(32768)))
PY
    printf 'from layer 2\n' >"$l2/etc/layer2"
    : >"$l2/etc/.wh.deleted-by-layer2"
    for d in "$l1" "$l2"; do
        find "$d" -type f ! -name busybox -exec chmod 0644 {} +
    done

    write_tar "$work/l1.tar" "$l1"
    write_tar "$work/l2.tar" "$l2"
    write_oci "$out" "$name" '["PATH=/bin"]' '["/bin/sh"]' "$work/l1.tar" "$work/l2.tar"
}

# write_oci OUT NAME ENV_JSON CMD_JSON LAYER_TAR...: an OCI archive at OUT naming image NAME,
# whose uncompressed layers are the given tars (moved into it), in order. Needs WORK (a temp
# dir removed on exit) and OUT_TMP set by the caller.
write_oci() {
    local out="$1" name="$2" env="$3" cmdline="$4" arch
    shift 4
    # `ctr images import` imports the machine's platform only.
    arch="$(dpkg --print-architecture)"
    local oci="$WORK/oci" layers="" diffs="" config manifest
    mkdir -p "$oci/blobs/sha256"
    for tar in "$@"; do
        add_blob "$oci" "$tar"
        layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",$BLOB}"
        diffs="$diffs${diffs:+,}\"$DIGEST\""
    done
    # Uncompressed layers: each diff_id is the layer's digest. No `created`: reproducible.
    cat >"$WORK/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Env":$env,"Cmd":$cmdline},"rootfs":{"type":"layers","diff_ids":[$diffs]}}
JSON
    add_blob "$oci" "$WORK/config.json"
    config="$BLOB"
    cat >"$WORK/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json",$config},"layers":[$layers]}
JSON
    add_blob "$oci" "$WORK/manifest.json"
    manifest="$DIGEST"
    # `io.containerd.image.name` names the image on `ctr images import`.
    cat >"$oci/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",$BLOB,"annotations":{"io.containerd.image.name":"$name"}}]}
JSON
    printf '{"imageLayoutVersion":"1.0.0"}\n' >"$oci/oci-layout"
    chmod 0644 "$oci/index.json" "$oci/oci-layout" "$oci"/blobs/sha256/*

    # Written beside OUT and renamed: a concurrent build or reader never sees half a file.
    mkdir -p "$(dirname "$out")"
    write_tar "$OUT_TMP" "$oci"
    mv -f -- "$OUT_TMP" "$out"
    log "image $name (manifest $manifest, layers ${diffs//\"/}) in $out"
}

# build_image_from_tar OUT NAME ROOTFS_TAR: a one-layer image whose layer is a copy of
# ROOTFS_TAR (e.g. the benchmark's Debian minbase tree).
build_image_from_tar() {
    local out="$1" name="$2" rootfs="$3"
    [[ "$name" =~ ^[A-Za-z0-9._/:@-]+$ ]] || die "bad image name: $name"
    [ -s "$rootfs" ] || die "no root file system tarball at $rootfs"
    WORK="$(mktemp -d)" OUT_TMP="$out.tmp.$$"
    trap 'rm -rf -- "$WORK" "$OUT_TMP"' EXIT
    cp -- "$rootfs" "$WORK/layer.tar"
    write_oci "$out" "$name" \
        '["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]' '["/bin/bash"]' \
        "$WORK/layer.tar"
}

# ---------------------------------------------------------------------------------------
# The daemon

# write_config DIR NAME SOCKET: DIR/config.toml.
write_config() {
    local dir="$1" name="$2" socket="$3"
    [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "bad plugin name: $name"
    # containerd refuses a unix socket path longer than 104 bytes.
    [ "${#dir}" -le 82 ] || die "DIR too long for containerd's sockets (> 82 bytes): $dir"
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<TOML
# Written by scripts/containerd.sh: a private containerd, everything under $dir.
version = 2
root = "$dir/root"
state = "$dir/state"
# CRI (it would start CNI and stream servers), /opt/containerd (the "opt" plugin installs
# there) and the snapshotters the tests do not use (aufs and zfs probe the kernel, devmapper
# and btrfs need their own devices): off. native and overlayfs stay. (The v1 runtime stays:
# without it 1.6's tasks service does not load.)
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd-ttrpc.sock"

# No debug (pprof) or metrics listener.
[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

# The snapshotter under test, reached over gRPC (containerd 1.6: only type and address).
[proxy_plugins.$name]
  type = "snapshot"
  address = "$socket"
TOML
    echo "$dir/config.toml"
}

# containerd_pid DIR: the pid in DIR/containerd.pid if that process is our containerd.
containerd_pid() {
    local dir="$1" pid
    pid="$(cat "$dir/containerd.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && grep -qzx -- "$dir/config.toml" "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

# answers DIR: containerd on DIR/containerd.sock answers a version request.
answers() {
    [ -S "$1/containerd.sock" ] &&
        timeout 5 ctr -a "$1/containerd.sock" version >/dev/null 2>&1
}

# start_daemon DIR: start containerd with DIR/config.toml; wait up to 30 s for its socket.
start_daemon() {
    local dir="$1" pid
    if pid="$(containerd_pid "$dir")"; then
        log "containerd already running (pid $pid)"
        return 0
    fi
    rm -f -- "$dir/containerd.sock" "$dir/containerd-ttrpc.sock"
    # setsid: its own session, so a test's Ctrl-C or process group kill does not reach it
    # (not a group leader here, so setsid execs: $! is containerd's pid).
    setsid containerd --config "$dir/config.toml" </dev/null >>"$dir/containerd.log" 2>&1 &
    echo $! >"$dir/containerd.pid"
    pid="$(cat "$dir/containerd.pid")"
    for _ in $(seq 150); do
        answers "$dir" && break
        kill -0 "$pid" 2>/dev/null || die "containerd exited: $(tail -20 "$dir/containerd.log")"
        sleep 0.2
    done
    answers "$dir" || die "containerd did not answer in 30 s: $(tail -20 "$dir/containerd.log")"
    log "containerd on $dir/containerd.sock (pid $pid, log $dir/containerd.log)"
}

# wait_gone PID SECONDS: wait until PID is gone (or a zombie); false if it is still there.
wait_gone() {
    local pid="$1" i
    for ((i = 0; i < $2 * 10; i++)); do
        [ -d "/proc/$pid" ] || return 0
        [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ] && return 0
        sleep 0.1
    done
    return 1
}

# terminate PID: SIGTERM, SIGKILL after 5 s.
terminate() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_gone "$pid" 5 && return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || log "pid $pid survived SIGKILL"
}

# stop_daemon DIR: stop containerd (the shims stay).
stop_daemon() {
    local dir="$1" pid
    if pid="$(containerd_pid "$dir")"; then
        terminate "$pid"
    fi
    rm -f -- "$dir/containerd.pid"
}

# shim_pids DIR [NAMESPACE ID]: the containerd-shim processes started by the containerd of
# DIR (command line `containerd-shim-runc-v2 -namespace NS -id ID -address DIR/containerd.sock`),
# or only the one of container ID in NAMESPACE.
shim_pids() {
    local f
    for f in /proc/[0-9]*/cmdline; do
        # (2> first: a process gone since the glob must not print an error.)
        tr '\0' '\n' 2>/dev/null <"$f" | awk -v sock="$1/containerd.sock" -v ns="${2:-}" -v id="${3:-}" '
            NR == 1 && $0 !~ /containerd-shim/ { other = 1; exit }
            { arg[prev] = $0; prev = $0 }
            END { exit other || !(arg["-address"] == sock && (ns == "" || (arg["-namespace"] == ns && arg["-id"] == id))) }' &&
            basename "$(dirname "$f")"
    done
}

# stop_tasks DIR: every container of DIR's containerd killed, its shim gone, its runc state
# and shim socket removed. Through containerd when it answers (`ctr tasks delete --force`),
# then by hand for whatever is left: each bundle DIR/state/io.containerd.runtime.v2.task/
# NAMESPACE/ID holds init.pid and the shim's socket `address`.
stop_tasks() {
    local dir="$1" tasks="$1/state/io.containerd.runtime.v2.task" bundle ns id pid addr
    if answers "$dir"; then
        for bundle in "$tasks"/*/*/; do
            [ -d "$bundle" ] || continue
            bundle="${bundle%/}" id="${bundle##*/}" ns="$(basename "$(dirname "$bundle")")"
            timeout 20 ctr -a "$dir/containerd.sock" -n "$ns" tasks delete --force "$id" \
                >/dev/null 2>&1 || true
        done
    fi
    for bundle in "$tasks"/*/*/; do
        [ -d "$bundle" ] || continue
        bundle="${bundle%/}" id="${bundle##*/}" ns="$(basename "$(dirname "$bundle")")"
        # The container's init first: the rest of its pid namespace dies with it.
        pid="$(cat "$bundle/init.pid" 2>/dev/null || true)"
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
        for pid in $(shim_pids "$dir" "$ns" "$id"); do terminate "$pid"; done
        runc --root "$RUNC_ROOT/$ns" delete --force "$id" >/dev/null 2>&1 || true
        addr="$(cat "$bundle/address" 2>/dev/null || true)"
        case "$addr" in unix:///run/containerd/s/*) rm -f -- "${addr#unix://}" ;; esac
    done
    for pid in $(shim_pids "$dir"); do
        log "killing containerd-shim $pid (no bundle)"
        terminate "$pid"
    done
    # A namespace of its own (not `default`, which other instances share) leaves empty
    # directories behind: its runc root and its cgroup in each hierarchy.
    for ns in "$tasks"/*/; do
        ns="$(basename "$ns")"
        [ -d "$tasks/$ns" ] && [ "$ns" != default ] || continue
        rmdir -- "$RUNC_ROOT/$ns" /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns" 2>/dev/null || true
    done
}

# mounts_under DIR: the mount points at or below DIR, deepest first (field 5 of mountinfo,
# \ooo escapes decoded; a path stacked twice is listed twice).
mounts_under() {
    awk -v d="$1" '{
            m = $5; gsub(/\\040/, " ", m); gsub(/\\011/, "\t", m); gsub(/\\012/, "\n", m)
            gsub(/\\134/, "\\", m)
            if (m == d || index(m, d "/") == 1) print length(m) "\t" m
        }' /proc/self/mountinfo | sort -rn -k1,1 | cut -f2-
}

# unmount_under DIR: lazily unmount every mount at or below DIR, deepest first (a few
# passes, for stacked mounts).
unmount_under() {
    local dir="$1" mnt
    for _ in 1 2 3 4 5; do
        [ -n "$(mounts_under "$dir")" ] || return 0
        while IFS= read -r mnt; do
            umount -l -- "$mnt" 2>/dev/null || true
        done < <(mounts_under "$dir")
    done
    [ -z "$(mounts_under "$dir")" ] || log "still mounted under $dir: $(mounts_under "$dir" | tr '\n' ' ')"
}

cmd="${1:-}"
case "$cmd" in
install)
    ensure_packages "${CONTAINERD_PACKAGES[@]}"
    ;;
image)
    ensure_packages busybox-static
    out="$(abspath "${2:?usage: scripts/containerd.sh image OUT_TAR [NAME]}")"
    build_image "$out" "${3:-$DEFAULT_IMAGE}"
    ;;
image-from-tar)
    [ $# -eq 4 ] || die "usage: scripts/containerd.sh image-from-tar OUT_TAR NAME ROOTFS_TAR"
    build_image_from_tar "$(abspath "$2")" "$3" "$(abspath "$4")"
    ;;
config)
    [ $# -eq 4 ] || die "usage: scripts/containerd.sh config DIR PLUGIN_NAME PLUGIN_SOCKET"
    write_config "$(abspath "$2")" "$3" "$(abspath "$4")"
    ;;
start)
    [ $# -eq 4 ] || die "usage: scripts/containerd.sh start DIR PLUGIN_NAME PLUGIN_SOCKET"
    ensure_packages "${CONTAINERD_PACKAGES[@]}"
    dir="$(abspath "$2")"
    write_config "$dir" "$3" "$(abspath "$4")" >/dev/null
    start_daemon "$dir"
    ;;
stop-daemon)
    stop_daemon "$(abspath "${2:?usage: scripts/containerd.sh stop-daemon DIR}")"
    ;;
stop)
    dir="$(abspath "${2:?usage: scripts/containerd.sh stop DIR}")"
    [ -d "$dir" ] || exit 0
    stop_tasks "$dir"
    stop_daemon "$dir"
    unmount_under "$dir"
    rm -f -- "$dir/containerd.sock" "$dir/containerd-ttrpc.sock"
    ;;
*)
    die "usage: scripts/containerd.sh install | image OUT_TAR [NAME] | image-from-tar OUT_TAR NAME ROOTFS_TAR | config DIR NAME SOCKET | start DIR NAME SOCKET | stop DIR | stop-daemon DIR"
    ;;
esac
