"""v2 protobuf messages <-> InferRequest / InferResponse: typed contents or raw bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.codecs import dtypes
from app.codecs.checks import (
    check_input_parameters,
    check_output_parameters,
    check_request_parameters,
)
from app.codecs.shm import ShmUse, lease_outputs, uses_shm
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


def parameters_from_proto(params: Mapping[str, pb.InferParameter]) -> dict[str, ParamValue]:
    """Protobuf parameter map -> plain values (the oneof that is set)."""
    values: dict[str, ParamValue] = {}
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
    parameters = parameters_from_proto(message.parameters)
    check_request_parameters(parameters, "grpc")
    outputs = _requested_outputs(message)
    lease_outputs(shm, outputs)
    limits.check_inputs(len(message.inputs))
    raw: Sequence[bytes | memoryview] = raw_inputs or message.raw_input_contents
    in_shm = [uses_shm(parameters_from_proto(t.parameters)) for t in message.inputs]
    if raw and len(raw) != len(message.inputs) - sum(in_shm):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(message.inputs) - sum(in_shm)} inputs outside shared memory; give one "
            "raw entry per input, in order"
        )
    raw_index = 0
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    total = 0
    for position, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{position}] has no name")
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears more than once")
        tensor_parameters = parameters_from_proto(tensor.parameters)
        check_input_parameters(name, tensor_parameters, "grpc")
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
        if in_shm[position]:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input '{name}': give either its data or a shared memory "
                                   "region, not both")
            inputs[name] = ShmUse.read(shm, name, dt, shape, count, tensor_parameters, limits)
        elif raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input '{name}': set either contents or raw_input_contents, not both"
                )
            inputs[name] = array_from_buffer(name, dt, shape, raw[raw_index], count, limits)
            raw_index += 1
        else:
            inputs[name] = _from_contents(name, dt, tensor.contents, shape, count, limits)
        datatypes[name] = dt.name
    return InferRequest(
        model_name=message.model_name,
        version=message.model_version or None,
        inputs=inputs,
        input_datatypes=datatypes,
        id=message.id or None,
        parameters=parameters,
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
        parameters = parameters_from_proto(wanted.parameters)
        check_output_parameters(wanted.name, parameters, "grpc")
        outputs.append(RequestedOutput(wanted.name, parameters))
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
    # float and double are protobuf's fixed-width types: packed, they are the little-endian
    # values themselves (the integer fields are varints).
    packed = dt.wire.newbyteorder("<") if dt.wire is not None and dt.wire.kind == "f" else None
    if packed is not None and count and len(contents.ListFields()) == 1:
        # A packed float field serializes to a short header and then the raw values:
        # slicing them off costs microseconds where converting element by element costs
        # half a millisecond for a 12,288-float image.
        wire = contents.SerializeToString()
        flat: Array = np.frombuffer(wire, packed, offset=len(wire) - count * packed.itemsize)
        return flat.astype(dt.numpy, copy=False).reshape(shape)
    wide: Array = np.array(values, dtype=dt.wire)
    if wide.dtype != dt.numpy and wide.size:
        info = np.iinfo(dt.numpy)  # type: ignore[type-var]
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(
                f"input '{name}': a value is outside the {dt.name} range [{info.min}, {info.max}]"
            )
    return wide.astype(dt.numpy, copy=False).reshape(shape)


def answers_raw(message: pb.ModelInferRequest, raw_inputs: Sequence[object] = ()) -> bool:
    """Outputs go raw when the inputs came raw (`raw_inputs` when they were split off the
    message), and when there were none to tell: Triton always answers raw, and
    tritonclient reads nothing else; so too when inputs came in shared memory."""
    return bool(raw_inputs or message.raw_input_contents) or not message.inputs \
        or any(uses_shm(t.parameters) for t in message.inputs)


def encode_response(
    response: InferResponse, raw: bool, raw_into: list[memoryview] | None = None,
    shm_outputs: Mapping[str, Mapping[str, ParamValue]] | None = None,
) -> pb.ModelInferResponse:
    """Encode outputs typed, or all raw when `raw` (or when an output has no typed field).
    With `raw_into`, raw outputs go there (views of the arrays, not copies) instead of
    into the message's raw_output_contents (codecs/grpc_wire.py frames them).
    `shm_outputs` (name -> requested parameters) were written to regions: no data."""
    raw = raw or any(dtypes.BY_NAME[d].contents_field is None
                     for d in response.output_datatypes.values())
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
