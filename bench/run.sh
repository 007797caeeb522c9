#!/usr/bin/env bash
# The benchmark: this provider (release build) on SQLite + the in-process
# store, then on PostgreSQL + Redis, then panva's oidc-provider as the peer,
# each driven with the same load; prints one table and writes it to
# bench/results.md. See bench/README.md.
#
#   bash bench/run.sh
#
# Settings (environment): BENCH_DURATION (seconds per wrk run, 4),
# BENCH_CONNECTIONS (16), BENCH_REPS (3), BENCH_LOGIN_CONCURRENCY (8),
# BENCH_MINT_SECS (2), BENCH_PHASES (which measurements to run on each
# server, "wrk codes dpop logins"; a shorter list gives a shorter run whose
# table shows "—" for the rest). Targets 127.0.0.1 only; every server it starts is
# stopped on exit, the PostgreSQL database it creates is dropped and its
# Redis keys deleted.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
cd "$ROOT"
# free_port, write_config
source "$BENCH/config.sh"

DURATION=${BENCH_DURATION:-4}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
REPS=${BENCH_REPS:-3}
# Enough browsers at once to keep both cores busy: with 4, a login's round
# trips to the stores leave the cores idle part of the time, and the figure
# measures latency rather than how many logins a server can take.
LOGIN_CONCURRENCY=${BENCH_LOGIN_CONCURRENCY:-8}
MINT_SECS=${BENCH_MINT_SECS:-2}
PHASES=" ${BENCH_PHASES:-wrk codes dpop logins} "
for p in $PHASES; do
    case $p in wrk | codes | dpop | logins) ;; *) printf 'bench: error: unknown phase %s in BENCH_PHASES\n' "$p" >&2 && exit 1 ;; esac
done
phase() { [[ $PHASES == *" $1 "* ]]; }
PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
CLIENT_ID=bench
# The second client: private_key_jwt (RFC 7523) and DPoP-bound (RFC 9449).
DPOP_CLIENT_ID=bench-dpop
REDIRECT_URI=http://127.0.0.1:9/cb
USER_EMAIL=bench@example.com

T0=$(date +%s)
log() { printf '[bench %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
fail() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

# --- Tools -------------------------------------------------------------------
# wrk rather than oha: a Debian package (no compile), one thread that leaves
# the second core to the server, and Lua to build each request and report
# exact percentiles as JSON.
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk (Debian package)"
    [ "$(id -u)" = 0 ] || fail "wrk is missing: apt-get install wrk (as root)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
for t in cargo node npm python3 curl psql createdb dropdb redis-cli; do
    command -v "$t" >/dev/null 2>&1 || fail "$t is required"
done

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
if ! pg_up && [ "$(id -u)" = 0 ] && [ -d /etc/postgresql ]; then
    log "starting the machine's PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! redis_up && command -v redis-server >/dev/null 2>&1; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null || true
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
pg_up || fail "PostgreSQL does not answer on $PG_HOST:$PG_PORT"
redis_up || fail "Redis does not answer on $REDIS_HOST:$REDIS_PORT"

# --- Builds ------------------------------------------------------------------
# One build: the provider and the two bench tools are members of one
# workspace and share every compiled dependency.
log "building the provider and the bench tools (cargo build --release -p idp -p idp-bench-floor -p idp-bench-drive)"
cargo build --release --quiet --locked -p idp -p idp-bench-floor -p idp-bench-drive
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
IDP=$TARGET/idp
FLOOR=$TARGET/idp-bench-floor
DRIVE=$TARGET/idp-bench-drive
log "installing the peer (npm ci in bench/peer)"
(cd "$BENCH/peer" && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1) ||
    (cd "$BENCH/peer" && npm ci --no-audit --no-fund --loglevel=error)

# --- Run folder, clean-up ----------------------------------------------------
mkdir -p "$BENCH/tmp"
RUN=$(mktemp -d "$BENCH/tmp/run-$(date +%Y%m%d-%H%M%S)-XXXX")
RESULTS=$RUN/results.jsonl
: >"$RESULTS"
PIDS=()
PG_DB=""
REDIS_PREFIX=""

stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ -n "$PG_DB" ]; then
        dropdb -h "$PG_HOST" -p "$PG_PORT" -U postgres --if-exists --force "$PG_DB" 2>/dev/null || true
    fi
    if [ -n "$REDIS_PREFIX" ]; then
        redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --scan --pattern "${REDIS_PREFIX}*" |
            xargs -r -n 500 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null 2>&1 || true
    fi
    rm -rf "$RUN"/*/data
    rm -f "$RUN/dpop-client-key.json"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# CPU time (user + system, in clock ticks) of a process so far.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
CLK_TCK=$(getconf CLK_TCK)

# Resident set of the server after a phase, into $RESULTS.
rss_mark() {
    printf '{"server":"%s","kind":"rss_phase","phase":"%s","rss_kib":%d,"hwm_kib":%d}\n' "$1" "$3" \
        "$(status_kib "$2" VmRSS)" "$(status_kib "$2" VmHWM)" >>"$RESULTS"
}

# The machine should be otherwise idle: other load skews every figure. The
# share of both cores busy during one second, with none of our load running.
cpu_busy_pct() {
    local u n s i w x y z t0 i0 t1 i1
    read -r _ u n s i w x y z _ </proc/stat
    t0=$((u + n + s + i + w + x + y + z)) i0=$((i + w))
    sleep 1
    read -r _ u n s i w x y z _ </proc/stat
    t1=$((u + n + s + i + w + x + y + z)) i1=$((i + w))
    echo $((100 * ((t1 - t0) - (i1 - i0)) / (t1 - t0 > 0 ? t1 - t0 : 1)))
}
check_quiet() {
    local busy
    busy=$(cpu_busy_pct)
    if [ "$busy" -gt 15 ]; then
        log "warning: the CPU was ${busy}% busy before measuring $1 without our load: figures will be low"
    fi
    printf '{"server":"%s","kind":"cpu_busy","busy_pct":%d}\n' "$1" "$busy" >>"$RESULTS"
}

wait_ready() {
    local url=$1 pid=$2 log_file=$3
    for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$log_file" >&2
            fail "the server stopped during start-up (log: $log_file)"
        }
        curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.25
    done
    fail "no answer from $url within 30 s"
}

redis_calls() {
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" info commandstats |
        awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { n += $3 } END { print n + 0 }'
}

# --- Secrets and configuration -----------------------------------------------
SECRET_OUT=$("$IDP" client secret)
CLIENT_SECRET=$(sed -n 's/^client secret[^:]*: //p' <<<"$SECRET_OUT")
SECRET_HASH_LINE=$(grep '^secret_hash = ' <<<"$SECRET_OUT")
[ -n "$CLIENT_SECRET" ] && [ -n "$SECRET_HASH_LINE" ] || fail "unexpected output of idp client secret"
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
BASIC="Basic $(printf '%s:%s' "$CLIENT_ID" "$CLIENT_SECRET" | base64 -w0)"
# The private_key_jwt + DPoP client's ES256 key: the private JWK for the
# driver (deleted at the end), the public JWK Set registered with each
# server (bench/config.sh for ours, BENCH_DPOP_CLIENT_JWKS for the peer).
DPOP_CLIENT_KEY=$RUN/dpop-client-key.json
DPOP_CLIENT_JWKS=$("$DRIVE" keygen --out "$DPOP_CLIENT_KEY")

# --- Measurements --------------------------------------------------------------
# wrk against one endpoint, REPS times; one JSON line per run into $RESULTS,
# with the CPU seconds the server and wrk spent during the run.
run_wrk() {
    local server=$1 pid=$2 endpoint=$3 url=$4 method=$5 body=$6 auth=$7 count_redis=$8
    local rep out line before after cpu0 cpu1 wrk_cpu
    for rep in $(seq 1 "$REPS"); do
        before=0
        [ "$count_redis" = 1 ] && before=$(redis_calls)
        cpu0=$(cpu_ticks "$pid")
        out=$( {
            TIMEFORMAT='WRKCPU %3U %3S'
            time WRK_METHOD=$method WRK_BODY=$body WRK_AUTH=$auth \
                timeout $((DURATION + 30)) wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s \
                -s "$BENCH/wrk/request.lua" "$url"
        } 2>&1)
        cpu1=$(cpu_ticks "$pid")
        line=$(grep '^{' <<<"$out" | tail -n 1)
        [ -n "$line" ] || fail "wrk printed no result for $server $endpoint: $out"
        wrk_cpu=$(awk '/^WRKCPU/ { print $2 + $3 }' <<<"$out")
        after=0
        [ "$count_redis" = 1 ] && after=$(redis_calls)
        printf '{"server":"%s","kind":"%s","rep":%d,"tool":"wrk","redis_calls":%d,"server_cpu_s":%s,"driver_cpu_s":%s,%s\n' \
            "$server" "$endpoint" "$rep" "$((after - before))" \
            "$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / hz }')" \
            "${wrk_cpu:-null}" "${line#\{}" >>"$RESULTS"
        tail -n 1 "$RESULTS" | python3 "$BENCH/report.py" progress
    done
}

drive_common() {
    printf '%s\n' --issuer "$1" --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
        --redirect-uri "$REDIRECT_URI" --username "$USER_EMAIL" --password "$PASSWORD" \
        --server-pid "$2" --clk-tck "$CLK_TCK"
}

# Expects a status and a fragment of the body, or stops the run.
check() {
    local what=$1 want_status=$2 want_body=$3
    shift 3
    local body status
    body=$(curl -sS -w '\n%{http_code}' "$@")
    status=${body##*$'\n'}
    body=${body%$'\n'*}
    if [ "$status" != "$want_status" ] || ! grep -q -- "$want_body" <<<"$body"; then
        fail "$what: expected $want_status with $want_body, got $status: ${body:0:300}"
    fi
}

# The whole measurement of one running server.
measure() {
    local server=$1 issuer=$2 pid=$3 token_path=$4 userinfo_path=$5 introspect_path=$6 jwks_path=$7 count_redis=$8
    local idle_kib tokens access drive_args
    idle_kib=$(status_kib "$pid" VmRSS)
    mapfile -t drive_args < <(drive_common "$issuer" "$pid")
    check_quiet "$server"

    # A real login gives the user's access token (userinfo, introspection).
    tokens=$(timeout 60 "$DRIVE" tokens "${drive_args[@]}") || fail "$server: the login flow failed"
    access=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "$tokens")
    check "$server client_credentials" 200 access_token -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials "$issuer$token_path"
    check "$server introspection" 200 '"active":true' -u "$CLIENT_ID:$CLIENT_SECRET" --data-urlencode "token=$access" "$issuer$introspect_path"
    check "$server userinfo" 200 '"sub"' -H "Authorization: Bearer $access" "$issuer$userinfo_path"

    # Warm-up (the peer's JIT, connection pools, caches); not recorded.
    WRK_METHOD=POST WRK_BODY=grant_type=client_credentials WRK_AUTH=$BASIC \
        wrk -t1 -c"$CONNECTIONS" -d2s -s "$BENCH/wrk/request.lua" "$issuer$token_path" >/dev/null
    WRK_METHOD=GET WRK_BODY="" WRK_AUTH="Bearer $access" \
        wrk -t1 -c"$CONNECTIONS" -d1s -s "$BENCH/wrk/request.lua" "$issuer$userinfo_path" >/dev/null

    if phase wrk; then
        log "$server: wrk, $CONNECTIONS connections, ${DURATION}s x $REPS"
        run_wrk "$server" "$pid" discovery "$issuer/.well-known/openid-configuration" GET "" "" "$count_redis"
        run_wrk "$server" "$pid" jwks "$issuer$jwks_path" GET "" "" "$count_redis"
        run_wrk "$server" "$pid" token_cc "$issuer$token_path" POST "grant_type=client_credentials" "$BASIC" "$count_redis"
        run_wrk "$server" "$pid" introspect "$issuer$introspect_path" POST "token=$access" "$BASIC" "$count_redis"
        run_wrk "$server" "$pid" userinfo "$issuer$userinfo_path" GET "" "Bearer $access" "$count_redis"
        rss_mark "$server" "$pid" "after wrk"
    fi
    if phase codes; then
        log "$server: authorization codes and refresh tokens (driver, $CONNECTIONS connections)"
        timeout 600 "$DRIVE" codes "${drive_args[@]}" --concurrency "$CONNECTIONS" --reps "$REPS" \
            --mint-secs "$MINT_SECS" --max 8000 --max-secs "$DURATION" |
            sed "s/^{/{\"server\":\"$server\",\"tool\":\"drive\",/" >>"$RESULTS" || fail "$server: codes run failed"
        rss_mark "$server" "$pid" "after codes and refresh"
    fi
    if phase dpop; then
        # The same minting and timed exchange as the codes above, for the
        # private_key_jwt + DPoP client: a fresh client assertion and DPoP
        # proof per code, signed before the timed run; the answers' token
        # type and one token's binding (cnf.jkt) are checked each run.
        log "$server: authorization codes, private_key_jwt + DPoP (driver, $CONNECTIONS connections)"
        timeout 600 "$DRIVE" dpop-codes "${drive_args[@]}" --dpop-client-id "$DPOP_CLIENT_ID" \
            --client-key "$DPOP_CLIENT_KEY" --concurrency "$CONNECTIONS" --reps "$REPS" \
            --mint-secs "$MINT_SECS" --max 8000 --max-secs "$DURATION" |
            sed "s/^{/{\"server\":\"$server\",\"tool\":\"drive\",/" >>"$RESULTS" || fail "$server: private_key_jwt + DPoP codes run failed"
        rss_mark "$server" "$pid" "after private_key_jwt + DPoP codes"
    fi
    if phase logins; then
        log "$server: interactive logins (driver, $LOGIN_CONCURRENCY browsers at once, ${DURATION}s x $REPS)"
        timeout 600 "$DRIVE" logins "${drive_args[@]}" --concurrency "$LOGIN_CONCURRENCY" --reps "$REPS" \
            --secs "$DURATION" |
            sed "s/^{/{\"server\":\"$server\",\"tool\":\"drive\",/" >>"$RESULTS" || fail "$server: login run failed"
        rss_mark "$server" "$pid" "after logins"
    fi
    { grep "\"server\":\"$server\",\"tool\":\"drive\"" "$RESULTS" || true; } | python3 "$BENCH/report.py" progress

    printf '{"server":"%s","kind":"rss","idle_kib":%d,"end_kib":%d,"hwm_kib":%d}\n' "$server" \
        "$idle_kib" "$(status_kib "$pid" VmRSS)" "$(status_kib "$pid" VmHWM)" >>"$RESULTS"
}

# --- Crypto floor ------------------------------------------------------------
log "crypto floor (ES256/RS256 signatures, ES256 verification, argon2id m=19456 t=2 p=1)"
"$FLOOR" --secs 1.5 --argon2 19456,2,1 >"$RUN/floor.json"

# --- (a) ours: SQLite + in-process store ---------------------------------------
PORT=$(free_port)
DIR=$RUN/ours-sqlite
write_config "$DIR" "$PORT"
log "ours (SQLite + in-process store) on 127.0.0.1:$PORT"
printf '%s' "$PASSWORD" | "$IDP" --config "$DIR/idp.toml" user create --email "$USER_EMAIL" \
    --name "Bench User" --password-stdin >"$DIR/setup.log" 2>&1 || {
    cat "$DIR/setup.log" >&2
    fail "user creation failed"
}
"$IDP" --config "$DIR/idp.toml" serve >"$DIR/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_ready "http://127.0.0.1:$PORT/.well-known/openid-configuration" "$SERVER_PID" "$DIR/server.log"
measure ours_sqlite "http://127.0.0.1:$PORT" "$SERVER_PID" /token /userinfo /introspect /jwks 0
stop_pid "$SERVER_PID"

# --- (b) ours: PostgreSQL + Redis --------------------------------------------------
SUFFIX=$(python3 -c 'import secrets; print(secrets.token_hex(6))')
PG_DB=idp_bench_$SUFFIX
REDIS_PREFIX="idp-bench:$SUFFIX:"
createdb -h "$PG_HOST" -p "$PG_PORT" -U postgres "$PG_DB"
PORT=$(free_port)
DIR=$RUN/ours-pg
write_config "$DIR" "$PORT"
export IDP_DATABASE_URL="postgres://postgres@$PG_HOST:$PG_PORT/$PG_DB"
export IDP_REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT"
export IDP_REDIS_KEY_PREFIX=$REDIS_PREFIX
IDP_KEY_ENCRYPTION_KEY=$("$IDP" keys new-kek)
export IDP_KEY_ENCRYPTION_KEY
log "ours (PostgreSQL $PG_DB + Redis prefix $REDIS_PREFIX) on 127.0.0.1:$PORT"
printf '%s' "$PASSWORD" | "$IDP" --config "$DIR/idp.toml" user create --email "$USER_EMAIL" \
    --name "Bench User" --password-stdin >"$DIR/setup.log" 2>&1 || {
    cat "$DIR/setup.log" >&2
    fail "user creation failed"
}
"$IDP" --config "$DIR/idp.toml" serve >"$DIR/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_ready "http://127.0.0.1:$PORT/.well-known/openid-configuration" "$SERVER_PID" "$DIR/server.log"
measure ours_pg "http://127.0.0.1:$PORT" "$SERVER_PID" /token /userinfo /introspect /jwks 1
stop_pid "$SERVER_PID"
unset IDP_DATABASE_URL IDP_REDIS_URL IDP_REDIS_KEY_PREFIX IDP_KEY_ENCRYPTION_KEY

# --- (c) the peer: oidc-provider -----------------------------------------------
PORT=$(free_port)
DIR=$RUN/peer
mkdir -p "$DIR"
log "peer (oidc-provider $(node -p 'require("./bench/peer/node_modules/oidc-provider/package.json").version'), node $(node --version)) on 127.0.0.1:$PORT"
PEER_PORT=$PORT BENCH_CLIENT_ID=$CLIENT_ID BENCH_CLIENT_SECRET=$CLIENT_SECRET \
    BENCH_DPOP_CLIENT_ID=$DPOP_CLIENT_ID BENCH_DPOP_CLIENT_JWKS=$DPOP_CLIENT_JWKS \
    BENCH_REDIRECT_URI=$REDIRECT_URI BENCH_USER_EMAIL=$USER_EMAIL BENCH_USER_PASSWORD=$PASSWORD \
    NODE_ENV=production node "$BENCH/peer/server.js" >"$DIR/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_ready "http://127.0.0.1:$PORT/.well-known/openid-configuration" "$SERVER_PID" "$DIR/server.log"
measure peer "http://127.0.0.1:$PORT" "$SERVER_PID" /token /me /token/introspection /jwks 0
stop_pid "$SERVER_PID"

# --- Report --------------------------------------------------------------------
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- idp adapters migrations Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT (+ uncommitted changes)"
MACHINE="$(nproc) cores, ${CPU:-unknown CPU}, $MEM, Linux $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT"
SETTINGS="wrk -t1 -c$CONNECTIONS -d${DURATION}s and the driver with $CONNECTIONS connections; $LOGIN_CONCURRENCY browsers at once for logins; medians of $REPS runs; wall time $(($(date +%s) - T0)) s"
python3 "$BENCH/report.py" "$RESULTS" "$RUN/floor.json" "$MACHINE" "$SETTINGS" "$BENCH/results.md"
log "done in $(($(date +%s) - T0)) s; raw results in ${RUN#"$ROOT"/}"
