"""Triton's onnxruntime-backend auto-complete, and its checks of a config against the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import UnsupportedModel
from app.types import TensorSpec


@dataclass(frozen=True, slots=True)
class Rules:
    """How a version's configuration is completed and checked.

    `triton`: the configuration is Triton's (config.pbtxt, Triton's JSON), so Triton's listing
    rules hold: listing both inputs and outputs turns auto-complete off for that model (as
    the backend skips it), listed inputs are all of them, and a listed dim of -1 matches only
    a dynamic one. config.yaml keeps its own: overrides for some tensors, max_batch_size
    derived unless set."""

    model: str = ""
    auto_complete: bool = True
    triton: bool = False
    #: inputs the server fills itself (dynamic_batching.padding's length_input): not listed
    filled: frozenset[str] = frozenset()


#: config.yaml's rules with auto-complete on (what a caller that says nothing gets)
DEFAULT_RULES = Rules()


def _shape(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def batchable(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Triton's test: every input and output has a dynamic first dimension (and there is an
    input to batch along)."""
    return bool(inputs) and all(s.shape and s.shape[0] == -1 for s in (*inputs, *outputs))


def max_batch_size(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                   configured: int | None, default: int, listed: tuple[bool, bool],
                   rules: Rules) -> int:
    """The effective max_batch_size: as configured, else `default` when auto-complete runs
    and the model can batch, else 0. Refuses a batch size the model cannot take."""
    completes = rules.auto_complete and not (rules.triton and all(listed))
    can_batch = batchable(inputs, outputs)
    if configured is None:
        return default if completes and can_batch else 0
    if configured > 0 and not can_batch:
        why = ("the model has no inputs" if not inputs else
               "not every input and output has a dynamic first dimension")
        raise UnsupportedModel(f"model '{rules.model}': max_batch_size is {configured} but "
                               f"{why} to batch along (the model does not support batching)")
    return configured


def dynamic_batching(max_batch_size: int, configured: bool, listed: tuple[bool, bool],
                     rules: Rules) -> bool:
    """Whether the dynamic batcher runs. Configured, it does; config.yaml's models batch
    whenever max_batch_size > 0; with Triton's rules only when auto-complete ran and added it
    (max_batch_size > 1, as Triton's backend does): a Triton config listing every tensor
    and no dynamic_batching runs each request on its own, as Triton runs it."""
    if configured or not rules.triton:
        return configured or max_batch_size > 0
    return rules.auto_complete and not all(listed) and max_batch_size > 1


def check_listed(role: str, model: Sequence[TensorSpec], listed: Sequence[str],
                 rules: Rules) -> None:
    """Without auto-complete every input and output is listed; with Triton's rules listed
    inputs are all of the model's (Triton's backend counts them)."""
    model = [s for s in model if s.name not in rules.filled]
    names = ", ".join(s.name for s in model)
    if not rules.auto_complete and not listed and model:
        raise UnsupportedModel(
            f"model '{rules.model}': the configuration lists no {role}s and auto-complete is "
            f"off (--disable-auto-complete-config / --strict-model-config): list the "
            f"model's {role}s ({names})")
    if role == "input" and listed and len(listed) != len(model) and \
            (rules.triton or not rules.auto_complete):
        raise UnsupportedModel(
            f"unable to load model '{rules.model}', configuration expects {len(listed)} "
            f"inputs, model provides {len(model)} ({names})")


def unknown_tensor(role: str, name: str, model: Sequence[TensorSpec], rules: Rules) -> str:
    return (f"model '{rules.model}': configuration {role} '{name}' is not one of the model's "
            f"{role}s: {', '.join(s.name for s in model)}")


def wrong_type(role: str, name: str, configured: str, model_type: str, rules: Rules) -> str:
    return (f"unable to load model '{rules.model}', configuration expects datatype "
            f"{configured} for {role} '{name}', model provides {model_type}")


def fits(model_shape: Sequence[int], full: Sequence[int], role: str, rules: Rules) -> bool:
    """Same rank, and the dims agree: with config.yaml's rules -1 on either side matches;
    with Triton's a model's fixed dim needs that number, and an output's dims are compared
    exactly (Triton's backend does both)."""
    if len(model_shape) != len(full):
        return False
    pairs = list(zip(model_shape, full, strict=True))
    if not rules.triton:
        return all(m < 0 or c < 0 or m == c for m, c in pairs)
    if role == "output":
        return all(m == c for m, c in pairs)
    return all(m < 0 or m == c for m, c in pairs)


def wrong_dims(name: str, model_shape: Sequence[int], full: Sequence[int],
               batched: bool, rules: Rules) -> str:
    """Triton's wording, naming the model and the tensor."""
    why = (" (an initial batch dimension because max_batch_size > 0 followed by the "
           f"configured dims {_shape(full[1:])})") if batched else ""
    return (f"model '{rules.model}', tensor '{name}': the model expects dims "
            f"{_shape(model_shape)} but the model configuration specifies "
            f"{_shape(full)}{why}")
