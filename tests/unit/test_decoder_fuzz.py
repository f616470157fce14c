"""Property tests: whatever a client sends, the decoders answer with a client error or a request.

Arbitrary bytes, arbitrary JSON and arbitrary protobuf messages go through the REST JSON
decoder, the binary tensor extension, the raw binary form and the gRPC decoder; anything
but a request or one of our client errors (a ServingError whose code is not INTERNAL) fails.
Each bug these found is kept as an @example.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.codecs import dtypes
from app.codecs.grpc import decode_request as decode_grpc
from app.codecs.rest import RestLimits, decode_raw_request, decode_request
from app.codecs.tensors import TensorLimits
from app.errors import ErrorCode, ServingError
from app.protos_gen import inference_pb2 as pb
from app.types import InferRequest, TensorSpec

TENSORS = TensorLimits(max_tensor_elements=4096, max_request_elements=8192, max_inputs=8,
                       max_bytes_element_bytes=64)
LIMITS = RestLimits(TENSORS, max_json_depth=16)
#: Bounded so the whole module runs in a few seconds; the seeds vary from run to run.
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DATATYPES = [*dtypes.BY_NAME, "BF16", "FLOAT", ""]
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=24)
SHAPES = (st.lists(st.integers(-2, 5) | st.sampled_from([2**31, 2**63, 2**64 + 1]), max_size=4)
          | st.lists(st.sampled_from([0, 1]), min_size=30, max_size=70))


def only_client_errors(decode: Callable[[], InferRequest]) -> InferRequest | None:
    """Run one decode: a request, or a client error; any other exception fails the test."""
    try:
        return decode()
    except ServingError as err:
        assert err.code is not ErrorCode.INTERNAL, err.message
        assert err.message
        return None


def data_for(shape: list[int], datatype: str, draw: st.DrawFn) -> Any:
    """Data that sometimes fits the shape and datatype, and sometimes does not."""
    count = math.prod(shape) if all(0 <= d <= 5 for d in shape) else 3
    element: st.SearchStrategy[Any] = {
        "BOOL": st.booleans(), "BYTES": st.text(max_size=80),
        "FP32": st.floats(width=32), "FP64": st.floats(),
    }.get(datatype, st.integers(-(2**65), 2**65))
    return draw(st.lists(element, min_size=count, max_size=count) | JSON)


@st.composite
def infer_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed v2 requests, each field perturbed now and then."""
    inputs = []
    for position in range(draw(st.integers(0, 3))):
        datatype = draw(st.sampled_from(DATATYPES))
        shape = draw(SHAPES)
        tensor: dict[str, Any] = {"name": draw(st.sampled_from(["x", "y", ""])) or f"i{position}",
                                  "datatype": datatype, "shape": shape}
        if draw(st.booleans()):
            tensor["data"] = data_for(shape, datatype, draw)
        if draw(st.booleans()):
            tensor["parameters"] = draw(st.dictionaries(
                st.sampled_from(["binary_data_size", "p"]), SCALARS | JSON, max_size=2))
        inputs.append(draw(st.just(tensor) | JSON))
    document: dict[str, Any] = {"inputs": inputs}
    for key in ("id", "parameters", "outputs"):
        if draw(st.booleans()):
            document[key] = draw(JSON)
    return document


@FUZZ
@given(st.binary(max_size=512), st.none() | st.integers(0, 600))
@example(b'["\\ud800"]', None)
def test_rest_decoder_takes_any_bytes(body: bytes, header_length: int | None) -> None:
    only_client_errors(lambda: decode_request("m", None, body, header_length, LIMITS))


@FUZZ
@given(infer_documents(), st.binary(max_size=64))
@example({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["\ud800"]}]},
         b"")
def test_rest_decoder_takes_any_document(document: dict[str, Any], binary: bytes) -> None:
    head = json.dumps(document).encode()  # NaN/Infinity literals included: JSON must refuse them
    header = len(head) if binary else None
    request = only_client_errors(
        lambda: decode_request("m", None, head + binary, header, LIMITS))
    if request is not None:
        for array in request.inputs.values():
            assert array.size <= TENSORS.max_tensor_elements


@st.composite
def binary_requests(draw: st.DrawFn) -> tuple[bytes, int]:
    """A JSON header whose binary_data_size values may or may not match the chunks after it."""
    chunks = draw(st.lists(st.binary(max_size=48), min_size=1, max_size=3))
    inputs = []
    for position, chunk in enumerate(chunks):
        size = draw(st.just(len(chunk)) | st.integers(-1, 2**64))
        inputs.append({"name": f"i{position}", "datatype": draw(st.sampled_from(DATATYPES)),
                       "shape": draw(SHAPES), "parameters": {"binary_data_size": size}})
    head = json.dumps({"inputs": inputs}).encode()
    header = draw(st.just(len(head)) | st.integers(0, len(head) + 200))
    return head + b"".join(chunks), header


@FUZZ
@given(binary_requests())
@example((b'{"inputs":[{"name":"x","datatype":"BYTES","shape":[268435456],'
          b'"parameters":{"binary_data_size":4}}]}\0\0\0\0', 98))
# Bug found: an empty tensor shaped [0, 2**31, 2**63] passed the element limit (0 elements)
# and numpy's reshape raised ValueError (a 500).
@example((b'{"inputs":[{"name":"x","datatype":"FP32","shape":[0,2147483648,9223372036854775808],'
          b'"parameters":{"binary_data_size":0}}]}', 122))
def test_binary_extension_takes_any_sizes(request: tuple[bytes, int]) -> None:
    body, header = request
    only_client_errors(lambda: decode_request("m", None, body, header, LIMITS))


@FUZZ
@given(st.binary(max_size=256), st.sampled_from(list(dtypes.BY_NAME)),
       st.lists(st.integers(-1, 4), max_size=3), st.booleans())
def test_raw_binary_takes_any_body(body: bytes, datatype: str, dims: list[int],
                                   batched: bool) -> None:
    spec = TensorSpec("x", datatype, (-1, *dims) if batched else tuple(dims))
    only_client_errors(lambda: decode_raw_request("m", None, body, spec, batched, LIMITS))


def _contents(draw: st.DrawFn) -> pb.InferTensorContents:
    contents = pb.InferTensorContents()
    field = draw(st.sampled_from(["bool_contents", "int_contents", "int64_contents",
                                  "uint_contents", "uint64_contents", "fp32_contents",
                                  "fp64_contents", "bytes_contents"]))
    values = {
        "bool_contents": st.booleans(), "int_contents": st.integers(-(2**31), 2**31 - 1),
        "int64_contents": st.integers(-(2**63), 2**63 - 1),
        "uint_contents": st.integers(0, 2**32 - 1), "uint64_contents": st.integers(0, 2**64 - 1),
        "fp32_contents": st.floats(width=32), "fp64_contents": st.floats(),
        "bytes_contents": st.binary(max_size=80),
    }[field]
    getattr(contents, field).extend(draw(st.lists(values, max_size=12)))
    return contents


@st.composite
def grpc_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m")
    raw = draw(st.booleans())
    for position in range(draw(st.integers(0, 3))):
        tensor = message.inputs.add(name=draw(st.sampled_from(["x", "", f"i{position}"])),
                                    datatype=draw(st.sampled_from(DATATYPES)),
                                    shape=draw(SHAPES.filter(lambda s: all(
                                        -(2**63) <= d < 2**63 for d in s))))
        if not raw or draw(st.integers(0, 9)) == 0:
            tensor.contents.CopyFrom(_contents(draw))
        if raw and draw(st.integers(0, 9)):
            message.raw_input_contents.append(draw(st.binary(max_size=64)))
    for name in draw(st.lists(st.sampled_from(["y", "z", ""]), max_size=2)):
        message.outputs.add(name=name)
    return message


@FUZZ
@given(grpc_requests())
@example(pb.ModelInferRequest(inputs=[pb.ModelInferRequest.InferInputTensor(
    name="x", datatype="BYTES", shape=[2**28])], raw_input_contents=[b"\0\0\0\0"]))
# Bug found: the same zero-size shape over gRPC typed contents, and a rank-65 shape (numpy's
# reshape raised ValueError: "maximum supported dimension").
@example(pb.ModelInferRequest(inputs=[pb.ModelInferRequest.InferInputTensor(
    name="x", datatype="BOOL", shape=[0, 2**31, 2**62])]))
@example(pb.ModelInferRequest(inputs=[pb.ModelInferRequest.InferInputTensor(
    name="x", datatype="INT32", shape=[1] * 65, contents=pb.InferTensorContents(
        int_contents=[7]))]))
def test_grpc_decoder_takes_any_message(message: pb.ModelInferRequest) -> None:
    request = only_client_errors(lambda: decode_grpc(message, TENSORS))
    if request is not None:
        for name, array in request.inputs.items():
            assert isinstance(array, np.ndarray), name


@FUZZ
@given(st.binary(max_size=512))
def test_grpc_decoder_takes_any_bytes_that_parse(wire: bytes) -> None:
    """grpc.aio parses the message first (a parse failure never reaches our code)."""
    try:
        message = pb.ModelInferRequest.FromString(wire)
    except DecodeError:
        return
    only_client_errors(lambda: decode_grpc(message, TENSORS))
