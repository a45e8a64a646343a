#!/usr/bin/env bash
# Task-queue benchmarks: no-op tasks per second on SQLite and PostgreSQL, and the
# wait of high-priority tasks while 100k low-priority tasks are queued.
# Needs PostgreSQL at KOMORA_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
# Runs one benchmark at a time so they do not compete for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p komora-origin --test api queue::bench -- --ignored --nocapture \
    --test-threads=1 2>&1 | grep -oE 'BENCH.*|test result.*|panicked.*'
