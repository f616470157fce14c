"""Triton's ensemble_scheduling block (a pipeline's steps) and what an ensemble may not set."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

#: Triton's platform name for an ensemble (config.pbtxt `platform: "ensemble"`).
ENSEMBLE_PLATFORM = "ensemble"

#: ModelConfig fields that describe sessions or their batching: an ensemble has neither
#: (its steps batch in their own schedulers), so setting one is refused by name.
NOT_FOR_ENSEMBLES = ("dynamic_batching", "instance_group", "optimization", "parameters",
                     "model_warmup", "default_model_filename", "max_inflight_requests")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnsembleStep(_Strict):
    """One step: a loaded model, and how its tensors connect to the ensemble's."""

    model_name: str = Field(min_length=1, description="The model this step runs.")
    model_version: int = Field(-1, ge=-1, description="Its version; -1 is the highest READY.")
    input_map: dict[str, str] = Field(
        min_length=1, description="The step model's input name -> the ensemble tensor fed to it.")
    output_map: dict[str, str] = Field(
        min_length=1, description="The step model's output name -> the ensemble tensor it makes.")


class EnsembleScheduling(_Strict):
    """Triton's ModelEnsembling: the steps, in any order (the data flow orders them)."""

    step: list[EnsembleStep] = Field(min_length=1, description="The steps of the pipeline.")


class _Tensor(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def data_type(self) -> str | None: ...

    @property
    def reshape(self) -> object: ...


def ensemble_problems(fields_set: Iterable[str], inputs: Sequence[_Tensor],
                      outputs: Sequence[_Tensor]) -> str:
    """Why a config with ensemble_scheduling is not a valid ensemble ('' when it is): no
    session settings, and its own inputs and outputs declared in full (there is no model
    file to derive them from)."""
    refused = [name for name in NOT_FOR_ENSEMBLES if name in fields_set]
    if refused:
        return f"{refused[0]}: an ensemble has no sessions of its own (its steps' models do)"
    if not inputs or not outputs:
        return "an ensemble declares its input and output tensors (input, output)"
    for role, tensors in (("input", inputs), ("output", outputs)):
        for tensor in tensors:
            if not tensor.data_type:
                return f"{role} '{tensor.name}': an ensemble tensor needs its data_type"
            if tensor.reshape is not None:
                return f"{role} '{tensor.name}': reshape is not supported on an ensemble"
    return ""
