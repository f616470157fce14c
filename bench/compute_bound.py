"""Issue 21, target 3: compute-bound models through onnx-serve vs in-process onnxruntime.

    python bench/compute_bound.py [--models resnet,encoder] [--conc 1,8,16] [--dur 8] [--quick]

Models (bench/compute_models.py, onnx.helper, seeded random weights): `resnet`, ResNet-18's
layout, x FP32 [B,3,224,224] -> y [B,1000]; `encoder`, 4 pre-norm transformer layers (4 heads,
hidden 256, FFN 1024), x FP32 [B,128,256] -> y [B,128,256]; both `max_batch_size: 16` and
`dynamic_batching {}`. Per model, one fresh `python -m app` (free loopback ports, stopped by
its PID) serving only that model, so its auto thread sizing gives it every CPU; in the same run:
- in-process onnxruntime with the options the server uses (the intra-op thread count the
  server reports in its effective config, 1 inter-op thread, sequential, no spinning) at
  batch 1, before the server runs (A) and after it (A');
- the shared loadgen (closed loop, batch 1 per request) over gRPC raw (`--grpc-raw`) and
  HTTP binary (bench/loadgen_binary.py) at each --conc; the server's statistics before and
  after each level give the batches it formed (histogram of execution sizes);
- in-process again at each formed batch size that ran >= 5% of the executions: the
  reference is the in-process rate over that same mix (sum of rows / sum of run times).
Ratios: c=1 against in-process batch 1 (target >= 85%), c>1 against the formed mix (>= 90%).
Per level it also prints the loadgen's CPU (it shares the 2 CPUs), the server's, the
others', and the server's per-request stages (queue, compute input/infer/output, total) and
peak RSS (VmHWM). Needs ../shared/bench/peers beside the clone for loadgen.py (BENCH_PEERS
overrides, e.g. from a git worktree: BENCH_PEERS=/work/shared/bench/peers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from compute_models import SHAPES, write
from scale_lib import REPO, rss_mib, server

from tests.support.server import Started

PEERS = Path(os.environ.get("BENCH_PEERS", REPO.parent / "shared" / "bench" / "peers"))


@dataclass
class Reference:
    """In-process onnxruntime with the server's session options, one session per model."""

    path: Path
    threads: int
    dims: list[int]
    session: ort.InferenceSession | None = None

    def measure(self, batch: int, seconds: float) -> tuple[float, float, float]:
        """(inferences/s, CPU ms per inference, other processes' CPU % meanwhile)."""
        if self.session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal([batch, *self.dims]).astype(np.float32)
        self.session.run(None, {"x": x})
        runs, start, cpu, busy = 0, time.perf_counter(), time.process_time(), machine_busy()
        while runs < 3 or time.perf_counter() - start < seconds:
            self.session.run(None, {"x": x})
            runs += 1
        wall, used = time.perf_counter() - start, time.process_time() - cpu
        other = 100 * (machine_busy() - busy - used) / wall
        return runs * batch / wall, 1000 * used / (runs * batch), other


def wait_quiet(limit_s: float, busy_pct: float = 25.0) -> None:
    """Wait (at most `limit_s`) until the machine is idle enough over one second: the server
    is idle and this process sleeps, so what is busy is somebody else's work."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        start = machine_busy()
        time.sleep(1.0)
        if 100 * (machine_busy() - start) <= busy_pct:
            return


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (every core), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def stats(client: httpx.Client, model: str) -> dict[str, Any]:
    got = client.get(f"/v2/models/{model}/stats")
    got.raise_for_status()
    entry: dict[str, Any] = got.json()["model_stats"][0]
    return entry


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What one level added: per-phase request counts/ns and executions per batch size."""
    phases = {p: (v["count"] - before["inference_stats"][p]["count"],
                  v["ns"] - before["inference_stats"][p]["ns"])
              for p, v in after["inference_stats"].items()}
    old = {b["batch_size"]: b["compute_infer"] for b in before["batch_stats"]}
    sizes = {}
    for b in after["batch_stats"]:
        prev = old.get(b["batch_size"], {"count": 0, "ns": 0})
        if b["compute_infer"]["count"] > prev["count"]:
            sizes[b["batch_size"]] = (b["compute_infer"]["count"] - prev["count"],
                                      b["compute_infer"]["ns"] - prev["ns"])
    return {"phases": phases, "sizes": sizes,
            "inferences": after["inference_count"] - before["inference_count"],
            "executions": after["execution_count"] - before["execution_count"]}


def loadgen(protocol: str, model: str, port: int, pid: int, conc: int, dur: float,
            warmup: float, out: Path) -> dict[str, Any]:
    """One closed-loop level of the shared loadgen; its JSON line."""
    dims = ",".join(str(d) for d in SHAPES[model][0])
    script = {"grpc": [str(PEERS / "loadgen.py"), "-i", "grpc", "--grpc-raw"],
              "http": [str(REPO / "bench" / "loadgen_binary.py"), "-i", "http", "--identity"],
              "http-gzip": [str(REPO / "bench" / "loadgen_binary.py"), "-i", "http"]}[protocol]
    out.unlink(missing_ok=True)
    subprocess.run(  # nosec B603 - our own scripts, fixed arguments
        [sys.executable, *script, "-u", f"127.0.0.1:{port}", "-m", model, "--shape", dims,
         "-c", str(conc), "-d", str(dur), "--warmup", str(warmup), "--server-pid", str(pid),
         "--retries", "0", "--pause", "0", "--jsonl", str(out)],
        check=True, env={**os.environ, "PYTHONPATH": str(PEERS)})
    row: dict[str, Any] = json.loads(out.read_text().splitlines()[-1])
    return row


def over_mix(sizes: dict[int, tuple[int, int]], rate: dict[int, float],
             cpu: dict[int, float]) -> tuple[float, float]:
    """In-process inferences/s and CPU ms per inference over the server's batch mix (the
    sizes measured: those of >= 5% of the executions): rows / run time, CPU / rows."""
    kept = {b: n * b for b, (n, _) in sizes.items() if b in rate}
    rows = sum(kept.values())
    return (rows / sum(r / rate[b] for b, r in kept.items()),
            sum(r * cpu[b] for b, r in kept.items()) / rows)


def one_model(root: Path, model: str, conc: list[int], timing: Timing) -> list[dict[str, Any]]:
    """Every level of one model's server, each between in-process measurements (A B A')."""
    rows = []
    with server(root) as srv, httpx.Client(base_url=srv.url) as client:
        config = client.get(f"/v2/models/{model}/config").json()
        threads = int(config["parameters"]["intra_op_thread_count"]["string_value"])
        ref = Reference(root / model / "1" / "model.onnx", threads, SHAPES[model][0])
        idle = rss_mib(srv.process.pid)
        for protocol in timing.transports:
            port = srv.grpc_port if protocol == "grpc" else srv.http_port
            for c in conc:
                for attempt in range(timing.retries + 1):
                    row = level(client, srv, ref, (protocol, model, port, c), timing)
                    row.update(attempts=attempt + 1, threads=threads,
                               hwm_mib=rss_mib(srv.process.pid, "VmHWM") - idle)
                    if max(row["other_cpu_pct"], row["ref_other_cpu"]) <= timing.max_other:
                        break
                rows.append(row)
    return rows


@dataclass(frozen=True)
class Timing:
    dur: float
    warmup: float
    work: Path
    retries: int = 2
    max_other: float = 30.0
    transports: tuple[str, ...] = ("grpc", "http", "http-gzip")
    quiet_s: float = 20.0


def level(client: httpx.Client, srv: Started, ref: Reference,
          load: tuple[str, str, int, int], timing: Timing) -> dict[str, Any]:
    """One concurrency level between in-process runs: batch 1 before; after, batch 1 and
    every batch size that made >= 5% of the server's executions."""
    protocol, model, port, c = load
    wait_quiet(timing.quiet_s)
    before = ref.measure(1, timing.dur / 2)
    first = stats(client, model)
    row = loadgen(protocol, model, port, srv.process.pid, c, timing.dur, timing.warmup,
                  timing.work / "level.jsonl")
    row.update(delta(stats(client, model), first), model=model, transport=protocol)
    after = ref.measure(1, timing.dur / 2)
    rate, cpu = {1: (before[0] + after[0]) / 2}, {1: (before[1] + after[1]) / 2}
    others = [before[2], after[2]]
    for b, (n, _) in row["sizes"].items():
        if b != 1 and n >= 0.05 * row["executions"]:
            rate[b], cpu[b], other = ref.measure(b, timing.dur / 2)
            others.append(other)
    mix = (rate[1], cpu[1]) if c == 1 else over_mix(row["sizes"], rate, cpu)
    row.update(batch1_before=before[0], batch1_after=after[0], ref_other_cpu=max(others),
               ref=mix[0], ref_cpu_ms=mix[1],
               server_cpu_ms=10 * row["server_cpu_pct"] / max(row["infer_s"], 1e-9))
    return row


NAMES = {"grpc": "gRPC raw", "http": "HTTP binary", "http-gzip": "HTTP binary, gzip accepted"}


def report(rows: list[dict[str, Any]]) -> None:
    print("\n| model | transport | c | infer/s | p50 ms | batches formed (share of runs) | "
          "in-process infer/s (same batches) | server / in-process | target | "
          "loadgen CPU | server CPU | other CPU (server run / in-process) |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        total = sum(n for n, _ in r["sizes"].values()) or 1
        mix = ", ".join(f"{b}: {n / total:.0%}" for b, (n, _) in sorted(
            r["sizes"].items(), key=lambda kv: -kv[1][0])[:3])
        target = 0.85 if r["concurrency"] == 1 else 0.90
        ratio = r["infer_s"] / r["ref"]
        print(f"| {r['model']} | {NAMES[r['transport']]} | "
              f"{r['concurrency']} | {r['infer_s']:,.1f} | {r['p50_ms']:.1f} | {mix} | "
              f"{r['ref']:,.1f} | {ratio:.0%} | {'met' if ratio >= target else 'NOT met'} "
              f"({target:.0%}) | {r['loadgen_cpu_pct']:.0f}% | {r['server_cpu_pct']:.0f}% | "
              f"{r['other_cpu_pct']:.0f}% / {r['ref_other_cpu']:.0f}% |")
    print("\nPer request inside the server (ms, from its statistics), and its peak RSS growth:\n")
    print("| model | transport | c | queue | compute input | compute infer | compute output | "
          "server total | client p50 - server total | peak RSS growth MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ms = {p: (ns / n / 1e6 if n else 0.0) for p, (n, ns) in r["phases"].items()}
        print(f"| {r['model']} | {r['transport']} | {r['concurrency']} | {ms['queue']:.2f} | "
              f"{ms['compute_input']:.2f} | {ms['compute_infer']:.2f} | "
              f"{ms['compute_output']:.2f} | {ms['success']:.2f} | "
              f"{r['p50_ms'] - ms['success']:.2f} | {r['hwm_mib']:.0f} |")
    print("\n| model | transport | c | intra-op threads | in-process batch 1 infer/s before / "
          "after | CPU ms per inference: server / in-process | in-process / server | attempts |")
    print("|---|---|---:|---:|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['transport']} | {r['concurrency']} | {r['threads']} | "
              f"{r['batch1_before']:,.1f} / {r['batch1_after']:,.1f} | "
              f"{r['server_cpu_ms']:.1f} / {r['ref_cpu_ms']:.1f} | "
              f"{r['ref_cpu_ms'] / r['server_cpu_ms']:.0%} | {r['attempts']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet,encoder")
    parser.add_argument("--conc", default="1,8,16")
    parser.add_argument("--dur", type=float, default=8.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s levels, c=1,8")
    parser.add_argument("--transports", default="grpc,http,http-gzip",
                        help="grpc (raw), http (binary), http-gzip (binary, aiohttp's default "
                        "Accept-Encoding: gzip, deflate)")
    parser.add_argument("--delay-us", type=int, default=0,
                        help="dynamic_batching's max_queue_delay_microseconds (0: none, {})")
    parser.add_argument("--quiet-s", type=float, default=20.0,
                        help="wait at most this long before each level for a quiet machine")
    parser.add_argument("--retries", type=int, default=2,
                        help="measure a level again while others used > --max-other CPU")
    parser.add_argument("--max-other", type=float, default=30.0, help="%% of one core")
    parser.add_argument("--jsonl", type=Path, help="append every level's row here")
    args = parser.parse_args()
    if not (PEERS / "loadgen.py").is_file():  # as bench/peers.sh says it
        print("bench: needs ../shared/bench/peers beside this clone (the shared loadgen.py); "
              f"not found at {PEERS}. Put it there or set BENCH_PEERS.", file=sys.stderr)
        sys.exit(2)
    conc = [1, 8] if args.quick else [int(c) for c in args.conc.split(",")]
    dur, warmup = (3.0, 1.0) if args.quick else (args.dur, args.warmup)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="compute-bound-") as folder:
        root = Path(folder)
        for model in args.models.split(","):
            write(root / model, [model], delay_us=args.delay_us)
            rows += one_model(root / model, model, conc,
                              Timing(dur, warmup, root, args.retries, args.max_other,
                                     tuple(args.transports.split(",")), args.quiet_s))
    if args.jsonl:
        with args.jsonl.open("a") as out:
            for row in rows:
                out.write(json.dumps({**row, "sizes": {str(k): v for k, v in
                                                       row["sizes"].items()}}) + "\n")
    report(rows)


if __name__ == "__main__":
    main()
