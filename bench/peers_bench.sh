#!/usr/bin/env bash
# onnx-serve against every peer and the raw onnxruntime ceiling, one run (issue 5's table):
# tiny, mlp, cnn from ../shared/bench/peers/make_models.py; HTTP JSON, gRPC with typed contents
# and gRPC with raw_input_contents; concurrency 1, 8, 32; the shared loadgen.py for everyone,
# batch 1 per request.
#   bash bench/peers_bench.sh
# Env: DUR (8 s per level), WARMUP (2), CONC (1,8,32), MODELS (tiny mlp cnn),
#      PROTOS (http grpc grpc-raw),
#      CEILING (1; 0 skips the do-nothing grpc.aio and sync servers, bench/grpc_ceiling.py),
#      NO_DELAY (1; 0 skips onnx-serve at concurrency 1 on the models with queue delay 0),
#      PEER_LIST (mlserver kserve pytriton), PEER_THREADS ("1 2": each peer runs once per ORT
#      intra-op thread count and its better run counts), RETRIES (1), PEERS (/tmp/peers), PY,
#      OUT (results JSONL; raw_limit output beside it; the markdown table to stdout and OUT.md).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$REPO/bench/peers.sh"  # SHARED, or exit 2 saying what is missing
PEERS="${PEERS:-/tmp/peers}"; PY="${PY:-$REPO/.venv/bin/python}"
DUR="${DUR:-8}"; WARMUP="${WARMUP:-2}"; CONC="${CONC:-1,8,32}"; RETRIES="${RETRIES:-1}"
MODELS="${MODELS:-tiny mlp cnn}"; PROTOS="${PROTOS:-http grpc grpc-raw}"
PEER_LIST="${PEER_LIST:-mlserver kserve pytriton}"; PEER_THREADS="${PEER_THREADS:-1 2}"
mkdir -p "$REPO/bench/results" "$PEERS/logs"
OUT="${OUT:-$REPO/bench/results/peers-$(date +%Y%m%d-%H%M%S).jsonl}"
LG="$PEERS/loadgen-venv/bin/python"
declare -A SHAPE=([tiny]=16 [mlp]=784 [cnn]=3,64,64)
cd "$REPO"

# Environments, exactly as ../shared/bench/peers/README.md installs them (first use only).
venv() {  # name, packages...
  local name=$1; shift
  [ -x "$PEERS/$name-venv/bin/python" ] && return 0
  python3 -m venv "$PEERS/$name-venv" && "$PEERS/$name-venv/bin/pip" install -q "$@"
}
venv loadgen aiohttp uvloop numpy grpcio 'tritonclient[grpc]'
venv raw onnx onnxruntime numpy
for peer in $PEER_LIST; do
  case $peer in
    mlserver) venv mlserver mlserver==1.7.1 onnxruntime numpy 'uvloop<0.22' ;;
    kserve) venv kserve kserve==0.21.0 onnxruntime numpy ;;
    pytriton) venv pytriton nvidia-pytriton==0.7.0 onnxruntime numpy ;;
    azureml) venv azureml azureml-inference-server-http==1.5.1 onnxruntime numpy ;;
  esac
done
"$PEERS/raw-venv/bin/python" "$SHARED/make_models.py" "$PEERS/models" >/dev/null

echo "=== raw onnxruntime ceiling (threads 1 and 2)"
for t in 1 2; do
  "$PEERS/raw-venv/bin/python" "$SHARED/raw_limit.py" "$PEERS/models" --seconds 3 \
    --threads "$t" | tee "$OUT.raw$t.txt"
done

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
trap stop EXIT
drive() {  # label http_port grpc_port model proto [loadgen args...]
  local label=$1 http=$2 grpc=$3 m=$4 proto=$5; shift 5
  local port=$http flags=(-i http)
  case $proto in
    grpc) port=$grpc; flags=(-i grpc) ;;
    grpc-raw) port=$grpc; flags=(-i grpc --grpc-raw) ;;
  esac
  "$LG" "$SHARED/loadgen.py" -u "127.0.0.1:$port" "${flags[@]}" -m "$m" --shape "${SHAPE[$m]}" \
    -c "$CONC" -d "$DUR" --warmup "$WARMUP" --server-pid "$PID" --label "$label" \
    --jsonl "$OUT" --retries "$RETRIES" "$@"
}

serve_ours() {  # serve_ours REPO LOG: onnx-serve with its default settings; sets HP GP PID
  HP=$(free_port); GP=$(free_port)
  "$PY" -m app --model-repository "$1" --host 127.0.0.1 --http-port "$HP" \
    --grpc-port "$GP" --log-level warning >"$2" 2>&1 &
  PID=$!
  wait_ready "http://127.0.0.1:$HP/v2/models/cnn/ready" "$2"
}

echo "=== onnx-serve (default settings)"
serve_ours "$PEERS/models" "$PEERS/logs/onnx-serve.log"
for m in $MODELS; do
  for proto in $PROTOS; do
    drive onnx-serve "$HP" "$GP" "$m" "$proto"
  done
done
stop

# Concurrency 1 again on a copy of the models whose batcher does not wait: their configs ask
# for max_queue_delay_microseconds 1000, which onnx-serve honours as Triton does (KServe and
# the other peers read no config.pbtxt), so at concurrency 1 every request waits 1 ms.
if [ "${NO_DELAY:-1}" != 0 ]; then
  rm -rf "$PEERS/models-nodelay" && cp -r "$PEERS/models" "$PEERS/models-nodelay"
  sed -i 's/max_queue_delay_microseconds: [0-9]*/max_queue_delay_microseconds: 0/' \
    "$PEERS"/models-nodelay/*/config.pbtxt
  echo "=== onnx-serve, queue delay 0, concurrency 1"
  serve_ours "$PEERS/models-nodelay" "$PEERS/logs/onnx-serve-nodelay.log"
  for m in $MODELS; do
    for proto in $PROTOS; do
      drive "onnx-serve, queue delay 0" "$HP" "$GP" "$m" "$proto" -c 1
    done
  done
  stop
fi

# The transport ceiling: bench/grpc_ceiling.py answers ModelInfer with canned bytes and does
# nothing else, so the same loadgen against it measures what Python grpcio allows on this
# machine; grpc.aio (onnx-serve's server) and grpc's sync server on a thread pool.
case " $PROTOS " in *" grpc "* | *" grpc-raw "*) ;; *) CEILING=0 ;; esac
if [ "${CEILING:-1}" != 0 ]; then
  for mode in aio sync; do
    label="grpc $mode ceiling"; [ "$mode" = aio ] && label="grpc.aio ceiling"
    CP=$(free_port)
    echo "=== $label on $CP"
    PYTHONPATH="$REPO" "$PY" "$REPO/bench/grpc_ceiling.py" --port "$CP" --mode "$mode" \
      >"$PEERS/logs/grpc-ceiling-$mode.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
      "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
        "$CP" 2>/dev/null && break
      kill -0 "$PID" 2>/dev/null || { echo "grpc_ceiling.py exited; see $PEERS/logs" >&2; exit 1; }
      sleep 0.1
    done
    for m in $MODELS; do
      for proto in $PROTOS; do
        case $proto in grpc|grpc-raw) drive "$label" - "$CP" "$m" "$proto" ;; esac
      done
    done
    stop
  done
fi

# The peers, as ../shared/bench/peers/run_bench.sh starts and stops them, with "grpc-raw"
# (raw_input_contents) as a third protocol next to http and grpc (typed contents).
declare -A CFG=(
  [mlserver]="8080 8081 /v2/models/cnn/ready /v2/models/{model}/infer"
  [kserve]="8090 8091 /v2/models/cnn/ready /v2/models/{model}/infer"
  [pytriton]="8000 8001 /v2/models/cnn/ready /v2/models/{model}/infer"
  [azureml]="5001 - / /score?model={model}"
)
stop_peer() {  # SIGINT first: PyTriton shuts its tritonserver and stubs down only on SIGINT
  [ -n "$PID" ] || return 0
  kill -INT "$PID" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
  kill -0 "$PID" 2>/dev/null && { kill -TERM "$PID" 2>/dev/null; sleep 5; }
  kill -KILL -- "-$PID" 2>/dev/null || true
  PID=""
}
for t in $PEER_THREADS; do
  for peer in $PEER_LIST; do
    read -r PHP PGP READY HPATH <<<"${CFG[$peer]}"
    echo "=== $peer with ORT intra-op threads $t"
    ORT_INTRA_OP_THREADS="$t" PEERS="$PEERS" setsid "$SHARED/$peer/start.sh" \
      >"$PEERS/logs/$peer.log" 2>&1 &
    PID=$!
    ok=0
    for _ in $(seq 1 120); do
      curl -sf -o /dev/null "http://127.0.0.1:$PHP$READY" && { ok=1; break; }
      kill -0 "$PID" 2>/dev/null || break
      sleep 1
    done
    if [ $ok -ne 1 ]; then echo "!!! $peer did not become ready; see $PEERS/logs/$peer.log"
    else
      sleep 2
      for m in $MODELS; do
        for proto in $PROTOS; do
          [ "$proto" != http ] && [ "$PGP" = - ] && continue
          drive "$peer t$t" "$PHP" "$PGP" "$m" "$proto" --http-path "$HPATH"
        done
      done
    fi
    stop_peer
    sleep 2
  done
done

"$PY" "$REPO/bench/peers_table.py" "$OUT" "$OUT.raw1.txt" "$OUT.raw2.txt" | tee "$OUT.md"
