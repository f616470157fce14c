"""The raw tensor fields of inference messages, read and written without copying the tensors.

protobuf's parser copies every bytes field (and again on each access), and its serializer
copies each one twice more, all holding the GIL: for a 100 MB tensor that is some 200 ms in
which no other thread, the event loop included, can run. These helpers frame the raw tensor
fields themselves and leave the small rest of each message to protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.codecs.grpc import encode_response
from app.errors import WireError
from app.types import InferResponse, ParamValue

#: Field numbers in protos/inference.proto.
RAW_INPUT_CONTENTS = 7  # ModelInferRequest.raw_input_contents
RAW_OUTPUT_CONTENTS = 6  # ModelInferResponse.raw_output_contents
INFER_RESPONSE = 2  # ModelStreamInferResponse.infer_response
_LENGTH_DELIMITED = 2


def split_raw_inputs(data: bytes) -> tuple[bytes, list[memoryview]]:
    """A ModelInferRequest as (the message without its raw_input_contents, each of those
    as a view into `data`, in order); `data` itself and [] when it has none.

    Reads only the top-level framing, in Python: a message of many small fields costs one
    step each, so callers run big messages on a worker thread.
    """
    view = memoryview(data)
    raw: list[memoryview] = []
    kept: list[memoryview] = []
    kept_from = position = 0
    end = len(data)
    while position < end:
        start = position
        key, position = _varint(data, position)
        wire = key & 7
        if wire == 0:
            _, position = _varint(data, position)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == _LENGTH_DELIMITED:
            length, position = _varint(data, position)
            body, position = position, position + length
        else:  # groups: nothing of the v2 protocol; protobuf's parser decides
            raise WireError(f"wire type {wire}")
        if position > end:
            raise WireError("truncated field")
        if key == (RAW_INPUT_CONTENTS << 3 | _LENGTH_DELIMITED):
            kept.append(view[kept_from:start])
            raw.append(view[body:position])
            kept_from = position
    if not raw:
        return data, []
    kept.append(view[kept_from:end])
    return b"".join(kept), raw


def infer_response_bytes(response: InferResponse, raw: bool, streamed: bool = False,
                         final: bool = False,
                         shm_outputs: Mapping[str, Mapping[str, ParamValue]] | None = None
                         ) -> bytes:
    """The serialized ModelInferResponse (a ModelStreamInferResponse around it when
    `streamed`), its raw outputs copied once, straight from the arrays; `final` marks it
    as its request's last answer (Triton's `triton_final_response`); `shm_outputs` as
    codecs.grpc.encode_response takes them."""
    buffers: list[memoryview] = []
    message = encode_response(response, raw, raw_into=buffers, shm_outputs=shm_outputs)
    if final:
        message.parameters["triton_final_response"].bool_param = True
    head = message.SerializeToString()
    pieces: list[bytes | memoryview] = [head]
    for buffer in buffers:
        pieces += [_key(RAW_OUTPUT_CONTENTS), _encode_varint(buffer.nbytes), buffer]
    if streamed:
        size = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in pieces)
        pieces[:0] = [_key(INFER_RESPONSE), _encode_varint(size)]
    return b"".join(pieces)


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise WireError("bad varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _key(field: int) -> bytes:
    return _encode_varint(field << 3 | _LENGTH_DELIMITED)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
