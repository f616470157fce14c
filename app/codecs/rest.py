"""v2 REST JSON and Triton's binary tensor extension <-> InferRequest / InferResponse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.codecs import dtypes
from app.codecs.checks import shown
from app.codecs.json_request import parse_request_document
from app.codecs.json_tensors import array_from_json
from app.codecs.request_checks import RequestChecks, element_count
from app.codecs.rest_response import (  # noqa: F401 - the extension's names, as before
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    encode_response_parts,
)
from app.codecs.shm import ShmUse, uses_shm
from app.codecs.tensors import (
    TensorLimits,
    array_from_buffer,
    infer_raw_shape,
)
from app.errors import InvalidInput
from app.types import InferRequest, InferResponse, ParamValue, RequestedOutput, TensorSpec


@dataclass(frozen=True, slots=True)
class RestLimits:
    """What the REST decoder accepts; see Settings.http for the documented knobs."""

    tensors: TensorLimits = TensorLimits()  # noqa: RUF009 - frozen, so sharing is safe
    json_half_precision: bool = False
    max_json_depth: int = 32


def decode_request(
    model_name: str,
    version: str | None,
    body: bytes | memoryview,
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
    checks = RequestChecks("http", limits.tensors, shm)
    _known_fields(document, _REQUEST_FIELDS, "request")
    raw_inputs = _required_list(document, "inputs", "request")
    parameters = _parameters(document.get("parameters"), "request")
    checks.request_parameters(parameters)
    outputs = checks.outputs(_requested_outputs(document.get("outputs"), checks),
                             len(raw_inputs))
    offset = 0
    for position, raw in enumerate(raw_inputs):
        tensor = _object(raw, f"inputs[{position}]")
        name = _string(tensor, "name", f"inputs[{position}]")
        checks.input_name(name)
        offset += _decode_input(checks, name, tensor, binary, offset, limits)
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the last binary input "
            "(binary_data_size values do not add up to the body)"
        )
    return checks.request(model_name, version, _optional_id(document), parameters, outputs)


def decode_raw_request(
    model_name: str,
    version: str | None,
    body: bytes | memoryview,
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
    parts, json_length = encode_response_parts(response, request)
    return (bytes(parts[0]) if len(parts) == 1 else b"".join(parts)), json_length


def _decode_input(checks: RequestChecks, name: str, tensor: Mapping[str, Any],
                  binary: memoryview, offset: int, limits: RestLimits) -> int:
    """One input, added to `checks`; returns the bytes of `binary` (from `offset`) it used."""
    where = f"input '{name}'"
    _known_fields(tensor, _INPUT_FIELDS, where)
    parameters = _parameters(tensor.get("parameters"), where)
    checks.input_parameters(name, parameters)
    dt = checks.datatype(name, _string(tensor, "datatype", where))
    shape = _shape(tensor.get("shape"), where)
    count = checks.shape(name, shape)
    used = 0
    if uses_shm(parameters):
        array = checks.shm_input(name, "data" in tensor or BINARY_DATA_SIZE in parameters, dt,
                                 shape, count, parameters)
    elif BINARY_DATA_SIZE in parameters:
        used = _binary_size(where, tensor, parameters[BINARY_DATA_SIZE], len(binary) - offset)
        array = array_from_buffer(name, dt, shape, binary[offset : offset + used], count,
                                  limits.tensors)
    elif "data" not in tensor:
        raise InvalidInput(f"{where}: has neither 'data' nor a binary_data_size parameter")
    else:
        array = array_from_json(name, tensor["data"], dt, shape, count, limits.tensors,
                                limits.json_half_precision)
    checks.add(name, array, dt)
    return used


def _binary_size(where: str, tensor: Mapping[str, Any], size: ParamValue, left: int) -> int:
    """An input's binary_data_size, checked against the `left` bytes of binary data."""
    if "data" in tensor:
        raise InvalidInput(f"{where}: give either 'data' or binary_data_size, not both")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
    if size > left:
        raise InvalidInput(
            f"{where}: binary_data_size is {size} but only {left} bytes "
            "of binary data remain in the body"
        )
    return size


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


def _requested_outputs(value: Any, checks: RequestChecks) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput("request 'outputs' must be a JSON array")
    outputs: list[RequestedOutput] = []
    for position, raw in enumerate(value):
        where = f"outputs[{position}]"
        tensor = _object(raw, where)
        name = _string(tensor, "name", where)
        _known_fields(tensor, _OUTPUT_FIELDS, f"output '{name}'")
        checks.output_name(name)
        outputs.append(checks.output(name, _parameters(tensor.get("parameters"), where)))
    return tuple(outputs)
