"""Markdown table from the REST bench JSONL: onnx-serve beside KServe, same run, with ratios."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def main(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    points: dict[tuple[str, str, int], dict[str, dict[str, float]]] = defaultdict(dict)
    for row in rows:
        server, mode = row["label"].split(":")
        points[(row["model"], mode, row["concurrency"])][server] = row
    print("| model | mode | conc | onnx-serve req/s | p50 / p99 ms | KServe req/s | "
          "p50 / p99 ms | ratio | other CPU % |")
    print("|---|---|---:|---:|---|---:|---|---:|---:|")
    for (model, mode, conc), by_server in sorted(points.items()):
        ours, peer = by_server.get("onnx-serve"), by_server.get("kserve")

        def cell(r: dict[str, float] | None) -> tuple[str, str]:
            if r is None:
                return "-", "-"
            errors = f" ({int(r['errors'])} errors)" if r["errors"] else ""
            return f"{r['req_s']:,.0f}{errors}", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"

        ratio = f"{ours['req_s'] / peer['req_s']:.2f}x" if ours and peer and peer["req_s"] else "-"
        other = max((r.get("other_cpu_pct") or 0.0) for r in by_server.values())
        print(f"| {model} | {mode} | {conc} | {' | '.join(cell(ours))} | "
              f"{' | '.join(cell(peer))} | {ratio} | {other:.0f} |")
    print("\nbinary: binary input and output for onnx-serve; KServe's peer runtime accepts the "
          "binary input but answers in JSON (it sets binary_data only on gRPC).")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
