"""codecs/grpc_wire.py frames raw tensors exactly as protobuf would, without copying them."""

from __future__ import annotations

import numpy as np
import pytest

from app.codecs.grpc import decode_request, encode_response
from app.codecs.grpc_wire import infer_response_bytes, split_raw_inputs
from app.codecs.tensors import TensorLimits
from app.errors import WireError
from app.protos_gen import inference_pb2 as pb
from app.types import InferResponse

Tensor = pb.ModelInferRequest.InferInputTensor


def request(raw: list[bytes]) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(
        model_name="m", model_version="3", id="req-1",
        inputs=[Tensor(name=f"x{i}", datatype="UINT8", shape=[len(r)]) for i, r in enumerate(raw)],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="y")])
    message.parameters["priority"].int64_param = 2
    message.raw_input_contents.extend(raw)
    return message


@pytest.mark.parametrize("raw", [[], [b""], [b"abc"], [b"a" * 300, b"", bytes(range(256)) * 9]])
def test_split_gives_the_message_without_its_raw_inputs_and_views_of_them(
        raw: list[bytes]) -> None:
    data = request(raw).SerializeToString()
    rest, views = split_raw_inputs(data)
    assert [bytes(v) for v in views] == raw
    assert all(v.obj is data for v in views)  # views into the received bytes, not copies
    expected = request(raw)
    expected.ClearField("raw_input_contents")
    assert pb.ModelInferRequest.FromString(rest) == expected


def test_raw_inputs_between_other_fields_keep_every_other_field() -> None:
    # Protobuf accepts fields in any order; a client may interleave them.
    head = pb.ModelInferRequest(model_name="m").SerializeToString()
    raw = pb.ModelInferRequest(raw_input_contents=[b"\x01\x02"]).SerializeToString()
    tail = pb.ModelInferRequest(id="after", inputs=[Tensor(name="x")]).SerializeToString()
    rest, views = split_raw_inputs(head + raw + tail + raw)
    assert [bytes(v) for v in views] == [b"\x01\x02", b"\x01\x02"]
    parsed = pb.ModelInferRequest.FromString(rest)
    assert (parsed.model_name, parsed.id, parsed.inputs[0].name) == ("m", "after", "x")


@pytest.mark.parametrize("data", [b"\x3a\x05abc", b"\x3a", b"\xff" * 11, b"\x0b\x0c"])
def test_malformed_framing_is_left_to_protobuf(data: bytes) -> None:
    with pytest.raises(WireError):
        split_raw_inputs(data)


def test_split_then_decode_gives_what_protobuf_alone_gives() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    message = pb.ModelInferRequest(
        model_name="m", inputs=[Tensor(name="x", datatype="FP32", shape=[3, 4])],
        raw_input_contents=[x.tobytes()])
    rest, views = split_raw_inputs(message.SerializeToString())
    decoded = decode_request(pb.ModelInferRequest.FromString(rest), TensorLimits(), views)
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    assert decoded.inputs["x"].base is not None  # a view of the received bytes
    whole = decode_request(message, TensorLimits())
    assert (decoded.model_name, decoded.input_datatypes) == (whole.model_name,
                                                             whole.input_datatypes)


def response(**outputs: np.ndarray) -> InferResponse:
    datatypes = {n: ("BYTES" if a.dtype == object else {"f": "FP32", "i": "INT64", "b": "BOOL"}
                     [a.dtype.kind]) for n, a in outputs.items()}
    return InferResponse(model_name="m", model_version="1", outputs=outputs,
                         output_datatypes=datatypes, id="req-1")


@pytest.mark.parametrize("raw", [True, False])
def test_response_bytes_parse_to_what_protobuf_serializes(raw: bool) -> None:
    answer = response(y=np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2],  # not contiguous
                      z=np.array([[True, False]]), s=np.array(["a", "bc"], dtype=object),
                      e=np.zeros((0, 4), np.int64))
    expected = encode_response(answer, raw)
    assert pb.ModelInferResponse.FromString(infer_response_bytes(answer, raw)) == expected
    streamed = pb.ModelStreamInferResponse.FromString(infer_response_bytes(answer, raw, True))
    assert streamed == pb.ModelStreamInferResponse(infer_response=expected)
