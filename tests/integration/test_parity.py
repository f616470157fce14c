"""One table of good and bad requests, sent over REST and gRPC: outcomes agree case by case."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import numpy as np
import pytest

from app.api.status import GRPC_STATUS, HTTP_STATUS
from app.codecs import dtypes
from app.errors import ErrorCode
from app.protos_gen import inference_pb2 as pb
from app.protos_gen import inference_pb2_grpc as pb_grpc
from tests.support import onnx_models
from tests.support.server import running_server


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


Param = int | str | bool


@dataclass(frozen=True)
class Case:
    model: str
    inputs: list[Tensor]
    outcome: ErrorCode | None  # None: success
    version: str = ""
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, Param] = field(default_factory=dict)
    input_parameters: dict[str, Param] = field(default_factory=dict)  # on every input
    output_parameters: dict[str, Param] = field(default_factory=dict)  # on every output
    message: str = ""  # a refusal says this, in the same words over both transports
    #: A refusal of a transport-specific parameter: what gRPC says instead of `message`.
    grpc_message: str = ""
    limited: bool = False  # sent to the server with small tensor limits (LIMITS)


def fp32(name: str, shape: list[int], data: list[Any], datatype: str = "FP32") -> Tensor:
    return Tensor(name, datatype, shape, data)


X = fp32("x", [1, 3], [1.5, 2, 3])
X4 = fp32("x", [1, 4], [1, 2, 3, 4])
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
                             ErrorCode.INVALID_INPUT,
                             message="input 'x': a value is outside the INT8 range [-128, 127]"),
    "schedule priority": Case("id_fp32", [X], None, parameters={"priority": 1}),
    "priority above the levels": Case("id_fp32", [X], ErrorCode.INVALID_INPUT,
                                      parameters={"priority": 2}),
    "timeout not an integer": Case("id_fp32", [X], ErrorCode.INVALID_INPUT,
                                   parameters={"timeout": "soon"}),
    "unknown datatype": Case("id_fp32", [fp32("x", [1, 3], [1, 2, 3], "FLOAT32")],
                             ErrorCode.INVALID_INPUT,
                             message="input 'x': unknown datatype 'FLOAT32' (expected one of "
                                     f"{', '.join(dtypes.BY_NAME)})"),
    # Issue 14, item 3: a version is ASCII digits or a label; anything else is the client's.
    **{f"version {name}": Case("plus", [X4], ErrorCode.INVALID_INPUT, version=text,
                               message=f"version {text!r} of model 'plus' is neither a version "
                                       "number (up to 19 ASCII digits) nor a label (it has none)")
       for name, text in (("superscript two", "\u00b2"), ("arabic-indic one", "\u0661"),
                          ("negative", "-1"), ("signed", "+2"), ("spaced", " 2"),
                          ("20 digits", "2" * 20), ("no label", "stable"))},
    "version with leading zeros": Case("plus", [X4], None, version="02"),
    # Item 12: no more rows than max_batch_size (64 unless configured), as Triton.
    "full batch": Case("id_fp32", [fp32("x", [64, 3], [0] * 192)], None),
    "batch over max_batch_size": Case("id_fp32", [fp32("x", [65, 3], [0] * 195)],
                                      ErrorCode.INVALID_INPUT,
                                      message="input 'x': batch of 65 exceeds max_batch_size 64"),
    # Item 13: a model without inputs takes none; a model with inputs says which it needs.
    "model without inputs": Case("const", [], None),
    "model without inputs, output chosen": Case("const", [], None, outputs=["y"]),
    "no inputs for a model with inputs": Case(
        "add_two", [], ErrorCode.INVALID_INPUT,
        message="the request lists no inputs; the model's inputs are ['a', 'b']"),
    "an input for a model without": Case("const", [X], ErrorCode.INVALID_INPUT,
                                         message="unexpected input 'x'; the model's inputs "
                                                 "are []"),
    # Item 16: what the server does not do is refused by name, not ignored.
    "sequence id": Case("id_fp32", [X], ErrorCode.INVALID_INPUT, parameters={"sequence_id": 7},
                        message="request parameter 'sequence_id': model 'id_fp32' is not a "
                                "sequence model (its config has no sequence_batching); send "
                                "the request without sequence parameters"),
    "sequence start": Case("id_fp32", [X], ErrorCode.INVALID_INPUT,
                           parameters={"sequence_start": True},
                           message="request parameter 'sequence_start' needs a 'sequence_id'"),
    "not a sequence": Case("id_fp32", [X], None, parameters={"sequence_id": 0}),
    # Issue 19: shared memory works; a region nobody registered is refused by name.
    "shared memory input": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT,
        input_parameters={"shared_memory_region": "r", "shared_memory_byte_size": 12},
        message="input 'x': give either its data or a shared memory region, not both"),
    "shared memory output": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y"],
        output_parameters={"shared_memory_region": "r", "shared_memory_byte_size": 12},
        message="no shared memory region 'r' is registered (register it first: "
                "/v2/systemsharedmemory/region/<name>/register)"),
    "shared memory size without a region": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y"],
        output_parameters={"shared_memory_byte_size": 12},
        message="output 'y': 'shared_memory_byte_size' need parameter 'shared_memory_region' "
                "(a registered region's name)"),
    "classification of no classes": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y"],
        output_parameters={"classification": 0},
        message="output 'y': parameter 'classification' must be a positive integer (how many "
                "classes to return), got 0"),
    "classification of strings": Case(
        "id_bytes", [Tensor("x", "BYTES", [1, 3], ["a", "b", "c"])], ErrorCode.INVALID_INPUT,
        outputs=["y"], output_parameters={"classification": 1},
        message="output 'y': class result not available for output due to unsupported type "
                "'BYTES'"),
    "unknown request parameter": Case("id_fp32", [X], ErrorCode.INVALID_INPUT,
                                      parameters={"custom": "x"},
                                      message="request parameter 'custom' is not supported"),
    "unknown input parameter": Case("id_fp32", [X], ErrorCode.INVALID_INPUT,
                                    input_parameters={"custom": 1},
                                    message="input 'x': parameter 'custom' is not supported"),
    "unknown output parameter": Case("id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y"],
                                     output_parameters={"custom": 1},
                                     message="output 'y': parameter 'custom' is not supported"),
    # Issue 20: every refusal of the shared decode checks (app/codecs/request_checks.py,
    # app/codecs/checks.py) has its case here, named by the `# parity:` tag at its raise.
    "input given twice": Case("id_fp32", [X, X], ErrorCode.INVALID_INPUT,
                              message="input 'x' appears more than once"),
    "output requested twice": Case("id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y", "y"],
                                   message="output 'y' is requested more than once"),
    "rank over the limit": Case("id_fp32", [fp32("x", [1] * 33, [1])], ErrorCode.INVALID_INPUT,
                                message="input 'x': shape has 33 dimensions, more than the 32 "
                                        "a tensor may have"),
    "negative dimension": Case("id_fp32", [fp32("x", [-1, 3], [1, 2, 3])],
                               ErrorCode.INVALID_INPUT,
                               message="input 'x': shape [-1, 3] has a negative dimension"),
    "tensor over max_tensor_elements": Case(
        "id_fp32", [fp32("x", [1, 2**28 + 1], [])], ErrorCode.TOO_LARGE,
        message="input 'x': shape [1, 268435457] holds 268435457 elements, more than the "
                "limit of 268435456"),
    "inputs over max_inputs": Case(
        "id_fp32", [fp32(f"x{i}", [1, 3], [1, 2, 3]) for i in range(257)], ErrorCode.TOO_LARGE,
        message="the request has 257 inputs, more than the limit of 256"),
    "request over max_request_elements": Case(
        "add_two", [A, B], ErrorCode.TOO_LARGE, limited=True,
        message="the request's inputs hold 8+ elements, more than the limit of 6"),
    "string over max_bytes_element_bytes": Case(
        "id_bytes", [Tensor("x", "BYTES", [1, 2], ["abcd", "abcde"])], ErrorCode.TOO_LARGE,
        limited=True, message="input 'x': BYTES element 1 has 5 bytes, more than the limit of 4"),
    "shared memory without a byte size": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y"],
        output_parameters={"shared_memory_region": "r"},
        message="output 'y': parameter 'shared_memory_byte_size' is needed with "
                "'shared_memory_region'"),
    "shared memory offset not an integer": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y"],
        output_parameters={"shared_memory_region": "r", "shared_memory_byte_size": 12,
                           "shared_memory_offset": "x"},
        message="output 'y': parameter 'shared_memory_offset' must be an integer, got 'x'"),
    # The binary tensor extension is HTTP's: gRPC refuses its parameters by saying so.
    "binary_data_output not a boolean": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT, parameters={"binary_data_output": "x"},
        message="request parameter 'binary_data_output' must be true or false, got 'x'",
        grpc_message="request parameter 'binary_data_output' belongs to HTTP's binary tensor "
                     "extension"),
    "binary_data not a boolean": Case(
        "id_fp32", [X], ErrorCode.INVALID_INPUT, outputs=["y"],
        output_parameters={"binary_data": "x"},
        message="output 'y': parameter 'binary_data' must be true or false, got 'x'",
        grpc_message="output 'y': parameter 'binary_data' belongs to HTTP's binary tensor "
                     "extension"),
}
#: The tensor limits of the `limited` server, on both transports.
LIMITS = {"max_tensor_elements": 6, "max_request_elements": 6, "max_bytes_element_bytes": 4}
# FAILED_PRECONDITION (CUDA shared memory without a GPU) is HTTP 400, as INVALID_INPUT.
HTTP_TO_CODE = {status: code for code, status in HTTP_STATUS.items()
                if code is not ErrorCode.FAILED_PRECONDITION}
# Codes that share a gRPC status with another: TOO_LARGE (RESOURCE_EXHAUSTED, as OVERLOADED)
# and UNSUPPORTED_MEDIA (HTTP's Content-Encoding only; INVALID_ARGUMENT on gRPC).
GRPC_TO_CODE = {status: code for code, status in GRPC_STATUS.items()
                if code not in (ErrorCode.TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA)}


Outcome = tuple[ErrorCode | None, list[Any], str]  # code, outputs, the refusal's message


def via_rest(url: str, case: Case) -> Outcome:
    version = f"/versions/{quote(case.version, safe='')}" if case.version else ""
    body: dict[str, Any] = {"inputs": [
        {"name": t.name, "datatype": t.datatype, "shape": t.shape, "data": t.data,
         **({"parameters": case.input_parameters} if case.input_parameters else {})}
        for t in case.inputs]}
    if case.outputs:
        body["outputs"] = [{"name": name, **({"parameters": case.output_parameters}
                                             if case.output_parameters else {})}
                           for name in case.outputs]
    if case.parameters:
        body["parameters"] = case.parameters
    response = httpx.post(f"{url}/v2/models/{case.model}{version}/infer", json=body)
    if response.status_code != 200:
        return HTTP_TO_CODE[response.status_code], [], response.json()["error"]
    return None, [(o["name"], o["datatype"], o["shape"], o["data"])
                  for o in response.json()["outputs"]], ""


def set_parameters(parameters: Any, values: dict[str, Param]) -> None:
    """Each value in the InferParameter field of its type, as tritonclient sets them."""
    for key, value in values.items():
        if isinstance(value, bool):
            parameters[key].bool_param = value
        elif isinstance(value, int):
            parameters[key].int64_param = value
        else:
            parameters[key].string_param = value


def via_grpc(stub: pb_grpc.GRPCInferenceServiceStub, case: Case) -> Outcome:
    request = pb.ModelInferRequest(model_name=case.model, model_version=case.version)
    for t in case.inputs:
        tensor = request.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        set_parameters(tensor.parameters, case.input_parameters)
        known = dtypes.by_name(t.datatype)
        field_name = known.contents_field if known else None
        field_name = field_name or "fp32_contents"
        values = [v.encode() for v in t.data] if t.datatype == "BYTES" else t.data
        try:
            getattr(tensor.contents, field_name).extend(values)
        except (ValueError, TypeError):  # a value protobuf itself cannot hold in that field
            return ErrorCode.INVALID_INPUT, [], ""
    for name in case.outputs:
        set_parameters(request.outputs.add(name=name).parameters, case.output_parameters)
    set_parameters(request.parameters, case.parameters)
    try:
        response = stub.ModelInfer(request)
    except grpc.RpcError as err:
        return GRPC_TO_CODE[err.code()], [], err.details() or ""
    outputs = []
    for position, o in enumerate(response.outputs):
        if response.raw_output_contents:  # a request without inputs is answered raw
            values = np.frombuffer(response.raw_output_contents[position],
                                   dtypes.BY_NAME[o.datatype].numpy).tolist()
        else:
            values = list(getattr(o.contents, str(dtypes.BY_NAME[o.datatype].contents_field)))
        if o.datatype == "BYTES":
            values = [v.decode() for v in values]
        outputs.append((o.name, o.datatype, list(o.shape), values))
    return None, outputs, ""


@pytest.fixture(scope="module")
def stub(grpc_target: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def limited(repository: Path) -> Iterator[tuple[str, pb_grpc.GRPCInferenceServiceStub]]:
    with running_server(repository, http=LIMITS, grpc=LIMITS) as running, \
            grpc.insecure_channel(running.grpc) as channel:
        yield running.http, pb_grpc.GRPCInferenceServiceStub(channel)


def common(message: str) -> str:
    """The words of a refusal up to what differs by transport: the list of parameters each
    supports, or the setting that raises the limit (ONNX_SERVE_HTTP__* or _GRPC__*)."""
    return message.split(" (supported:")[0].split(" (setting ")[0]


@pytest.mark.parametrize("case", TABLE.values(), ids=TABLE.keys())
def test_rest_and_grpc_agree(base_url: str, stub: pb_grpc.GRPCInferenceServiceStub,
                             request: pytest.FixtureRequest, case: Case) -> None:
    if case.limited:
        base_url, stub = request.getfixturevalue("limited")
    rest_outcome, rest_outputs, rest_message = via_rest(base_url, case)
    grpc_outcome, grpc_outputs, grpc_message = via_grpc(stub, case)
    assert rest_outcome == case.outcome
    # gRPC has one status for two codes (TOO_LARGE and OVERLOADED: RESOURCE_EXHAUSTED).
    assert grpc_outcome == (GRPC_TO_CODE[GRPC_STATUS[case.outcome]] if case.outcome else None)
    assert rest_outputs == grpc_outputs
    if case.grpc_message:
        assert case.message in rest_message
        assert case.grpc_message in grpc_message
    elif case.message:
        assert case.message in rest_message
        assert common(rest_message) == common(grpc_message)
    if "(setting " in rest_message:  # each names the setting of the transport used
        assert "ONNX_SERVE_HTTP__" in rest_message and "ONNX_SERVE_GRPC__" in grpc_message


BAD_VERSIONS = ["\u00b2", "\u0661", "-1", "9" * 20, "stable"]


@pytest.mark.parametrize("version", BAD_VERSIONS)
@pytest.mark.parametrize("route", ["ready", "metadata", "config", "stats"])
def test_a_bad_version_is_the_clients_mistake_on_every_route(
        base_url: str, stub: pb_grpc.GRPCInferenceServiceStub, route: str, version: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14, item 3: 400 / INVALID_ARGUMENT with one message, no traceback in the log
    (the ready route needs no key, so a 500 there was an open log flood)."""
    suffix = {"metadata": ""}.get(route, "/" + route)
    answer = httpx.get(f"{base_url}/v2/models/plus/versions/{quote(version, safe='')}{suffix}")
    call = {"ready": (stub.ModelReady, pb.ModelReadyRequest),
            "metadata": (stub.ModelMetadata, pb.ModelMetadataRequest),
            "config": (stub.ModelConfig, pb.ModelConfigRequest),
            "stats": (stub.ModelStatistics, pb.ModelStatisticsRequest)}[route]
    with pytest.raises(grpc.RpcError) as caught:
        call[0](call[1](name="plus", version=version))
    assert answer.status_code == 400
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert answer.json()["error"] == caught.value.details()
    assert "is neither a version number" in caught.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_a_bad_version_on_the_v1_route(base_url: str, stub: pb_grpc.GRPCInferenceServiceStub,
                                       version: str) -> None:
    answer = httpx.post(f"{base_url}/v1/models/plus/versions/{quote(version, safe='')}/infer",
                        json={"inputs": []})
    assert answer.status_code == 400
    assert answer.json()["error"] == via_grpc(stub, Case("plus", [X4], None, version=version))[2]


def test_labels_still_name_versions(tmp_path: Path) -> None:
    """A configured label is a version; an unknown one is refused with the labels listed."""
    for version in (1, 2):
        onnx_models.write(tmp_path, "m", onnx_models.plus_one(value=version), version=version)
    (tmp_path / "m" / "config.yaml").write_text(
        "version_policy: {all: {}}\nversion_labels: {stable: 1, canary: 2}\n")
    with running_server(tmp_path) as running, grpc.insecure_channel(running.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert via_rest(running.http, Case("m", [X4], None, version="stable"))[1][0][3] == \
            [2, 3, 4, 5]
        assert via_grpc(stub, Case("m", [X4], None, version="canary"))[1][0][3] == [3, 4, 5, 6]
        for outcome in (via_rest(running.http, Case("m", [X4], None, version="beta")),
                        via_grpc(stub, Case("m", [X4], None, version="beta"))):
            assert outcome[0] is ErrorCode.INVALID_INPUT
            assert outcome[2] == ("version 'beta' of model 'm' is neither a version number (up "
                                  "to 19 ASCII digits) nor one of its labels (canary, stable)")
