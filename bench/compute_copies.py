"""Issue 21, target 3: how many copies of a big tensor the server holds while answering one
request, measured with tracemalloc.

    python bench/compute_copies.py [--models resnet,encoder] [--batch 1,8]

The server runs in this process (tests/support/server.py's running_server) with tracemalloc
on; the client is a child process (its own memory is not traced here) that sends one request
over gRPC raw (raw_input_contents in and out) or HTTP binary (Triton's binary extension, no
Accept-Encoding, as tritonclient sends it). The traced peak over the idle server, divided by
the request's tensor bytes, says how many tensor-sized buffers were alive at once in Python
(numpy's and Python's allocations: the wire bytes, arrays, the encoded answer); onnxruntime's
own arena is not traced. An output as big as the input (the encoder's) adds its array and its
encoded answer: "at most one copy each way" reads as in + out array + out bytes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from compute_models import SHAPES, write
from scale_lib import REPO

from tests.support.server import running_server

CLIENT = """
import json, sys, numpy as np, grpc, http.client
from app.protos_gen import inference_pb2 as pb
proto, target, model, shape = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
x = np.ones(shape, np.float32)
if proto == "grpc":
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(x.tobytes())
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=lambda b: b)
        print(len(call(request, timeout=120)))
else:
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape,
                         "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    host, port = target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", f"/v2/models/{model}/infer", body=header + x.tobytes(), headers={
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream"})
    answer = conn.getresponse()
    assert answer.status == 200, answer.read()[:300]
    print(len(answer.read()))
"""


def one(proto: str, target: str, model: str, shape: list[int]) -> int:
    """Send one request from a child process; the answer's size."""
    out = subprocess.run(  # nosec B603 - our own client, fixed arguments
        [sys.executable, "-c", CLIENT, proto, target, model, str(shape)], check=True,
        capture_output=True, text=True, cwd=REPO)
    return int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet,encoder")
    parser.add_argument("--batch", default="1,8", help="rows per request")
    args = parser.parse_args()
    print("| model | rows | transport | input MiB | output MiB | traced peak over idle MiB | "
          "peak / input | peak / (input + 2 x output) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="compute-copies-") as folder:
        root = Path(folder)
        write(root, args.models.split(","))
        with running_server(root) as ends:
            targets = {"grpc": ends.grpc, "http": ends.http.removeprefix("http://")}
            tracemalloc.start()
            for model in args.models.split(","):
                dims, out_dims = SHAPES[model]
                for rows in (int(b) for b in args.batch.split(",")):
                    for proto in ("grpc", "http"):
                        one(proto, targets[proto], model, [rows, *dims])  # warm
                        tracemalloc.reset_peak()
                        idle = tracemalloc.get_traced_memory()[0]
                        one(proto, targets[proto], model, [rows, *dims])
                        peak = (tracemalloc.get_traced_memory()[1] - idle) / (1 << 20)
                        size_in = rows * 4 * _count(dims) / (1 << 20)
                        size_out = rows * 4 * _count(out_dims) / (1 << 20)
                        print(f"| {model} | {rows} | {proto} | {size_in:.2f} | {size_out:.2f} | "
                              f"{peak:.2f} | {peak / size_in:.2f}x | "
                              f"{peak / (size_in + 2 * size_out):.2f}x |")
            tracemalloc.stop()


def _count(dims: list[int]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


if __name__ == "__main__":
    main()
