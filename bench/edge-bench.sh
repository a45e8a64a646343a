#!/usr/bin/env bash
# edge-bench.sh: compare komora-edge with nginx proxy_cache and varnish using the shared
# harness (../shared/bench/run-bench, see its README.md).
#
#   bench/edge-bench.sh [--out DIR] [--only "nginx varnish komora"] [-- extra run-bench args]
#
# Builds the release binary once (cargo build --release -p komora-proxy), then runs every
# peer with --repeat 3 and merges the JSON results into one table (DIR/all.json).
# Defaults: --out /tmp/komora-edge-bench, all three peers, --duration 10 --nice -10.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${KOMORA_BENCH_HARNESS:-$ROOT/../shared/bench}
OUT=/tmp/komora-edge-bench
ONLY="nginx varnish komora"
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "edge-bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$HARNESS/run-bench" ] || { echo "edge-bench: no harness at $HARNESS" >&2; exit 2; }
mkdir -p "$OUT"
BIN=$ROOT/target/release/komora-edge
if [[ " $ONLY " == *" komora "* ]]; then
  (cd "$ROOT" && cargo build --release -p komora-proxy)
fi
COMMON=(--repeat 3 --duration 10 --nice -10 "${EXTRA[@]}")
for peer in $ONLY; do
  case "$peer" in
    nginx|varnish)
      "$HARNESS/run-bench" --proxy "$peer" --label "$peer" --json "$OUT/$peer.json" "${COMMON[@]}" ;;
    komora)
      # RUST_LOG=error keeps per-request logging off the measured path.
      "$HARNESS/run-bench" \
        --proxy "cmd:RUST_LOG=error exec $BIN --listen 127.0.0.1:\$PORT --origin \$ORIGIN --cache-dir \$CACHE_DIR" \
        --label komora-edge --json "$OUT/komora.json" "${COMMON[@]}" ;;
    *) echo "edge-bench: unknown peer $peer" >&2; exit 2 ;;
  esac
done
files=()
for peer in nginx varnish komora; do [ -f "$OUT/$peer.json" ] && files+=("$OUT/$peer.json"); done
python3 "$HARNESS/lib/report.py" --merge "$OUT/all.json" "${files[@]}"
