"""Shape buckets, concatenation, padding with a length input, and splitting back."""

from __future__ import annotations

import numpy as np

from app.batching.layout import BatchLayout, Padding


def tokens(*rows: list[int]) -> np.ndarray:
    return np.array(rows, np.int64)


def test_buckets_separate_shapes_but_not_padded_dims() -> None:
    plain = BatchLayout()
    assert plain.bucket({"x": np.zeros((1, 4))}) == plain.bucket({"x": np.zeros((3, 4))})
    assert plain.bucket({"x": np.zeros((1, 4))}) != plain.bucket({"x": np.zeros((1, 5))})
    padded = BatchLayout({"t": Padding(axes=(1,))})
    two = {"t": np.zeros((1, 4)), "u": np.zeros((1, 2))}
    assert padded.bucket(two) == padded.bucket({"t": np.zeros((2, 9)), "u": np.zeros((1, 2))})
    assert padded.bucket(two) != padded.bucket({"t": np.zeros((1, 4)), "u": np.zeros((1, 3))})


def test_bucket_ignores_the_order_inputs_were_sent_in() -> None:
    layout = BatchLayout()
    a = {"p": np.zeros((1, 2)), "q": np.zeros((1, 3))}
    b = {"q": np.zeros((1, 3)), "p": np.zeros((1, 2))}
    assert layout.bucket(a) == layout.bucket(b)


def test_concatenate_and_split_round_trip_with_multi_row_requests() -> None:
    layout = BatchLayout()
    feeds = [{"x": np.arange(6.0).reshape(3, 2)}, {"x": np.arange(2.0).reshape(1, 2) + 10}]
    batch = layout.assemble(feeds)
    np.testing.assert_array_equal(batch["x"], np.concatenate([f["x"] for f in feeds]))
    parts = layout.split([batch["x"] * 2], ["y"], feeds)
    np.testing.assert_array_equal(parts[0][0], feeds[0]["x"] * 2)
    np.testing.assert_array_equal(parts[1][0], feeds[1]["x"] * 2)


def test_padding_fills_to_the_longest_feeds_lengths_and_slices_outputs_back() -> None:
    layout = BatchLayout({"t": Padding(axes=(1,), value=-1, length_input="n",
                                       slice_outputs=("y",))})
    feeds = [{"t": tokens([1, 2, 3])}, {"t": tokens([4], [5])}]
    batch = layout.assemble(feeds)
    np.testing.assert_array_equal(batch["t"], tokens([1, 2, 3], [4, -1, -1], [5, -1, -1]))
    np.testing.assert_array_equal(batch["n"], np.array([3, 1, 1]))
    assert batch["n"].dtype == np.int64
    total = batch["t"].sum(axis=1)
    parts = layout.split([batch["t"] * 10, total], ["y", "total"], feeds)
    np.testing.assert_array_equal(parts[0][0], tokens([10, 20, 30]))
    np.testing.assert_array_equal(parts[1][0], tokens([40], [50]))
    np.testing.assert_array_equal(parts[1][1], np.array([2, 3]))  # not sliced: not listed


def test_length_input_as_int32_column() -> None:
    layout = BatchLayout({"t": Padding(axes=(1,), length_input="n", length_dtype="int32",
                                       length_rank=2)})
    batch = layout.assemble([{"t": tokens([1, 2])}, {"t": tokens([3])}])
    assert batch["n"].dtype == np.int32 and batch["n"].shape == (2, 1)


def test_padding_strings_uses_empty_strings() -> None:
    layout = BatchLayout({"s": Padding(axes=(1,))})
    feeds = [{"s": np.array([["a", "b"]], dtype=object)}, {"s": np.array([["c"]], dtype=object)}]
    batch = layout.assemble(feeds)
    assert batch["s"].tolist() == [["a", "b"], ["c", ""]]
