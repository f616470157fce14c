"""Issue 21, target 5: onnx-serve with N models x 2 versions, for N in 10, 50, 200.

    python bench/scale_models.py [--counts 10,50,200] [--idle-s 30] [--quick]

Per N, one real server process in poll mode (every version of every model: version_policy
all) on a generated repository of small MLPs (onnx.helper): time from start to READY, RSS
per model (RSS over an empty server's, / N), /metrics scrape and POST /v2/repository/index
(median and p99 of 20; the server's CPU per scrape, gzip as Prometheus asks; the size of
the text), and the server's CPU while idle over --idle-s. Prints a table and how
each figure grows from the smallest N to the largest. --quick: N 5 and 20, 5 s idle.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
from scale_lib import cpu_seconds, percentile, rss_mib, server, small_mlp, timed

#: poll mode at its default rescan interval (15 s, as Triton's --repository-poll-secs)
POLL = ["--model-control-mode=poll"]


def measure(count: int, idle_s: float, baseline_mib: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="scale-models-") as folder:
        root = Path(folder)
        for i in range(count):
            small_mlp(root, f"m{i:03d}")
        started = time.monotonic()
        with server(root, POLL) as srv:
            ready_s = time.monotonic() - started
            pid, url = srv.process.pid, srv.url
            with httpx.Client(base_url=url, timeout=30) as client:
                index = client.post("/v2/repository/index", json={}).json()
                ready = sum(entry.get("state") == "READY" for entry in index)
                cpu0 = cpu_seconds(pid)
                metrics = timed(lambda: client.get("/metrics").raise_for_status(), 20)
                metrics_cpu_ms = (cpu_seconds(pid) - cpu0) / 20 * 1000
                body = client.get("/metrics", headers={"Accept-Encoding": "identity"}).content
                indexes = timed(lambda: client.post("/v2/repository/index",
                                                    json={}).raise_for_status(), 20)
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                time.sleep(idle_s)  # the measured idle window, not synchronisation
                idle = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
            rss = rss_mib(pid)
    return {"models": count, "versions_ready": ready, "ready_s": ready_s, "rss_mib": rss,
            "rss_per_model_mib": (rss - baseline_mib) / count,
            "metrics_ms": percentile(metrics, 50), "metrics_p99_ms": percentile(metrics, 99),
            "metrics_cpu_ms": metrics_cpu_ms, "metrics_kib": len(body) / 1024,
            "metrics_lines": body.count(b"\n"),
            "index_ms": percentile(indexes, 50), "index_p99_ms": percentile(indexes, 99),
            "idle_cpu_pct": idle}


def empty_rss() -> float:
    with tempfile.TemporaryDirectory(prefix="scale-empty-") as folder, \
            server(Path(folder), POLL) as srv:
        return rss_mib(srv.process.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,50,200")
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: N 5,20; 5 s idle")
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per N")
    args = parser.parse_args()
    counts = [5, 20] if args.quick else [int(n) for n in args.counts.split(",")]
    idle_s = 5.0 if args.quick else args.idle_s
    baseline = empty_rss()
    print(f"empty server RSS {baseline:.0f} MiB")
    print("| models x 2 versions | READY in | versions READY | RSS | RSS per model | "
          "/metrics p50 / p99 | /metrics server CPU | /metrics size | index p50 / p99 | "
          "idle CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for count in counts:
        row = measure(count, idle_s, baseline)
        rows.append(row)
        print(f"| {count} | {row['ready_s']:.1f} s | {row['versions_ready']} | "
              f"{row['rss_mib']:.0f} MiB | {row['rss_per_model_mib']:.2f} MiB | "
              f"{row['metrics_ms']:.1f} / {row['metrics_p99_ms']:.1f} ms | "
              f"{row['metrics_cpu_ms']:.1f} ms | "
              f"{row['metrics_kib']:.0f} KiB, {row['metrics_lines']:,} lines | "
              f"{row['index_ms']:.1f} / {row['index_p99_ms']:.1f} ms | "
              f"{row['idle_cpu_pct']:.2f} % |", flush=True)
        if args.jsonl:
            with args.jsonl.open("a") as out:
                out.write(json.dumps(row) + "\n")
    first, last = rows[0], rows[-1]
    factor = last["models"] / first["models"]
    print(f"growth {first['models']} -> {last['models']} models ({factor:.0f}x): " + ", ".join(
        f"{key} {last[key] / first[key]:.1f}x" for key in
        ("ready_s", "rss_per_model_mib", "metrics_ms", "metrics_cpu_ms", "index_ms",
         "idle_cpu_pct")
        if first[key] > 0))


if __name__ == "__main__":
    main()
