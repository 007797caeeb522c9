#!/usr/bin/env bash
# Instructions per request of one build of this provider, counted by
# valgrind's callgrind: a figure that, unlike requests per second, does not
# depend on what else the machine is doing, for before/after comparisons of
# a fix (bench/fixes.md). The server runs under callgrind on SQLite + the
# in-process store; after a warm-up the counters are zeroed, N requests of
# each endpoint are sent one at a time, and the instructions executed by the
# whole process (every thread, the kernel excluded) are divided by N.
#
#   bash bench/instructions.sh IDP_BINARY [N]
#
# Settings (environment): INSTR_ENDPOINTS (from: discovery jwks token_cc
# introspect userinfo codes; default all). Needs valgrind, python3, curl and
# the driver (built by bench/run.sh, or here); 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
BIN=$(realpath "${1:?usage: bench/instructions.sh IDP_BINARY [N]}")
N=${2:-500}
ENDPOINTS=${INSTR_ENDPOINTS:-discovery jwks token_cc introspect userinfo codes}
DRIVE=${CARGO_TARGET_DIR:-$ROOT/target}/release/idp-bench-drive
[ -x "$DRIVE" ] || (cd "$ROOT" && cargo build --release --quiet --locked -p idp-bench-drive)
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }

mkdir -p "$BENCH/tmp"
RUN=$(mktemp -d "$BENCH/tmp/instr-$(date +%Y%m%d-%H%M%S)-XXXX")
SERVER=""
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    rm -rf "$RUN/data"
    [ -n "${INSTR_KEEP:-}" ] || rm -f "$RUN"/callgrind.*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port, write_config
source "$BENCH/config.sh"
PORT=$(free_port)
SECRET_OUT=$("$BIN" client secret)
CLIENT_SECRET=$(sed -n 's/^client secret[^:]*: //p' <<<"$SECRET_OUT")
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
CLIENT_ID=bench
REDIRECT_URI=http://127.0.0.1:9/cb
SECRET_HASH_LINE=$(grep '^secret_hash = ' <<<"$SECRET_OUT")
write_config "$RUN" "$PORT"
printf '%s' "$PASSWORD" | "$BIN" --config "$RUN/idp.toml" user create --email bench@example.com \
    --name "Bench User" --password-stdin >/dev/null
valgrind --tool=callgrind --callgrind-out-file="$RUN/callgrind.%p" --dump-instr=no \
    "$BIN" --config "$RUN/idp.toml" serve >"$RUN/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break
    sleep 0.5
done
ARGS=(--issuer "http://127.0.0.1:$PORT" --client-id bench --client-secret "$CLIENT_SECRET"
    --redirect-uri http://127.0.0.1:9/cb --username bench@example.com --password "$PASSWORD")
ACCESS=$("$DRIVE" tokens "${ARGS[@]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# Total instructions since the last zeroing (callgrind_control dumps them).
dump_ir() {
    callgrind_control -d "$SERVER" >/dev/null 2>&1
    sleep 0.5
    local f
    f=$(ls -t "$RUN"/callgrind.* | head -n 1)
    awk '/^summary:/ { print $2 }' "$f"
}

# N keep-alive requests, one at a time.
requests() {
    python3 - "$PORT" "$1" "$2" "$CLIENT_SECRET" "$ACCESS" <<'EOF'
import base64, http.client, sys
port, endpoint, n, secret, access = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
basic = "Basic " + base64.b64encode(f"bench:{secret}".encode()).decode()
form = {"Content-Type": "application/x-www-form-urlencoded"}
req = {
    "discovery": ("GET", "/.well-known/openid-configuration", None, {}),
    "jwks": ("GET", "/jwks", None, {}),
    "token_cc": ("POST", "/token", "grant_type=client_credentials", {"Authorization": basic, **form}),
    "introspect": ("POST", "/introspect", "token=" + access, {"Authorization": basic, **form}),
    "userinfo": ("GET", "/userinfo", None, {"Authorization": "Bearer " + access}),
}[endpoint]
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
for _ in range(n):
    c.request(req[0], req[1], body=req[2], headers=req[3])
    r = c.getresponse()
    r.read()
    assert r.status == 200, (endpoint, r.status)
EOF
}

printf '| endpoint | instructions per request |\n|---|---:|\n'
for ep in $ENDPOINTS; do
    if [ "$ep" = codes ]; then
        # The driver mints codes, then exchanges them, then refreshes: zero
        # when it says it has minted, dump after each phase.
        exec 3< <("$DRIVE" codes "${ARGS[@]}" --concurrency 1 --reps 1 --mint-secs 20 --max "$N" --max-secs 600 2>&1)
        while IFS= read -r line <&3; do
            case $line in
            *minted*) callgrind_control -z "$SERVER" >/dev/null 2>&1 ;;
            *'"token_code"'* | *'"token_refresh"'*)
                n=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$line")
                kind=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["kind"])' "$line")
                ir=$(dump_ir)
                callgrind_control -z "$SERVER" >/dev/null 2>&1
                printf '| %s | %s |\n' "$kind" "$(python3 -c "print(f'{$ir / max($n, 1):,.0f}')")"
                ;;
            esac
        done
        exec 3<&-
        continue
    fi
    requests "$ep" 50
    callgrind_control -z "$SERVER" >/dev/null 2>&1
    requests "$ep" "$N"
    ir=$(dump_ir)
    printf '| %s | %s |\n' "$ep" "$(python3 -c "print(f'{$ir / $N:,.0f}')")"
done
