"""Lean clients for bench/scale_tensors.py: they move the tensor and time each stage, no more.

httpx (h11 underneath) and protobuf's messages copy a 64 MiB tensor several times on the
client, in Python, so with them the bench measured the client about as much as the server.
These send the prepared request with sendall from memoryviews and read the answer into one
preallocated buffer (HTTP), or hand grpcio the serialized message and take its bytes back
(gRPC, no protobuf on either side of the timed call).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from app.protos_gen import inference_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Stages:
    """Client-side seconds of one round trip: sending the request (ends when the last byte
    is in the kernel), waiting (until the answer's first byte: the server reading, decoding,
    running and encoding), receiving (its last byte)."""

    send: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    receive: list[float] = field(default_factory=list)


class RawHttp:
    """One keep-alive HTTP/1.1 connection that POSTs a binary-extension request."""

    def __init__(self, port: int, x: np.ndarray, model: str = "big") -> None:
        header = json.dumps({
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [x.size],
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
        self._head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/octet-stream\r\n"
                      f"Inference-Header-Content-Length: {len(header)}\r\n"
                      f"Content-Length: {len(header) + x.nbytes}\r\n\r\n").encode() + header
        self._payload = memoryview(x).cast("B")
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.answer = bytearray(len(header) + x.nbytes + 4096)
        self.stages = Stages()

    def once(self) -> memoryview:
        """One round trip; the answer's body (a view into `self.answer`)."""
        start = time.perf_counter()
        self._sock.sendall(self._head)
        self._sock.sendall(self._payload)
        sent = time.perf_counter()
        view, got = memoryview(self.answer), 0
        got = self._sock.recv_into(view)
        first = time.perf_counter()
        end = bytes(view[: min(got, 4096)]).find(b"\r\n\r\n")
        while end < 0:
            got += self._recv(view[got:])
            end = bytes(view[: min(got, 65536)]).find(b"\r\n\r\n")
        head = bytes(view[:end]).decode("latin-1").lower().split("\r\n")
        if not head[0].startswith("http/1.1 200"):
            raise RuntimeError(bytes(view[:got]).decode("latin-1", "replace")[:500])
        length = next(int(h.split(":", 1)[1]) for h in head if h.startswith("content-length:"))
        total = end + 4 + length
        if total > len(self.answer):
            self.answer.extend(bytes(total - len(self.answer)))
            view = memoryview(self.answer)
        while got < total:
            got += self._recv(view[got:total])
        done = time.perf_counter()
        self.stages.send.append(sent - start)
        self.stages.wait.append(first - sent)
        self.stages.receive.append(done - first)
        return view[end + 4 : total]

    def _recv(self, view: memoryview) -> int:
        n = self._sock.recv_into(view)
        if not n:
            raise RuntimeError("the server closed the connection")
        return n

    def close(self) -> None:
        self._sock.close()


class RawGrpc:
    """ModelInfer with the request serialized once, outside the timed call; the answer's
    bytes are checked for size only (the untimed `check` compares the tensor)."""

    def __init__(self, channel: grpc.Channel, x: np.ndarray, model: str = "big") -> None:
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name="x", datatype="FP32", shape=[x.size])
        request.raw_input_contents.append(x.tobytes())
        self._request = request.SerializeToString()
        self._nbytes = x.nbytes
        self._call = channel.unary_unary(INFER)  # bytes in, bytes out
        self.stages = Stages()

    def once(self) -> bytes:
        start = time.perf_counter()
        answer: bytes = self._call(self._request, timeout=120)
        self.stages.wait.append(time.perf_counter() - start)  # grpcio shows no stages
        if len(answer) < self._nbytes:
            raise RuntimeError(f"short answer: {len(answer)} bytes")
        return answer


def check_http(client: RawHttp, x: np.ndarray) -> None:
    """The answer's binary output is the input, byte for byte."""
    body = client.once()
    if bytes(body[len(body) - x.nbytes:]) != x.tobytes():
        raise RuntimeError("HTTP answer differs from the input")


def check_grpc(client: RawGrpc, x: np.ndarray) -> None:
    answer = pb.ModelInferResponse.FromString(client.once())
    if answer.raw_output_contents[0] != x.tobytes():
        raise RuntimeError("gRPC answer differs from the input")
