#!/usr/bin/env bash
# Triton's perf_analyzer against onnx-serve over HTTP and gRPC (issue 7): it needs the model
# configuration and statistics extensions, which plain v2 servers lack.
#   bash bench/perf_analyzer.sh
# perf_analyzer ships only in tritonclient wheels <= 2.60; 2.51.0 is the newest that runs on
# Debian 12 (../shared/bench/peers/README.md), with libb64 (apt) and libcudart (pip).
# Env: MODELS (tiny mlp), CONC (1:32:... perf_analyzer range, default 1,8,32 as three runs),
#      PEERS (/tmp/peers), PY, OUT (results directory).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$REPO/bench/peers.sh"  # SHARED, or exit 2 saying what is missing
PEERS="${PEERS:-/tmp/peers}"; PY="${PY:-$REPO/.venv/bin/python}"
MODELS="${MODELS:-tiny mlp}"
OUT="${OUT:-$REPO/bench/results/perf-analyzer-$(date +%Y%m%d-%H%M%S)}"
PA_VENV="$PEERS/pa-venv"
declare -A SHAPE=([tiny]=16 [mlp]=784 [cnn]=3,64,64)
mkdir -p "$OUT" "$PEERS/logs"
[ -x "$PA_VENV/bin/perf_analyzer" ] || { python3 -m venv "$PA_VENV";
  "$PA_VENV/bin/pip" install -q 'tritonclient[all]==2.51.0' nvidia-cuda-runtime-cu12; }
ldconfig -p | grep -q libb64.so.0d || apt-get install -y -qq libb64-0d
CUDART="$("$PA_VENV/bin/python" -c 'import nvidia.cuda_runtime as c; print(list(c.__path__)[0])')/lib"
"$PY" "$SHARED/make_models.py" "$PEERS/models" >/dev/null

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
HP=$(free_port); GP=$(free_port)
"$PY" -m app --model-repository "$PEERS/models" --host 127.0.0.1 --http-port "$HP" \
  --grpc-port "$GP" --log-level warning >"$PEERS/logs/onnx-serve-pa.log" 2>&1 &
PID=$!
trap 'kill -INT $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
wait_ready "http://127.0.0.1:$HP/v2/models/cnn/ready"
for m in $MODELS; do
  for proto in http grpc; do
    port=$HP; [ "$proto" = grpc ] && port=$GP
    for c in 1 8 32; do
      echo "=== perf_analyzer $m $proto concurrency $c"
      LD_LIBRARY_PATH="$CUDART" "$PA_VENV/bin/perf_analyzer" -m "$m" -u "127.0.0.1:$port" \
        -i "$proto" --shape "x:${SHAPE[$m]}" --concurrency-range "$c" \
        --measurement-interval 4000 --stability-percentage 25 -f "$OUT/$m-$proto-c$c.csv" \
        | grep -E "Throughput|Avg latency|p50|p99|error" || true
    done
  done
done
echo "CSV: $OUT"
