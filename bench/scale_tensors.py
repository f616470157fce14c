"""Issue 21, target 7: large tensors through onnx-serve vs a plain loopback socket copy.

    python bench/scale_tensors.py [--sizes 1,16,64] [--repeat 3] [--quick] [--client lean|stock]

Model: y = Identity(x), FP32 [-1], so the server's work is moving bytes. Per size (MiB):
- socket: a plain loopback TCP echo in a child process: send the payload, receive it back;
- HTTP binary: Triton's binary tensor extension both ways (Inference-Header-Content-Length,
  binary_data_size, binary_data output);
- gRPC raw: raw_input_contents in, raw_output_contents out, one grpcio channel;
- gRPC echo: a do-nothing grpc.aio server answering with the request's bytes (the ceiling);
the clients are lean (bench/scale_tensors_clients.py) unless --client stock (httpx, the
protobuf stub). MB/s = payload MiB / round trip (median of --repeat), and the share of the
socket's. Each transport gets a fresh server, so its peak RSS (VmHWM, reset per size) growth
over the idle server / payload says how many copies of the tensor the server held at once
(target: <= 3x); "per request" is the growth over the RSS just before the size's timed
round trips. A second table gives each round trip's stages. The server's
HTTP body limit is raised to 4x the largest size (ONNX_SERVE_HTTP__MAX_BODY_BYTES; the default
64 MiB refuses a 64 MiB tensor plus its JSON header with 413). --quick: 1 and 16 MiB, once.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import grpc
import httpx
import numpy as np
from scale_lib import identity, rss_mib, server
from scale_tensors_clients import RawGrpc, RawHttp, Stages, check_grpc, check_http

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support.server import Started

MIB = 1 << 20
ECHO = """
import socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
while True:
    size = int.from_bytes(conn.recv(8, socket.MSG_WAITALL) or b"\\0" * 8, "little")
    if not size:
        break
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        got += conn.recv_into(view[got:])
    conn.sendall(data)
"""


def socket_copy(sizes: list[int], repeat: int) -> dict[int, float]:
    """Round-trip seconds (median) of each payload through a plain loopback echo process."""
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        out = {}
        with socket.create_connection(("127.0.0.1", port)) as conn:
            for size in sizes:
                payload = np.ones(size * MIB, np.uint8).tobytes()
                back = bytearray(len(payload))

                def once(p: bytes = payload, b: bytearray = back) -> None:
                    conn.sendall(len(p).to_bytes(8, "little") + p)
                    view, got = memoryview(b), 0
                    while got < len(b):
                        got += conn.recv_into(view[got:])

                out[size] = median_s(once, repeat)
            conn.sendall((0).to_bytes(8, "little"))
        return out
    finally:
        echo.wait(timeout=30)


ECHO_GRPC = """
import asyncio, sys, grpc
async def main():
    async def echo(request, context):
        return request
    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(echo)})
    limit = int(sys.argv[1])
    server = grpc.aio.server(options=[("grpc.max_send_message_length", limit),
                                      ("grpc.max_receive_message_length", limit)])
    server.add_generic_rpc_handlers((handler,))
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


def grpc_echo(sizes: list[int], repeat: int) -> dict[int, Row]:
    """The ceiling of gRPC raw on grpc.aio: a do-nothing server (a child process) that
    answers each ModelInfer with the request's own bytes (no protobuf), same client."""
    limit = 4 * max(sizes) * MIB
    echo = subprocess.Popen([sys.executable, "-c", ECHO_GRPC, str(limit)],
                            stdout=subprocess.PIPE, text=True)
    out = {}
    try:
        assert echo.stdout is not None
        with grpc.insecure_channel(f"127.0.0.1:{int(echo.stdout.readline())}",
                                   _options(limit)) as channel:
            RawGrpc(channel, np.ones(16, np.float32)).once()
            idle = rss_mib(echo.pid)
            for size in sizes:
                rpc = RawGrpc(channel, np.ones(size * MIB // 4, np.float32))
                rpc.once()
                Path(f"/proc/{echo.pid}/clear_refs").write_text("5")
                resident = rss_mib(echo.pid)
                seconds = median_s(rpc.once, repeat, warm=False)
                peak = rss_mib(echo.pid, "VmHWM")
                out[size] = Row(seconds, peak - idle, peak - resident, None, {})
    finally:
        echo.kill()  # by its own handle: the child this function started
        echo.wait(timeout=30)
    return out


def median_s(fn: Callable[[], object], repeat: int, warm: bool = True) -> float:
    if warm:
        fn()  # warm: first-touch page faults belong to no transport
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stock_once(name: str, srv: Started, x: np.ndarray,
               limit: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """--client stock: httpx and the protobuf stub, as an application would write it."""
    client = httpx.Client(base_url=srv.url, timeout=120)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}", _options(limit))
    if name == "HTTP binary":
        header = json.dumps({
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [x.size],
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
        body = header + x.tobytes()

        def once() -> None:
            got = client.post("/v2/models/big/infer", content=body, headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream"})
            got.raise_for_status()
            if len(got.content) < x.nbytes:
                raise RuntimeError(f"short answer: {len(got.content)} bytes")
    else:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="big")
        request.inputs.add(name="x", datatype="FP32", shape=[x.size])
        request.raw_input_contents.append(x.tobytes())

        def once() -> None:
            if len(stub.ModelInfer(request, timeout=120).raw_output_contents[0]) != x.nbytes:
                raise RuntimeError("short answer")

    def close() -> None:
        client.close()
        channel.close()

    return once, close


def lean_once(name: str, srv: Started, x: np.ndarray, limit: int,
              stages: dict[int, Stages]) -> tuple[Callable[[], None], Callable[[], None]]:
    """--client lean (the default): bench/scale_tensors_clients.py; checks the answer's
    bytes once (untimed), records each round trip's client-side stages."""
    if name == "HTTP binary":
        http = RawHttp(srv.http_port, x)
        check_http(http, x)
        http.stages = stages[x.nbytes] = Stages()

        def once_http() -> None:
            http.once()

        return once_http, http.close
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}", _options(limit))
    rpc = RawGrpc(channel, x)
    check_grpc(rpc, x)
    rpc.stages = stages[x.nbytes] = Stages()

    def once_grpc() -> None:
        rpc.once()

    return once_grpc, channel.close


def _options(limit: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


def server_stages(srv: Started) -> dict[str, tuple[int, int]]:
    """The model's statistics: {stage: (count, total ns)} (queue, compute_*)."""
    stats = httpx.get(f"{srv.url}/v2/models/big/stats", timeout=30).json()
    inference = stats["model_stats"][0]["inference_stats"]
    return {k: (int(v["count"]), int(v["ns"])) for k, v in inference.items()}


def transport(name: str, root: Path, sizes: list[int], repeat: int,
              client: str) -> dict[int, Row]:
    """{size: (round-trip seconds, peak RSS growth MiB, client stages, server stage ms)}
    over a fresh server. The server's peak (VmHWM) is reset before each size
    (/proc/PID/clear_refs), so each size's growth over the idle server is its own."""
    limit = 4 * max(sizes) * MIB
    out = {}
    with server(root, env={"ONNX_SERVE_HTTP__MAX_BODY_BYTES": str(limit)}) as srv:
        pid = srv.process.pid
        warm, close = _client(name, srv, np.ones(16, np.float32), limit, client, {})
        warm()
        close()
        idle = rss_mib(pid)
        for size in sizes:
            stages: dict[int, Stages] = {}
            once, close = _client(name, srv, np.ones(size * MIB // 4, np.float32), limit,
                                  client, stages)
            try:
                once()  # warm: first-touch page faults belong to no transport
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
                resident = rss_mib(pid)
                before = server_stages(srv)
                seconds = median_s(once, repeat, warm=False)
                after = server_stages(srv)
            finally:
                close()
            per = {k: (after[k][1] - before[k][1]) / max(1, after[k][0] - before[k][0]) / 1e6
                   for k in ("queue", "compute_input", "compute_infer", "compute_output")}
            peak = rss_mib(pid, "VmHWM")
            out[size] = Row(seconds, peak - idle, peak - resident, stages.get(size * MIB), per)
    return out


class Row(NamedTuple):
    seconds: float
    peak_mib: float  # VmHWM over the idle server (onnxruntime's arena keeps outputs' memory)
    request_mib: float  # VmHWM over the RSS just before this size's timed round trips
    stages: Stages | None
    server_ms: dict[str, float]


def _client(name: str, srv: Started, x: np.ndarray, limit: int, client: str,
            stages: dict[int, Stages]) -> tuple[Callable[[], None], Callable[[], None]]:
    if client == "stock":
        return stock_once(name, srv, x, limit)
    return lean_once(name, srv, x, limit, stages)


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:,.1f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,16,64", help="payload MiB, ascending")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 16 MiB, once")
    parser.add_argument("--client", choices=("lean", "stock"), default="lean",
                        help="lean: raw socket / bytes-in-bytes-out grpcio (default); "
                             "stock: httpx and the protobuf stub")
    parser.add_argument("--no-arena", action="store_true",
                        help="the model's config turns onnxruntime's CPU arena off "
                             "(enable_mem_arena: 0): outputs' memory goes back after each answer")
    args = parser.parse_args()
    sizes = [1, 16] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    repeat = 1 if args.quick else args.repeat
    plain = socket_copy(sizes, repeat)
    with tempfile.TemporaryDirectory(prefix="scale-tensors-") as folder:
        identity(Path(folder))
        if args.no_arena:
            with (Path(folder) / "big" / "config.pbtxt").open("a") as config:
                config.write('parameters { key: "enable_mem_arena" '
                             'value: { string_value: "0" } }\n')
        rows = {name: transport(name, Path(folder), sizes, repeat, args.client)
                for name in ("HTTP binary", "gRPC raw")}
    if args.client == "lean":
        rows["gRPC echo, do-nothing grpc.aio"] = grpc_echo(sizes, repeat)
    print(f"client: {args.client}; onnxruntime arena: {'off' if args.no_arena else 'on'}\n")
    print("| payload | socket copy MB/s | transport | MB/s | share of socket | "
          "server peak RSS growth | / payload | per request | / payload |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for name, measured in rows.items():
            row = measured[size]
            print(f"| {size} MiB | {size / plain[size]:,.0f} | {name} | "
                  f"{size / row.seconds:,.0f} | {plain[size] / row.seconds:.0%} | "
                  f"{row.peak_mib:,.0f} MiB | {row.peak_mib / size:.1f}x | "
                  f"{row.request_mib:,.0f} MiB | {row.request_mib / size:.1f}x |")
    print("\nStages, ms (median round trip; client: send = until the last request byte is "
          "in the kernel, wait = until the answer's first byte, receive = its last; server: "
          "the model's statistics, mean)\n")
    print("| payload | transport | round trip | client send | wait | receive | "
          "server queue | compute_input | compute_infer | compute_output |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for name, measured in rows.items():
            row = measured[size]
            st = row.stages or Stages()
            srv = " | ".join(f"{row.server_ms[k]:,.1f}" if row.server_ms else "-" for k in
                             ("queue", "compute_input", "compute_infer", "compute_output"))
            print(f"| {size} MiB | {name} | {row.seconds * 1e3:,.1f} | {_ms(st.send)} | "
                  f"{_ms(st.wait)} | {_ms(st.receive)} | {srv} |")


if __name__ == "__main__":
    main()
