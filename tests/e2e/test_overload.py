"""Overload against a real server process: 4x more clients than the queue holds get fast
429s, memory stays flat, and health probes keep answering ahead of the queue."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import onnx

from tests.support import onnx_models
from tests.support.server import server_process

QUEUE = 8
CLIENTS = 4 * QUEUE
SIDE = 256


def slow_model() -> onnx.ModelProto:
    """A few milliseconds per run, so the queue stays full."""
    return onnx_models.matmul_chain(SIDE, steps=120, scale=0.5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def overload(url: str, pid: int, seconds: float) -> dict[str, list[float] | list[int]]:
    body = {"inputs": [{"name": "x", "shape": [16, SIDE], "datatype": "FP32",
                        "data": [0.1] * (16 * SIDE)}]}
    refused: list[float] = []
    answered: list[float] = []
    health: list[float] = []
    rss: list[int] = []
    others: list[int] = []
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        async def client() -> None:
            while time.monotonic() < stop:
                started = time.monotonic()
                async with session.post(f"{url}/v2/models/slow/infer", json=body) as answer:
                    await answer.read()
                    took = time.monotonic() - started
                    if answer.status == 429:
                        assert answer.headers["Retry-After"] == "1"
                        refused.append(took)
                    elif answer.status == 200:
                        answered.append(took)
                    else:
                        others.append(answer.status)

        async def prober() -> None:
            async with aiohttp.ClientSession() as own:  # its own connection, like a kubelet
                while time.monotonic() < stop:
                    started = time.monotonic()
                    async with own.get(f"{url}/v2/health/live") as answer:
                        assert answer.status == 200
                    health.append(time.monotonic() - started)
                    rss.append(rss_kib(pid))
                    await asyncio.sleep(0.05)

        await asyncio.gather(prober(), *(client() for _ in range(CLIENTS)))
    return {"refused": refused, "answered": answered, "health": health, "rss": rss,
            "others": others}


def test_overload_sheds_fast_keeps_memory_flat_and_health_answering(tmp_path: Path) -> None:
    onnx_models.write(tmp_path, "slow", slow_model())
    (tmp_path / "slow" / "config.yaml").write_text(
        f"max_batch_size: 16\ndynamic_batching: {{default_queue_policy: "
        f"{{max_queue_size: {QUEUE}}}}}\n")
    with server_process(tmp_path) as server:
        result = asyncio.run(overload(server.http, server.pid, seconds=6.0))
    refused, answered, health = result["refused"], result["answered"], result["health"]
    rss = result["rss"]
    assert not result["others"], f"unexpected statuses {set(result['others'])}"
    assert len(answered) > 0 and len(refused) > len(answered)
    # Refused clients retry at once (no back-off), so the loop is saturated: every answer,
    # refusal or not, queues for the loop; refusals and probes still never wait for the
    # model (an ordering against the answered requests, which do; the machine is shared).
    assert statistics.median(refused) < statistics.median(answered), "429s waited"
    assert statistics.median(health) < statistics.median(answered), "probes waited"
    # Within the kubelet's default probe timeout (1 s), however loaded the machine is.
    assert max(health) < 1.0, f"slowest health probe {max(health) * 1000:.0f} ms"
    settled = statistics.median(rss[len(rss) // 4: len(rss) // 2])
    assert max(rss[len(rss) // 2:]) < settled * 1.10, f"RSS grew: {settled} -> {max(rss)} KiB"
