#!/usr/bin/env bash
# Issue 21, target 4: a busy model among idle ones. For each thread mode, the peers' cnn alone,
# then with 5 models loaded (cnn busy, the rest idle), then two busy models at once (cnn and
# cnn2, each with its own loadgen): infer/s of each, one run. HTTP JSON, batch 1 per request.
#   bash bench/busy_model_bench.sh     Env: DUR (10), WARMUP (2), CONC (16), MODES, PY, LG, OUT
# MODES: auto (the default: a version's CPU instances share the CPUs, CPUs // its instances),
# all (every session gets every CPU, spinning off), global (onnxruntime's global pool:
# devices.global_thread_pool).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$REPO/bench/peers.sh"  # SHARED, or exit 2 saying what is missing
PY="${PY:-$REPO/.venv/bin/python}"; LG="${LG:-$PY}"  # the dev venv has loadgen's packages
DUR="${DUR:-10}"; WARMUP="${WARMUP:-2}"; CONC="${CONC:-16}"; MODES="${MODES:-auto global}"
WORK="$(mktemp -d /tmp/busy-bench.XXXXXX)"
mkdir -p "$REPO/bench/results"
OUT="${OUT:-$REPO/bench/results/busy-$(date +%Y%m%d-%H%M%S).jsonl}"
CPUS="$("$PY" -c 'from app.models.threads import available_cpus; print(available_cpus().cpus)')"
"$PY" "$SHARED/make_models.py" "$WORK/all" >/dev/null
for extra in mlp cnn; do cp -r "$WORK/all/$extra" "$WORK/all/${extra}2"  # 5 models
  sed -i "s/^name: .*/name: \"${extra}2\"/" "$WORK/all/${extra}2/config.pbtxt"; done
mkdir -p "$WORK/alone" && cp -r "$WORK/all/cnn" "$WORK/alone/"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PID=""
stop() { [ -n "$PID" ] || return 0; kill -INT "$PID" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$PID" 2>/dev/null || true; PID=""; }
trap 'stop; rm -rf "$WORK"' EXIT
serve() {  # serve MODE REPO: starts onnx-serve, sets PID and HP
  local env=()
  case "$1" in
    auto) env=(ONNX_SERVE_DEVICES__INTRA_OP_THREADS=0) ;;
    all) env=(ONNX_SERVE_DEVICES__INTRA_OP_THREADS="$CPUS") ;;
    global) env=(ONNX_SERVE_DEVICES__GLOBAL_THREAD_POOL=true) ;;
  esac
  HP=$(free_port)
  env "${env[@]}" "$PY" -m app --model-repository "$2" --host 127.0.0.1 --http-port "$HP" \
    --grpc-port "$(free_port)" --log-level warning >"$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$HP/v2/health/ready" && return; sleep 0.1; done
  echo "onnx-serve did not become ready:" >&2; cat "$WORK/server.log" >&2; exit 1
}
load() {  # load MODEL LABEL
  "$LG" "$SHARED/loadgen.py" -u "127.0.0.1:$HP" -i http -m "$1" --shape 3,64,64 -c "$CONC" \
    -d "$DUR" --warmup "$WARMUP" --server-pid "$PID" --jsonl "$OUT" --retries 1 --label "$2" \
    >/dev/null
}
for mode in $MODES; do
  echo "=== $mode"
  serve "$mode" "$WORK/alone"; load cnn "$mode-alone"; stop
  serve "$mode" "$WORK/all"; load cnn "$mode-busy1"
  load cnn "$mode-pair-cnn" & A=$!; load cnn2 "$mode-pair-cnn2" & B=$!; wait "$A" "$B"; stop
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = {r["label"]: r for r in map(json.loads, filter(str.strip, open(sys.argv[1])))}
print("| threads | cnn alone | cnn busy, 4 idle | busy / alone | two busy: cnn + cnn2 | fair |")
print("|---|---:|---:|---:|---|---:|")
for mode in dict.fromkeys(k.split("-")[0] for k in rows):
    alone, busy = rows[f"{mode}-alone"]["req_s"], rows[f"{mode}-busy1"]["req_s"]
    a, b = rows[f"{mode}-pair-cnn"]["req_s"], rows[f"{mode}-pair-cnn2"]["req_s"]
    print(f"| {mode} | {alone:,.0f} | {busy:,.0f} | {busy / alone:.0%} | {a:,.0f} + {b:,.0f} "
          f"| {min(a, b) / max(a, b):.0%} |")
PYEOF
