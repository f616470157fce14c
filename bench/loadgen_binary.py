"""The shared loadgen.py, sending Triton binary tensors instead of JSON (same loop, same output).

    python bench/loadgen_binary.py -u 127.0.0.1:8000 -m mlp --shape 784 -c 1,8,32 -d 10

Every flag of ../shared/bench/peers/loadgen.py applies, and `--identity`: send
`Accept-Encoding: identity` (as tritonclient and perf_analyzer do), where aiohttp by default
asks for gzip/deflate and onnx-serve, as Triton, then compresses the answer. The request
carries the input as a binary chunk and asks for the output as one; each response is checked
(status, header length, chunk size) before it counts. A server that ignores `binary_data`
and answers in JSON (KServe's peer runtime does, on REST) is checked as JSON instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peers"
sys.path.insert(0, str(SHARED))
import loadgen  # noqa: E402  (the shared generator, found beside this repository)

HEADER = "Inference-Header-Content-Length"
IDENTITY = "--identity" in sys.argv  # our flag, taken out before loadgen parses the rest
if IDENTITY:
    sys.argv.remove("--identity")


def build_binary(model: str, shape: list[int], batch: int, seed: int = 0,
                 name: str = "x") -> bytes:
    """JSON header + raw FP32 input `name` (loadgen's --input), asking for output `y` as
    binary."""
    x = np.random.default_rng(seed).standard_normal([batch, *shape]).astype("<f4")
    header = json.dumps({
        "inputs": [{"name": name, "shape": [batch, *shape], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }, separators=(",", ":")).encode()
    BinarySender.header_length = len(header)
    return header + x.tobytes()


class BinarySender(loadgen.AiohttpSender):  # type: ignore[misc]
    """Posts the binary body; returns the response's JSON header once the chunk checks out."""

    header_length = 0

    async def open(self, conc: int) -> None:
        import aiohttp

        headers = {"Content-Type": "application/octet-stream", HEADER: str(self.header_length)}
        if IDENTITY:
            headers["Accept-Encoding"] = "identity"
        self.sess = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=conc + 4, force_close=False), headers=headers)

    async def send(self) -> Any:
        async with self.sess.post(self.url, data=self.body) as response:
            data = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
            if HEADER not in response.headers:
                if not json.loads(data)["outputs"][0]["data"]:
                    raise RuntimeError("JSON answer without output data")
                return data
            length = int(response.headers[HEADER])
            header = json.loads(data[:length])
            size = header["outputs"][0]["parameters"]["binary_data_size"]
            if len(data) - length != size:
                raise RuntimeError(f"binary output is {len(data) - length} bytes, not {size}")
            return data[:length]


if __name__ == "__main__":
    loadgen.build_http = build_binary
    loadgen.AiohttpSender = BinarySender
    loadgen.main()
