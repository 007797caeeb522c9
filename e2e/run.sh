#!/usr/bin/env bash
# The end-to-end suite, in one command from the repository root:
#
#   bash e2e/run.sh
#
# Installs what is missing (Debian's `chromium` with apt, then `npm ci` in
# e2e/), builds the `idp` binary unless IDP_BIN names one, and runs every
# journey twice: on SQLite with the in-process store, then on PostgreSQL with
# Redis. Needs Node 20.19+, python3 with aiosmtpd (the SMTP server; `.ci/run`
# installs it), PostgreSQL on 127.0.0.1:5432 (trust auth, a user that may
# create databases: each provider gets a fresh one, dropped afterwards) and
# Redis on 127.0.0.1:6379 (each provider gets a random key prefix). A missing
# service fails the run; nothing is skipped.
#
# Environment: IDP_BIN (a built idp binary), E2E_BACKENDS ("sqlite postgres"),
# E2E_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres), E2E_REDIS_URL
# (redis://127.0.0.1:6379), E2E_KEEP=1 keeps each provider's temp folder.
# Screenshots: e2e/artifacts/<backend>/<journey>/NN-<page>-<width>.png.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$E2E_DIR")"
cd "$ROOT"

header() { printf '\n==> e2e: %s\n' "$*"; }
fail() { printf 'e2e error: %s\n' "$*" >&2; exit 1; }

export E2E_POSTGRES_URL="${E2E_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export E2E_REDIS_URL="${E2E_REDIS_URL:-redis://127.0.0.1:6379}"
BACKENDS="${E2E_BACKENDS:-sqlite postgres}"

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

header "prerequisites"
command -v node >/dev/null 2>&1 || fail "node is missing (Node 20.19 or later)"
# oidc-provider (federation.test.js) needs 20.12+ (crypto.hash); 20.19, as bench/peer.
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
    || fail "Node $(node -v) is too old: the suite needs Node 20.19 or later"
command -v python3 >/dev/null 2>&1 && python3 -c 'import aiosmtpd' 2>/dev/null \
    || fail "python3 with aiosmtpd is missing (the suite's SMTP server): python3 -m pip install aiosmtpd"

if [ ! -x /usr/bin/chromium ] && [ -z "${E2E_CHROMIUM:-}" ]; then
    header "installing chromium (Debian package)"
    [ "$(id -u)" -eq 0 ] || fail "/usr/bin/chromium is missing; install it: apt-get install -y chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
[ -x "${E2E_CHROMIUM:-/usr/bin/chromium}" ] || fail "no Chromium at ${E2E_CHROMIUM:-/usr/bin/chromium}"

lock_hash=$(sha256sum "$E2E_DIR/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$E2E_DIR/node_modules/.lock-hash" 2>/dev/null)" != "$lock_hash" ]; then
    header "npm ci"
    (cd "$E2E_DIR" && npm ci --no-audit --no-fund)
    echo "$lock_hash" > "$E2E_DIR/node_modules/.lock-hash"
fi

if [[ " $BACKENDS " == *" postgres "* ]]; then
    pg_rest=${E2E_POSTGRES_URL#*://}; pg_rest=${pg_rest##*@}; pg_rest=${pg_rest%%/*}
    pg_host=${pg_rest%:*}; pg_port=${pg_rest##*:}; [ "$pg_port" != "$pg_rest" ] || pg_port=5432
    redis_rest=${E2E_REDIS_URL#*://}; redis_rest=${redis_rest##*@}; redis_rest=${redis_rest%%/*}
    redis_host=${redis_rest%:*}; redis_port=${redis_rest##*:}; [ "$redis_port" != "$redis_rest" ] || redis_port=6379
    command -v psql >/dev/null 2>&1 || fail "psql is missing (the suite creates a database per provider with it)"
    tcp_open "$pg_host" "$pg_port" || fail "PostgreSQL does not answer on $pg_host:$pg_port (set E2E_POSTGRES_URL)"
    psql "$E2E_POSTGRES_URL" -Atqc 'select 1' >/dev/null || fail "cannot connect to $E2E_POSTGRES_URL (trust auth expected)"
    tcp_open "$redis_host" "$redis_port" || fail "Redis does not answer on $redis_host:$redis_port (set E2E_REDIS_URL)"
fi

if [ -z "${IDP_BIN:-}" ]; then
    header "cargo build -p idp"
    cargo build -p idp
    IDP_BIN="$ROOT/target/debug/idp"
fi
[ -x "$IDP_BIN" ] || fail "IDP_BIN=$IDP_BIN is not an executable"
export IDP_BIN

rm -rf "$E2E_DIR/artifacts"
status=0
for backend in $BACKENDS; do
    case "$backend" in
        sqlite) label="SQLite + in-process store" ;;
        postgres) label="PostgreSQL + Redis" ;;
        *) fail "unknown backend $backend (sqlite, postgres)" ;;
    esac
    header "journeys on $label"
    start=$(date +%s)
    (cd "$E2E_DIR" && E2E_BACKEND="$backend" node --test --test-concurrency=1 --test-reporter=spec tests/) || status=1
    echo "($backend: $(( $(date +%s) - start )) s)"
done

[ "$status" -eq 0 ] || fail "some journeys failed; screenshots in e2e/artifacts/"
header "all journeys passed; screenshots in e2e/artifacts/"
