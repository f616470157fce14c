"""Issue 21, target 6: 1,000 concurrent HTTP keep-alive clients and 1,000 concurrent gRPC calls.

    python bench/scale_connections.py [--clients 1000] [--duration 10] [--quick]

One real onnx-serve process with a small MLP. This process raises its open-files limit (to
clients x 2 + 256, within the hard limit; the server inherits it) and says so. Per transport:

1. c=64 closed loop: the throughput X this machine reaches.
2. The same rate R = --load x X (0.5) offered open-loop by 64 and then by `clients` concurrent
   clients (each its own keep-alive connection over HTTP, opened by a 1 s warm-up at the
   rate; over gRPC, calls in flight spread over --channels channels): errors, req/s, p50/p99
   and the CPU of the clients and the server for each, and p99(clients) / p99(64) at the
   same throughput (target: <= 3x, zero errors).
3. Memory per idle connection: `clients` idle keep-alive connections (HTTP) or channels
   (gRPC), each having made one request, held open: server RSS growth / clients.
--quick: 200 clients, 3 s per point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import numpy as np
from scale_lib import cpu_seconds, percentile, raise_fd_limit, rss_mib, server, small_mlp

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc

SIDE = 16
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, SIDE],
                               "data": [0.5] * SIDE}]}).encode()
#: Channels in one process share one connection unless each has its own subchannel pool.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
Call = Callable[[int], Awaitable[None]]  # one request from client i; raises on any error


class Point:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def summary(self, clients: int, seconds: float) -> dict[str, object]:
        return {"clients": clients, "req_s": len(self.latencies) / seconds,
                "p50_ms": percentile(self.latencies, 50), "p99_ms": percentile(self.latencies, 99),
                "errors": sum(self.errors.values()), "error_kinds": self.errors}


async def drive(call: Call, clients: int, seconds: float, rate: float | None) -> Point:
    """`clients` concurrent clients for `seconds`: closed loop, or `rate` req/s in total
    (each client sends every clients/rate s, from a random phase)."""
    point, end = Point(), time.perf_counter() + seconds

    async def client(i: int) -> None:
        period = clients / rate if rate else 0.0
        due = time.perf_counter() + random.random() * period  # a random phase
        while True:
            if period:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due += period
            start = time.perf_counter()
            if start >= end:
                return
            try:
                await call(i)
            except Exception as err:  # every failure is counted and named, none stops the run
                kind = type(err).__name__
                point.errors[kind] = point.errors.get(kind, 0) + 1
            else:
                point.latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return point


async def measured(call: Call, clients: int, seconds: float, rate: float | None,
                   pid: int) -> dict[str, object]:
    """One point's summary, with the CPU this process (the clients) and the server used, in
    % of one core: which of them a slow point waited for."""
    client0, server0 = time.process_time(), cpu_seconds(pid)
    point = await drive(call, clients, seconds, rate)
    return {**point.summary(clients, seconds),
            "client_cpu": (time.process_time() - client0) / seconds * 100,
            "server_cpu": (cpu_seconds(pid) - server0) / seconds * 100}


async def transport(name: str, call: Call, clients: int, seconds: float,
                    load: float, pid: int) -> list[dict[str, object]]:
    await drive(call, 64, 1.0, None)  # warm-up
    peak = await measured(call, 64, seconds, None, pid)
    rate = load * float(peak["req_s"])  # type: ignore[arg-type]
    rows = [{"transport": name, "mode": "closed", **peak}]
    for count in (64, clients):
        # Keep-alive clients are connected clients: one second at the rate first opens every
        # client's connection (936 new ones at 1,000), whose handshakes would otherwise
        # land in the measured window as a burst.
        await drive(call, count, 1.0, rate)
        got = await measured(call, count, seconds, rate, pid)
        rows.append({"transport": name, "mode": f"open {rate:,.0f}/s", **got})
    rows[-1]["p99_vs_64"] = float(rows[-1]["p99_ms"]) / float(rows[-2]["p99_ms"])  # type: ignore[arg-type]
    return rows


async def http_rows(url: str, clients: int, seconds: float, load: float,
                    pid: int) -> list[dict[str, object]]:
    # One session per client: its own keep-alive connection, as 1,000 separate clients have.
    sessions = [aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=1))
                for _ in range(clients)]
    headers = {"Content-Type": "application/json"}

    async def call(i: int) -> None:
        async with sessions[i].post("/v2/models/m000/infer", data=BODY, headers=headers) as got:
            await got.read()
            if got.status != 200:
                raise RuntimeError(f"HTTP {got.status}")

    try:
        return await transport("HTTP JSON", call, clients, seconds, load, pid)
    finally:
        await asyncio.gather(*(s.close() for s in sessions))


def grpc_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m000")
    request.inputs.add(name="x", datatype="FP32", shape=[1, SIDE])
    request.raw_input_contents.append(np.full(SIDE, 0.5, np.float32).tobytes())
    return request


async def grpc_rows(target: str, clients: int, seconds: float, load: float,
                    channels: int, pid: int) -> list[dict[str, object]]:
    opened = [grpc.aio.insecure_channel(target, OWN_CONNECTION) for _ in range(channels)]
    stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in opened]
    request = grpc_request()

    async def call(i: int) -> None:
        await stubs[i % channels].ModelInfer(request, timeout=60)

    try:
        return await transport("gRPC raw", call, clients, seconds, load, pid)
    finally:
        await asyncio.gather(*(c.close() for c in opened))


async def idle_cost(url: str, target: str, pid: int, clients: int) -> dict[str, float]:
    """Server RSS growth per idle keep-alive HTTP connection and per idle gRPC channel."""
    out = {}
    before = rss_mib(pid)
    sessions = [aiohttp.ClientSession(url) for _ in range(clients)]
    for session in sessions:
        async with session.post("/v2/models/m000/infer", data=BODY) as got:
            await got.read()
    out["http_kib_per_idle_connection"] = (rss_mib(pid) - before) * 1024 / clients
    await asyncio.gather(*(s.close() for s in sessions))
    before = rss_mib(pid)
    opened = [grpc.aio.insecure_channel(target, OWN_CONNECTION) for _ in range(clients)]
    request = grpc_request()
    for channel in opened:
        await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    out["grpc_kib_per_idle_channel"] = (rss_mib(pid) - before) * 1024 / clients
    await asyncio.gather(*(c.close() for c in opened))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--load", type=float, default=0.5, help="share of the c=64 peak")
    parser.add_argument("--channels", type=int, default=8, help="gRPC channels for the calls")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 clients, 3 s")
    args = parser.parse_args()
    clients, seconds = (200, 3.0) if args.quick else (args.clients, args.duration)
    before, limit = raise_fd_limit(clients * 2 + 256)
    print(f"open-files limit {before} -> {limit} (this process and the server it starts)")
    with tempfile.TemporaryDirectory(prefix="scale-conn-") as folder:
        small_mlp(Path(folder), "m000", versions=1)
        with server(Path(folder)) as srv:
            target = f"127.0.0.1:{srv.grpc_port}"
            pid = srv.process.pid
            rows = asyncio.run(http_rows(srv.url, clients, seconds, args.load, pid))
            rows += asyncio.run(grpc_rows(target, clients, seconds, args.load, args.channels,
                                          pid))
            idle = asyncio.run(idle_cost(srv.url, target, srv.process.pid, clients))
    print("| transport | load | clients | req/s | p50 / p99 ms | errors | p99 / p99 at c=64 "
          "| CPU %: clients / server |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['p99_vs_64']:.2f}x" if "p99_vs_64" in r else ""
        print(f"| {r['transport']} | {r['mode']} | {r['clients']} | {r['req_s']:,.0f} | "
              f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['errors']} {r['error_kinds'] or ''} "
              f"| {ratio} | {r['client_cpu']:.0f} / {r['server_cpu']:.0f} |")
    print(f"idle: {idle['http_kib_per_idle_connection']:.1f} KiB per HTTP keep-alive "
          f"connection, {idle['grpc_kib_per_idle_channel']:.1f} KiB per gRPC channel "
          f"({clients} of each)")


if __name__ == "__main__":
    main()
