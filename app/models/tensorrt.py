"""TensorRT provider options: Triton's keys, optimisation profiles, and where its caches live.

An engine is built for one model, one GPU model and one TensorRT version: its caches go to
`<cache_dir>/<model>/<version>/<name>/<gpu>/<tensorrt>/`, so a restart or a new replica with
the same volume and the same kind of GPU loads the engine instead of building it again, and a
different GPU or TensorRT never reads an engine it cannot use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.errors import UnsupportedModel
from app.models.gpus import Gpu
from app.models.signature import Signature
from app.repository.execution_config import ParameterValue
from app.repository.paths import is_file_name
from app.types import TensorSpec

log = logging.getLogger(__name__)

#: Triton's TensorRT accelerator keys whose onnxruntime name differs.
_RENAMES = {
    "max_workspace_size_bytes": "trt_max_workspace_size",
    "int8_calibration_table_name": "trt_int8_calibration_table_name",
    "int8_use_native_calibration_table": "trt_int8_use_native_calibration_table",
}
#: path option -> the option that turns that cache on.
_CACHES = {"trt_engine_cache_path": "trt_engine_cache_enable",
           "trt_timing_cache_path": "trt_timing_cache_enable"}
_CACHE_NAME = "tensorrt"


def _text(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def cache_key(gpu: Gpu | None, trt_version: str | None) -> str | None:
    """`<gpu model>_sm<capability>/trt<version>`, or None when either is unknown (an engine
    cache shared on a guess could hand one GPU another's engine)."""
    if gpu is None or not gpu.compute_capability or not trt_version:
        return None
    sm = "sm" + gpu.compute_capability.replace(".", "")
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", gpu.name).strip("_.")
    return f"{name}_{sm}/trt{trt_version}" if name else f"{sm}/trt{trt_version}"


def tensorrt_options(device_id: int, accelerator: Mapping[str, ParameterValue],
                     inputs: Sequence[TensorSpec], max_batch_size: int,
                     cache: Path | None = None, key: str | None = None) -> dict[str, str]:
    """TensorRT options from Triton's accelerator keys (renamed where ORT's differ; the rest
    pass through), with optimisation profiles derived from max_batch_size when not given.

    The engine and timing caches always go under `cache/<name>/<key>` (default name
    `tensorrt`): the config names a folder inside the cache (repository/file_options.py
    checked it), never a path, and nothing lands in the working directory. With a cache
    directory and a known `key` (GPU and TensorRT version) both caches are on by default.
    """
    options = {"device_id": str(device_id)}
    for name, value in accelerator.items():
        if name == "precision_mode":
            precision = str(value).upper()
            if precision not in ("FP32", "FP16", "INT8"):
                raise UnsupportedModel(f"TensorRT precision_mode '{value}' is not FP32/FP16/INT8")
            options["trt_fp16_enable"] = _text(precision in ("FP16", "INT8"))
            options["trt_int8_enable"] = _text(precision == "INT8")
        else:
            options[_RENAMES.get(name, name)] = _text(value)
    for option, enable in _CACHES.items():
        folder = options.pop(option, _CACHE_NAME)
        if not is_file_name(folder):  # the config schema refuses these; never trust a path
            raise UnsupportedModel(f"'{option}' must be a folder name inside the cache")
        if cache is not None:
            options[option] = str(cache / folder / (key or "unknown-gpu"))
            if key is not None:
                options.setdefault(enable, "True")
        elif option in accelerator:
            raise UnsupportedModel(f"'{option}' needs the server's cache directory")
    if cache is not None and key is None:
        log.info("GPU %d: GPU model or TensorRT version unknown (install the gpu extra for "
                 "NVML): TensorRT engine caches stay off unless the config turns them on",
                 device_id)
    if "trt_profile_min_shapes" not in options:
        options.update(tensorrt_profiles(inputs, max_batch_size))
    return options


def profile_inputs(model: Sequence[TensorSpec], signature: Signature) -> list[TensorSpec]:
    """The model's input shapes with the dims the config fixes filled in (`dims`, or the
    `reshape` the server feeds the model), so more models get a static profile."""
    batch = (-1,) if signature.max_batch_size > 0 else ()
    configured = {s.name: s.shape for s in signature.inputs}
    merged = []
    for spec in model:
        given = signature.reshape_inputs.get(spec.name)
        side = batch + given if given is not None else configured.get(spec.name, spec.shape)
        if len(side) != len(spec.shape):
            side = spec.shape
        shape = tuple(m if m >= 0 else c for m, c in zip(spec.shape, side, strict=True))
        merged.append(TensorSpec(spec.name, spec.datatype, shape))
    return merged


def tensorrt_profiles(inputs: Sequence[TensorSpec], max_batch_size: int) -> dict[str, str]:
    """min/opt/max shapes 1 / max / max along the batch dimension, so one engine serves every
    batch the batcher forms and is cached across restarts. Only when every other dim is fixed:
    otherwise TensorRT builds an engine per new shape (give trt_profile_* to bound them)."""
    if max_batch_size <= 0 or not inputs:
        return {}
    dynamic = [s.name for s in inputs if -1 in s.shape[1:]]
    if dynamic:
        log.info("TensorRT: inputs %s have dynamic dims besides the batch; no optimisation "
                 "profile derived (set trt_profile_min/opt/max_shapes to bound them)", dynamic)
        return {}

    def shapes(batch: int) -> str:
        return ",".join(f"{s.name}:{'x'.join(str(d) for d in (batch, *s.shape[1:]))}"
                        for s in inputs)

    return {"trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(max_batch_size),
            "trt_profile_max_shapes": shapes(max_batch_size)}
