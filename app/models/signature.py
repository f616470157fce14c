"""A model version's signature (inputs, outputs, batching) and request validation against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.codecs import dtypes
from app.errors import InvalidInput
from app.types import InferRequest, TensorSpec


class _OrtArg(Protocol):
    name: str
    type: str
    shape: Sequence[Any]


class UnsupportedModel(Exception):
    """The model declares something the server cannot serve (a reason for UNAVAILABLE)."""


def _spec(arg: _OrtArg, role: str) -> TensorSpec:
    dt = dtypes.from_onnx(arg.type)
    if dt is None:
        raise UnsupportedModel(
            f"{role} '{arg.name}' has type {arg.type}, which the server cannot serve "
            "(only tensors of the v2 datatypes are supported)"
        )
    # onnxruntime reports symbolic or unknown dims as str or None: both are dynamic (-1).
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, dt.name, shape)


def _fmt(datatype: str, shape: Sequence[int]) -> str:
    return f"{datatype} [{','.join(str(d) for d in shape)}]"


@dataclass(frozen=True, slots=True)
class Signature:
    """Inputs and outputs as onnxruntime reports them; dims of -1 are dynamic.

    `max_batch_size` > 0 means the first dimension of every input and output is a batch
    dimension that requests may fill (the batcher relies on it); 0 means no batching.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int

    @classmethod
    def from_session(
        cls, inputs: Sequence[_OrtArg], outputs: Sequence[_OrtArg], max_batch_size: int | None,
        default_max_batch_size: int,
    ) -> Signature:
        """Build from `session.get_inputs()/get_outputs()`; derive batching when not configured."""
        specs_in = tuple(_spec(arg, "input") for arg in inputs)
        specs_out = tuple(_spec(arg, "output") for arg in outputs)
        batchable = all(s.shape and s.shape[0] == -1 for s in specs_in + specs_out)
        if max_batch_size is None:
            max_batch_size = default_max_batch_size if batchable else 0
        elif max_batch_size > 0 and not batchable:
            raise UnsupportedModel(
                f"max_batch_size is {max_batch_size} but not every input and output has a "
                "dynamic first dimension to batch along"
            )
        return cls(specs_in, specs_out, max_batch_size)

    def input(self, name: str) -> TensorSpec | None:
        return next((s for s in self.inputs if s.name == name), None)

    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def validate(self, request: InferRequest) -> None:
        """Refuse a request that does not fit this signature, naming what was expected."""
        expected = {s.name for s in self.inputs}
        unknown = [name for name in request.inputs if name not in expected]
        if unknown:
            raise InvalidInput(
                f"unexpected input '{unknown[0]}'; the model's inputs are {sorted(expected)}"
            )
        missing = [name for name in expected if name not in request.inputs]
        if missing:
            raise InvalidInput(
                f"missing input '{sorted(missing)[0]}'; the model's inputs are {sorted(expected)}"
            )
        for spec in self.inputs:
            self._check_input(spec, request)
        if self.max_batch_size > 0:
            self._check_batch(request)
        if request.outputs is not None:
            names = set(self.output_names())
            for wanted in request.outputs:
                if wanted.name not in names:
                    raise InvalidInput(
                        f"unknown output '{wanted.name}'; the model's outputs are {sorted(names)}"
                    )

    @staticmethod
    def _check_input(spec: TensorSpec, request: InferRequest) -> None:
        array = request.inputs[spec.name]
        datatype = request.input_datatypes[spec.name]
        shape = array.shape
        fits = len(shape) == len(spec.shape) and all(
            d < 0 or d == s for s, d in zip(shape, spec.shape, strict=True)
        )
        if datatype != spec.datatype or not fits:
            raise InvalidInput(
                f"input '{spec.name}': expected {_fmt(spec.datatype, spec.shape)}, "
                f"got {_fmt(datatype, shape)}"
            )

    def _check_batch(self, request: InferRequest) -> None:
        sizes = {name: array.shape[0] for name, array in request.inputs.items()}
        if len(set(sizes.values())) > 1:
            raise InvalidInput(f"inputs disagree on the batch size (first dimension): {sizes}")
