#!/usr/bin/env bash
# Intra-op threads 1 vs 2 vs auto (0) for onnx-serve on the bench MLP, one run, so the default
# is chosen by measurement. HTTP JSON through the shared loadgen.py; batch 1 per request.
#   bash bench/threads_bench.sh      Env: DUR (10), WARMUP (2), CONC (1,8,32), PEERS, PY, OUT
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$REPO/bench/peers.sh"  # SHARED, or exit 2 saying what is missing
PEERS="${PEERS:-/tmp/peers}"; PY="${PY:-$REPO/.venv/bin/python}"
DUR="${DUR:-10}"; WARMUP="${WARMUP:-2}"; CONC="${CONC:-1,8,32}"
mkdir -p "$REPO/bench/results" "$PEERS/logs"
OUT="${OUT:-$REPO/bench/results/threads-$(date +%Y%m%d-%H%M%S).jsonl}"
LG="$PEERS/loadgen-venv/bin/python"
cd "$REPO"
[ -x "$LG" ] || { python3 -m venv "$PEERS/loadgen-venv";
  "$PEERS/loadgen-venv/bin/pip" install -q aiohttp uvloop numpy grpcio 'tritonclient[grpc]'; }
"$PY" "$SHARED/make_models.py" "$PEERS/models" >/dev/null
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PID=""
stop() { [ -n "$PID" ] || return 0; kill -INT "$PID" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$PID" 2>/dev/null || true; PID=""; }
trap stop EXIT
for threads in 1 2 0; do
  HP=$(free_port)
  echo "=== intra-op threads ${threads/#0/auto}"
  ONNX_SERVE_DEVICES__INTRA_OP_THREADS="$threads" "$PY" -m app --model-repository "$PEERS/models" \
    --host 127.0.0.1 --http-port "$HP" --grpc-port "$(free_port)" --log-level warning \
    >"$PEERS/logs/onnx-serve-threads.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$HP/v2/models/mlp/ready" && break; sleep 0.1; done
  "$LG" "$SHARED/loadgen.py" -u "127.0.0.1:$HP" -i http -m mlp --shape 784 -c "$CONC" -d "$DUR" \
    --warmup "$WARMUP" --server-pid "$PID" --jsonl "$OUT" --retries 1 --label "threads-${threads/#0/auto}"
  stop
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| intra-op threads | conc | req/s | p50 / p99 ms | server CPU % | other CPU % |")
print("|---|---:|---:|---|---:|---:|")
for r in rows:
    print(f"| {r['label'].split('-')[1]} | {r['concurrency']} | {r['req_s']:,.0f} | "
          f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['server_cpu_pct']:.0f} | {r['other_cpu_pct']:.0f} |")
PYEOF
