"""Markdown tables from one peers_bench.sh run: onnx-serve vs the best peer, the raw
onnxruntime ceiling and the gRPC transport ceiling, per model, protocol and concurrency.

    python bench/peers_table.py results.jsonl raw1.txt raw2.txt
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

OURS = "onnx-serve"
AIO_CEILING = "grpc.aio ceiling"  # bench/grpc_ceiling.py: do-nothing servers, not peers
SYNC_CEILING = "grpc sync ceiling"
#: onnx-serve again, at concurrency 1, on a copy of the models whose dynamic batcher does not
#: wait (max_queue_delay_microseconds 0): the bench models' configs ask for 1 ms, which we
#: honour as Triton does and KServe (which reads no config.pbtxt) does not
NO_DELAY = "onnx-serve, queue delay 0"
CEILINGS = (AIO_CEILING, SYNC_CEILING, NO_DELAY)


def load_rows(path: str) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """(model, protocol, concurrency) -> every row measured, ours and the peers'."""
    points: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                proto = "grpc-raw" if row.get("client") == "grpc-raw" else row["protocol"]
                points[(row["model"], proto, row["concurrency"])].append(row)
    return points


def load_raw(paths: list[str]) -> dict[tuple[str, int], tuple[float, str]]:
    """(model, batch) -> best samples/s over the thread counts, and which one."""
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for path in paths:
        threads = "?"
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if "intra_op_num_threads=" in line:
                    threads = line.split("intra_op_num_threads=")[1].split(",")[0]
                parts = line.split()
                if len(parts) >= 3 and parts[1].isdigit():
                    key = (parts[0], int(parts[1]))
                    value = float(parts[2])
                    if value > best.get(key, (0.0, ""))[0]:
                        best[key] = (value, threads)
    return best


def cell(row: dict[str, Any]) -> str:
    return f"{row['infer_s']:,.0f} · {row['p50_ms']:.2f}/{row['p99_ms']:.1f}"


def transport(rows: list[dict[str, Any]], label: str, mine: dict[str, Any]) -> str:
    """A ceiling server's best infer/s here and onnx-serve's share of it; blank without one."""
    ceiling = [r for r in rows if r["label"] == label]
    if not ceiling:
        return ""
    best = max(r["infer_s"] for r in ceiling)
    return f"{best:,.0f} ({100 * mine['infer_s'] / best:.0f}%)"


def cpu_per_request(row: dict[str, Any] | None) -> str:
    """The server's CPU (it and its children, as loadgen measured) per inference, in us."""
    if row is None or not row.get("server_cpu_pct") or not row.get("infer_s"):
        return "-"
    return f"{row['server_cpu_pct'] / 100 / row['infer_s'] * 1e6:,.0f}"


def main() -> None:
    points = load_rows(sys.argv[1])
    raw = load_raw(sys.argv[2:])
    print("infer/s · p50/p99 ms. Best peer = highest infer/s among every peer and ORT thread "
          "count measured. Raw = onnxruntime in-process at batch = concurrency (capped at 64), "
          "best thread count. grpc.aio ceiling = a do-nothing grpc.aio ModelInfer server "
          "(canned answers, bench/grpc_ceiling.py) under the same loadgen, and onnx-serve's "
          "share of it; it is not a peer.\n")
    print("| model | proto | conc | onnx-serve | best peer | peer | vs best peer | raw ceiling "
          "| % of raw | grpc.aio ceiling | server CPU us/request: ours / best peer's "
          "| other CPU % |")
    print("|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    top = max((conc for _, _, conc in points), default=0)
    sync_notes = []
    for (model, proto, conc), rows in sorted(points.items(),
                                             key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        ours = [r for r in rows if r["label"] == OURS]
        peers = [r for r in rows if r["label"] != OURS and r["label"] not in CEILINGS]
        if not ours:
            continue
        mine = ours[-1]
        best = max(peers, key=lambda r: r["infer_s"]) if peers else None
        ceiling = raw.get((model, min(conc, 64)))
        ratio = f"{mine['infer_s'] / best['infer_s']:.2f}x" if best else "-"
        share = f"{100 * mine['infer_s'] / ceiling[0]:.0f}%" if ceiling else "-"
        ceiling_text = f"{ceiling[0]:,.0f} (t{ceiling[1]})" if ceiling else "-"
        peer_cell = cell(best) if best else "-"
        peer_name = best["label"] if best else "-"
        other = mine.get("other_cpu_pct") or 0
        aio = transport(rows, AIO_CEILING, mine)
        print(f"| {model} | {proto} | {conc} | {cell(mine)} | {peer_cell} | {peer_name} | "
              f"{ratio} | {ceiling_text} | {share} | {aio} | "
              f"{cpu_per_request(mine)} / {cpu_per_request(best)} | {other:.0f} |")
        sync = transport(rows, SYNC_CEILING, mine)
        if conc == top and sync:
            sync_notes.append(f"{model} {proto} {sync}")
    if sync_notes:
        print(f"\ngrpc sync ceiling (grpc.server on a thread pool, same do-nothing server) at "
              f"concurrency {top}, infer/s (onnx-serve's share): {'; '.join(sync_notes)}.")
    print("\nConcurrency 1, p50 latency against KServe (no batcher: the fastest unbatched peer); "
          f"'{NO_DELAY}': the same models without the 1 ms queue delay their configs ask for:\n")
    print("| model | proto | onnx-serve p50 ms | KServe p50 ms (best thread count) | ratio "
          "| queue delay 0: p50 ms | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (model, proto, conc), rows in sorted(points.items()):
        if conc != 1:
            continue
        ours = [r for r in rows if r["label"] == OURS]
        kserve = [r for r in rows if r["label"].startswith("kserve")]
        undelayed = [r for r in rows if r["label"] == NO_DELAY]
        if ours and kserve:
            fastest = min(kserve, key=lambda r: r["p50_ms"])
            best = fastest["p50_ms"]
            plain = (f"| {undelayed[-1]['p50_ms']:.2f} | {undelayed[-1]['p50_ms'] / best:.2f} |"
                     if undelayed else "| | |")
            print(f"| {model} | {proto} | {ours[-1]['p50_ms']:.2f} | {best:.2f} "
                  f"({fastest['label']}) | {ours[-1]['p50_ms'] / best:.2f} {plain}")


if __name__ == "__main__":
    main()
