"""One request's tensors in system shared memory: inputs read from regions, outputs written."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

from app.codecs import dtypes
from app.codecs.tensors import TensorLimits, array_from_buffer, array_view
from app.shm.errors import SharedMemoryError
from app.shm.system import SystemRegion, SystemSharedMemory
from app.types import Array, InferRequest, InferResponse, ParamValue, RequestedOutput

REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"
PARAMETERS = (REGION, OFFSET, BYTE_SIZE)


def uses_shm(parameters: Container[str]) -> bool:
    """Whether a tensor's parameters place it in shared memory."""
    return REGION in parameters or BYTE_SIZE in parameters or OFFSET in parameters


def shm_output(parameters: Mapping[str, ParamValue]) -> bool:
    """Whether a requested output is to be written to a region (the encoders leave it out)."""
    return REGION in parameters


class ShmUse:
    """The regions one request uses: leased while it is decoded, released once answered.

    Input arrays are views of the mapping (np.frombuffer, no copy); outputs are copied in
    once. A region unregistered meanwhile stays mapped until `close`.
    """

    __slots__ = ("_closed", "_leases", "_outputs", "_registry")

    def __init__(self, registry: SystemSharedMemory) -> None:
        self._registry = registry
        self._closed = False
        self._leases: list[SystemRegion] = []
        #: requested output -> (its region's view, the region's name)
        self._outputs: dict[str, tuple[memoryview, str]] = {}

    @staticmethod
    def read(shm: ShmUse | None, name: str, dt: dtypes.DataType, shape: Sequence[int],
             count: int, parameters: Mapping[str, ParamValue], limits: TensorLimits) -> Array:
        """Input `name`'s array, a view of the region its parameters name."""
        if shm is None:  # pragma: no cover - every transport passes one
            raise SharedMemoryError(f"input '{name}': shared memory is not available here")
        view = shm._view(f"input '{name}'", parameters)
        return array_from_buffer(name, dt, shape, view.toreadonly(), count, limits)

    def output(self, name: str, parameters: Mapping[str, ParamValue]) -> None:
        """Check and lease the region requested output `name` is to be written to."""
        self._outputs[name] = (self._view(f"output '{name}'", parameters),
                               str(parameters[REGION]))

    @property
    def output_bytes(self) -> int:
        """The most bytes `write_outputs` copies (to decide whether to copy off the loop)."""
        return sum(view.nbytes for view, _ in self._outputs.values())

    def write_outputs(self, response: InferResponse) -> None:
        """Copy each output a region was requested for into it. Blocking (a memory copy):
        run big ones on a worker thread."""
        for name, (view, region) in self._outputs.items():
            array = response.outputs.get(name)
            if array is None:  # pragma: no cover - the service answers every requested output
                continue
            data = array_view(array, dtypes.BY_NAME[response.output_datatypes[name]])
            if data.nbytes > view.nbytes:
                raise SharedMemoryError(
                    f"output '{name}': {data.nbytes} bytes do not fit in the "
                    f"shared_memory_byte_size of {view.nbytes} given for region '{region}'")
            view[:data.nbytes] = data

    def close(self) -> None:
        """End the leases (idempotent)."""
        self._closed = True
        leases, self._leases = self._leases, []
        self._outputs.clear()
        for region in leases:
            self._registry.release(region)

    def _view(self, where: str, parameters: Mapping[str, ParamValue]) -> memoryview:
        region_name = parameters.get(REGION)
        if not isinstance(region_name, str) or not region_name:
            raise SharedMemoryError(f"{where}: {_shown_keys(parameters)} need parameter "
                                    f"'{REGION}' (a registered region's name)")
        byte_size = _integer(where, parameters, BYTE_SIZE, None)
        offset = _integer(where, parameters, OFFSET, 0)
        if self._closed:  # a decode that outlived its cancelled request
            raise SharedMemoryError(f"{where}: the request has ended")
        region = self._registry.acquire(region_name)
        self._leases.append(region)
        return region.view(offset, byte_size, where)


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


def _integer(where: str, parameters: Mapping[str, ParamValue], key: str,
             default: int | None) -> int:
    value = parameters.get(key, default)
    if value is None:
        raise SharedMemoryError(f"{where}: parameter '{key}' is needed with '{REGION}'")
    if isinstance(value, bool) or not isinstance(value, int):
        raise SharedMemoryError(f"{where}: parameter '{key}' must be an integer, got "
                                f"{value!r}")
    return value


def _shown_keys(parameters: Mapping[str, ParamValue]) -> str:
    return ", ".join(f"'{k}'" for k in PARAMETERS if k in parameters) or "the parameters"
