"""The classification extension's ranking and formatting (codecs/classification.py), against
the examples of Triton's extension_classification.md and its classification.cc."""

from __future__ import annotations

import numpy as np
import pytest

from app.codecs.classification import RANKED, classify, requested, top_classes
from app.errors import InvalidInput
from app.types import RequestedOutput


def test_tritons_documented_example() -> None:
    """[1.1, 3.3, 0.5, 2.4], top-2: ["3.3:1", "2.4:3"], values as std::to_string prints."""
    scores = np.array([1.1, 3.3, 0.5, 2.4], np.float32)
    assert top_classes(scores, 2, (), batched=False).tolist() == ["3.300000:1", "2.400000:3"]
    labelled = top_classes(scores, 2, [f"index_{i}_label" for i in range(4)], batched=False)
    assert labelled.tolist() == ["3.300000:1:index_1_label", "2.400000:3:index_3_label"]


def test_each_batch_item_is_ranked_on_its_own() -> None:
    scores = np.array([[1, 5, 10, 4], [4, 4, 1, 9]], np.uint8)
    answer = top_classes(scores, 3, ["a", "b", "", "d"], batched=True)
    assert answer.shape == (2, 3)
    # index 2's label is empty: no label; ties keep the lower index first
    assert answer.tolist() == [["10:2", "5:1:b", "4:3:d"], ["9:3:d", "4:0:a", "4:1:b"]]


def test_an_unbatched_output_is_one_list_and_the_count_is_capped() -> None:
    scores = np.array([[0.5, 0.25], [1.0, -2.0]], np.float64)
    answer = top_classes(scores, 9, ["first"], batched=False)
    assert answer.tolist() == ["1.000000:2", "0.500000:0:first", "0.250000:1", "-2.000000:3"]


def test_items_of_more_dimensions_are_ranked_flat() -> None:
    scores = np.arange(12, dtype=np.int64).reshape(2, 2, 3)
    assert top_classes(scores, 2, (), batched=True).tolist() == [["5:5", "4:4"],
                                                                 ["11:5", "10:4"]]


def test_empty_batch_and_nan() -> None:
    assert top_classes(np.zeros((0, 3), np.float32), 2, (), batched=True).shape == (0, 2)
    answer = top_classes(np.array([[np.nan, 0.1, np.inf]], np.float32), 3, (), batched=True)
    assert answer.tolist() == [["inf:2", "0.100000:1", "nan:0"]]


def test_unsigned_values_rank_without_wrapping() -> None:
    scores = np.array([[0, 2**64 - 1, 7]], np.uint64)
    assert top_classes(scores, 3, (), batched=True).tolist() == [
        [f"{2**64 - 1}:1", "7:2", "0:0"]]


@pytest.mark.parametrize("datatype", ["BOOL", "FP16", "BF16", "BYTES"])
def test_types_triton_does_not_rank_are_refused_by_name(datatype: str) -> None:
    with pytest.raises(InvalidInput, match=f"output 'y': class result not available for "
                                           f"output due to unsupported type '{datatype}'"):
        requested([RequestedOutput("y", {"classification": 1})], {"y": datatype})


def test_requested_and_classify() -> None:
    wanted = [RequestedOutput("y", {"classification": 1}), RequestedOutput("z")]
    counts = requested(wanted, {"y": "FP32", "z": "FP32"})
    assert counts == {"y": 1} and "FP32" in RANKED
    outputs = {"y": np.array([[0.1, 0.9]], np.float32), "z": np.array([[1.0]], np.float32)}
    answered, types = classify(outputs, {"y": "FP32", "z": "FP32"}, counts,
                               {"y": ("no", "yes")}, batched=True)
    assert answered["y"].tolist() == [["0.900000:1:yes"]] and types["y"] == "BYTES"
    assert answered["z"] is outputs["z"] and types["z"] == "FP32"
    assert requested(None, {}) == {}
