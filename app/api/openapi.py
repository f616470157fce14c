"""OpenAPI fragments for routes that parse their own bodies (v2 JSON or binary tensors)."""

from __future__ import annotations

from typing import Any

_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
_TENSOR_DATA: dict[str, Any] = {
    "description": "Row-major elements, flat or nested; omitted when binary_data_size is set.",
}
_REQUEST_INPUT: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "additionalProperties": False,  # other fields are refused, not ignored
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "examples": ["FP32", "INT64", "BYTES"]},
        "parameters": _PARAMETERS,
        "data": _TENSOR_DATA,
    },
}
_REQUEST_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
}
INFER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        # Empty for a model without inputs.
        "inputs": {"type": "array", "items": _REQUEST_INPUT},
        "outputs": {"type": "array", "items": _REQUEST_OUTPUT},
    },
}
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}

INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A v2 inference request as JSON; or, with the Inference-Header-Content-"
        "Length header, that JSON followed by binary tensor chunks (Triton's binary tensor "
        "data extension); or, with that header set to 0, the single input's raw bytes.",
        "content": {
            "application/json": {"schema": INFER_REQUEST},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting the {"error": ...} body for each status code."""
    return {
        code: {"description": "Error", "content": {"application/json": {"schema": ERROR}}}
        for code in codes
    }
