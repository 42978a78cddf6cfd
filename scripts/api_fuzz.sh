#!/usr/bin/env bash
# Property-based test of the REST API against its OpenAPI description: a daemon on a fresh
# store, on 127.0.0.1 with a bearer token, and schemathesis (pinned, from PyPI, in a venv
# under /var/cache) generating requests from docs/openapi.json. Fails when an answer does
# not match the description or any request gets a 5xx. Bounded: a fixed number of examples
# per operation and a fixed seed. Mounting is left out (start/stop would mount FUSE
# filesystems at generated paths); every other operation is exercised.
#
# Environment: API_FUZZ_EXAMPLES (examples per operation, default 40), API_FUZZ_SEED.
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

SCHEMATHESIS_VERSION=4.32.5
HYPOTHESIS_VERSION=6.170.17
VENV=/var/cache/snapfs-schemathesis
EXAMPLES="${API_FUZZ_EXAMPLES:-40}"
SEED="${API_FUZZ_SEED:-20261202}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV" 2>/dev/null || {
        as_root apt-get install -y python3-venv >/dev/null
        python3 -m venv "$VENV"
    }
    "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION"
fi

[ -x "$SNAPFS_BIN" ] || cargo build --release --bin snapfs
WORK="$(mktemp -d /tmp/snapfs-api-fuzz.XXXXXX)"
PID=""
cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf -- "$WORK"
}
trap cleanup EXIT

# The committed description must be the one the binary serves.
"$SNAPFS_BIN" openapi >"$WORK/served.json"
python3 - "$WORK/served.json" docs/openapi.json <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
if a != b:
    sys.exit("docs/openapi.json differs from `snapfs openapi`: regenerate it with "
             "`snapfs openapi > docs/openapi.json`")
PY

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="api-fuzz-$RANDOM$RANDOM"
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"
"$SNAPFS_BIN" init "$WORK/store" >/dev/null
"$SNAPFS_BIN" serve "$WORK/store" --listen "127.0.0.1:$PORT" --token-file "$WORK/token" \
    >"$WORK/daemon.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/status" && break
    sleep 0.1
done
# Something to find: a container with snapshots, and files written by a copy.
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -X POST \
    "http://127.0.0.1:$PORT/api/v1/containers/default/snapshots" -d '{"alias":"base"}'

log "schemathesis $SCHEMATHESIS_VERSION: $EXAMPLES examples per operation, seed $SEED"
status=0
"$VENV/bin/schemathesis" run docs/openapi.json \
    --url "http://127.0.0.1:$PORT" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --mode positive \
    --max-examples "$EXAMPLES" \
    --seed "$SEED" \
    --exclude-path-regex '/(start|stop)$' \
    --request-timeout 30 \
    --no-color || status=$?
if [ "$status" != 0 ]; then
    log "daemon log (last 40 lines):"
    tail -n 40 "$WORK/daemon.log" >&2
fi
exit "$status"
