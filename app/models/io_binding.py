"""How one session runs a batch: plainly on CPU, through IO binding on a GPU (CUDA graphs too).

`session.run` with numpy arrays copies every input host -> device and every output back on
each call, into freshly allocated device memory. A GPU instance instead keeps one device
buffer per input (reused while the batch's shape and dtype stay the same: one host -> device
copy into it per batch), binds its outputs on the device and copies them back once. With
CUDA graphs (`enable_cuda_graph` on the CUDA provider, `trt_cuda_graph_enable` on TensorRT)
the addresses must never change, so the outputs stay bound to the buffers of the first run
(the warmup, which captures the graph) and the model must have fixed shapes (checked at load).

Thread-safety: a runner belongs to one session and the pool runs one batch per session at a
time (session_pool.py), so a runner is never used by two threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from app.errors import UnsupportedModel
from app.models import cuda_streams, ort_values
from app.models.devices import CUDA, TENSORRT, Placement
from app.types import Array, TensorSpec

#: provider -> the option that turns CUDA graphs on, and the values that mean "on"
GRAPH_OPTIONS = {CUDA: "enable_cuda_graph", TENSORRT: "trt_cuda_graph_enable"}
_ON = ("1", "true", "True")


class SessionRunner(Protocol):
    session: ort.InferenceSession
    io_binding: bool  # whether inputs and outputs are bound on the device

    def run(self, names: Sequence[str], feed: Mapping[str, Array],
            options: ort.RunOptions | None) -> list[Array]: ...

    def close(self) -> None:
        """Drop the session, then free the CUDA stream it ran on (cuda_streams.py)."""


class _OwnsStream:
    """A runner owns its instance's CUDA stream: freed once the session is gone."""

    session: Any
    stream: int | None = None
    #: frees a stream (the CUDA runtime's cudaStreamDestroy; a fake one in tests)
    release: Callable[[int], None] = staticmethod(cuda_streams.destroy)

    def close(self) -> None:
        self.session = None  # the pool holds no other reference: the session goes now
        if self.stream is not None:
            self.release(self.stream)
            self.stream = None


class PlainRunner(_OwnsStream):
    """CPU instances: onnxruntime reads the numpy inputs where they are."""

    io_binding = False

    def __init__(self, session: ort.InferenceSession, stream: int | None = None) -> None:
        self.session = session
        self.stream = stream  # a GPU instance that onnxruntime put on the CPU

    def run(self, names: Sequence[str], feed: Mapping[str, Array],
            options: ort.RunOptions | None) -> list[Array]:
        return list(self.session.run(list(names), dict(feed), options))


class ValuesRunner(_OwnsStream):
    """Models with BF16 tensors, which cross onnxruntime's API only as OrtValues
    (ort_values.py); on a GPU too (their outputs come back to the host)."""

    io_binding = False

    def __init__(self, session: ort.InferenceSession, stream: int | None = None) -> None:
        self.session = session
        self.stream = stream

    def run(self, names: Sequence[str], feed: Mapping[str, Array],
            options: ort.RunOptions | None) -> list[Array]:
        return ort_values.run(self.session, names, feed, options)


class BoundRunner(_OwnsStream):
    """GPU instances: inputs into reused device buffers, outputs bound on the device."""

    io_binding = True

    def __init__(self, session: ort.InferenceSession, device: str, device_id: int,
                 graphs: bool = False, stream: int | None = None) -> None:
        self.session = session
        self.stream = stream
        self._device, self._device_id = device, device_id
        self.graphs = graphs
        self._binding = session.io_binding()
        #: input name -> (shape, dtype, device buffer)
        self._buffers: dict[str, tuple[tuple[int, ...], np.dtype[Any], Any]] = {}
        self._outputs_bound: tuple[str, ...] | None = None  # graphs: bound once, kept
        self._all_outputs = tuple(output.name for output in session.get_outputs())
        self.allocations = 0  # device buffers made for inputs (reuse shows as none)

    def run(self, names: Sequence[str], feed: Mapping[str, Array],
            options: ort.RunOptions | None) -> list[Array]:
        if any(array.dtype.kind in "OSU" for array in feed.values()):
            # strings live on the host only: onnxruntime copies what the graph needs
            return list(self.session.run(list(names), dict(feed), options))
        binding = self._binding
        binding.clear_binding_inputs()
        for name, array in feed.items():
            binding.bind_ortvalue_input(name, self._buffer(name, array))
        # a graph replays every output it captured: bind them all, answer those asked for
        bound = self._all_outputs if self.graphs else tuple(names)
        if self._outputs_bound is None:
            binding.clear_binding_outputs()
            for name in bound:
                binding.bind_output(name, self._device, self._device_id)
        self.session.run_with_iobinding(binding, options)
        if self.graphs and self._outputs_bound is None:
            self._keep_outputs(bound)
        values = binding.copy_outputs_to_cpu()
        if not self.graphs:
            return list(values)
        return [values[bound.index(name)] for name in names]

    def _buffer(self, name: str, array: Array) -> Any:
        """The device buffer for `name`, holding `array` (one host -> device copy)."""
        array = np.ascontiguousarray(array)
        held = self._buffers.get(name)
        if held is not None and held[0] == array.shape and held[1] == array.dtype:
            held[2].update_inplace(array)
            return held[2]
        buffer = ort.OrtValue.ortvalue_from_numpy(array, self._device, self._device_id)
        self._buffers[name] = (array.shape, array.dtype, buffer)
        self.allocations += 1
        return buffer

    def _keep_outputs(self, names: tuple[str, ...]) -> None:
        """Rebind the first run's device outputs by value, so replays write there."""
        outputs = self._binding.get_outputs()
        self._binding.clear_binding_outputs()
        for name, value in zip(names, outputs, strict=True):
            self._binding.bind_ortvalue_output(name, value)
        self._outputs_bound = names


def uses_graphs(placement: Placement) -> bool:
    options = dict(placement.providers)
    return any(options.get(provider, {}).get(key) in _ON
               for provider, key in GRAPH_OPTIONS.items())


def runner_for(session: ort.InferenceSession, placement: Placement | None,
               stream: int | None = None) -> SessionRunner:
    """The runner of one instance: IO binding where the session really runs on a GPU. It
    owns `stream`, the instance's CUDA stream, if any."""
    if ort_values.needs_values(session):
        return ValuesRunner(session, stream)
    if (placement is None or placement.instance.kind != "gpu"
            or not any(name in placement.names for name in (CUDA, TENSORRT))
            # a sequence or map output (a ZipMap's) cannot be bound on a device
            or not all(o.type.startswith("tensor(") for o in session.get_outputs())):
        return PlainRunner(session, stream)
    return BoundRunner(session, "cuda", placement.instance.device_id, uses_graphs(placement),
                       stream)


def check_graph_shapes(inputs: Sequence[TensorSpec], max_batch_size: int) -> None:
    """CUDA graphs replay fixed addresses and shapes: a model that batches or has a dynamic
    dim cannot use them (refused at load, naming the input)."""
    if max_batch_size > 0:
        raise UnsupportedModel("CUDA graphs need fixed shapes: the model batches "
                               f"(max_batch_size {max_batch_size}); set max_batch_size: 0")
    for spec in inputs:
        if any(d < 0 for d in spec.shape):
            raise UnsupportedModel(f"CUDA graphs need fixed shapes: input '{spec.name}' has "
                                   f"dims {list(spec.shape)}")
