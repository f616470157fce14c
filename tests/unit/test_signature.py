"""Signatures from onnxruntime's reported inputs/outputs, and validation messages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from app.errors import InvalidInput, UnsupportedModel
from app.models.autocomplete import Rules
from app.models.signature import Signature
from app.repository.config import TensorOverride
from app.types import InferRequest, RequestedOutput, TensorSpec


@dataclass
class Arg:
    """What onnxruntime's NodeArg exposes: a plain record."""

    name: str
    type: str
    shape: list[Any]


def signature(max_batch_size: int | None = None, **kinds: list[Any]) -> Signature:
    inputs = [Arg("x", "tensor(float)", kinds.get("x", ["batch", 784]))]
    outputs = [Arg("y", "tensor(int64)", kinds.get("y", [None, 3]))]
    return Signature.from_session(inputs, outputs, max_batch_size, default_max_batch_size=64)


def request(**inputs: tuple[str, np.ndarray]) -> InferRequest:
    return InferRequest("m", {k: v[1] for k, v in inputs.items()},
                        {k: v[0] for k, v in inputs.items()})


def test_dynamic_dims_become_minus_one_and_batching_is_derived() -> None:
    sig = signature()
    assert sig.inputs[0].shape == (-1, 784) and sig.outputs[0].shape == (-1, 3)
    assert sig.inputs[0].datatype == "FP32" and sig.outputs[0].datatype == "INT64"
    assert sig.max_batch_size == 64


def test_no_batch_dimension_means_no_batching() -> None:
    assert signature(x=[2, 784]).max_batch_size == 0
    with pytest.raises(UnsupportedModel, match="dynamic first dimension"):
        signature(max_batch_size=8, x=[2, 784])
    assert signature(max_batch_size=0).max_batch_size == 0


def test_non_tensor_types_are_unsupported() -> None:
    with pytest.raises(UnsupportedModel, match="seq"):
        Signature.from_session([Arg("x", "tensor(float)", [1])],
                               [Arg("y", "seq(map(int64,tensor(float)))", [])], None, 64)


def test_valid_request_passes() -> None:
    signature().validate(request(x=("FP32", np.zeros((2, 784), np.float32))))


@pytest.mark.parametrize("inputs, message", [
    ({"x": ("INT64", np.zeros((2, 3), np.int64))},
     "input 'x': expected FP32 [-1,784], got INT64 [2,3]"),
    ({"x": ("FP32", np.zeros((2, 783), np.float32))}, "got FP32 [2,783]"),
    ({"x": ("FP32", np.zeros(784, np.float32))}, "got FP32 [784]"),
    ({}, "the request lists no inputs; the model's inputs are ['x']"),
    ({"x": ("FP32", np.zeros((1, 784), np.float32)), "z": ("FP32", np.zeros(1))},
     "unexpected input 'z'"),
    ({"x": ("FP32", np.zeros((65, 784), np.float32))},
     "input 'x': batch of 65 exceeds max_batch_size 64"),
])
def test_validation_messages(inputs: dict[str, tuple[str, np.ndarray]], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        signature().validate(request(**inputs))


def test_batch_sizes_must_agree() -> None:
    sig = Signature.from_session(
        [Arg("a", "tensor(float)", [None, 2]), Arg("b", "tensor(float)", [None, 2])],
        [Arg("y", "tensor(float)", [None, 2])], None, 64)
    with pytest.raises(InvalidInput, match="disagree on the batch size"):
        sig.validate(request(a=("FP32", np.zeros((1, 2))), b=("FP32", np.zeros((2, 2)))))


def test_unknown_output() -> None:
    req = InferRequest("m", {"x": np.zeros((1, 784), np.float32)}, {"x": "FP32"},
                       outputs=(RequestedOutput("nope"),))
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        signature().validate(req)


def override(**fields: Any) -> TensorOverride:
    return TensorOverride.model_validate(fields)


def image_signature(*overrides: TensorOverride) -> Signature:
    return Signature.from_session([Arg("img", "tensor(float)", ["b", 1, 2, 2])],
                                  [Arg("y", "tensor(float)", ["b", 4])], None, 64,
                                  input_overrides=overrides)


def test_override_narrows_dynamic_dims() -> None:
    sig = Signature.from_session([Arg("x", "tensor(float)", ["b", None])],
                                 [Arg("y", "tensor(float)", ["b", None])], None, 64,
                                 [override(name="x", dims=[784])])
    assert sig.inputs[0].shape == (-1, 784)


def test_reshape_maps_client_shape_to_model_shape() -> None:
    sig = image_signature(override(name="img", data_type="TYPE_FP32", dims=[4],
                                   reshape={"shape": [1, 2, 2]}))
    assert sig.inputs[0].shape == (-1, 4)
    fed = sig.to_model({"img": np.zeros((3, 4), np.float32)})
    assert fed["img"].shape == (3, 1, 2, 2)


@pytest.mark.parametrize("bad, message", [
    ({"name": "nope", "dims": [4]}, "configuration input 'nope' is not one of the model's "
     "inputs: img"),
    ({"name": "img", "data_type": "TYPE_INT64", "dims": [1, 2, 2]},
     "configuration expects datatype TYPE_INT64 for input 'img', model provides TYPE_FP32"),
    ({"name": "img", "dims": [4]}, r"tensor 'img': the model expects dims \[-1,1,2,2\] but "
     r"the model configuration specifies \[-1,4\]"),
    ({"name": "img", "dims": [4], "reshape": {"shape": [4, 1, 1]}}, "the model expects dims"),
])
def test_overrides_are_checked_against_the_model(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedModel, match=message):
        image_signature(override(**bad))


def test_a_full_batch_passes() -> None:
    signature().validate(request(x=("FP32", np.zeros((64, 784), np.float32))))


def test_a_model_without_inputs_takes_empty_requests_and_does_not_batch() -> None:
    """Issue 14, item 13: e.g. a graph whose output is a Constant."""
    sig = Signature.from_session([], [Arg("y", "tensor(float)", [2, 3])], None, 64)
    assert sig.max_batch_size == 0
    sig.validate(request())
    with pytest.raises(UnsupportedModel, match="the model has no inputs to batch along"):
        Signature.from_session([], [Arg("y", "tensor(float)", [None, 3])], 8, 64)


def _auto(inputs: list[Arg], outputs: list[Arg], max_batch_size: int | None = None,
          listed: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], []),
          auto_complete: bool = True, triton: bool = True) -> Signature:
    return Signature.from_session(inputs, outputs, max_batch_size, 4,
                                  [override(**o) for o in listed[0]],
                                  [override(**o) for o in listed[1]],
                                  Rules("m", auto_complete, triton))


X, Y = Arg("x", "tensor(float)", ["b", 4]), Arg("y", "tensor(float)", ["b", 4])


def test_auto_complete_as_tritons_onnxruntime_backend() -> None:
    """Triton's backend: max_batch_size from default-max-batch-size when every tensor has a
    dynamic first dim and the config leaves inputs or outputs out; none when both are
    listed (it skips auto-complete) or auto-complete is off."""
    assert _auto([X], [Y]).max_batch_size == 4
    assert _auto([X], [Y], listed=([{"name": "x", "dims": [4]}], [])).max_batch_size == 4
    both = ([{"name": "x", "dims": [-1, 4]}], [{"name": "y", "dims": [-1, 4]}])
    assert _auto([X], [Y], listed=both).max_batch_size == 0
    rows = ([{"name": "x", "dims": [4]}], [{"name": "y", "dims": [4]}])
    assert _auto([X], [Y], listed=rows, triton=False).max_batch_size == 4  # config.yaml's
    assert _auto([X], [Y], listed=both, auto_complete=False).max_batch_size == 0
    assert _auto([Arg("x", "tensor(float)", [2, 4])], [Y]).max_batch_size == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch_size": 4, "listed": ([{"name": "x", "dims": [5]}], [])},
     r"model 'm', tensor 'x': the model expects dims \[-1,4\] but the model configuration "
     r"specifies \[-1,5\]"),
    ({"max_batch_size": 0, "listed": ([{"name": "x", "dims": [4]}], [])},
     r"tensor 'x': the model expects dims \[-1,4\] but the model configuration specifies \[4\]$"),
    ({"max_batch_size": 4, "listed": ([{"name": "x", "dims": [4]}],
                                      [{"name": "y", "dims": [-1]}])},
     r"tensor 'y': the model expects dims \[-1,4\] but .* specifies \[-1,-1\]"),
    ({"listed": ([{"name": "x", "data_type": "TYPE_INT32", "dims": [4]}], [])},
     "unable to load model 'm', configuration expects datatype TYPE_INT32 for input 'x', "
     "model provides TYPE_FP32"),
    ({"listed": ([{"name": "z", "dims": [4]}], [])},
     "model 'm': configuration input 'z' is not one of the model's inputs: x"),
    ({"auto_complete": False}, "model 'm': the configuration lists no inputs and "
     "auto-complete is off"),
])
def test_a_config_that_disagrees_with_the_model_is_refused(kwargs: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(UnsupportedModel, match=message):
        _auto([X], [Y], **kwargs)


def test_listed_inputs_are_all_of_them_with_tritons_rules() -> None:
    two = [X, Arg("x2", "tensor(float)", ["b", 4])]
    listed = ([{"name": "x", "dims": [4]}], [])
    with pytest.raises(UnsupportedModel, match="configuration expects 1 inputs, model "
                                               "provides 2"):
        _auto(two, [Y], listed=listed)
    assert _auto(two, [Y], listed=listed, triton=False).max_batch_size == 4
    with pytest.raises(UnsupportedModel, match="max_batch_size is 4 but not every input"):
        _auto([Arg("x", "tensor(float)", [2, 4])], [Y], max_batch_size=4)


def test_per_request_lookups_are_built_once_and_follow_replace() -> None:
    """output_names() and output_datatypes are built with the signature (not per request),
    in output order; dataclasses.replace builds them again for the new outputs."""
    sig = Signature.from_session([Arg("x", "tensor(float)", ["batch", 3])],
                                 [Arg("y", "tensor(int64)", ["batch", 3]),
                                  Arg("z", "tensor(float)", ["batch", 3])], None, 64)
    assert sig.output_names() == ("y", "z") and sig.output_names() is sig.output_names()
    assert dict(sig.output_datatypes) == {"y": "INT64", "z": "FP32"}
    fewer = dataclasses.replace(sig, outputs=(TensorSpec("z", "FP32", (-1, 3)),))
    assert fewer.output_names() == ("z",) and dict(fewer.output_datatypes) == {"z": "FP32"}
    assert fewer == dataclasses.replace(sig, outputs=fewer.outputs)  # caches do not compare
    with pytest.raises(InvalidInput, match=r"unknown output 'w'; the model's outputs are "
                                           r"\['y', 'z'\]"):
        sig.validate(InferRequest("m", {"x": np.zeros((1, 3), np.float32)}, {"x": "FP32"},
                                  outputs=(RequestedOutput("w", {}),)))
