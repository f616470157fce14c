#!/usr/bin/env bash
# REST benchmark, one run: onnx-serve and KServe's ModelServer (the peer recipe in
# ../shared/bench/peers), HTTP JSON and HTTP binary tensors, on the bench MLP, same ORT threads.
#   bash bench/rest_bench.sh            (or: make bench)
# Env: DUR (10 s per level), WARMUP (2), CONC (1,8,32), THREADS (ORT intra-op threads for both
#      servers, 1), PEERS (/tmp/peers: venvs and models), PY (this repo's .venv python),
#      OUT (results JSONL; the markdown table goes to stdout and OUT.md).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$REPO/bench/peers.sh"  # SHARED, or exit 2 saying what is missing
PEERS="${PEERS:-/tmp/peers}"
PY="${PY:-$REPO/.venv/bin/python}"
DUR="${DUR:-10}"; WARMUP="${WARMUP:-2}"; CONC="${CONC:-1,8,32}"; THREADS="${THREADS:-1}"
mkdir -p "$REPO/bench/results" "$PEERS/logs"
OUT="${OUT:-$REPO/bench/results/rest-$(date +%Y%m%d-%H%M%S).jsonl}"
LG="$PEERS/loadgen-venv/bin/python"
cd "$REPO"

# Peer environments, exactly as ../shared/bench/peers/README.md installs them.
[ -x "$PEERS/kserve-venv/bin/python" ] || { python3 -m venv "$PEERS/kserve-venv";
  "$PEERS/kserve-venv/bin/pip" install -q kserve==0.21.0 onnxruntime numpy; }
[ -x "$LG" ] || { python3 -m venv "$PEERS/loadgen-venv";
  "$PEERS/loadgen-venv/bin/pip" install -q aiohttp uvloop numpy grpcio 'tritonclient[grpc]'; }
"$PY" "$SHARED/make_models.py" "$PEERS/models" >/dev/null

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
trap stop EXIT
drive() {  # label port: JSON then binary, mlp, every concurrency level
  local common=(-u "127.0.0.1:$2" -i http -m mlp --shape 784 -c "$CONC" -d "$DUR"
                --warmup "$WARMUP" --server-pid "$PID" --jsonl "$OUT" --retries 1)
  "$LG" "$SHARED/loadgen.py" "${common[@]}" --label "$1:json"
  "$LG" "$REPO/bench/loadgen_binary.py" "${common[@]}" --label "$1:binary"
}

HP=$(free_port); GP=$(free_port)
echo "=== onnx-serve on $HP (intra-op threads $THREADS)"
ONNX_SERVE_DEVICES__INTRA_OP_THREADS="$THREADS" "$PY" -m app --model-repository "$PEERS/models" \
  --host 127.0.0.1 --http-port "$HP" --grpc-port "$GP" --log-level warning \
  >"$PEERS/logs/onnx-serve.log" 2>&1 &
PID=$!
wait_ready "http://127.0.0.1:$HP/v2/models/mlp/ready" "$PEERS/logs"
drive onnx-serve "$HP"
stop

HP=$(free_port); GP=$(free_port)
echo "=== KServe on $HP (intra-op threads $THREADS)"
ORT_INTRA_OP_THREADS="$THREADS" PEERS="$PEERS" setsid "$SHARED/kserve/start.sh" \
  --http_port "$HP" --grpc_port "$GP" >"$PEERS/logs/kserve.log" 2>&1 &
PID=$!
wait_ready "http://127.0.0.1:$HP/v2/models/mlp/ready" "$PEERS/logs"
drive kserve "$HP"
stop

"$PY" "$REPO/bench/rest_table.py" "$OUT" | tee "$OUT.md"
