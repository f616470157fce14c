"""Each class of bad input gets its status and a message saying what was wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import pytest


def x_input(**fields: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "x", "shape": [1, 3], "datatype": "FP32",
                                 "data": [1, 2, 3]}
    tensor.update(fields)
    return tensor


def as_json(document: object) -> bytes:
    return json.dumps(document).encode()


def with_binary(document: dict[str, object], chunk: bytes, header: str | None = None) -> Case:
    head = as_json(document)
    return Case("", head + chunk,
                {"Inference-Header-Content-Length": header or str(len(head))}, 400, "")


@dataclass
class Case:
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 400
    message: str = ""


def binary_case(chunk: bytes, size: int, message: str, header: str | None = None,
                datatype: str = "FP32", model: str = "id_fp32") -> Case:
    document = {"inputs": [x_input(datatype=datatype, data=None,
                                   parameters={"binary_data_size": size})]}
    document["inputs"][0].pop("data")  # type: ignore[attr-defined]
    case = with_binary(document, chunk, header)
    case.path, case.message = f"/v2/models/{model}/infer", message
    return case


def json_case(model: str, document: object, message: str, status: int = 400,
              path: str | None = None) -> Case:
    return Case(path or f"/v2/models/{model}/infer", as_json(document), {}, status, message)


CASES: dict[str, Case] = {
    "unknown model": json_case("nope", {"inputs": [x_input()]}, "unknown model 'nope'", 404),
    "unknown version": json_case("", {"inputs": [x_input()]}, "unknown version '9'", 404,
                                 path="/v2/models/plus/versions/9/infer"),
    "version not served by policy": json_case("", {"inputs": [x_input(shape=[1, 4],
                                              data=[1, 2, 3, 4])]}, "unknown version '1'", 404,
                                              path="/v2/models/plus/versions/1/infer"),
    "malformed json": Case("/v2/models/id_fp32/infer", b'{"inputs": [', {}, 400, "not valid JSON"),
    "json not an object": json_case("id_fp32", [1, 2], "must be a JSON object"),
    "no inputs": json_case("id_fp32", {"inputs": []},
                           "the request lists no inputs; the model's inputs are ['x']"),
    "inputs missing": json_case("id_fp32", {"outputs": []}, "needs 'inputs'"),
    "missing input": json_case("add_two", {"inputs": [x_input(name="a", shape=[1, 4],
                               data=[1, 2, 3, 4])]}, "missing input 'b'"),
    "extra input": json_case("id_fp32", {"inputs": [x_input(), x_input(name="z")]},
                             "unexpected input 'z'"),
    "duplicate input": json_case("id_fp32", {"inputs": [x_input(), x_input()]},
                                 "appears more than once"),
    "wrong datatype": json_case("id_fp32", {"inputs": [x_input(datatype="INT64")]},
                                "expected FP32 [-1,3], got INT64 [1,3]"),
    "unknown datatype": json_case("id_fp32", {"inputs": [x_input(datatype="FLOAT")]},
                                  "unknown datatype 'FLOAT'"),
    "wrong fixed dim": json_case("id_fixed", {"inputs": [x_input(shape=[3, 2],
                                 data=[1] * 6)]}, "expected FP32 [2,3], got FP32 [3,2]"),
    "wrong rank": json_case("id_fp32", {"inputs": [x_input(shape=[3])]},
                            "expected FP32 [-1,3], got FP32 [3]"),
    "data shorter than shape": json_case("id_fp32", {"inputs": [x_input(shape=[2, 3])]},
                                         "needs 6 elements, 'data' has 3"),
    "ragged data": json_case("id_fp32", {"inputs": [x_input(shape=[2, 2],
                             data=[[1, 2], [3]])]}, "needs 4 elements, 'data' has 3"),
    "strings for FP32": json_case("id_fp32", {"inputs": [x_input(data=["1", "2", "3"])]},
                                  "must hold JSON numbers"),
    "numbers for BOOL": json_case("id_bool", {"inputs": [x_input(datatype="BOOL")]},
                                  "must hold true/false"),
    "out of range UINT8": json_case("id_uint8", {"inputs": [x_input(datatype="UINT8",
                                    data=[1, 300, 2])]}, "outside the UINT8 range"),
    "negative dim": json_case("id_fp32", {"inputs": [x_input(shape=[-1, 3])]},
                              "negative dimension"),
    "shape product overflow": json_case("id_fp32", {"inputs": [x_input(
        shape=[2**62, 2**62, 3])]}, "more than the limit", 413),
    "shape not integers": json_case("id_fp32", {"inputs": [x_input(shape=["1", 3])]},
                                    "'shape' must be an array of integers"),
    "unknown output": json_case("id_fp32", {"inputs": [x_input()], "outputs": [{"name": "q"}]},
                                "unknown output 'q'"),
    "fp16 as json": json_case("id_fp16", {"inputs": [x_input(datatype="FP16")]},
                              "cannot be sent as JSON numbers"),
    "bytes not strings": json_case("id_bytes", {"inputs": [x_input(datatype="BYTES")]},
                                   "must hold JSON strings"),
    "batch sizes disagree": json_case("add_two", {"inputs": [
        x_input(name="a", shape=[1, 4], data=[1] * 4),
        x_input(name="b", shape=[2, 4], data=[1] * 8)]}, "disagree on the batch size"),
    "non-scalar parameter": json_case("id_fp32", {"inputs": [x_input()],
                                      "parameters": {"p": [1]}}, "parameter 'p'"),
    "truncated binary": binary_case(b"\0" * 8, 12, "only 8 bytes of binary data remain"),
    "overlong binary": binary_case(b"\0" * 16, 12, "4 bytes of binary data follow"),
    "binary size wrong for shape": binary_case(b"\0" * 8, 8, "needs 12 bytes of data, got 8"),
    "header length beyond body": binary_case(b"", 0, "the body has only", header="99999"),
    "header length not a number": binary_case(b"", 0, "must be a non-negative integer",
                                              header="abc"),
    "bytes element truncated": binary_case(b"\x20\0\0\0ab" + b"\0" * 10, 16, "claims 32 bytes",
                                           datatype="BYTES", model="id_bytes"),
    "bytes not utf-8": binary_case(b"\x02\0\0\0\xff\xfe" + b"\0\0\0\0" * 2, 14,
                                   "not valid UTF-8", datatype="BYTES", model="id_bytes"),
    "raw request on two-input model": Case("/v2/models/add_two/infer", b"\0" * 16,
                                           {"Inference-Header-Content-Length": "0"}, 400,
                                           "exactly one input"),
    "raw request of wrong size": Case("/v2/models/id_fp32/infer", b"\0" * 10,
                                      {"Inference-Header-Content-Length": "0"}, 400,
                                      "needs 12 bytes of data, got 10"),
    "body over the limit": Case("/v2/models/id_fp32/infer", b" " * (1 << 20 + 1), {}, 413,
                                "exceeds the limit of 1048576 bytes"),
    "unknown route": Case("/v2/nothing/here", b"{}", {}, 404, "Not Found"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_request_is_refused_clearly(base_url: str, case: Case) -> None:
    response = httpx.post(base_url + case.path, content=case.body, headers=case.headers)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    assert case.message in response.json()["error"]


def test_chunked_body_over_the_limit_is_refused(base_url: str) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b" " * 65536

    response = httpx.post(f"{base_url}/v2/models/id_fp32/infer", content=chunks())
    assert response.status_code == 413


def test_server_keeps_serving_after_bad_requests(base_url: str) -> None:
    for case in CASES.values():
        httpx.post(base_url + case.path, content=case.body, headers=case.headers)
    assert httpx.get(f"{base_url}/v2/health/live").json() == {"live": True}
    good = httpx.post(f"{base_url}/v2/models/id_fp32/infer", json={"inputs": [x_input()]})
    assert good.json()["outputs"][0]["data"] == [1, 2, 3]
