#!/usr/bin/env bash
# Throughput with metrics on (scraped every second, as Prometheus would) vs off, one run
# (issue 7: within 5%). tiny and mlp over HTTP JSON and gRPC at concurrency 32.
#   bash bench/metrics_overhead.sh      Env: DUR (10), WARMUP (2), ROUNDS (2), PEERS, PY, OUT
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$REPO/bench/peers.sh"  # SHARED, or exit 2 saying what is missing
PEERS="${PEERS:-/tmp/peers}"; PY="${PY:-$REPO/.venv/bin/python}"
DUR="${DUR:-10}"; WARMUP="${WARMUP:-2}"; ROUNDS="${ROUNDS:-2}"
OUT="${OUT:-$REPO/bench/results/metrics-$(date +%Y%m%d-%H%M%S).jsonl}"
LG="$PEERS/loadgen-venv/bin/python"
declare -A SHAPE=([tiny]=16 [mlp]=784)
mkdir -p "$REPO/bench/results" "$PEERS/logs"
"$PY" "$SHARED/make_models.py" "$PEERS/models" >/dev/null
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
PID=""; SCRAPER=""
stop() {
  [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null; SCRAPER=""
  [ -n "$PID" ] || return 0
  kill -INT "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""
}
trap stop EXIT
# Alternate on/off rounds so drift on this shared machine hits both alike.
for round in $(seq 1 "$ROUNDS"); do
  for metrics in true false; do
    HP=$(free_port); GP=$(free_port)
    ONNX_SERVE_METRICS__ENABLED=$metrics "$PY" -m app --model-repository "$PEERS/models" \
      --host 127.0.0.1 --http-port "$HP" --grpc-port "$GP" --log-level warning \
      >"$PEERS/logs/onnx-serve-metrics.log" 2>&1 &
    PID=$!
    wait_ready "http://127.0.0.1:$HP/v2/models/cnn/ready"
    if [ "$metrics" = true ]; then
      (while true; do curl -sf -o /dev/null "http://127.0.0.1:$HP/metrics"; sleep 1; done) &
      SCRAPER=$!
    fi
    for m in tiny mlp; do
      for proto in http grpc; do
        port=$HP; [ "$proto" = grpc ] && port=$GP
        "$LG" "$SHARED/loadgen.py" -u "127.0.0.1:$port" -i "$proto" -m "$m" \
          --shape "${SHAPE[$m]}" -c 32 -d "$DUR" --warmup "$WARMUP" --server-pid "$PID" \
          --label "metrics-$metrics" --jsonl "$OUT" --retries 1 | tail -1
      done
    done
    stop
  done
done
"$PY" - "$OUT" <<'PY'
import json, sys, statistics
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["model"], r["protocol"], r["label"])].append(r["infer_s"])
print("| model | proto | metrics on (scraped 1/s) | metrics off | on / off |")
print("|---|---|---:|---:|---:|")
for model, proto in sorted({(m, p) for m, p, _ in runs}):
    on = statistics.mean(runs[(model, proto, "metrics-true")])
    off = statistics.mean(runs[(model, proto, "metrics-false")])
    print(f"| {model} | {proto} | {on:,.0f} | {off:,.0f} | {on / off:.3f} |")
PY
