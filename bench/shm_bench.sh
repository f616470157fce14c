#!/usr/bin/env bash
# What system shared memory saves (issue 19): perf_analyzer against onnx-serve with
# --shared-memory system vs none (binary HTTP, raw gRPC), for the cnn model (48 KB input) and a
# model with a 10 MB input (y = ReduceSum(x), x FP32 [1, 2621440]).
#   make .venv/.perf-analyzer && bash bench/shm_bench.sh
# Env: MODELS (default cnn big), CONC (concurrency, default 1 4), WINDOW_MS (default 4000),
#      STABILITY (perf_analyzer's %, default 50: this box is shared), OUT (results directory).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$REPO/bench/peers.sh"  # SHARED (make_models.py), or exit 2 saying what is missing
PY="${PY:-$REPO/.venv/bin/python}"
PA="$REPO/.venv/perf-analyzer"
[ -x "$PA/bin/perf_analyzer" ] || { echo "run: make .venv/.perf-analyzer" >&2; exit 2; }
MODELS_RUN="${MODELS:-cnn big}"; CONC="${CONC:-1 4}"; WINDOW_MS="${WINDOW_MS:-4000}"
STABILITY="${STABILITY:-50}"
OUT="${OUT:-$REPO/bench/results/shm-$(date +%Y%m%d-%H%M%S)}"
MODELS="$OUT/models"
mkdir -p "$OUT"
CUDART="$("$PA/bin/python" -c 'import nvidia.cuda_runtime as c; print(list(c.__path__)[0])')/lib"
"$PY" "$SHARED/make_models.py" "$MODELS" >/dev/null
"$PY" - "$MODELS" <<'EOF'
import sys
from pathlib import Path
import onnx
from onnx import TensorProto, helper
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2621440])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
graph = helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
                          "big", [x], [y], initializer=[axes])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
(Path(sys.argv[1]) / "big" / "1").mkdir(parents=True, exist_ok=True)
onnx.save(model, str(Path(sys.argv[1]) / "big" / "1" / "model.onnx"))
EOF

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
HP=$(free_port); GP=$(free_port)
"$PY" -m app --model-repository "$MODELS" --host 127.0.0.1 --http-port "$HP" --grpc-port "$GP" \
  --log-level warning >"$OUT/onnx-serve.log" 2>&1 &
PID=$!
trap stop EXIT
wait_ready "http://127.0.0.1:$HP/v2/models/big/ready" "$OUT/onnx-serve.log"
declare -A SHAPE=([cnn]=3,64,64 [big]=2621440)
echo "| model | protocol | conc | shared memory | infer/s | p50 ms | p99 ms |"
echo "|---|---|---:|---|---:|---:|---:|"
for m in $MODELS_RUN; do
  for proto in http grpc; do
    port=$HP; [ "$proto" = grpc ] && port=$GP
    for c in $CONC; do
      for shm in none system; do
        csv="$OUT/$m-$proto-c$c-$shm.csv"
        LD_LIBRARY_PATH="$CUDART" "$PA/bin/perf_analyzer" -m "$m" -u "127.0.0.1:$port" \
          -i "$proto" --shape "x:${SHAPE[$m]}" --shared-memory "$shm" \
          --output-shared-memory-size 65536 --concurrency-range "$c" \
          --measurement-interval "$WINDOW_MS" --stability-percentage "$STABILITY" -f "$csv" \
          >"$OUT/$m-$proto-c$c-$shm.txt" 2>&1 || { echo "perf_analyzer failed: $csv.txt" >&2; continue; }
        "$PY" - "$csv" "$m" "$proto" "$c" "$shm" <<'EOF'
import csv, sys
row = next(csv.DictReader(open(sys.argv[1])))
p50, p99 = (float(row[f"{p} latency"]) / 1000 for p in ("p50", "p99"))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {sys.argv[5]} | "
      f"{float(row['Inferences/Second']):.0f} | {p50:.2f} | {p99:.2f} |")
EOF
      done
    done
  done
done
echo "raw: $OUT"
