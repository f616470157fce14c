"""v2 protobuf messages <-> InferRequest / InferResponse: typed contents or raw bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.codecs import dtypes
from app.codecs.tensors import (
    TensorLimits,
    array_from_buffer,
    array_to_bytes,
    array_view,
    bytes_element_too_long,
    element_count,
)
from app.errors import InvalidInput
from app.protos_gen import inference_pb2 as pb
from app.types import Array, InferRequest, InferResponse, ParamValue, RequestedOutput

#: v2 datatype -> the InferTensorContents field that carries it (FP16/BF16 have none).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: What a typed field holds before narrowing (the wire type of its elements).
_WIRE_DTYPE: dict[str, type] = {
    "bool_contents": np.bool_, "int_contents": np.int32, "int64_contents": np.int64,
    "uint_contents": np.uint32, "uint64_contents": np.uint64, "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def parameters_from_proto(params: Mapping[str, pb.InferParameter]) -> dict[str, ParamValue]:
    """Protobuf parameter map -> plain values (the oneof that is set)."""
    values: dict[str, ParamValue] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(param, choice)
    return values


def decode_request(message: pb.ModelInferRequest, limits: TensorLimits,
                   raw_inputs: Sequence[bytes | memoryview] = ()) -> InferRequest:
    """Decode a ModelInferRequest; raw_input_contents, when used, covers every input.
    `raw_inputs` stands for the message's raw_input_contents when it was split off
    (codecs/grpc_wire.py)."""
    limits.check_inputs(len(message.inputs))
    raw: Sequence[bytes | memoryview] = raw_inputs or message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(message.inputs)} inputs; give one raw entry per input, in order"
        )
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    total = 0
    for position, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{position}] has no name")
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears more than once")
        dt = dtypes.by_name(tensor.datatype)
        if dt is None:
            known = ", ".join(dtypes.BY_NAME)
            raise InvalidInput(
                f"input '{name}': unknown datatype '{tensor.datatype}' (expected one of {known})"
            )
        shape = list(tensor.shape)
        count = element_count(name, shape, limits)
        total += count
        limits.check_total(total)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input '{name}': set either contents or raw_input_contents, not both"
                )
            inputs[name] = array_from_buffer(name, dt, shape, raw[position], count, limits)
        else:
            inputs[name] = _from_contents(name, dt, tensor.contents, shape, count, limits)
        datatypes[name] = dt.name
    if not inputs:
        raise InvalidInput("the request must list at least one input")
    outputs = _requested_outputs(message)
    return InferRequest(
        model_name=message.model_name,
        version=message.model_version or None,
        inputs=inputs,
        input_datatypes=datatypes,
        id=message.id or None,
        parameters=parameters_from_proto(message.parameters),
        outputs=outputs,
    )


def _requested_outputs(message: pb.ModelInferRequest) -> tuple[RequestedOutput, ...] | None:
    if not message.outputs:
        return None
    seen: set[str] = set()
    outputs: list[RequestedOutput] = []
    for wanted in message.outputs:
        if wanted.name in seen:
            raise InvalidInput(f"output '{wanted.name}' is requested more than once")
        seen.add(wanted.name)
        outputs.append(RequestedOutput(wanted.name, parameters_from_proto(wanted.parameters)))
    return tuple(outputs)


#: Typed fields whose packed wire form is the little-endian values themselves.
_FIXED_WIDTH: dict[str, np.dtype[np.generic]] = {
    "fp32_contents": np.dtype("<f4"), "fp64_contents": np.dtype("<f8")}


def _from_contents(
    name: str, dt: dtypes.DataType, contents: pb.InferTensorContents, shape: list[int],
    count: int, limits: TensorLimits,
) -> Array:
    field = CONTENTS_FIELD.get(dt.name)
    if field is None:
        raise InvalidInput(
            f"input '{name}': {dt.name} has no typed contents field; send it in "
            "raw_input_contents"
        )
    values: Any = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': shape {shape} needs {count} elements, {field} has {len(values)}"
        )
    if dt.is_bytes:
        elements = np.empty(count, dtype=object)
        for index, item in enumerate(values):
            if len(item) > limits.max_bytes_element_bytes:
                raise bytes_element_too_long(name, index, len(item), limits)
            try:
                elements[index] = item.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InvalidInput(
                    f"input '{name}': BYTES element {index} is not valid UTF-8 "
                    "(ONNX string tensors hold UTF-8 text)"
                ) from err
        return elements.reshape(shape)
    packed = _FIXED_WIDTH.get(field)
    if packed is not None and count and len(contents.ListFields()) == 1:
        # A packed fixed-width field serializes to a short header and then the raw values:
        # slicing them off costs microseconds where converting element by element costs
        # half a millisecond for a 12,288-float image.
        wire = contents.SerializeToString()
        flat: Array = np.frombuffer(wire, packed, offset=len(wire) - count * packed.itemsize)
        return flat.astype(dt.numpy, copy=False).reshape(shape)
    wide: Array = np.array(values, dtype=_WIRE_DTYPE[field])
    if wide.dtype != dt.numpy and wide.size:
        info = np.iinfo(dt.numpy)  # type: ignore[type-var]
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(
                f"input '{name}': a value is outside the {dt.name} range [{info.min}, {info.max}]"
            )
    return wide.astype(dt.numpy, copy=False).reshape(shape)


def encode_response(
    response: InferResponse, raw: bool, raw_into: list[memoryview] | None = None
) -> pb.ModelInferResponse:
    """Encode outputs typed, or all raw when `raw` (or when an output has no typed field).
    With `raw_into`, raw outputs go there (views of the arrays, not copies) instead of
    into the message's raw_output_contents (codecs/grpc_wire.py frames them)."""
    raw = raw or any(CONTENTS_FIELD.get(d) is None for d in response.output_datatypes.values())
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    for name, array in response.outputs.items():
        datatype = response.output_datatypes[name]
        tensor = message.outputs.add(name=name, datatype=datatype, shape=array.shape)
        dt = dtypes.BY_NAME[datatype]
        if raw and raw_into is not None:
            raw_into.append(array_view(array, dt))
            continue
        if raw:
            message.raw_output_contents.append(array_to_bytes(array, dt))
            continue
        flat = np.ascontiguousarray(array).reshape(-1)
        field = getattr(tensor.contents, CONTENTS_FIELD[datatype])
        if dt.is_bytes:
            field.extend(item.encode("utf-8") if isinstance(item, str) else bytes(item)
                         for item in flat.tolist())
        else:
            field.extend(flat.tolist())
    return message
