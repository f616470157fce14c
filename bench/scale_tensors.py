"""Issue 21, target 7: large tensors through onnx-serve vs a plain loopback socket copy.

    python bench/scale_tensors.py [--sizes 1,16,64] [--repeat 3] [--quick]

Model: y = Identity(x), FP32 [-1], so the server's work is moving bytes. Per size (MiB):
- socket: a plain loopback TCP echo in a child process: send the payload, receive it back;
- HTTP binary: Triton's binary tensor extension both ways (Inference-Header-Content-Length,
  binary_data_size, binary_data output), httpx;
- gRPC raw: raw_input_contents in, raw_output_contents out, one grpcio channel;
MB/s = payload MiB / round trip (median of --repeat), and the share of the socket's. Each
transport gets a fresh server, so its peak RSS (VmHWM) growth over the idle server / payload
says how many copies of the tensor the server held at once (target: <= 3x). The server's
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

import grpc
import httpx
import numpy as np
from scale_lib import identity, rss_mib, server

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc

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


def median_s(fn: Callable[[], None], repeat: int) -> float:
    fn()  # warm: first-touch page faults belong to no transport
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def http_once(client: httpx.Client, x: np.ndarray) -> Callable[[], None]:
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

    return once


def grpc_once(stub: pb_grpc.GRPCInferenceServiceStub, x: np.ndarray) -> Callable[[], None]:
    request = pb.ModelInferRequest(model_name="big")
    request.inputs.add(name="x", datatype="FP32", shape=[x.size])
    request.raw_input_contents.append(x.tobytes())

    def once() -> None:
        answer = stub.ModelInfer(request, timeout=120)
        if len(answer.raw_output_contents[0]) != x.nbytes:
            raise RuntimeError("short answer")

    return once


def transport(name: str, root: Path, sizes: list[int],
              repeat: int) -> dict[int, tuple[float, float]]:
    """{size: (round-trip seconds, peak RSS growth in MiB)} over a fresh server."""
    env = {"ONNX_SERVE_HTTP__MAX_BODY_BYTES": str(4 * max(sizes) * MIB)}
    limit = 4 * max(sizes) * MIB
    options = [("grpc.max_send_message_length", limit),
               ("grpc.max_receive_message_length", limit)]
    out = {}
    with server(root, env=env) as srv, httpx.Client(base_url=srv.url, timeout=120) as client, \
            grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}", options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        make = (lambda x: http_once(client, x)) if name == "HTTP binary" else (
            lambda x: grpc_once(stub, x))
        make(np.ones(16, np.float32))()
        idle = rss_mib(srv.process.pid)
        for size in sizes:  # ascending: the peak so far is this size's
            seconds = median_s(make(np.ones(size * MIB // 4, np.float32)), repeat)
            out[size] = (seconds, rss_mib(srv.process.pid, "VmHWM") - idle)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,16,64", help="payload MiB, ascending")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 16 MiB, once")
    args = parser.parse_args()
    sizes = [1, 16] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    repeat = 1 if args.quick else args.repeat
    plain = socket_copy(sizes, repeat)
    with tempfile.TemporaryDirectory(prefix="scale-tensors-") as folder:
        identity(Path(folder))
        rows = {name: transport(name, Path(folder), sizes, repeat)
                for name in ("HTTP binary", "gRPC raw")}
    print("| payload | socket copy MB/s | transport | MB/s | share of socket | "
          "server peak RSS growth | / payload |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for size in sizes:
        for name, measured in rows.items():
            seconds, peak = measured[size]
            print(f"| {size} MiB | {size / plain[size]:,.0f} | {name} | {size / seconds:,.0f} | "
                  f"{plain[size] / seconds:.0%} | {peak:,.0f} MiB | {peak / size:.1f}x |")


if __name__ == "__main__":
    main()
