#!/usr/bin/env bash
# Task-queue benchmarks: no-op tasks per second on SQLite and PostgreSQL, and the
# wait of high-priority tasks while 100k low-priority tasks are queued.
# Needs PostgreSQL at KOMORA_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
# Runs one benchmark at a time so they do not compete for the cores.
#
#   bench/queue-bench.sh [FILTER]     FILTER picks benchmarks by test name (default: all four),
#                                     e.g. queue_bench_throughput_postgres
#   bench/queue-bench.sh --build-only build the release test binary and stop
#
# On a shared box build first, then measure under the lock (the build is then a no-op):
#   nice -n 19 bench/queue-bench.sh --build-only
#   flock /tmp/komora-bench.lock bench/queue-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --build-only ]; then
    exec cargo test --release -p komora-origin --test api --no-run
fi
cargo test --release -p komora-origin --test api "${1:-queue::bench}" -- --ignored --nocapture \
    --test-threads=1 2>&1 | grep -oE 'BENCH.*|test result.*|panicked.*'
