#!/usr/bin/env bash
# edge-bench.sh: compare komora-edge with nginx proxy_cache and varnish using the three
# scripts of the shared harness (../shared/bench: run-bench, run-tls, run-mix; see its
# README.md), in one sitting, and print one table with komora-edge / nginx ratios.
#
#   bench/edge-bench.sh [--out DIR] [--only "nginx varnish komora"] [--suites "bench tls mix"]
#                       [--bin PATH] [--no-build] [-- extra run-bench args]
#
# Builds the release binary once (cargo build --release -p komora-proxy) unless --bin or
# --no-build is given. Suites: bench = run-bench (hits, 304, herd, restart, stale; --repeat 3
# --duration 10 --nice -10), tls = run-tls (h2 and https/1.1 hits; nginx and the edge, Varnish
# has no TLS), mix = run-mix (Zipf over a 2 GiB library). JSON per peer and suite in DIR,
# the merged table in DIR/table.md. Defaults: --out /tmp/komora-edge-bench, all peers, all suites.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${KOMORA_BENCH_HARNESS:-$ROOT/../shared/bench}
OUT=/tmp/komora-edge-bench
ONLY="nginx varnish komora"
SUITES="bench tls mix"
BIN=$ROOT/target/release/komora-edge
BUILD=1
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --suites) SUITES=$2; shift 2 ;;
    --bin) BIN=$2; BUILD=0; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "edge-bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$HARNESS/run-bench" ] || { echo "edge-bench: no harness at $HARNESS" >&2; exit 2; }
mkdir -p "$OUT"
if [[ " $ONLY " == *" komora "* ]] && [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && nice -n 19 cargo build --release -p komora-proxy)
fi
# RUST_LOG=error keeps per-request logging off the measured path.
EDGE="RUST_LOG=error exec $BIN --listen 127.0.0.1:\$PORT --origin \$ORIGIN --cache-dir \$CACHE_DIR"
# run-tls: plain HTTP on PORT (readiness) and HTTPS (h2 + http/1.1 by ALPN) on TLS_PORT, which
# only a config file can ask for.
EDGE_TLS="printf '[server]\\nlisten = [\"127.0.0.1:%s\"]\\ntls_listen = [\"127.0.0.1:%s\"]\\ntls_cert = \"%s\"\\ntls_key = \"%s\"\\n' \$PORT \$TLS_PORT \$TLS_CERT \$TLS_KEY >\$RUN_DIR/edge.toml && RUST_LOG=error exec $BIN --config \$RUN_DIR/edge.toml --origin \$ORIGIN --cache-dir \$CACHE_DIR"
proxy_arg() { # peer [tls]
  case "$1" in
    nginx|varnish) echo "$1" ;;
    komora) if [ "${2:-}" = tls ]; then echo "cmd:$EDGE_TLS"; else echo "cmd:$EDGE"; fi ;;
    *) echo "edge-bench: unknown peer $1" >&2; exit 2 ;;
  esac
}
label() { [ "$1" = komora ] && echo komora-edge || echo "$1"; }
for suite in $SUITES; do
  for peer in $ONLY; do
    case "$suite" in
      bench)
        "$HARNESS/run-bench" --proxy "$(proxy_arg "$peer")" --label "$(label "$peer")" \
          --json "$OUT/bench-$peer.json" --repeat 3 --duration 10 --nice -10 "${EXTRA[@]}" ;;
      tls)
        [ "$peer" = varnish ] && continue
        "$HARNESS/run-tls" --proxy "$(proxy_arg "$peer" tls)" --label "$(label "$peer")" \
          --json "$OUT/tls-$peer.json" --duration 10 ;;
      mix)
        "$HARNESS/run-mix" --proxy "$(proxy_arg "$peer")" --label "$(label "$peer")" \
          --json "$OUT/mix-$peer.json" --duration 10 ;;
      *) echo "edge-bench: unknown suite $suite" >&2; exit 2 ;;
    esac
  done
done
# One table: a row per suite and test, a req/s column per peer, komora-edge / nginx.
python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import glob, json, os, sys
out = sys.argv[1]
rows, peers = {}, []
for path in sorted(glob.glob(os.path.join(out, "*-*.json"))):
    suite, peer = os.path.basename(path)[:-5].split("-", 1)
    run = json.load(open(path))
    if peer not in peers:
        peers.append(peer)
    for r in run["rows"]:
        if r.get("rps") is None and r.get("objects_s") is None:
            continue
        v = r.get("rps") if r.get("rps") is not None else r.get("objects_s")
        note = r.get("notes", "")
        cpu = note[note.find("cpu proxy"):].split(";")[0] if "cpu proxy" in note else ""
        rows.setdefault((suite, r["test"]), {})[peer] = (v, cpu)
order = [p for p in ("nginx", "varnish", "komora") if p in peers]
print("| suite | test | " + " | ".join(order) + " | komora / nginx |")
print("|---|---|" + "---|" * len(order) + "---|")
for (suite, test), by in rows.items():
    cells = []
    for p in order:
        v = by.get(p)
        cells.append("-" if v is None else "%.0f%s" % (v[0], " (%s)" % v[1] if v[1] else ""))
    k, n = by.get("komora"), by.get("nginx")
    ratio = "%.2fx" % (k[0] / n[0]) if k and n and n[0] else "-"
    print("| %s | %s | %s | %s |" % (suite, test, " | ".join(cells), ratio))
PY
