"""Hostile requests against a real server process: each gets its 4xx (or gRPC status) with a
message naming the problem, memory stays bounded, and the server keeps serving.

test_bad_requests.py covers honest mistakes; these are the requests of someone who lies
about sizes, nests without end, or compresses a bomb. The process runs with a 4 MiB body
limit (so a refused body costs little) and every other limit at its default, which is
what must keep claims such as "10^12 elements" from turning into allocations.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support.server import Process, server_process

MiB = 1 << 20
BODY_LIMIT = 4 * MiB
#: The bound this module states: the peak RSS while the whole table runs (three times over)
#: stays within this much of the RSS before it.
RSS_BOUND = 64 * MiB
INFER = "/v2/models/id_fp32/infer"
BYTES_INFER = "/v2/models/id_bytes/infer"
GOOD = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[Process]:
    env = {"ONNX_SERVE_HTTP__MAX_BODY_BYTES": str(BODY_LIMIT),
           "ONNX_SERVE_HTTP__MAX_DECOMPRESSED_BYTES": str(BODY_LIMIT)}
    with server_process(repository, env=env) as process:
        yield process


@dataclass
class Http:
    """One HTTP request and the answer it must get."""

    body: bytes
    status: int
    message: str
    headers: dict[str, str | bytes] = field(default_factory=dict)
    path: str = INFER


def tensor(**fields: object) -> dict[str, object]:
    return {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], **fields}


def doc(*inputs: dict[str, object]) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


def binary(head: dict[str, object], chunk: bytes, path: str = INFER, status: int = 400,
           message: str = "") -> Http:
    """The binary tensor extension: a JSON header, then `chunk`."""
    header = json.dumps(head).encode()
    return Http(header + chunk, status, message,
                {"Inference-Header-Content-Length": str(len(header))}, path)


def sized(size: object, datatype: str = "FP32", shape: object = (1, 3)) -> dict[str, object]:
    return {"name": "x", "datatype": datatype, "shape": list(shape),  # type: ignore[call-overload]
            "parameters": {"binary_data_size": size}}


def bomb(wbits: int, size: int = 256 * MiB) -> bytes:
    """`size` zero bytes compressed (about a thousandth of it), built without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(MiB)
    return b"".join([*(compressor.compress(zeros) for _ in range(size // MiB)),
                     compressor.flush()])


def nested(depth: int) -> bytes:
    return doc(tensor(data=json.loads("[" * depth + "1" + "]" * depth)))


GZIP, DEFLATE = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS
TOO_LARGE_BYTES = b"\xff\xff\xff\xff" + b"\0" * 8
HTTP_CASES: dict[str, Http] = {
    # Sizes the body cannot back up: refused before anything proportional is allocated.
    "shape claims 10^12 elements": Http(doc(tensor(shape=[10**6, 10**6])), 413,
                                        "more than the limit of 268435456 (setting "
                                        "ONNX_SERVE_HTTP__MAX_TENSOR_ELEMENTS)"),
    "shape at the limit, 4 bytes of data": binary({"inputs": [sized(4, shape=[1 << 28])]},
                                                  b"\0" * 4, message="needs 1073741824 bytes"),
    "BYTES shape of 2^28 elements, 8 bytes of data": binary(
        {"inputs": [sized(8, "BYTES", [1 << 28])]}, b"\0" * 8, BYTES_INFER,
        message="268435456 BYTES elements need at least 1073741824 bytes"),
    "BYTES length prefix of 4 GiB": binary({"inputs": [sized(12, "BYTES", [1, 3])]},
                                           TOO_LARGE_BYTES, BYTES_INFER, 413,
                                           "MAX_BYTES_ELEMENT_BYTES"),
    "BYTES length prefix past the body": binary(
        {"inputs": [sized(16, "BYTES", [1, 3])]}, b"\0\0\x10\0" + b"\0" * 12, BYTES_INFER,
        message="claims 1048576 bytes but only 12 remain"),
    "binary_data_size of 2^63": binary({"inputs": [sized(2**63)]}, b"\0" * 12,
                                       message="binary_data_size is 9223372036854775808"),
    "binary_data_size negative": binary({"inputs": [sized(-12)]}, b"\0" * 12,
                                        message="binary_data_size must be a non-negative"),
    "binary_data_size a float": binary({"inputs": [sized(12.5)]}, b"\0" * 12,
                                       message="binary_data_size must be a non-negative"),
    "binary sizes swapped between inputs": binary(
        {"inputs": [{**sized(20, shape=[1, 4]), "name": "a"}, {**sized(12, shape=[1, 4]),
                                                               "name": "b"}]},
        b"\0" * 32, "/v2/models/add_two/infer", message="needs 16 bytes of data, got 20"),
    "header length of 5000 digits": Http(doc(tensor()), 400, "must be a non-negative integer",
                                         {"Inference-Header-Content-Length": "9" * 5000}),
    "header length a superscript digit": Http(doc(tensor()), 400, "non-negative integer",
                                              {"Inference-Header-Content-Length": b"\xb2"}),
    "header length negative": Http(doc(tensor()), 400, "must be a non-negative integer",
                                   {"Inference-Header-Content-Length": "-5"}),
    "empty tensor with huge dims": Http(doc(tensor(shape=[0, 2**31, 2**62], data=[])), 413,
                                        "its non-zero dimensions multiply to more"),
    "shape of 65 dimensions": Http(doc(tensor(shape=[1] * 65, data=[1])), 400,
                                   "65 dimensions, more than the 32"),
    "total elements over the request limit": binary(
        {"inputs": [{**sized(16, shape=[1, 4]), "name": "a"},
                    {**sized(0, shape=[1 << 28]), "name": "b"}]}, b"\0" * 16,
        "/v2/models/add_two/infer", 413, "ONNX_SERVE_HTTP__MAX_REQUEST_ELEMENTS"),
    "thousands of tensors": Http(doc(*(tensor(name=f"x{i}") for i in range(5000))), 413,
                                 "5000 inputs, more than the limit of 256 (setting "
                                 "ONNX_SERVE_HTTP__MAX_INPUTS)"),
    # Nesting: counted on the raw bytes, before the parser builds anything.
    "nested 100 deep": Http(nested(100), 413, "nests 103 levels deep, more than the limit of "
                            "32 (setting ONNX_SERVE_HTTP__MAX_JSON_DEPTH)"),
    "nested 10^6 deep, unclosed": Http(b"[" * 10**6, 413, "nests 1000000 levels deep"),
    "brackets inside strings do not count": Http(doc(tensor(name="[" * 1000)), 400,
                                                 "unexpected input '[[[["),
    "deep nesting on the repository API": Http(b'{"ready": ' + b"[" * 50 + b"]" * 50 + b"}",
                                               413, "nests 51 levels", path="/v2/repository/index"),
    # Text that is not JSON, or not UTF-8.
    "truncated JSON": Http(doc(tensor())[:40], 400, "not valid JSON"),
    "Latin-1 JSON": Http(doc(tensor(name="é")).replace(b"\\u00e9", b"\xe9"), 400,
                         "not valid JSON"),
    "UTF-16 JSON": Http(doc(tensor()).decode().encode("utf-16"), 400, "not valid JSON"),
    "invalid UTF-8 in BYTES data": Http(doc(tensor(datatype="BYTES", data=["a", "b", "c"]))
                                        .replace(b'"b"', b'"\xff\xfe"'), 400, "not valid JSON",
                                        path=BYTES_INFER),
    "lone surrogate in BYTES data": Http(doc(tensor(datatype="BYTES", data=["a", "b", "c"]))
                                         .replace(b'"b"', b'"\\ud800"'), 400, "surrogate",
                                         path=BYTES_INFER),
    "NaN literal": Http(doc(tensor(data=[float("nan"), 1, 2])), 400, "not valid JSON"),
    "Infinity literal": Http(doc(tensor(data=[float("inf"), 1, 2])), 400, "not valid JSON"),
    "number beyond float64": Http(doc(tensor()).replace(b"[1, 2, 3]", b"[1e400, 2, 3]"), 400,
                                  "infinity"),
    "duplicate keys: the last wins": Http(doc(tensor())[:-1] + b', "inputs": 5}', 400,
                                          "needs 'inputs' as a JSON array"),
    "datatype not a string": Http(doc(tensor(datatype=7)), 400,
                                  "'datatype' must be a non-empty string"),
    "INT64 value of 2^63": Http(doc(tensor(datatype="INT64", data=[2**63, 0, 0])), 400,
                                "outside the INT64 range", path="/v2/models/id_int64/infer"),
    "shape of booleans": Http(doc(tensor(shape=[True, 3])), 400,
                              "'shape' must be an array of integers"),
    # Bodies: over the limit as declared, and compressed bombs.
    "Content-Length of 10^18": Http(b"", 413, "exceeds the limit of 4194304 bytes",
                                    {"Content-Length": "9" * 18}),
    "gzip bomb (256 MiB of zeros)": Http(bomb(GZIP), 413, "decompresses to more than 4194304 "
                                         "bytes (setting ONNX_SERVE_HTTP__MAX_DECOMPRESSED_BYTES)",
                                         {"Content-Encoding": "gzip"}),
    "deflate bomb (256 MiB of zeros)": Http(bomb(DEFLATE), 413, "decompresses to more than",
                                            {"Content-Encoding": "deflate"}),
    "gzip bomb on a FastAPI route": Http(bomb(GZIP), 413, "decompresses to more than",
                                         {"Content-Encoding": "gzip"}, "/v2/repository/index"),
    "gzip stream truncated": Http(gzip.compress(doc(tensor()))[:-6], 400, "truncated",
                                  {"Content-Encoding": "gzip"}),
    "gzip header on plain JSON": Http(doc(tensor()), 400, "not valid gzip",
                                      {"Content-Encoding": "gzip"}),
    "two gzip members": Http(gzip.compress(doc(tensor())) * 2, 400, "data follows the end",
                             {"Content-Encoding": "gzip"}),
    "unsupported Content-Encoding": Http(doc(tensor()), 415, "'br' is not supported",
                                         {"Content-Encoding": "br"}),
}


def post(base: str, case: Http) -> tuple[int, str]:
    """Send `case` over a plain socket: httpx would fix the lies (Content-Length, bytes in
    header values) that these cases need to tell."""
    host, port = base.removeprefix("http://").split(":")
    headers = {"Host": host, "Content-Length": str(len(case.body)), "Connection": "close",
               "Content-Type": "application/json", **case.headers}
    head = f"POST {case.path} HTTP/1.1\r\n".encode() + b"".join(
        k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) + b"\r\n"
        for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # The body goes from a thread while this one reads: a server that refuses a body
        # half way answers and closes, and the answer must be read before the reset that a
        # close with unread data sends.
        sender = threading.Thread(target=_send_quietly, args=(sock, head + b"\r\n" + case.body))
        sender.start()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # after the answer: what it holds is checked below
        sender.join()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # refused before the end: the answer says why
        sock.sendall(data)


@pytest.mark.parametrize("case", HTTP_CASES.values(), ids=HTTP_CASES.keys())
def test_hostile_http_request(server: Process, case: Http) -> None:
    status, body = post(server.http, case)
    assert status == case.status, body
    assert case.message in json.loads(body)["error"]


@dataclass
class Grpc:
    """One ModelInfer request (or raw bytes that claim to be one) and its status."""

    request: pb.ModelInferRequest | bytes
    code: grpc.StatusCode
    message: str


def infer_request(*tensors: pb.ModelInferRequest.InferInputTensor, raw: list[bytes] | None = None,
                  model: str = "id_fp32") -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name=model, inputs=tensors, raw_input_contents=raw or [])


def x(shape: list[int], datatype: str = "FP32", **fields: object
      ) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(name=str(fields.pop("name", "x")),
                                                 datatype=datatype, shape=shape, **fields)


INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
GRPC_CASES: dict[str, Grpc] = {
    "shape claims 10^12 elements": Grpc(infer_request(x([10**6, 10**6])), EXHAUSTED,
                                        "ONNX_SERVE_GRPC__MAX_TENSOR_ELEMENTS"),
    "shape of 2^62 x 2^62 (overflows int64)": Grpc(infer_request(x([2**62, 2**62])), EXHAUSTED,
                                                   "more than the limit of 268435456"),
    "negative dimension": Grpc(infer_request(x([-1, 3])), INVALID, "negative dimension"),
    "raw contents shorter than the shape": Grpc(infer_request(x([1, 3]), raw=[b"\0" * 8]),
                                                INVALID, "needs 12 bytes of data, got 8"),
    "raw contents at the limit, 4 bytes given": Grpc(
        infer_request(x([1 << 28]), raw=[b"\0" * 4]), INVALID, "needs 1073741824 bytes"),
    "raw BYTES shape of 2^28, 4 bytes given": Grpc(
        infer_request(x([1 << 28], "BYTES"), raw=[b"\0" * 4], model="id_bytes"), INVALID,
        "268435456 BYTES elements need at least"),
    "raw BYTES length prefix of 4 GiB": Grpc(
        infer_request(x([1, 3], "BYTES"), raw=[TOO_LARGE_BYTES], model="id_bytes"), EXHAUSTED,
        "ONNX_SERVE_GRPC__MAX_BYTES_ELEMENT_BYTES"),
    "more raw entries than inputs": Grpc(infer_request(x([1, 3]), raw=[b"\0" * 12] * 2),
                                         INVALID, "raw_input_contents has 2 entries"),
    "typed contents short of the shape": Grpc(
        infer_request(x([4, 3], contents=pb.InferTensorContents(fp32_contents=[1, 2, 3]))),
        INVALID, "needs 12 elements, fp32_contents has 3"),
    "too many inputs": Grpc(infer_request(*(x([1, 3], name=f"x{i}") for i in range(1000))),
                            EXHAUSTED, "1000 inputs, more than the limit of 256"),
    "total elements over the request limit": Grpc(
        infer_request(x([1, 4], name="a", contents=pb.InferTensorContents(
            fp32_contents=[1, 2, 3, 4])), x([1 << 28], name="b"), model="add_two"), EXHAUSTED,
        "ONNX_SERVE_GRPC__MAX_REQUEST_ELEMENTS"),
    "shape of 65 dimensions": Grpc(infer_request(x([1] * 65)), INVALID, "65 dimensions"),
    "BYTES contents not UTF-8": Grpc(
        infer_request(x([1, 3], "BYTES", contents=pb.InferTensorContents(
            bytes_contents=[b"\xff", b"a", b"b"])), model="id_bytes"), INVALID,
        "not valid UTF-8"),
    "not a protobuf message": Grpc(b"\xff\xff\xff\xff", INVALID,
                                   "not a valid protobuf message"),
}


def model_infer(channel: grpc.Channel) -> Callable[[bytes], bytes]:
    """ModelInfer taking and returning wire bytes, so undecodable requests can be sent."""
    return channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")


@pytest.fixture(scope="module")
def channel(server: Process) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as opened:
        yield opened


def call(channel: grpc.Channel, case: Grpc) -> grpc.RpcError:
    wire = case.request if isinstance(case.request, bytes) else case.request.SerializeToString()
    with pytest.raises(grpc.RpcError) as raised:
        model_infer(channel)(wire, timeout=30)
    return raised.value


@pytest.mark.parametrize("case", GRPC_CASES.values(), ids=GRPC_CASES.keys())
def test_hostile_grpc_request(channel: grpc.Channel, case: Grpc) -> None:
    error = call(channel, case)
    assert error.code() == case.code, error.details()  # type: ignore[attr-defined]
    assert case.message in error.details()  # type: ignore[attr-defined]


def rss(pid: int, field_name: str = "VmRSS") -> int:
    """A figure from /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field_name)


def test_memory_stays_bounded_and_the_server_keeps_serving(server: Process,
                                                           channel: grpc.Channel) -> None:
    def every_case() -> None:
        for case in HTTP_CASES.values():
            post(server.http, case)
        for grpc_case in GRPC_CASES.values():
            call(channel, grpc_case)

    every_case()  # warm-up: first-use allocations (arenas, imports) are not the table's
    start = rss(server.pid)
    # Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so the peak read
    # below is the table's own.
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    for _ in range(3):
        every_case()
    peak, end = rss(server.pid, "VmHWM"), rss(server.pid)
    print(f"\nRSS before {start / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB "
          f"(+{(peak - start) / MiB:.1f}), after {end / MiB:.1f} MiB "
          f"(+{(end - start) / MiB:.1f}); bound +{RSS_BOUND // MiB} MiB")
    assert peak - start < RSS_BOUND
    good = httpx.post(server.http + INFER, json=GOOD, timeout=30)
    assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [1, 2, 3]
    reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        infer_request(x([1, 3], contents=pb.InferTensorContents(fp32_contents=[1, 2, 3]))))
    assert list(reply.outputs[0].contents.fp32_contents) == [1, 2, 3]
