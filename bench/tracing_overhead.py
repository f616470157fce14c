"""Tracing's cost: HTTP inference throughput with tracing off, on at rate 1/1000, and on for
every request, against a real server process exporting to a real OTLP/HTTP receiver.

    python bench/tracing_overhead.py [--seconds 5] [--concurrency 8] [--rounds 2]

Serves a small identity model (tests/support/onnx_models.py) from a temporary repository,
once per mode and round (the order reverses each round, so drift on a shared machine
spreads over all modes),
and drives it with aiohttp at a fixed concurrency. Prints requests per second per mode (the
best round) and each traced mode against tracing off.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import onnx_models  # noqa: E402
from tests.support.otlp import http_receiver  # noqa: E402
from tests.support.runs import infer_body  # noqa: E402
from tests.support.server import server_process  # noqa: E402

MODES = {"off": [], "rate 1/1000": ["level=TIMESTAMPS", "rate=1000"],
         "rate 1/1": ["level=TIMESTAMPS", "rate=1"]}


async def drive(url: str, seconds: float, concurrency: int) -> float:
    body = infer_body("x", np.ones((1, 3), np.float32))
    done = 0
    async with aiohttp.ClientSession() as session:
        async def worker(deadline: float) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(f"{url}/v2/models/small/infer", json=body) as answer:
                    await answer.read()
                    assert answer.status == 200, answer.status  # nosec B101 # a bench check
                done += 1

        await worker(time.monotonic() + 0.5)  # warm up the connection and the session
        done = 0
        started = time.monotonic()
        await asyncio.gather(*(worker(started + seconds) for _ in range(concurrency)))
        return done / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder, http_receiver() as (otlp, collected):
        root = Path(folder)
        onnx_models.write(root, "small", onnx_models.identity("FP32"))
        for round_ in range(args.rounds):
            order = list(MODES.items())
            for mode, entries in order if round_ % 2 == 0 else order[::-1]:
                flags = [f for e in [*entries, f"opentelemetry,url={otlp}"]
                         for f in ("--trace-config", e)] if entries else []
                with server_process(root, flags) as server:
                    rate = asyncio.run(drive(server.http, args.seconds, args.concurrency))
                best[mode] = max(best.get(mode, 0.0), rate)
        spans = len(collected.snapshot())
    off = best["off"]
    for mode, rate in best.items():
        versus = "" if mode == "off" else f" ({100 * (rate / off - 1):+.1f}% vs off)"
        print(f"tracing {mode}: {rate:.0f} req/s{versus}")
    print(f"spans received by the OTLP receiver: {spans}")


if __name__ == "__main__":
    main()
