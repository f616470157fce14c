#!/usr/bin/env bash
# Regression check between two checkouts of onnx-serve: each serves the peers' bench models in
# turn (alternated ROUNDS times, so drift on this shared machine hits both alike) under the shared
# load generator; prints req/s per run and the ratio of the medians.
#   bash bench/compare_checkouts.sh /path/to/old-checkout [/path/to/new-checkout]
# A case's protocol is http, grpc (typed contents) or grpc-raw (raw_input_contents).
# Env: ROUNDS (3), CASES ("mlp grpc,tiny grpc,mlp http"), CONC (1,32), DUR (5), WARMUP (2),
#      PEERS (/tmp/peers: loadgen-venv and models, as bench/peers_bench.sh installs them), PY.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OLD="$(cd "${1:?usage: compare_checkouts.sh OLD [NEW]}" && pwd)"; NEW="$(cd "${2:-$REPO}" && pwd)"
. "$REPO/bench/peers.sh"; PEERS="${PEERS:-/tmp/peers}"; PY="${PY:-$REPO/.venv/bin/python}"
ROUNDS="${ROUNDS:-3}"; CASES="${CASES:-mlp grpc,tiny grpc,mlp http}"; CONC="${CONC:-1,32}"
DUR="${DUR:-5}"; WARMUP="${WARMUP:-2}"
LG="$PEERS/loadgen-venv/bin/python"
[ -x "$LG" ] && [ -d "$PEERS/models" ] || { echo "run bash bench/peers_bench.sh once first" >&2; exit 1; }
declare -A SHAPE=([tiny]=16 [mlp]=784 [cnn]=3,64,64)
OUT="$(mktemp /tmp/compare-XXXX.jsonl)"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
trap stop EXIT

for round in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    dir=$OLD; [ "$side" = new ] && dir=$NEW
    HP=$(free_port); GP=$(free_port)
    # `python -m app` from the checkout's folder imports that checkout's app/ first.
    (cd "$dir" && exec "$PY" -m app --model-repository "$PEERS/models" --host 127.0.0.1 \
      --http-port "$HP" --grpc-port "$GP" --log-level warning) >"$OUT.$side.log" 2>&1 &
    PID=$!
    wait_ready "http://127.0.0.1:$HP/v2/models/cnn/ready" "$OUT.$side.log"
    IFS=, read -ra cases <<<"$CASES"
    for case in "${cases[@]}"; do
      read -r model proto <<<"$case"
      raw=(); [ "$proto" = grpc-raw ] && { proto=grpc; raw=(--grpc-raw); }
      port=$HP; [ "$proto" = grpc ] && port=$GP
      "$LG" "$SHARED/loadgen.py" -u "127.0.0.1:$port" -i "$proto" "${raw[@]}" -m "$model" \
        --shape "${SHAPE[$model]}" -c "$CONC" -d "$DUR" --warmup "$WARMUP" --server-pid "$PID" \
        --label "$side" --jsonl "$OUT" >/dev/null
    done
    stop
    echo "round $round: $side done"
  done
done

"$PY" - "$OUT" <<'EOF'
import collections, json, statistics, sys
runs, cpu = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["model"], r.get("client", r["protocol"]), r["concurrency"], r["label"])
    runs[key].append(r["req_s"])
    # The server's CPU per request (us): its CPU seconds in the window over its answers.
    cpu[key].append(r["server_cpu_pct"] / 100 * r["duration_s"] / max(r["requests"], 1) * 1e6)
print("| model | proto | conc | old req/s | new req/s | median new/old "
      "| old CPU us/req | new CPU us/req | median new/old |")
print("|---|---|---:|---|---|---:|---|---|---:|")
for model, proto, conc in sorted({key[:3] for key in runs}):
    old, new = runs[(model, proto, conc, "old")], runs[(model, proto, conc, "new")]
    old_cpu, new_cpu = cpu[(model, proto, conc, "old")], cpu[(model, proto, conc, "new")]
    print(f"| {model} | {proto} | {conc} | {', '.join(f'{x:,.0f}' for x in old)} | "
          f"{', '.join(f'{x:,.0f}' for x in new)} | "
          f"{statistics.median(new) / statistics.median(old):.2f} | "
          f"{', '.join(f'{x:.0f}' for x in old_cpu)} | {', '.join(f'{x:.0f}' for x in new_cpu)} | "
          f"{statistics.median(new_cpu) / statistics.median(old_cpu):.2f} |")
EOF
