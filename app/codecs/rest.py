"""v2 REST JSON and Triton's binary tensor extension <-> InferRequest / InferResponse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.codecs import dtypes
from app.codecs.checks import (
    check_input_parameters,
    check_output_parameters,
    check_request_parameters,
    shown,
)
from app.codecs.dtypes import JsonKind
from app.codecs.json_request import TensorData, parse_request_document
from app.codecs.shm import ShmUse, lease_outputs, shm_output, uses_shm
from app.codecs.tensors import (
    TensorLimits,
    array_from_buffer,
    array_to_bytes,
    bytes_element_too_long,
    element_count,
    infer_raw_shape,
)
from app.errors import InvalidInput
from app.settings import env_var
from app.types import Array, InferRequest, InferResponse, ParamValue, RequestedOutput, TensorSpec

#: Reserved parameter names of the binary tensor data extension.
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"


@dataclass(frozen=True, slots=True)
class RestLimits:
    """What the REST decoder accepts; see Settings.http for the documented knobs."""

    tensors: TensorLimits = TensorLimits()  # noqa: RUF009 - frozen, so sharing is safe
    json_half_precision: bool = False
    max_json_depth: int = 32


def decode_request(
    model_name: str,
    version: str | None,
    body: bytes,
    header_length: int | None,
    limits: RestLimits,
    shm: ShmUse | None = None,
) -> InferRequest:
    """Decode a JSON body, or a JSON header followed by binary tensor chunks; tensors in
    system shared memory through `shm`."""
    json_end = len(body) if header_length is None else header_length
    if json_end > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {json_end} but the body has only {len(body)} bytes"
        )
    document = parse_request_document(body[:json_end], limits.max_json_depth)
    binary = memoryview(body)[json_end:]

    _known_fields(document, _REQUEST_FIELDS, "request")
    raw_inputs = _required_list(document, "inputs", "request")
    parameters = _parameters(document.get("parameters"), "request")
    check_request_parameters(parameters, "http")
    outputs = _requested_outputs(document.get("outputs"))
    lease_outputs(shm, outputs)
    limits.tensors.check_inputs(len(raw_inputs))
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    total = 0
    for position, raw in enumerate(raw_inputs):
        tensor = _object(raw, f"inputs[{position}]")
        name = _string(tensor, "name", f"inputs[{position}]")
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears more than once")
        array, dt, used = _decode_input(name, tensor, binary, offset, total, limits, shm)
        offset += used
        total += array.size
        inputs[name] = array
        datatypes[name] = dt.name
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the last binary input "
            "(binary_data_size values do not add up to the body)"
        )
    return InferRequest(
        model_name=model_name,
        version=version,
        inputs=inputs,
        input_datatypes=datatypes,
        id=_optional_id(document),
        parameters=parameters,
        outputs=outputs,
    )


def decode_raw_request(
    model_name: str,
    version: str | None,
    body: bytes,
    spec: TensorSpec,
    batched: bool,
    limits: RestLimits,
) -> InferRequest:
    """Decode a raw binary request (header length 0): the body is the single input's bytes."""
    dt = dtypes.by_name(spec.datatype)
    if dt is None:  # pragma: no cover - signatures only hold known datatypes
        raise InvalidInput(f"input '{spec.name}' has unsupported datatype {spec.datatype}")
    dims = list(spec.shape[1:]) if batched else list(spec.shape)
    if dt.is_bytes:
        if dims not in ([1], [-1]):
            raise InvalidInput(
                f"a raw binary request for BYTES input '{spec.name}' needs shape [1]; "
                f"the model declares {list(spec.shape)}"
            )
        shape = [1]
    else:
        shape = infer_raw_shape(spec.name, dt, dims, len(body))
    if batched:
        shape = [1, *shape]
    count = element_count(spec.name, shape, limits.tensors)
    array = array_from_buffer(spec.name, dt, shape, body, count, limits.tensors)
    return InferRequest(
        model_name=model_name,
        version=version,
        inputs={spec.name: array},
        input_datatypes={spec.name: dt.name},
        parameters={BINARY_DATA_OUTPUT: True},
    )


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and, when binary chunks follow, the JSON length."""
    default_binary = bool(request.parameters.get(BINARY_DATA_OUTPUT, False))
    per_output: Mapping[str, RequestedOutput] = {o.name: o for o in request.outputs or ()}
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in response.outputs.items():
        dt = dtypes.BY_NAME[response.output_datatypes[name]]
        entry: dict[str, Any] = {"name": name, "datatype": dt.name, "shape": list(array.shape)}
        wanted = per_output.get(name)
        if wanted is not None and shm_output(wanted.parameters):
            # Written to its region: no data, and no parameters (Triton's C++ client takes
            # an output's parameters for binary_data_size's).
            outputs.append(entry)
            continue
        binary = default_binary
        if wanted is not None and BINARY_DATA in wanted.parameters:
            binary = bool(wanted.parameters[BINARY_DATA])
        if binary:
            chunk = array_to_bytes(array, dt)
            entry["parameters"] = {BINARY_DATA_SIZE: len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _json_data(array, dt)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _json_data(array: Array, dt: dtypes.DataType) -> Any:
    """Flat, row-major JSON data; FP16 widens to float64, whose shortest repr is exact."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if dt.is_bytes:
        return [item if isinstance(item, str) else bytes(item).decode("utf-8", "replace")
                for item in flat.tolist()]
    if dt.json is JsonKind.HALF:
        return flat.astype(np.float64)
    return flat


def _decode_input(
    name: str,
    tensor: Mapping[str, Any],
    binary: memoryview,
    offset: int,
    total: int,
    limits: RestLimits,
    shm: ShmUse | None = None,
) -> tuple[Array, dtypes.DataType, int]:
    """One input; `total`: the elements of the inputs before it (for max_request_elements)."""
    where = f"input '{name}'"
    _known_fields(tensor, _INPUT_FIELDS, where)
    parameters = _parameters(tensor.get("parameters"), where)
    check_input_parameters(name, parameters, "http")
    datatype = _string(tensor, "datatype", where)
    dt = dtypes.by_name(datatype)
    if dt is None:
        known = ", ".join(dtypes.BY_NAME)
        raise InvalidInput(f"{where}: unknown datatype '{datatype}' (expected one of {known})")
    shape = _shape(tensor.get("shape"), where)
    count = element_count(name, shape, limits.tensors)
    limits.tensors.check_total(total + count)
    if uses_shm(parameters):
        if "data" in tensor or BINARY_DATA_SIZE in parameters:
            raise InvalidInput(f"{where}: give either its data or a shared memory region, "
                               "not both")
        return ShmUse.read(shm, name, dt, shape, count, parameters, limits.tensors), dt, 0
    size = parameters.get(BINARY_DATA_SIZE)
    if size is not None:
        if "data" in tensor:
            raise InvalidInput(f"{where}: give either 'data' or binary_data_size, not both")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(
                f"{where}: binary_data_size is {size} but only {len(binary) - offset} bytes "
                "of binary data remain in the body"
            )
        array = array_from_buffer(name, dt, shape, binary[offset : offset + size], count,
                                  limits.tensors)
        return array, dt, size
    if "data" not in tensor:
        raise InvalidInput(f"{where}: has neither 'data' nor a binary_data_size parameter")
    return _array_from_json(name, tensor["data"], dt, shape, count, limits), dt, 0


def _array_from_json(
    name: str, data: Any, dt: dtypes.DataType, shape: list[int], count: int, limits: RestLimits
) -> Array:
    where = f"input '{name}'"
    if dt.json is JsonKind.HALF and not limits.json_half_precision:
        raise InvalidInput(
            f"{where}: {dt.name} data cannot be sent as JSON numbers; send it as binary "
            f"(binary_data_size) or start the server with {env_var('http.json_half_precision')}"
            "=true"
        )
    if isinstance(data, TensorData):
        numbers = _numbers(where, data, dt, count)
        if numbers is not None:
            return numbers.reshape(shape)
        data = data.as_list()  # not plain numbers of the right count: decoded the slow way
    kind = object if dt.is_bytes else None
    if dt.is_bytes and isinstance(data, list) and any(isinstance(item, list) for item in data):
        data = _flattened(data)  # an object array would keep irregular lists as elements
    try:
        array = np.array(data, dtype=kind)
    except ValueError:
        # Irregular nesting is flattened in row-major order, as Triton (and the simdjson path)
        # do; only the element count must match the shape.
        data = _flattened(data)
        try:
            array = np.array(data, dtype=kind)
        except (ValueError, TypeError, OverflowError) as err:
            raise InvalidInput(f"{where}: 'data' cannot be read as numbers: {err}") from err
    except (TypeError, OverflowError) as err:
        raise InvalidInput(f"{where}: 'data' cannot be read as numbers: {err}") from err
    if array.size != count:
        raise InvalidInput(
            f"{where}: shape {shape} needs {count} elements, 'data' has {array.size}"
        )
    return _coerce(name, data, array, dt, limits.tensors).reshape(shape)


def _flattened(data: Any) -> list[Any]:
    """Every leaf of nested lists, in row-major order (depth is bounded by max_json_depth)."""
    if not isinstance(data, list):
        return [data]
    return [leaf for item in data for leaf in _flattened(item)]


def _numbers(where: str, data: TensorData, dt: dtypes.DataType, count: int) -> Array | None:
    """Numeric data without a Python object per element, or None for the general path.

    Nested arrays are flattened like Triton does (only the element count is checked).
    """
    if dt.json in (JsonKind.STRING, JsonKind.BOOL):
        return None
    integers = dt.json is JsonKind.INTEGER
    flat = data.numbers(integers)
    if flat is None or flat.size != count:
        return None
    if integers and flat.size:
        info = np.iinfo(dt.numpy)  # type: ignore[type-var]
        if flat.min() < info.min or flat.max() > info.max:
            raise InvalidInput(_out_of_range(where, dt))
    return flat.astype(dt.numpy)


def _out_of_range(where: str, dt: dtypes.DataType) -> str:
    info = np.iinfo(dt.numpy)  # type: ignore[type-var]
    return f"{where}: a value is outside the {dt.name} range [{info.min}, {info.max}]"


def _coerce(name: str, data: Any, array: Array, dt: dtypes.DataType,
            limits: TensorLimits) -> Array:
    """Check JSON element kinds against the datatype, then convert without silent wrap-around."""
    where = f"input '{name}'"
    if array.size == 0:
        return array.astype(dt.numpy)
    kind = array.dtype.kind
    if dt.is_bytes:
        flat = array.reshape(-1)
        if not all(isinstance(item, str) for item in flat):
            raise InvalidInput(f"{where}: BYTES 'data' must hold JSON strings")
        _check_string_lengths(name, flat, limits)
        return array
    if dt.json is JsonKind.BOOL:
        if kind != "b":
            raise InvalidInput(f"{where}: BOOL 'data' must hold true/false")
        return array
    if dt.json is JsonKind.INTEGER:
        return _integers(where, data, array, dt)
    if kind not in "iuf":
        raise InvalidInput(f"{where}: {dt.name} 'data' must hold JSON numbers")
    return array.astype(dt.numpy)


def _check_string_lengths(name: str, flat: Array, limits: TensorLimits) -> None:
    """Each BYTES element's UTF-8 length within the limit (a character takes at most 4
    bytes, so only long strings are encoded to measure them)."""
    limit = limits.max_bytes_element_bytes
    for index, item in enumerate(flat):
        if len(item) * 4 > limit:
            length = len(item.encode("utf-8", "surrogatepass"))
            if length > limit:
                raise bytes_element_too_long(name, index, length, limits)


def _integers(where: str, data: Any, array: Array, dt: dtypes.DataType) -> Array:
    """Integers, exactly: numpy widens a mix of huge ints to float64, so check those by hand."""
    info = np.iinfo(dt.numpy)  # type: ignore[type-var]
    out_of_range = _out_of_range(where, dt)
    if array.dtype.kind not in "iu":
        items = np.array(data, dtype=object).reshape(-1).tolist()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise InvalidInput(f"{where}: {dt.name} 'data' must hold JSON integers")
        if min(items) < info.min or max(items) > info.max:
            raise InvalidInput(out_of_range)
        return np.array(items, dtype=dt.numpy).reshape(array.shape)
    if array.min() < info.min or array.max() > info.max:
        raise InvalidInput(out_of_range)
    return array.astype(dt.numpy)


#: The fields of the v2 JSON objects; any other is refused rather than ignored.
_REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
_INPUT_FIELDS = ("name", "shape", "datatype", "parameters", "data")
_OUTPUT_FIELDS = ("name", "parameters")


def _known_fields(value: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    unknown = [key for key in value if key not in fields]
    if unknown:
        raise InvalidInput(f"{where}: field {shown(unknown[0])} is not part of the v2 "
                           f"protocol (expected {', '.join(fields)})")


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    return value


def _required_list(document: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise InvalidInput(f"{where} needs '{key}' as a JSON array")
    return value


def _string(tensor: Mapping[str, Any], key: str, where: str) -> str:
    value = tensor.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}: '{key}' must be a non-empty string")
    return value


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        raise InvalidInput(f"{where}: 'shape' must be an array of integers")
    return value


def _optional_id(document: Mapping[str, Any]) -> str | None:
    value = document.get("id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("request 'id' must be a string")
    return value


def _parameters(value: Any, where: str) -> dict[str, ParamValue]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: 'parameters' must be a JSON object")
    for key, item in value.items():
        if not isinstance(item, (str, int, float, bool)):
            raise InvalidInput(
                f"{where}: parameter '{key}' must be a string, number or boolean"
            )
    return value


def _requested_outputs(value: Any) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput("request 'outputs' must be a JSON array")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for position, raw in enumerate(value):
        where = f"outputs[{position}]"
        tensor = _object(raw, where)
        name = _string(tensor, "name", where)
        _known_fields(tensor, _OUTPUT_FIELDS, f"output '{name}'")
        if name in seen:
            raise InvalidInput(f"output '{name}' is requested more than once")
        seen.add(name)
        parameters = _parameters(tensor.get("parameters"), where)
        check_output_parameters(name, parameters, "http")
        outputs.append(RequestedOutput(name, parameters))
    return tuple(outputs)
