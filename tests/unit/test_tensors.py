"""Raw tensor bytes: the little-endian layout, BYTES framing, and limits on claimed sizes."""

from __future__ import annotations

import numpy as np
import pytest

from app.codecs import dtypes
from app.codecs.request_checks import element_count
from app.codecs.tensors import (
    TensorLimits,
    array_from_buffer,
    array_to_bytes,
    infer_raw_shape,
)
from app.errors import InvalidInput, RequestTooLarge

FIXED = [name for name, dt in dtypes.BY_NAME.items() if not dt.is_bytes]


@pytest.mark.parametrize("name", FIXED)
def test_fixed_size_round_trip(name: str) -> None:
    dt = dtypes.BY_NAME[name]
    x = (np.arange(6) % 2).astype(dt.numpy).reshape(2, 3)
    raw = array_to_bytes(x, dt)
    assert len(raw) == 6 * dt.itemsize
    np.testing.assert_array_equal(array_from_buffer("x", dt, [2, 3], raw, 6), x)


def test_layout_is_little_endian_row_major() -> None:
    raw = array_to_bytes(np.array([[1, 2], [3, 256]], dtype=np.uint16), dtypes.BY_NAME["UINT16"])
    assert raw == b"\x01\x00\x02\x00\x03\x00\x00\x01"


def test_bytes_framing_is_length_prefixed_utf8() -> None:
    x = np.array(["", "ab", "é"], dtype=object)
    raw = array_to_bytes(x, dtypes.BY_NAME["BYTES"])
    assert raw == b"\0\0\0\0" + b"\x02\0\0\0ab" + b"\x02\0\0\0\xc3\xa9"
    back = array_from_buffer("x", dtypes.BY_NAME["BYTES"], [3], raw, 3)
    assert back.tolist() == ["", "ab", "é"]


@pytest.mark.parametrize("raw, message", [
    (b"\x01\0\0", "2 BYTES elements need at least 8 bytes"),
    (b"\x01\0\0\0a\x05\0\0", "ends after 1 of 2 elements"),
    (b"\x09\0\0\0abc\0", "claims 9 bytes but only 4 remain"),
    (b"\x01\0\0\0a\x01\0\0\0b\x00", "1 bytes follow the last of 2"),
    (b"\x01\0\0\0\xff\x01\0\0\0b", "not valid UTF-8"),
])
def test_bad_bytes_framing(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        array_from_buffer("x", dtypes.BY_NAME["BYTES"], [2], raw, 2)


def test_bytes_shape_is_checked_against_the_data_before_allocating() -> None:
    # 2**28 object slots would be 2 GiB; a 4-byte body cannot hold even two elements.
    with pytest.raises(InvalidInput, match="268435456 BYTES elements need at least"):
        array_from_buffer("x", dtypes.BY_NAME["BYTES"], [1 << 28], b"\0" * 4, 1 << 28)


def test_bytes_element_length_limit() -> None:
    limits = TensorLimits(max_bytes_element_bytes=3)
    raw = b"\x03\0\0\0abc\x04\0\0\0abcd"
    with pytest.raises(RequestTooLarge, match=r"element 1 has 4 bytes, more than the limit "
                       r"of 3 \(setting ONNX_SERVE_HTTP__MAX_BYTES_ELEMENT_BYTES"):
        array_from_buffer("x", dtypes.BY_NAME["BYTES"], [2], raw, 2, limits)


def test_fixed_size_needs_exact_length() -> None:
    with pytest.raises(InvalidInput, match="needs 12 bytes of data, got 11"):
        array_from_buffer("x", dtypes.BY_NAME["FP32"], [3], b"\0" * 11, 3)


def test_element_count_refuses_huge_and_negative_shapes() -> None:
    limits = TensorLimits(max_tensor_elements=100, group="grpc")
    assert element_count("x", [2, 3, 4], limits) == 24
    assert element_count("x", [], limits) == 1
    with pytest.raises(RequestTooLarge, match=r"more than the limit of 100 \(setting "
                       "ONNX_SERVE_GRPC__MAX_TENSOR_ELEMENTS"):
        element_count("x", [2**40, 2**40], limits)
    with pytest.raises(InvalidInput, match="negative dimension"):
        element_count("x", [3, -2], limits)


@pytest.mark.parametrize("dims, nbytes, shape", [
    ([4], 16, [4]), ([-1], 24, [6]), ([2, -1], 32, [2, 4]), ([-1, 3], 0, [0, 3]),
])
def test_raw_shape_from_body_size(dims: list[int], nbytes: int, shape: list[int]) -> None:
    assert infer_raw_shape("x", dtypes.BY_NAME["FP32"], dims, nbytes) == shape


def test_raw_shape_refuses_two_dynamic_dims_and_odd_sizes() -> None:
    fp32 = dtypes.BY_NAME["FP32"]
    with pytest.raises(InvalidInput, match="at most one variable dimension"):
        infer_raw_shape("x", fp32, [-1, -1], 16)
    with pytest.raises(InvalidInput, match="does not divide"):
        infer_raw_shape("x", fp32, [-1, 3], 16)
