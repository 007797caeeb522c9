#!/usr/bin/env bash
# A/B comparison of two builds of this provider, for recording a fix's
# before/after (bench/fixes.md) on a machine that is not quiet: both servers
# run at once on the same backend, and the measurements alternate between
# them (A, B, A, B, ...), so load from elsewhere hits both alike. Reports,
# per endpoint, the median requests/s, p99 and the server's CPU time per
# request (the steadier figure when the machine is shared).
#
#   bash bench/ab.sh OLD_IDP_BINARY NEW_IDP_BINARY
#
# Settings (environment): AB_BACKEND (sqlite or pg, sqlite), AB_ROUNDS (5),
# AB_DURATION (seconds per wrk run, 3), AB_CONNECTIONS (16), AB_ENDPOINTS
# (space-separated, from: discovery jwks token_cc introspect userinfo codes
# logins; default all but logins), AB_LOGIN_SECS (3). Needs what bench/run.sh
# needs (wrk, the driver, built here when missing); 127.0.0.1 only; the servers
# are stopped, the database dropped and the Redis keys deleted on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
A_BIN=$(realpath "${1:?usage: bench/ab.sh OLD_IDP NEW_IDP}")
B_BIN=$(realpath "${2:?usage: bench/ab.sh OLD_IDP NEW_IDP}")
BACKEND=${AB_BACKEND:-sqlite}
ROUNDS=${AB_ROUNDS:-5}
DURATION=${AB_DURATION:-3}
CONNECTIONS=${AB_CONNECTIONS:-16}
ENDPOINTS=${AB_ENDPOINTS:-discovery jwks token_cc introspect userinfo codes}
LOGIN_SECS=${AB_LOGIN_SECS:-3}
CLIENT_ID=bench
REDIRECT_URI=http://127.0.0.1:9/cb
USER_EMAIL=bench@example.com
CLK_TCK=$(getconf CLK_TCK)
DRIVE=${CARGO_TARGET_DIR:-$ROOT/target}/release/idp-bench-drive
[ -x "$DRIVE" ] || (cd "$ROOT" && cargo build --release --quiet --locked -p idp-bench-drive)

mkdir -p "$BENCH/tmp"
RUN=$(mktemp -d "$BENCH/tmp/ab-$(date +%Y%m%d-%H%M%S)-XXXX")
OUT=$RUN/results.jsonl
: >"$OUT"
PIDS=()
DBS=()
PREFIXES=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for p in "${DBS[@]}"; do dropdb -h 127.0.0.1 -U postgres --if-exists --force "$p" 2>/dev/null || true; done
    for p in "${PREFIXES[@]}"; do
        redis-cli --scan --pattern "${p}*" | xargs -r -n 500 redis-cli del >/dev/null 2>&1 || true
    done
    rm -rf "$RUN"/*/data
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port, write_config
source "$BENCH/config.sh"
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

SECRET_OUT=$("$B_BIN" client secret)
CLIENT_SECRET=$(sed -n 's/^client secret[^:]*: //p' <<<"$SECRET_OUT")
SECRET_HASH_LINE=$(grep '^secret_hash = ' <<<"$SECRET_OUT")
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
BASIC="Basic $(printf '%s:%s' "$CLIENT_ID" "$CLIENT_SECRET" | base64 -w0)"

declare -A PORT PID TOKEN
start() {
    local name=$1 bin=$2 dir=$RUN/$1 port
    port=$(free_port)
    write_config "$dir" "$port"
    local env=()
    if [ "$BACKEND" = pg ]; then
        local suffix db
        suffix=$(python3 -c 'import secrets; print(secrets.token_hex(6))')
        db=idp_ab_$suffix
        createdb -h 127.0.0.1 -U postgres "$db"
        DBS+=("$db")
        PREFIXES+=("idp-ab:$suffix:")
        env=(IDP_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" IDP_REDIS_URL=redis://127.0.0.1:6379
            IDP_REDIS_KEY_PREFIX="idp-ab:$suffix:" IDP_KEY_ENCRYPTION_KEY="$("$bin" keys new-kek)")
    fi
    printf '%s' "$PASSWORD" | env "${env[@]}" "$bin" --config "$dir/idp.toml" user create --email "$USER_EMAIL" \
        --name "Bench User" --password-stdin >"$dir/setup.log" 2>&1
    env "${env[@]}" "$bin" --config "$dir/idp.toml" serve >"$dir/server.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("$!")
    PORT[$name]=$port
    for _ in $(seq 1 120); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/.well-known/openid-configuration" 2>/dev/null && break
        sleep 0.25
    done
    TOKEN[$name]=$("$DRIVE" tokens $(drive_args "$name") | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
}
drive_args() {
    printf '%s ' --issuer "http://127.0.0.1:${PORT[$1]}" --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
        --redirect-uri "$REDIRECT_URI" --username "$USER_EMAIL" --password "$PASSWORD" \
        --server-pid "${PID[$1]}" --clk-tck "$CLK_TCK"
}

one_wrk() {
    local name=$1 endpoint=$2 round=$3 base="http://127.0.0.1:${PORT[$1]}" url method=GET body="" auth="" c0 c1 line
    case $endpoint in
    discovery) url=$base/.well-known/openid-configuration ;;
    jwks) url=$base/jwks ;;
    token_cc) url=$base/token method=POST body=grant_type=client_credentials auth=$BASIC ;;
    introspect) url=$base/introspect method=POST body="token=${TOKEN[$name]}" auth=$BASIC ;;
    userinfo) url=$base/userinfo auth="Bearer ${TOKEN[$name]}" ;;
    esac
    c0=$(cpu_ticks "${PID[$name]}")
    line=$(WRK_METHOD=$method WRK_BODY=$body WRK_AUTH=$auth wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
        -s "$BENCH/wrk/request.lua" "$url" | grep '^{' | tail -n 1)
    c1=$(cpu_ticks "${PID[$name]}")
    python3 - "$name" "$endpoint" "$round" "$c0" "$c1" "$CLK_TCK" "$line" >>"$OUT" <<'EOF'
import json, sys
name, ep, rnd, c0, c1, hz, line = sys.argv[1:]
r = json.loads(line)
n = r["requests"]
bad = r["err_status"] + r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
print(json.dumps({"server": name, "kind": ep, "round": int(rnd), "rps": n / (r["duration_us"] / 1e6),
                  "p99_ms": r["p99_us"] / 1000, "cpu_us": (int(c1) - int(c0)) / float(hz) * 1e6 / max(n, 1),
                  "errors": bad}))
EOF
}

one_drive() {
    local name=$1 what=$2 round=$3
    if [ "$what" = codes ]; then
        "$DRIVE" codes $(drive_args "$name") --concurrency "$CONNECTIONS" --reps 1 --mint-secs 1.5 --max 6000 --max-secs "$DURATION" 2>/dev/null
    else
        "$DRIVE" logins $(drive_args "$name") --concurrency 4 --reps 1 --secs "$LOGIN_SECS" 2>/dev/null
    fi | python3 -c '
import json, sys
name, rnd = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    r = json.loads(line)
    print(json.dumps({"server": name, "kind": r["kind"], "round": rnd, "rps": r["rps"], "p99_ms": r["p99_ms"],
                      "cpu_us": (r["server_cpu_s"] or 0) * 1e6 / max(r["ok"], 1), "errors": r["errors"]}))
' "$name" "$round" >>"$OUT"
}

start A "$A_BIN"
start B "$B_BIN"
echo "ab: A=$A_BIN B=$B_BIN backend=$BACKEND rounds=$ROUNDS; raw lines in ${OUT#"$ROOT"/}" >&2
for round in $(seq 1 "$ROUNDS"); do
    # Alternate which one goes first, so neither always follows the other.
    order="A B"
    [ $((round % 2)) = 0 ] && order="B A"
    for ep in $ENDPOINTS; do
        for s in $order; do
            case $ep in
            codes | logins) one_drive "$s" "$ep" "$round" ;;
            *) one_wrk "$s" "$ep" "$round" ;;
            esac
        done
    done
    echo "ab: round $round done" >&2
done
for s in A B; do
    printf '{"server":"%s","kind":"rss_end_kib","value":%s}\n' "$s" "$(awk '/^VmRSS/ { print $2 }' "/proc/${PID[$s]}/status")" >>"$OUT"
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
kinds = []
for r in rows:
    if "rps" in r and r["kind"] not in kinds:
        kinds.append(r["kind"])
med = lambda k, s, f: statistics.median([r[f] for r in rows if r["kind"] == k and r["server"] == s] or [0])
print("| endpoint | A req/s | B req/s | B/A | A p99 ms | B p99 ms | A CPU µs/req | B CPU µs/req | B/A CPU |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for k in kinds:
    a, b = med(k, "A", "rps"), med(k, "B", "rps")
    ca, cb = med(k, "A", "cpu_us"), med(k, "B", "cpu_us")
    errs = sum(r["errors"] for r in rows if r["kind"] == k)
    print(f"| {k} | {a:,.0f} | {b:,.0f} | {b / a if a else 0:.2f}x | {med(k, 'A', 'p99_ms'):.2f} | {med(k, 'B', 'p99_ms'):.2f} "
          f"| {ca:.0f} | {cb:.0f} | {cb / ca if ca else 0:.2f}x |" + (f" errors: {errs}" if errs else ""))
rss = {r["server"]: r["value"] for r in rows if r["kind"] == "rss_end_kib"}
print(f"\nRSS at the end: A {rss.get('A', 0) / 1024:.1f} MiB, B {rss.get('B', 0) / 1024:.1f} MiB")
EOF
