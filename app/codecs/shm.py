"""One request's tensors in system shared memory: inputs read from regions, outputs written."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from functools import partial
from typing import Protocol

from app.codecs import dtypes
from app.codecs.checks import BYTE_SIZE, OFFSET, REGION, shm_location
from app.codecs.tensors import TensorLimits, array_from_buffer, array_view
from app.shm.cuda import CudaSharedMemory
from app.shm.errors import SharedMemoryError
from app.shm.system import SystemSharedMemory
from app.types import Array, InferRequest, InferResponse, ParamValue, RequestedOutput


def uses_shm(parameters: Container[str]) -> bool:
    """Whether a tensor's parameters place it in shared memory."""
    return REGION in parameters or BYTE_SIZE in parameters or OFFSET in parameters


def shm_output(parameters: Mapping[str, ParamValue]) -> bool:
    """Whether a requested output is to be written to a region (the encoders leave it out)."""
    return REGION in parameters


class Span(Protocol):
    """Bytes of a region: HostSpan (system, read in place) or DeviceSpan (CUDA, copied)."""

    nbytes: int

    def read(self) -> memoryview: ...
    def write(self, data: memoryview) -> None: ...


class ShmUse:
    """The regions one request uses: leased while it is decoded, released once answered.

    Inputs in system regions are views of the mapping (np.frombuffer, no copy), those in CUDA
    regions are copied to the host; outputs are copied in once. A region unregistered
    meanwhile stays mapped (or opened) until `close`.
    """

    __slots__ = ("_closed", "_cuda", "_leases", "_outputs", "_system")

    def __init__(self, system: SystemSharedMemory, cuda: CudaSharedMemory | None = None) -> None:
        self._system = system
        self._cuda = cuda
        self._closed = False
        self._leases: list[Callable[[], None]] = []  # each ends one lease
        #: requested output -> (its region's span, the region's name)
        self._outputs: dict[str, tuple[Span, str]] = {}

    @staticmethod
    def read(shm: ShmUse | None, name: str, dt: dtypes.DataType, shape: Sequence[int],
             count: int, parameters: Mapping[str, ParamValue], limits: TensorLimits) -> Array:
        """Input `name`'s array, from the region its parameters name."""
        if shm is None:  # pragma: no cover - every transport passes one
            raise SharedMemoryError(f"input '{name}': shared memory is not available here")
        span = shm._span(f"input '{name}'", parameters)
        return array_from_buffer(name, dt, shape, span.read(), count, limits)

    def output(self, name: str, parameters: Mapping[str, ParamValue]) -> None:
        """Check and lease the region requested output `name` is to be written to."""
        self._outputs[name] = (self._span(f"output '{name}'", parameters),
                               str(parameters[REGION]))

    @property
    def output_bytes(self) -> int:
        """The most bytes `write_outputs` copies (to decide whether to copy off the loop)."""
        return sum(span.nbytes for span, _ in self._outputs.values())

    def write_outputs(self, response: InferResponse) -> None:
        """Copy each output a region was requested for into it. Blocking (a memory copy):
        run big ones on a worker thread."""
        for name, (span, region) in self._outputs.items():
            array = response.outputs.get(name)
            if array is None:  # pragma: no cover - the service answers every requested output
                continue
            data = array_view(array, dtypes.BY_NAME[response.output_datatypes[name]])
            if data.nbytes > span.nbytes:
                raise SharedMemoryError(
                    f"output '{name}': {data.nbytes} bytes do not fit in the "
                    f"shared_memory_byte_size of {span.nbytes} given for region '{region}'")
            span.write(data)

    def close(self) -> None:
        """End the leases (idempotent)."""
        self._closed = True
        leases, self._leases = self._leases, []
        self._outputs.clear()
        for end in leases:
            end()

    def _span(self, where: str, parameters: Mapping[str, ParamValue]) -> Span:
        region_name, offset, byte_size = shm_location(where, parameters)
        if self._closed:  # a decode that outlived its cancelled request
            raise SharedMemoryError(f"{where}: the request has ended")
        cuda = self._cuda.acquire(region_name) if self._cuda is not None else None
        if cuda is not None:
            assert self._cuda is not None  # nosec B101 # narrows a type: it gave the lease
            self._leases.append(partial(self._cuda.release, cuda))
            return cuda.span(offset, byte_size, where)
        region = self._system.acquire(region_name)  # UnknownRegion when neither has it
        self._leases.append(partial(self._system.release, region))
        return region.span(offset, byte_size, where)


def lease_outputs(shm: ShmUse | None, outputs: Sequence[RequestedOutput] | None) -> None:
    """Check and lease the region of each requested output that names one."""
    for wanted in outputs or ():
        if uses_shm(wanted.parameters):
            if shm is None:  # pragma: no cover - every transport passes one
                raise SharedMemoryError(f"output '{wanted.name}': shared memory is not "
                                        "available here")
            shm.output(wanted.name, wanted.parameters)


def shm_outputs(request: InferRequest) -> dict[str, Mapping[str, ParamValue]]:
    """The requested outputs written to regions: name -> their parameters."""
    return {o.name: o.parameters for o in request.outputs or () if shm_output(o.parameters)}
