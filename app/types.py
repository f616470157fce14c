"""Plain, frozen value types that travel between transports, the service and the runtime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: A request/response parameter value, as the v2 protocol allows (string, number or boolean).
ParamValue = str | int | float | bool
Parameters = Mapping[str, ParamValue]

#: Tensors inside the server are numpy arrays. BYTES tensors are object arrays of `str`
#: (what onnxruntime consumes and produces); the codecs convert at the edge.
Array = npt.NDArray[np.generic]


@dataclass(frozen=True, slots=True)
class ModelKey:
    """One loaded model version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor in a model signature; -1 marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asked for, with its per-output parameters (e.g. `binary_data`)."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded inference request: inputs are numpy arrays in the client's order.

    `outputs` is None when the client did not list outputs (all outputs are returned).
    `version` is None when the client did not name one (the latest ready version serves).
    """

    model_name: str
    inputs: Mapping[str, Array]
    input_datatypes: Mapping[str, str]
    version: str | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: tuple[RequestedOutput, ...] | None = None


@dataclass(frozen=True, slots=True)
class InferResponse:
    """The result of one request: outputs in the order they are to be returned."""

    model_name: str
    model_version: str
    outputs: Mapping[str, Array]
    output_datatypes: Mapping[str, str]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
