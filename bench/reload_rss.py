"""RSS of a real onnx-serve process across load/unload cycles of a ~10 MB model.

    python bench/reload_rss.py [--cycles 200] [--preload /usr/lib/x86_64-linux-gnu/libjemalloc.so.2]

Starts `python -m app` in explicit mode on free loopback ports, then per cycle: load, one
inference, unload. Prints RSS after the first cycle (the baseline: allocator pools and
onnxruntime's one-time state exist by then) and at the end, and the growth between them.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
SIDE = 1600  # one 1600x1600 FP32 weight: 10.24 MB


def write_model(root: Path) -> None:
    weight = np.random.default_rng(0).standard_normal((SIDE, SIDE)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SIDE])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "big" / "1").mkdir(parents=True)
    onnx.save(model, root / "big" / "1" / "model.onnx")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cycle(client: httpx.Client, body: dict[str, object]) -> None:
    for step in ("load", "infer", "unload"):
        path = "/v2/models/big/infer" if step == "infer" else f"/v2/repository/models/big/{step}"
        answer = client.post(path, json=body if step == "infer" else None)
        if answer.status_code != 200:
            raise RuntimeError(f"{step}: HTTP {answer.status_code} {answer.text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--preload", help="a malloc to LD_PRELOAD into the server (jemalloc)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_model(Path(tmp))
        http = free_port()
        env = {**os.environ, **({"LD_PRELOAD": args.preload} if args.preload else {})}
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "--model-repository", tmp, "--host", "127.0.0.1",
             "--http-port", str(http), "--grpc-port", str(free_port()),
             "--model-control-mode", "explicit", "--log-level", "warning"], cwd=REPO, env=env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=60) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if client.get("/v2/health/live").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("server did not start")
                    time.sleep(0.05)
                body = {"inputs": [{"name": "x", "shape": [4, SIDE], "datatype": "FP32",
                                    "data": [0.5] * (4 * SIDE)}]}
                empty = rss_mib(server.pid)
                cycle(client, body)
                baseline = rss_mib(server.pid)
                started = time.monotonic()
                for _ in range(args.cycles - 1):
                    cycle(client, body)
                final = rss_mib(server.pid)
                elapsed = time.monotonic() - started
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    growth = 100 * (final - baseline) / baseline
    print(f"cycles {args.cycles} ({elapsed:.1f} s) preload {args.preload or '-'}: "
          f"RSS empty {empty:.1f} MiB, after cycle 1 {baseline:.1f} MiB, after cycle "
          f"{args.cycles} {final:.1f} MiB: growth {growth:+.1f}%")


if __name__ == "__main__":
    main()
