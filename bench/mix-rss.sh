#!/usr/bin/env bash
# mix-rss.sh: the harness's media-library run (../shared/bench/run-mix: 3,000 objects, ~2.1 GiB,
# Zipf 0.9) for komora-edge, nginx and Varnish in one sitting, with each proxy's peak RSS.
#
#   flock /tmp/komora-bench.lock bench/mix-rss.sh [--only "komora nginx varnish"] [--out DIR]
#         [--edge BIN] [--edge-env "K=V ..."] [-- extra run-mix args]
#
# The proxy runs under a small wrapper that samples VmRSS/VmHWM of its whole process tree
# (nginx: master + workers; Varnish: manager + child) every 0.2 s into DIR/<peer>.rss;
# the peak is printed after each run (run-mix itself reports no memory).
# Defaults: --out /tmp/komora-mix, release binary of this tree, --duration 10.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${KOMORA_BENCH_HARNESS:-}
for d in "$ROOT/../shared/bench" /work/shared/bench; do
  [ -z "$HARNESS" ] && [ -x "$d/run-mix" ] && HARNESS=$d
done
[ -n "$HARNESS" ] || { echo "mix-rss: no harness (set KOMORA_BENCH_HARNESS)" >&2; exit 2; }
OUT=/tmp/komora-mix
ONLY="komora nginx varnish"
BIN=$ROOT/target/release/komora-edge
EDGE_ENV=""
EXTRA=()
DURATION=10
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --edge) BIN=$2; shift 2 ;;
    --edge-env) EDGE_ENV=$2; shift 2 ;;
    --) shift; EXTRA=("$@")
        for ((i = 0; i < ${#EXTRA[@]}; i++)); do
          [ "${EXTRA[$i]}" = --duration ] && DURATION=${EXTRA[$((i + 1))]}
        done
        break ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mix-rss: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
SAMPLER=$OUT/rss-sampler.sh
# $1 = output file, rest = the proxy command (run in the foreground of this process group).
cat >"$SAMPLER" <<'SH'
#!/usr/bin/env bash
# one line per 0.2 s: unix time, RSS of the tree (KiB), CPU ticks (user + system) of the tree
out=$1; shift
"$@" &
pid=$!
tree() { local p=$1; echo "$p"; for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done; }
: >"$out"
while kill -0 "$pid" 2>/dev/null; do
  rss=0; ticks=0
  for p in $(tree "$pid"); do
    r=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || true)
    t=$(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || true)
    rss=$((rss + ${r:-0})); ticks=$((ticks + ${t:-0}))
  done
  echo "$(date +%s.%N) $rss $ticks" >>"$out"
  sleep 0.2
done
SH
chmod +x "$SAMPLER"
for peer in $ONLY; do
  rm -f "$OUT/$peer.rss"
  case "$peer" in
    nginx|varnish)
      proxy="cmd:exec $SAMPLER $OUT/$peer.rss $HARNESS/peers/start-peer $peer" ;;
    komora)
      proxy="cmd:exec env RUST_LOG=error $EDGE_ENV $SAMPLER $OUT/$peer.rss $BIN --listen 127.0.0.1:\$PORT --origin \$ORIGIN --cache-dir \$CACHE_DIR" ;;
    *) echo "mix-rss: unknown peer $peer" >&2; exit 2 ;;
  esac
  "$HARNESS/run-mix" --proxy "$proxy" --label "$peer" --json "$OUT/$peer.json" "${EXTRA[@]}"
  # peak RSS over the whole run; proxy CPU over the last --duration seconds it ran (the Zipf
  # phase: the harness stops the proxy right after it), 100 % = one core
  python3 - "$OUT/$peer.rss" "$(getconf CLK_TCK)" "${DURATION:-10}" "$peer" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 3]
hz, dur, peer = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
if not rows:
    sys.exit(f"  {peer}: no RSS samples")
peak = max(r[1] for r in rows)
end = rows[-1][0]
win = [r for r in rows if r[0] >= end - dur - 0.5]
cpu = (win[-1][2] - win[0][2]) / hz / max(win[-1][0] - win[0][0], 0.1) * 100
print(f"  {peer}: peak RSS {peak / 1024:.0f} MiB, last {rows[-1][1] / 1024:.0f} MiB, proxy CPU {cpu:.0f}% over the last {dur:.0f} s")
PY
done
