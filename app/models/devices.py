"""Instances and execution providers: which device each session runs on, with which options.

Pure functions of the config and of what this onnxruntime build offers, so the CUDA and
TensorRT paths are unit-tested on machines without a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import UnsupportedModel
from app.models.tensorrt import tensorrt_options
from app.repository.execution_config import Accelerator, InstanceGroup, ParameterValue
from app.types import TensorSpec

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ProviderList = list[tuple[str, dict[str, str]]]

#: Triton's ORT-backend model parameters that configure the CUDA provider.
_CUDA_PARAMETERS = ("cudnn_conv_algo_search", "gpu_mem_limit", "arena_extend_strategy",
                    "do_copy_in_default_stream")
_CUDNN_SEARCH = {"0": "EXHAUSTIVE", "1": "HEURISTIC", "2": "DEFAULT"}
_ARENA_EXTEND = {"0": "kNextPowerOfTwo", "1": "kSameAsRequested"}


@dataclass(frozen=True, slots=True)
class Instance:
    """One session's place: `gpu` instances carry the CUDA device id."""

    kind: str  # "cpu" or "gpu"
    device_id: int = 0
    auto: bool = False  # KIND_AUTO chose the GPU: without a usable one it means the CPU
    #: which instance_group it came from (/config lists groups as configured); not its place
    group: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Placement:
    """The providers an instance will really use, and why they differ from what was asked."""

    instance: Instance
    providers: ProviderList
    note: str = ""
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.providers))


def plan_instances(groups: Sequence[InstanceGroup], cuda_available: bool,
                   gpu_count: int, default_cpu_count: int) -> list[Instance]:
    """Expand instance groups (Triton semantics) into one Instance per session.

    A GPU group without `gpus` puts `count` instances on every visible GPU (`gpu_count`, as
    gpus.visible() counted them); KIND_GPU with none counted still asks for GPU 0, so the load
    fails under strict providers or says it runs on CPU, rather than quietly planning nothing.
    """
    instances: list[Instance] = []
    for index, group in enumerate(groups or (InstanceGroup(kind="KIND_AUTO",
                                                         count=default_cpu_count),)):
        kind = group.kind
        if kind == "KIND_AUTO":
            kind = "KIND_GPU" if cuda_available and gpu_count > 0 else "KIND_CPU"
        if kind == "KIND_CPU":
            instances += [Instance("cpu", group=index)] * group.count
        else:
            gpus = group.gpus or list(range(max(gpu_count, 1)))
            instances += [Instance("gpu", gpu, group.kind == "KIND_AUTO", index)
                          for gpu in gpus for _ in range(group.count)]
    return instances


def place(instance: Instance, accelerators: Sequence[Accelerator],
          parameters: Mapping[str, ParameterValue], available: Collection[str], strict: bool,
          inputs: Sequence[TensorSpec] = (), max_batch_size: int = 0,
          cache: Path | None = None, trt_key: str | None = None) -> Placement:
    """The provider chain for one instance: TensorRT, then CUDA, then CPU as fallbacks.

    A GPU that this build cannot use falls back to CPU with a note, or fails the load when
    `strict`; onnxruntime itself rejects unknown provider options at session creation.
    `cache` is this version's folder in the server's cache directory and `trt_key` names this
    instance's GPU model and TensorRT version (tensorrt.cache_key): TensorRT's caches.
    """
    if instance.kind == "cpu":
        return Placement(instance, [(CPU, {})])
    wanted = [a.name.lower() for a in accelerators]
    unknown = [name for name in wanted if name not in ("tensorrt", "cuda")]
    if unknown:
        raise UnsupportedModel(f"unknown gpu_execution_accelerator '{unknown[0]}' "
                               "(onnx-serve knows tensorrt and cuda)")
    if CUDA not in available:
        return _fallback(instance, f"GPU {instance.device_id} requested but this onnxruntime "
                         f"build has no CUDA (available: {', '.join(sorted(available))})", strict)
    cuda = cuda_options(instance.device_id, parameters, _params(accelerators, "cuda"))
    chain: ProviderList = [(CUDA, cuda), (CPU, {})]
    note = ""
    if "tensorrt" in wanted:
        if TENSORRT in available:
            trt = tensorrt_options(instance.device_id, _params(accelerators, "tensorrt"),
                                   inputs, max_batch_size, cache, trt_key)
            chain.insert(0, (TENSORRT, trt))
        elif strict:
            raise UnsupportedModel("TensorRT requested but this onnxruntime build has none")
        else:
            note = "TensorRT requested but this onnxruntime build has none; using CUDA"
            log.warning("%s", note)
    return Placement(instance, chain, note)


def confirm(placement: Placement, actual: Sequence[str], strict: bool) -> Placement:
    """The placement as its session really got it (`session.get_providers()`).

    onnxruntime drops a provider it cannot start and carries on without it: onnxruntime-gpu
    on a host without a usable CUDA driver or libraries runs on CPU, saying so only in its
    own log. Under `strict` a missing provider fails the load, by name (except that KIND_AUTO
    with no usable GPU means the CPU); otherwise the instance runs on what it got, with a
    warning and a note that /config and the repository index show.
    """
    missing = [name for name in placement.names if name not in actual]
    if not missing:
        return placement
    gpu_lost = not any(name in actual for name in (CUDA, TENSORRT))
    why = (f"{', '.join(missing)} requested for GPU {placement.instance.device_id} but "
           "onnxruntime could not start it (no usable device, driver or libraries?)")
    got = ", ".join(actual)
    if strict and not (placement.instance.auto and gpu_lost):
        raise UnsupportedModel(f"{why}; the session got {got or 'none'}; not falling back "
                               "(strict providers)")
    log.warning("%s; running this instance on %s", why, got)
    options = dict(placement.providers)
    note = "; ".join(n for n in (placement.note, f"{why}; running on {got}") if n)
    instance = Instance("cpu", group=placement.instance.group) if gpu_lost \
        else placement.instance
    return Placement(instance, [(name, options.get(name, {})) for name in actual], note)


def _fallback(instance: Instance, why: str, strict: bool) -> Placement:
    if strict:
        raise UnsupportedModel(f"{why}; not falling back to CPU (strict providers)")
    log.warning("%s; running this instance on CPU", why)
    return Placement(Instance("cpu", group=instance.group), [(CPU, {})],
                     f"{why}; running on CPU")


def _params(accelerators: Sequence[Accelerator], name: str) -> dict[str, ParameterValue]:
    for accelerator in accelerators:
        if accelerator.name.lower() == name:
            return dict(accelerator.parameters)
    return {}


def _text(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def cuda_options(device_id: int, parameters: Mapping[str, ParameterValue],
                 accelerator: Mapping[str, ParameterValue]) -> dict[str, str]:
    """CUDA provider options from Triton's model parameters and `cuda` accelerator keys."""
    options = {"device_id": str(device_id)}
    for key in _CUDA_PARAMETERS:
        if key in parameters:
            value = _text(parameters[key])
            if key == "cudnn_conv_algo_search":
                value = _CUDNN_SEARCH.get(value, value)
            elif key == "arena_extend_strategy":
                value = _ARENA_EXTEND.get(value, value)
            elif key == "do_copy_in_default_stream":
                value = "True" if value in ("1", "True", "true") else "False"
            options[key] = value
    options.update({key: _text(value) for key, value in accelerator.items()})
    return options
