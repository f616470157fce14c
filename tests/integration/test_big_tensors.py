"""Big tensors over HTTP's fast path: gathered bodies, answers written piece by piece (issue 21/7).

Bodies declared over api/body.py's GATHER_BYTES are copied into one preallocated buffer;
answers over 256 KiB go out as the JSON header then each binary output as a view of its
array (api/http_send.py). These check that both give back exactly what went in, for every
shape of answer, that refusals keep their statuses and messages, and that the server holds
the tensor once, not twice (counted with tracemalloc: the server runs in this process).
"""

from __future__ import annotations

import json
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from app.api.body import GATHER_BYTES
from tests.support import onnx_models, sequence_models
from tests.support.server import Endpoints, running_server, wait_for

MIB = 1 << 20
SEQUENCE_WIDTH = MIB // 2  # floats: a 2 MiB input, state and answer
PLAIN = {"Accept-Encoding": "identity"}  # no compression: the answer goes out in pieces


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    root = tmp_path_factory.mktemp("big")
    for datatype in ("FP32", "UINT8", "BYTES", "FP16"):
        onnx_models.write(root, f"flat_{datatype.lower()}",
                          onnx_models.identity(datatype, dims=("n",)))
    onnx_models.write(root, "add_two", onnx_models.add_two())
    for model in root.iterdir():  # no batching: the first dimension is the tensor's own
        (model / "config.pbtxt").write_text(f'name: "{model.name}"\nmax_batch_size: 0\n')
    onnx_models.write(root, "batched_fp32", onnx_models.identity("FP32", dims=("batch", "n")))
    (root / "batched_fp32" / "config.pbtxt").write_text(
        'name: "batched_fp32"\nmax_batch_size: 4\ndynamic_batching { }\n')
    onnx_models.write(root, "sequence_wide", sequence_models.accumulator(SEQUENCE_WIDTH))
    (root / "sequence_wide" / "config.pbtxt").write_text(
        sequence_models.config(width=SEQUENCE_WIDTH))
    with running_server(root, http={"max_body_bytes": 64 * MIB}) as running:
        yield running


def binary_request(inputs: list[tuple[str, str, np.ndarray, bytes]],
                   outputs: list[dict[str, Any]] | None = None,
                   parameters: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: (name, datatype, array for its shape, raw bytes) each."""
    document: dict[str, Any] = {"inputs": [
        {"name": name, "datatype": datatype, "shape": list(array.shape),
         "parameters": {"binary_data_size": len(raw)}} for name, datatype, array, raw in inputs]}
    if outputs is not None:
        document["outputs"] = outputs
    if parameters is not None:
        document["parameters"] = parameters
    header = json.dumps(document).encode()
    return header + b"".join(raw for *_, raw in inputs), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream"}


def split(response: httpx.Response) -> tuple[dict[str, Any], memoryview]:
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    if "content-encoding" not in response.headers:  # else httpx inflated it
        assert int(response.headers["content-length"]) == len(response.content)
    return json.loads(response.content[:length]), memoryview(response.content)[length:]


@pytest.mark.parametrize("accept", [PLAIN, {"Accept-Encoding": "gzip"}], ids=["pieces", "gzip"])
@pytest.mark.parametrize("datatype, size", [("UINT8", MIB + 3), ("FP32", 3 * MIB // 4 + 1),
                                            ("FP16", 5), ("UINT8", GATHER_BYTES + 1)])
def test_a_big_or_odd_sized_tensor_comes_back_exactly(endpoints: Endpoints, datatype: str,
                                                      size: int, accept: dict[str, str]) -> None:
    dtype = {"UINT8": np.uint8, "FP32": np.float32, "FP16": np.float16}[datatype]
    x = np.random.default_rng(size).integers(0, 250, size).astype(dtype)
    body, headers = binary_request([("x", datatype, x, x.tobytes())],
                                   [{"name": "y", "parameters": {"binary_data": True}}])
    response = httpx.post(f"{endpoints.http}/v2/models/flat_{datatype.lower()}/infer",
                          content=body, headers={**headers, **accept}, timeout=60)
    header, data = split(response)
    assert header["outputs"] == [{"name": "y", "datatype": datatype, "shape": [size],
                                  "parameters": {"binary_data_size": x.nbytes}}]
    assert bytes(data) == x.tobytes()


def test_several_outputs_binary_and_json_mixed(endpoints: Endpoints) -> None:
    rows = GATHER_BYTES // 16 + 7  # each tensor just over the size that goes in pieces
    a = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    b = np.full((rows, 4), 0.5, np.float32)
    outputs = [{"name": "diff", "parameters": {"binary_data": False}},
               {"name": "sum", "parameters": {"binary_data": True}}]
    body, headers = binary_request([("a", "FP32", a, a.tobytes()), ("b", "FP32", b, b.tobytes())],
                                   outputs)
    header, data = split(httpx.post(f"{endpoints.http}/v2/models/add_two/infer", content=body,
                                    headers={**headers, **PLAIN}, timeout=60))
    by_name = {o["name"]: o for o in header["outputs"]}
    assert by_name["diff"]["data"] == (a - b).reshape(-1).tolist()
    assert by_name["sum"]["parameters"] == {"binary_data_size": a.nbytes}
    assert bytes(data) == (a + b).tobytes()


def test_two_binary_outputs_through_tritonclient(endpoints: Endpoints) -> None:
    rows = 70_000
    a = np.random.default_rng(1).standard_normal((rows, 4)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((rows, 4)).astype(np.float32)
    inputs = [triton_http.InferInput("a", [rows, 4], "FP32"),
              triton_http.InferInput("b", [rows, 4], "FP32")]
    inputs[0].set_data_from_numpy(a, binary_data=True)
    inputs[1].set_data_from_numpy(b, binary_data=True)
    wanted = [triton_http.InferRequestedOutput(n, binary_data=True) for n in ("sum", "diff")]
    client = triton_http.InferenceServerClient(endpoints.http.removeprefix("http://"))
    try:
        result = client.infer("add_two", inputs, outputs=wanted)
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)


def test_big_bytes_tensors_both_ways(endpoints: Endpoints) -> None:
    words = np.array([f"word {i} {'é' * (i % 7)}" for i in range(40_000)], dtype=object)
    raw = b"".join(len(w.encode()).to_bytes(4, "little") + w.encode() for w in words)
    assert len(raw) > GATHER_BYTES
    body, headers = binary_request([("x", "BYTES", words, raw)],
                                   [{"name": "y", "parameters": {"binary_data": True}}])
    header, data = split(httpx.post(f"{endpoints.http}/v2/models/flat_bytes/infer",
                                    content=body, headers={**headers, **PLAIN}, timeout=60))
    assert header["outputs"][0]["parameters"] == {"binary_data_size": len(raw)}
    assert bytes(data) == raw


def test_a_big_raw_body_and_a_big_json_body(endpoints: Endpoints) -> None:
    x = np.arange(GATHER_BYTES // 4 + 5, dtype=np.float32)
    raw = httpx.post(f"{endpoints.http}/v2/models/flat_fp32/infer", content=x.tobytes(),
                     headers={"Inference-Header-Content-Length": "0", **PLAIN}, timeout=60)
    assert bytes(split(raw)[1]) == x.tobytes()
    values = list(range(100_000))  # a JSON body of some 600 KB
    answer = httpx.post(f"{endpoints.http}/v2/models/flat_fp32/infer", headers=PLAIN, json={
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)], "data": values}]},
        timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == values


@pytest.mark.parametrize("change, status, message", [
    (lambda d: d["inputs"][0]["parameters"].update(binary_data_size=MIB + 8), 400,
     "input 'x': binary_data_size is 1048584 but only 1048580 bytes of binary data remain "
     "in the body"),
    (lambda d: d["inputs"][0].update(shape=[MIB // 4], parameters={"binary_data_size": MIB}),
     400,
     "4 bytes of binary data follow the last binary input (binary_data_size values do not "
     "add up to the body)"),
    (lambda d: d["inputs"][0].update(shape=[MIB // 4 + 2]), 400,
     "input 'x': FP32 [262146] needs 1048584 bytes of data, got 1048580"),
])
def test_big_bodies_are_refused_as_before(endpoints: Endpoints, change: Any, status: int,
                                          message: str) -> None:
    x = np.ones(MIB // 4 + 1, np.float32)
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [x.size],
                            "parameters": {"binary_data_size": x.nbytes}}]}
    change(document)
    header = json.dumps(document).encode()
    response = httpx.post(f"{endpoints.http}/v2/models/flat_fp32/infer",
                          content=header + x.tobytes(), timeout=60,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert (response.status_code, response.json()) == (status, {"error": message})


@pytest.mark.parametrize("model", ["flat_fp32", "batched_fp32"])
def test_a_request_holds_its_tensor_once_and_keeps_nothing(endpoints: Endpoints,
                                                          model: str) -> None:
    """Python-side allocations during one 8 MiB round trip (the server thread's: the client
    sends prepared bytes and reads into a buffer allocated before): the gathered body, and
    no joined copy of it or of the answer (the output is onnxruntime's, not Python's); and
    after the answer, none of them alive."""
    x = np.ones(2 * MIB, np.float32).reshape(-1 if model == "flat_fp32" else (1, -1))
    body, headers = binary_request([("x", "FP32", x, x.tobytes())],
                                   [{"name": "y", "parameters": {"binary_data": True}}])
    answer = bytearray(x.nbytes + 4096)
    got, peak = traced_round_trip(endpoints, model, body, headers, answer, x.nbytes)
    assert answer[:got].endswith(x.tobytes())
    assert peak < 1.5 * x.nbytes, f"{peak / x.nbytes:.2f} copies of the tensor held at once"


def test_a_sequence_request_keeps_nothing_once_answered(endpoints: Endpoints) -> None:
    """The sequence scheduler held its last run's requests (their tensors and, through their
    futures, their outputs) while it waited for the next one, as the others did."""
    x = np.ones((1, SEQUENCE_WIDTH), np.float32)
    flags = {"sequence_id": 7, "sequence_start": True, "sequence_end": True}
    body, headers = binary_request([("x", "FP32", x, x.tobytes())],
                                   [{"name": "y", "parameters": {"binary_data": True}}], flags)
    answer = bytearray(x.nbytes + 4096)
    got, _ = traced_round_trip(endpoints, "sequence_wide", body, headers, answer, x.nbytes)
    expected = np.tanh(x) + 1 + 2  # y = tanh(state) + START + 2 * END, from a zero state
    assert np.array_equal(np.frombuffer(answer[got - x.nbytes:got], np.float32),
                          expected.ravel())


def traced_round_trip(endpoints: Endpoints, model: str, body: bytes, headers: dict[str, str],
                      answer: bytearray, tensor_bytes: int) -> tuple[int, int]:
    """Two identical requests over one raw keep-alive connection, the second traced (the
    server runs in this process): the bytes of its answer read into `answer`, and the peak
    of what was allocated meanwhile; returns once what it allocated is released (the server
    closes its side after ours), or fails."""
    port = int(endpoints.http.rsplit(":", 1)[1])
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + f"Content-Length: {len(body)}\r\n\r\n").encode()
    conn = socket.create_connection(("127.0.0.1", port))
    try:
        exchange(conn, head, body, answer)  # warm: first-run allocations are no request's
        tracemalloc.start()  # what was allocated before is not traced, nor its release
        before = tracemalloc.get_traced_memory()[0]
        got = exchange(conn, head, body, answer)
        peak = tracemalloc.get_traced_memory()[1] - before
        conn.close()
        # Nothing of it is kept once answered and the connection is gone (the schedulers
        # held their last request until the next one came: its tensors, and through its
        # future its outputs).
        wait_for(lambda: tracemalloc.get_traced_memory()[0] - before < tensor_bytes / 4,
                 timeout_s=10, what=f"{model}: the request's memory to be released")
    finally:
        conn.close()
        tracemalloc.stop()
    return got, peak


def exchange(conn: socket.socket, head: bytes, body: bytes, answer: bytearray) -> int:
    """Send one request, read its answer into `answer`; the bytes read."""
    conn.sendall(head)
    conn.sendall(body)
    view, got, total = memoryview(answer), 0, None
    while total is None or got < total:
        n = conn.recv_into(view[got:])
        assert n, "the server closed the connection"
        got += n
        end = answer.find(b"\r\n\r\n", 0, min(got, 4096))
        if total is None and end >= 0:
            lines = bytes(answer[:end]).decode("latin-1").lower().split("\r\n")
            assert lines[0].startswith("http/1.1 200"), lines[0]
            length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:])
                          if k == "content-length")
            total = end + 4 + length
    return got
