"""Raw tensor bytes <-> numpy: the little-endian row-major layout of REST binary and gRPC raw."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.codecs.dtypes import DataType
from app.errors import InvalidInput, RequestTooLarge
from app.settings import env_var
from app.types import Array

if TYPE_CHECKING:
    from app.settings import GrpcSettings, HttpSettings

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class TensorLimits:
    """What one request may hold, whatever its transport (the Http/GrpcSettings fields).

    `group` is the settings group ("http" or "grpc"), so a refusal names the variable that
    raises the limit for the transport the client used.
    """

    max_tensor_elements: int = 1 << 28
    max_request_elements: int = 1 << 28
    max_inputs: int = 256
    max_bytes_element_bytes: int = 16 << 20
    group: str = "http"

    @classmethod
    def of(cls, settings: HttpSettings | GrpcSettings, group: str) -> TensorLimits:
        """The limits of one listener's settings group ("http" or "grpc")."""
        return cls(settings.max_tensor_elements, settings.max_request_elements,
                   settings.max_inputs, settings.max_bytes_element_bytes, group)

    def refuse(self, message: str, setting: str) -> RequestTooLarge:
        """The error for a request over the limit `setting` (a field name)."""
        return RequestTooLarge(f"{message} (setting {env_var(f'{self.group}.{setting}')})")


_DEFAULT_LIMITS = TensorLimits()


def bytes_element_too_long(name: str, index: int, length: int,
                           limits: TensorLimits) -> RequestTooLarge:
    return limits.refuse(f"input '{name}': BYTES element {index} has {length} bytes, more "
                         f"than the limit of {limits.max_bytes_element_bytes}",
                         "max_bytes_element_bytes")


def not_utf8(name: str, index: int) -> InvalidInput:
    return InvalidInput(f"input '{name}': BYTES element {index} is not valid UTF-8 "
                        "(ONNX string tensors hold UTF-8 text)")


def array_from_buffer(
    name: str, dt: DataType, shape: Sequence[int], buffer: bytes | memoryview, count: int,
    limits: TensorLimits = _DEFAULT_LIMITS,
) -> Array:
    """Decode one tensor's raw bytes; the buffer must hold exactly `shape`'s elements."""
    if dt.is_bytes:
        return _bytes_elements(name, buffer, count, limits).reshape(shape)
    expected = count * dt.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input '{name}': {dt.name} {list(shape)} needs {expected} bytes of data, "
            f"got {len(buffer)}"
        )
    array = np.frombuffer(buffer, dtype=dt.numpy.newbyteorder("<"))
    return array.reshape(shape)


def array_to_bytes(array: Array, dt: DataType) -> bytes:
    """Encode one tensor as raw bytes (BYTES: each element as 4-byte LE length + UTF-8)."""
    if dt.is_bytes:
        parts: list[bytes] = []
        for item in array.ravel():
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=dt.numpy.newbyteorder("<")).tobytes()


def array_view(array: Array, dt: DataType) -> memoryview:
    """The raw bytes `array_to_bytes` makes, as a view of the array itself when it already
    is contiguous little-endian (numeric types; BYTES elements are always encoded)."""
    if dt.is_bytes:
        return memoryview(array_to_bytes(array, dt))
    flat = np.ascontiguousarray(array, dtype=dt.numpy.newbyteorder("<")).reshape(-1)
    return flat.view(np.uint8).data


def _bytes_elements(name: str, buffer: bytes | memoryview, count: int,
                    limits: TensorLimits) -> Array:
    """Parse `count` length-prefixed elements that must fill `buffer` exactly."""
    view = memoryview(buffer)
    if count * _LENGTH.size > len(view):
        # Before allocating `count` slots: the shape is the client's claim, the body is not.
        raise InvalidInput(
            f"input '{name}': {count} BYTES elements need at least {count * _LENGTH.size} "
            f"bytes (a 4-byte length each), the data has {len(view)}"
        )
    elements = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(
                f"input '{name}': BYTES data ends after {index} of {count} elements"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if length > limits.max_bytes_element_bytes:
            raise bytes_element_too_long(name, index, length, limits)
        if offset + length > len(view):
            raise InvalidInput(
                f"input '{name}': BYTES element {index} claims {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        try:
            elements[index] = str(view[offset : offset + length], "utf-8")
        except UnicodeDecodeError as err:
            raise not_utf8(name, index) from err
        offset += length
    if offset != len(view):
        raise InvalidInput(
            f"input '{name}': {len(view) - offset} bytes follow the last of {count} BYTES elements"
        )
    return elements


def infer_raw_shape(name: str, dt: DataType, dims: Sequence[int], nbytes: int) -> list[int]:
    """The shape of a raw binary body for a tensor with model dims `dims` (one may be -1)."""
    dynamic = [i for i, d in enumerate(dims) if d < 0]
    if len(dynamic) > 1:
        raise InvalidInput(
            f"a raw binary request needs at most one variable dimension; input '{name}' "
            f"has shape {list(dims)}"
        )
    fixed = math.prod(d for d in dims if d >= 0)
    if not dynamic:
        return list(dims)
    if fixed == 0 or nbytes % (fixed * dt.itemsize):
        raise InvalidInput(
            f"input '{name}': a raw body of {nbytes} bytes does not divide into "
            f"{dt.name} elements of shape {list(dims)}"
        )
    shape = list(dims)
    shape[dynamic[0]] = nbytes // (fixed * dt.itemsize)
    return shape
