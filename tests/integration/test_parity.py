"""One table of good and bad requests, sent over REST and gRPC: outcomes agree case by case."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest

from app.api.status import GRPC_STATUS, HTTP_STATUS
from app.codecs.grpc import CONTENTS_FIELD
from app.errors import ErrorCode
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


@dataclass(frozen=True)
class Case:
    model: str
    inputs: list[Tensor]
    outcome: ErrorCode | None  # None: success
    version: str = ""
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, int | str] = field(default_factory=dict)


def fp32(name: str, shape: list[int], data: list[Any], datatype: str = "FP32") -> Tensor:
    return Tensor(name, datatype, shape, data)


X = fp32("x", [1, 3], [1.5, 2, 3])
A, B = fp32("a", [1, 4], [1, 2, 3, 4]), fp32("b", [1, 4], [4, 3, 2, 1])
TABLE: dict[str, Case] = {
    "identity": Case("id_fp32", [X], None),
    "two inputs, one output chosen": Case("add_two", [A, B], None, outputs=["diff"]),
    "explicit version": Case("plus", [fp32("x", [2, 4], list(range(8)))], None, version="2"),
    "strings": Case("id_bytes", [Tensor("x", "BYTES", [1, 3], ["a", "é", ""])], None),
    "int64 extremes": Case("id_int64", [Tensor("x", "INT64", [1, 3], [-(2**63), 2**63 - 1, 0])],
                           None),
    "zero rows": Case("id_fp32", [fp32("x", [0, 3], [])], None),
    "unknown model": Case("nope", [X], ErrorCode.NOT_FOUND),
    "unknown version": Case("plus", [X], ErrorCode.NOT_FOUND, version="7"),
    "wrong datatype": Case("id_fp32", [fp32("x", [1, 3], [1, 2, 3], "INT32")],
                           ErrorCode.INVALID_INPUT),
    "wrong fixed dim": Case("id_fixed", [fp32("x", [3, 2], [1] * 6)], ErrorCode.INVALID_INPUT),
    "too few elements": Case("id_fp32", [fp32("x", [2, 3], [1, 2, 3])], ErrorCode.INVALID_INPUT),
    "missing input": Case("add_two", [A], ErrorCode.INVALID_INPUT),
    "extra input": Case("id_fp32", [X, fp32("z", [1, 3], [1, 2, 3])], ErrorCode.INVALID_INPUT),
    "unknown output": Case("id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["nope"]),
    "batch sizes disagree": Case("add_two", [A, fp32("b", [2, 4], [0] * 8)],
                                 ErrorCode.INVALID_INPUT),
    "int out of range": Case("id_int8", [Tensor("x", "INT8", [1, 3], [1, 200, 3])],
                             ErrorCode.INVALID_INPUT),
    "schedule priority": Case("id_fp32", [X], None, parameters={"priority": 1}),
    "priority above the levels": Case("id_fp32", [X], ErrorCode.INVALID_INPUT,
                                      parameters={"priority": 2}),
    "timeout not an integer": Case("id_fp32", [X], ErrorCode.INVALID_INPUT,
                                   parameters={"timeout": "soon"}),
    "unknown datatype": Case("id_fp32", [fp32("x", [1, 3], [1, 2, 3], "FLOAT32")],
                             ErrorCode.INVALID_INPUT),
}
HTTP_TO_CODE = {status: code for code, status in HTTP_STATUS.items()}
# Codes that share a gRPC status with another: TOO_LARGE (RESOURCE_EXHAUSTED, as OVERLOADED)
# and UNSUPPORTED_MEDIA (HTTP's Content-Encoding only; INVALID_ARGUMENT on gRPC).
GRPC_TO_CODE = {status: code for code, status in GRPC_STATUS.items()
                if code not in (ErrorCode.TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA)}


def via_rest(url: str, case: Case) -> tuple[ErrorCode | None, list[Any]]:
    version = f"/versions/{case.version}" if case.version else ""
    body: dict[str, Any] = {"inputs": [
        {"name": t.name, "datatype": t.datatype, "shape": t.shape, "data": t.data}
        for t in case.inputs]}
    if case.outputs:
        body["outputs"] = [{"name": name} for name in case.outputs]
    if case.parameters:
        body["parameters"] = case.parameters
    response = httpx.post(f"{url}/v2/models/{case.model}{version}/infer", json=body)
    if response.status_code != 200:
        return HTTP_TO_CODE[response.status_code], []
    return None, [(o["name"], o["datatype"], o["shape"], o["data"])
                  for o in response.json()["outputs"]]


def via_grpc(stub: pb_grpc.GRPCInferenceServiceStub, case: Case
             ) -> tuple[ErrorCode | None, list[Any]]:
    request = pb.ModelInferRequest(model_name=case.model, model_version=case.version)
    for t in case.inputs:
        tensor = request.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        field_name = CONTENTS_FIELD.get(t.datatype, "fp32_contents")
        values = [v.encode() for v in t.data] if t.datatype == "BYTES" else t.data
        try:
            getattr(tensor.contents, field_name).extend(values)
        except (ValueError, TypeError):  # a value protobuf itself cannot hold in that field
            return ErrorCode.INVALID_INPUT, []
    for name in case.outputs:
        request.outputs.add(name=name)
    for key, value in case.parameters.items():
        if isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = value
    try:
        response = stub.ModelInfer(request)
    except grpc.RpcError as err:
        return GRPC_TO_CODE[err.code()], []
    outputs = []
    for o in response.outputs:
        values = list(getattr(o.contents, CONTENTS_FIELD[o.datatype]))
        if o.datatype == "BYTES":
            values = [v.decode() for v in values]
        outputs.append((o.name, o.datatype, list(o.shape), values))
    return None, outputs


@pytest.fixture(scope="module")
def stub(grpc_target: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("case", TABLE.values(), ids=TABLE.keys())
def test_rest_and_grpc_agree(base_url: str, stub: pb_grpc.GRPCInferenceServiceStub,
                             case: Case) -> None:
    rest_outcome, rest_outputs = via_rest(base_url, case)
    grpc_outcome, grpc_outputs = via_grpc(stub, case)
    assert rest_outcome == grpc_outcome == case.outcome
    assert rest_outputs == grpc_outputs
