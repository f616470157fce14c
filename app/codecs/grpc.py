"""v2 protobuf messages <-> InferRequest / InferResponse: typed contents or raw bytes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from app.codecs import dtypes
from app.codecs.request_checks import RequestChecks, check_range
from app.codecs.shm import ShmUse, uses_shm
from app.codecs.tensors import (
    TensorLimits,
    array_from_buffer,
    array_to_bytes,
    array_view,
    bytes_element_too_long,
    not_utf8,
)
from app.errors import InvalidInput
from app.protos_gen import inference_pb2 as pb
from app.types import Array, InferRequest, InferResponse, ParamValue, RequestedOutput


def parameters_from_proto(params: Mapping[str, pb.InferParameter]) -> dict[str, ParamValue]:
    """Protobuf parameter map -> plain values (the oneof that is set)."""
    values: dict[str, ParamValue] = {}
    if not params:  # most maps, on the hot path: no items() view, no loop
        return values
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(param, choice)
    return values


def parameters_to_proto(values: Mapping[str, ParamValue]) -> dict[str, pb.InferParameter]:
    """Plain values -> protobuf parameters (int64 for ints, as Triton's clients read them)."""
    out: dict[str, pb.InferParameter] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = pb.InferParameter(bool_param=value)
        elif isinstance(value, int):
            out[key] = pb.InferParameter(int64_param=value)
        elif isinstance(value, float):
            out[key] = pb.InferParameter(double_param=value)
        else:
            out[key] = pb.InferParameter(string_param=value)
    return out


def decode_request(message: pb.ModelInferRequest, limits: TensorLimits,
                   raw_inputs: Sequence[bytes | memoryview] = (),
                   shm: ShmUse | None = None) -> InferRequest:
    """Decode a ModelInferRequest; raw_input_contents, when used, covers every input not in
    shared memory (read through `shm`). `raw_inputs` stands for the message's
    raw_input_contents when it was split off (codecs/grpc_wire.py)."""
    checks = RequestChecks("grpc", limits, shm)
    parameters = parameters_from_proto(message.parameters)
    checks.request_parameters(parameters)
    outputs = checks.outputs(_requested_outputs(message, checks), len(message.inputs))
    raw: Sequence[bytes | memoryview] = raw_inputs or message.raw_input_contents
    inputs = message.inputs
    tensor_parameters = [parameters_from_proto(t.parameters) for t in inputs]  # read once
    in_shm = [uses_shm(p) for p in tensor_parameters]
    if raw and len(raw) != len(inputs) - sum(in_shm):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(inputs) - sum(in_shm)} inputs outside shared memory; give one "
            "raw entry per input, in order"
        )
    raw_left = iter(raw) if raw else None
    for position, tensor in enumerate(inputs):
        _decode_input(checks, position, tensor, tensor_parameters[position], in_shm[position],
                      raw_left)
    return checks.request(message.model_name, message.model_version or None,
                          message.id or None, parameters, outputs)


def _decode_input(checks: RequestChecks, position: int,
                  tensor: pb.ModelInferRequest.InferInputTensor,
                  tensor_parameters: dict[str, ParamValue], in_shm: bool,
                  raw: Iterator[bytes | memoryview] | None) -> None:
    """One input (`tensor_parameters`: its parameters, read): from its region, its
    raw_input_contents entry (`raw`) or its contents."""
    name = tensor.name
    if not name:
        raise InvalidInput(f"inputs[{position}] has no name")
    checks.input_name(name)
    checks.input_parameters(name, tensor_parameters)
    dt = checks.datatype(name, tensor.datatype)
    shape = list(tensor.shape)
    count = checks.shape(name, shape)
    if in_shm:
        array = checks.shm_input(name, tensor.HasField("contents"), dt, shape, count,
                                 tensor_parameters)
    elif raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(
                f"input '{name}': set either contents or raw_input_contents, not both"
            )
        array = array_from_buffer(name, dt, shape, next(raw), count, checks.limits)
    else:
        array = _from_contents(name, dt, tensor.contents, shape, count, checks.limits)
    checks.add(name, array, dt)


def _requested_outputs(message: pb.ModelInferRequest, checks: RequestChecks
                       ) -> tuple[RequestedOutput, ...] | None:
    if not message.outputs:
        return None
    outputs: list[RequestedOutput] = []
    for wanted in message.outputs:
        checks.output_name(wanted.name)
        outputs.append(checks.output(wanted.name, parameters_from_proto(wanted.parameters)))
    return tuple(outputs)


def _from_contents(
    name: str, dt: dtypes.DataType, contents: pb.InferTensorContents, shape: list[int],
    count: int, limits: TensorLimits,
) -> Array:
    field = dt.contents_field
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
        return _bytes_contents(name, values, limits).reshape(shape)
    # float and double are protobuf's fixed-width types: packed, they are the little-endian
    # values themselves (the integer fields are varints).
    packed = _PACKED.get(dt.name)
    if packed is not None and count and len(contents.ListFields()) == 1:
        # A packed float field serializes to a short header and then the raw values:
        # slicing them off costs microseconds where converting element by element costs
        # half a millisecond for a 12,288-float image.
        wire = contents.SerializeToString()
        flat: Array = np.frombuffer(wire, packed, offset=len(wire) - count * packed.itemsize)
        return flat.astype(dt.numpy, copy=False).reshape(shape)
    wide: Array = np.array(values, dtype=dt.wire)
    if wide.dtype != dt.numpy and wide.size:
        check_range(name, dt, int(wide.min()), int(wide.max()))
    return wide.astype(dt.numpy, copy=False).reshape(shape)


#: Datatype -> its typed field's packed little-endian values, for the fixed-width (float)
#: fields only: built once, not per request.
_PACKED = {dt.name: dt.wire.newbyteorder("<") for dt in dtypes.BY_NAME.values()
           if dt.wire is not None and dt.wire.kind == "f"}


def _bytes_contents(name: str, values: Sequence[bytes], limits: TensorLimits) -> Array:
    elements = np.empty(len(values), dtype=object)
    for index, item in enumerate(values):
        if len(item) > limits.max_bytes_element_bytes:
            raise bytes_element_too_long(name, index, len(item), limits)
        try:
            elements[index] = item.decode("utf-8")
        except UnicodeDecodeError as err:
            raise not_utf8(name, index) from err
    return elements


def answers_raw(message: pb.ModelInferRequest, raw_inputs: Sequence[object] = ()) -> bool:
    """Outputs go raw when the inputs came raw (`raw_inputs` when they were split off the
    message), and when there were none to tell: Triton always answers raw, and
    tritonclient reads nothing else; so too when inputs came in shared memory."""
    if raw_inputs or message.raw_input_contents or not message.inputs:
        return True
    for tensor in message.inputs:  # a loop, not any(): no generator on every request
        parameters = tensor.parameters
        if parameters and uses_shm(parameters):
            return True
    return False


#: Datatypes without a typed contents field: an answer holding one goes all raw.
_RAW_ONLY = frozenset(name for name, dt in dtypes.BY_NAME.items() if dt.contents_field is None)


def encode_response(
    response: InferResponse, raw: bool, raw_into: list[memoryview] | None = None,
    shm_outputs: Mapping[str, Mapping[str, ParamValue]] | None = None,
) -> pb.ModelInferResponse:
    """Encode outputs typed, or all raw when `raw` (or when an output has no typed field).
    With `raw_into`, raw outputs go there (views of the arrays, not copies) instead of
    into the message's raw_output_contents (codecs/grpc_wire.py frames them).
    `shm_outputs` (name -> requested parameters) were written to regions: no data."""
    raw = raw or not _RAW_ONLY.isdisjoint(response.output_datatypes.values())
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    for name, array in response.outputs.items():
        datatype = response.output_datatypes[name]
        tensor = message.outputs.add(name=name, datatype=datatype, shape=array.shape)
        dt = dtypes.BY_NAME[datatype]
        if shm_outputs and name in shm_outputs:  # written to its region: no data
            # An empty raw entry keeps raw_output_contents aligned with outputs (Triton's way).
            if raw and raw_into is not None:
                raw_into.append(memoryview(b""))
            elif raw:
                message.raw_output_contents.append(b"")
            continue
        if raw and raw_into is not None:
            raw_into.append(array_view(array, dt))
            continue
        if raw:
            message.raw_output_contents.append(array_to_bytes(array, dt))
            continue
        flat = np.ascontiguousarray(array).reshape(-1)
        field = getattr(tensor.contents, str(dt.contents_field))
        if dt.is_bytes:
            field.extend(item.encode("utf-8") if isinstance(item, str) else bytes(item)
                         for item in flat.tolist())
        else:
            field.extend(flat.tolist())
    return message
