#!/usr/bin/env bash
# Origin benchmark: seeds CONVERSATIONS × MESSAGES (default 100000 × 20) on SQLite and/or
# PostgreSQL, starts the release origin, and reports p50/p99 of the inbox (page of 50:
# offset 0, offset 50000, cursor at depth 50000) and of messages (page of 100).
#
#   bench/origin-bench.sh [sqlite|postgres|both]
#
# Env: CONVERSATIONS, MESSAGES, REQUESTS (per scenario), DEPTH, PG_ADMIN_URL
# (default postgres://postgres@127.0.0.1:5432/test), PORT (default 18080).
# Targets (PostgreSQL): inbox p99 < 5 ms, messages p99 < 2 ms.
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-both}
CONVERSATIONS=${CONVERSATIONS:-100000}
MESSAGES=${MESSAGES:-20}
REQUESTS=${REQUESTS:-2000}
PORT=${PORT:-18080}
# Depth of the deep offset/cursor scenarios: 50000, or half the conversations if fewer.
export DEPTH=${DEPTH:-$(( CONVERSATIONS / 2 < 50000 ? CONVERSATIONS / 2 : 50000 ))}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
WORK=$(mktemp -d /tmp/komora-bench.XXXXXX)
BIN=target/release/komora-origin

cargo build --release -p komora-origin >&2

run_one() {
    local name=$1 url=$2
    export KOMORA_DATABASE_URL=$url
    export KOMORA_MEDIA_STORE_URL="file://$WORK/media-$name"
    export KOMORA_LISTEN="127.0.0.1:$PORT"
    export KOMORA_INTERNAL_LISTEN="127.0.0.1:0"
    # serve refuses to start without media URL signing keys (media.signed_urls defaults on).
    export KOMORA_MEDIA_SIGNING_KEYS=${KOMORA_MEDIA_SIGNING_KEYS:-$(openssl rand -hex 32)}
    echo "== $name: seeding $CONVERSATIONS × $MESSAGES" >&2
    RUST_LOG=warn,sqlx::query=error "$BIN" seed --conversations "$CONVERSATIONS" --messages "$MESSAGES"
    local token
    token=$("$BIN" keys create --name bench --admin 2>/dev/null)
    RUST_LOG=warn "$BIN" serve &
    local pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "== $name ($CONVERSATIONS conversations × $MESSAGES messages)"
    python3 bench/origin-load.py "http://127.0.0.1:$PORT" "$token" "$REQUESTS" || true
    kill "$pid"
    wait "$pid" || true
}

if [[ $WHICH == sqlite || $WHICH == both ]]; then
    run_one sqlite "sqlite://$WORK/bench.db"
fi
if [[ $WHICH == postgres || $WHICH == both ]]; then
    DB=komora_bench_$$
    BASE=${PG_ADMIN_URL%/*}
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null
    run_one postgres "$BASE/$DB"
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null
fi
rm -rf "$WORK"
