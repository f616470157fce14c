"""A model version's signature (inputs, outputs, batching) and request validation against it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.codecs import dtypes
from app.errors import InvalidInput, UnsupportedModel
from app.models import autocomplete
from app.models.autocomplete import DEFAULT_RULES, Rules
from app.repository.config import TensorOverride
from app.types import Array, InferRequest, TensorSpec


class _OrtArg(Protocol):
    name: str
    type: str
    shape: Sequence[Any]


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


def _override(specs: tuple[TensorSpec, ...], overrides: Sequence[TensorOverride], batched: bool,
              role: str, rules: Rules) -> tuple[tuple[TensorSpec, ...], dict[str, tuple[int, ...]]]:
    """Client-facing specs after config overrides, and {name: shape to reshape to} where the
    model's shape differs (the model's for inputs, the client's for outputs)."""
    by_name = {s.name: s for s in specs}
    reshapes: dict[str, tuple[int, ...]] = {}
    batch = (-1,) if batched else ()
    for override in overrides:
        spec = by_name.get(override.name)
        if spec is None:
            raise UnsupportedModel(autocomplete.unknown_tensor(role, override.name, specs, rules))
        wanted = dtypes.from_config(override.data_type) if override.data_type else None
        if override.data_type and (wanted is None or wanted.name != spec.datatype):
            raise UnsupportedModel(autocomplete.wrong_type(
                role, spec.name, override.data_type,
                dtypes.BY_NAME[spec.datatype].triton_name, rules))
        client = batch + tuple(override.dims)
        model_side = batch + tuple(override.reshape.shape if override.reshape else override.dims)
        if not autocomplete.fits(spec.shape, model_side, role, rules):
            raise UnsupportedModel(autocomplete.wrong_dims(spec.name, spec.shape, model_side,
                                                           batched, rules))
        if override.reshape is not None:
            reshapes[spec.name] = (model_side if role == "input" else client)[len(batch):]
        by_name[spec.name] = TensorSpec(spec.name, spec.datatype, client)
    return tuple(by_name[s.name] for s in specs), reshapes


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
    reshape_inputs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    reshape_outputs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: output -> its class labels, for the classification extension (models/labels.py)
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: output -> why it is not served (a sequence or map onnxruntime returns; zipmap.py)
    omitted: Mapping[str, str] = field(default_factory=dict)
    #: Read on every request, so built once: the outputs' names in order, their datatypes
    #: (name -> datatype: callers copy before changing it) and the inputs' names.
    _output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    output_datatypes: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _input_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_output_names", tuple(s.name for s in self.outputs))
        object.__setattr__(self, "output_datatypes",
                           {s.name: s.datatype for s in self.outputs})
        object.__setattr__(self, "_input_names", frozenset(s.name for s in self.inputs))

    @classmethod
    def from_session(
        cls, inputs: Sequence[_OrtArg], outputs: Sequence[_OrtArg], max_batch_size: int | None,
        default_max_batch_size: int, input_overrides: Sequence[TensorOverride] = (),
        output_overrides: Sequence[TensorOverride] = (), rules: Rules = DEFAULT_RULES,
    ) -> Signature:
        """Build from `session.get_inputs()/get_outputs()`; auto-complete batching as
        Triton's onnxruntime backend does (models/autocomplete.py); apply config input/output
        overrides, checked against the model."""
        specs_in = tuple(_spec(arg, "input") for arg in inputs)
        specs_out = tuple(_spec(arg, "output") for arg in outputs)
        autocomplete.check_listed("input", specs_in, [o.name for o in input_overrides], rules)
        autocomplete.check_listed("output", specs_out, [o.name for o in output_overrides],
                                  rules)
        max_batch_size = autocomplete.max_batch_size(
            specs_in, specs_out, max_batch_size, default_max_batch_size,
            (bool(input_overrides), bool(output_overrides)), rules)
        batched = max_batch_size > 0
        specs_in, reshape_in = _override(specs_in, input_overrides, batched, "input", rules)
        specs_out, reshape_out = _override(specs_out, output_overrides, batched, "output", rules)
        return cls(specs_in, specs_out, max_batch_size, reshape_in, reshape_out)

    def to_model(self, inputs: Mapping[str, Array]) -> Mapping[str, Array]:
        """Inputs reshaped to what the model takes, where the config says `reshape`."""
        if not self.reshape_inputs:
            return inputs
        return {name: self._reshaped(array, self.reshape_inputs.get(name))
                for name, array in inputs.items()}

    def from_model(self, name: str, array: Array) -> Array:
        """An output reshaped back to what clients were promised."""
        return self._reshaped(array, self.reshape_outputs.get(name))

    def _reshaped(self, array: Array, shape: tuple[int, ...] | None) -> Array:
        if shape is None:
            return array
        return array.reshape(array.shape[:1] + shape if self.max_batch_size else shape)

    def input(self, name: str) -> TensorSpec | None:
        return next((s for s in self.inputs if s.name == name), None)

    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def validate(self, request: InferRequest) -> None:
        """Refuse a request that does not fit this signature, naming what was expected."""
        expected = self._input_names
        if not request.inputs and expected:
            raise InvalidInput(f"the request lists no inputs; the model's inputs are "
                               f"{sorted(expected)}")
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
            names = self.output_datatypes
            for wanted in request.outputs:
                if wanted.name in self.omitted:
                    raise InvalidInput(f"output '{wanted.name}' is not served: "
                                       f"{self.omitted[wanted.name]}")
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
        name, rows = next(iter(sizes.items()))  # one size by now: named by the first input
        if rows > self.max_batch_size:
            # Triton refuses it too: TensorRT profiles and warmup stop at max_batch_size, and
            # the batcher would run it alone, as big as the client likes.
            raise InvalidInput(f"input '{name}': batch of {rows} exceeds max_batch_size "
                               f"{self.max_batch_size}")
