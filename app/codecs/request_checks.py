"""The decode checks both transports share: each decoder reads its own wire format and hands
every name, datatype, shape and parameter map here, in the same order, so a bad request gets
the same refusal from the same code over REST and gRPC.

Every `raise` here carries a `# parity:` tag naming its case in
tests/integration/test_parity.py (tests/unit/test_parity_coverage.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from app.codecs import dtypes
from app.codecs.checks import (
    check_input_parameters,
    check_output_parameters,
    check_request_parameters,
)
from app.codecs.shm import ShmUse, lease_outputs
from app.codecs.tensors import TensorLimits
from app.errors import InvalidInput
from app.types import Array, InferRequest, ParamValue, RequestedOutput

#: The most dimensions a tensor may have: numpy 1.x's limit (numpy 2 allows 64).
MAX_RANK = 32


def element_count(name: str, shape: Sequence[int], limits: TensorLimits) -> int:
    """The product of `shape`, refusing negative dims and products above the limit.

    Computed with Python ints, so a hostile shape cannot overflow before it is refused; no
    memory is allocated from it before the data's own size is checked against it. The
    dimensions other than 0 are held to the limit too: numpy refuses to shape even an empty
    array as [0, 2**31, 2**31].
    """
    if len(shape) > MAX_RANK:
        raise InvalidInput(  # parity: rank over the limit
            f"input '{name}': shape has {len(shape)} dimensions, more than the {MAX_RANK} a "
            "tensor may have")
    count = extent = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput(  # parity: negative dimension
                f"input '{name}': shape {list(shape)} has a negative dimension")
        count *= dim
        extent *= dim or 1
    if extent > limits.max_tensor_elements:
        shown = count if count < 10**30 else f"about 10^{len(str(count)) - 1}"
        raise limits.refuse(  # parity: tensor over max_tensor_elements
            f"input '{name}': shape {list(shape)} holds {shown} elements"
            f"{' (its non-zero dimensions multiply to more)' if count < extent else ''}, "
            f"more than the limit of {limits.max_tensor_elements}", "max_tensor_elements")
    return count


def check_range(name: str, dt: dtypes.DataType, low: int | float, high: int | float) -> None:
    """Integers the client sent, held to `dt`'s range (`low`, `high`: their extremes)."""
    info = np.iinfo(dt.numpy)  # type: ignore[type-var]
    if low < info.min or high > info.max:
        raise InvalidInput(  # parity: int out of range
            f"input '{name}': a value is outside the {dt.name} range [{info.min}, {info.max}]")


class RequestChecks:
    """One request's shared checks, applied as its decoder walks the wire format; it also
    collects the decoded inputs into the InferRequest."""

    __slots__ = ("_outputs", "_total", "datatypes", "inputs", "limits", "shm", "transport")

    def __init__(self, transport: str, limits: TensorLimits, shm: ShmUse | None) -> None:
        self.transport = transport  # "http" or "grpc": which parameters it may carry
        self.limits = limits
        self.shm = shm
        self.inputs: dict[str, Array] = {}
        self.datatypes: dict[str, str] = {}
        self._outputs: set[str] = set()
        self._total = 0  # elements of the inputs so far, for max_request_elements

    def request_parameters(self, parameters: Mapping[str, ParamValue]) -> None:
        check_request_parameters(parameters, self.transport)

    def output_name(self, name: str) -> None:
        """A requested output's name, before its parameters are read."""
        if name in self._outputs:
            raise InvalidInput(  # parity: output requested twice
                f"output '{name}' is requested more than once")
        self._outputs.add(name)

    def output(self, name: str, parameters: dict[str, ParamValue]) -> RequestedOutput:
        check_output_parameters(name, parameters, self.transport)
        return RequestedOutput(name, parameters)

    def outputs(self, outputs: tuple[RequestedOutput, ...] | None, inputs: int
                ) -> tuple[RequestedOutput, ...] | None:
        """Every requested output read: lease their regions, then count the inputs."""
        lease_outputs(self.shm, outputs)
        if inputs > self.limits.max_inputs:
            raise self.limits.refuse(  # parity: inputs over max_inputs
                f"the request has {inputs} inputs, more than the limit of "
                f"{self.limits.max_inputs}", "max_inputs")
        return outputs

    def input_name(self, name: str) -> None:
        if name in self.inputs:
            raise InvalidInput(  # parity: input given twice
                f"input '{name}' appears more than once")

    def input_parameters(self, name: str, parameters: Mapping[str, ParamValue]) -> None:
        check_input_parameters(name, parameters, self.transport)

    def datatype(self, name: str, datatype: str) -> dtypes.DataType:
        dt = dtypes.by_name(datatype)
        if dt is None:
            known = ", ".join(dtypes.BY_NAME)
            raise InvalidInput(  # parity: unknown datatype
                f"input '{name}': unknown datatype '{datatype}' (expected one of {known})")
        return dt

    def shape(self, name: str, shape: list[int]) -> int:
        """The element count of input `name`, held to the tensor and request limits."""
        count = element_count(name, shape, self.limits)
        self._total += count
        if self._total > self.limits.max_request_elements:
            raise self.limits.refuse(  # parity: request over max_request_elements
                f"the request's inputs hold {self._total}+ elements, more than the limit of "
                f"{self.limits.max_request_elements}", "max_request_elements")
        return count

    def shm_input(self, name: str, has_data: bool, dt: dtypes.DataType, shape: list[int],
                  count: int, parameters: Mapping[str, ParamValue]) -> Array:
        """Input `name` read from the region its parameters name (`has_data`: it has data
        of its own too)."""
        if has_data:
            raise InvalidInput(  # parity: shared memory input
                f"input '{name}': give either its data or a shared memory region, not both")
        return ShmUse.read(self.shm, name, dt, shape, count, parameters, self.limits)

    def add(self, name: str, array: Array, dt: dtypes.DataType) -> None:
        self.inputs[name] = array
        self.datatypes[name] = dt.name

    def request(self, model_name: str, version: str | None, request_id: str | None,
                parameters: dict[str, ParamValue],
                outputs: tuple[RequestedOutput, ...] | None) -> InferRequest:
        return InferRequest(model_name=model_name, version=version, inputs=self.inputs,
                            input_datatypes=self.datatypes, id=request_id,
                            parameters=parameters, outputs=outputs)
