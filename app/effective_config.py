"""The effective model configuration in Triton's field names, for the config endpoints."""

from __future__ import annotations

from typing import Any

from app.codecs import dtypes
from app.models.version import LoadedModel
from app.types import TensorSpec

BACKEND = "onnxruntime"


def _tensor(spec: TensorSpec, batched: bool, reshape: tuple[int, ...] | None) -> dict[str, Any]:
    # Triton lists dims without the batch dimension when the model batches.
    dims = list(spec.shape[1:] if batched else spec.shape)
    data_type = dtypes.BY_NAME[spec.datatype].triton_name
    entry: dict[str, Any] = {"name": spec.name, "data_type": data_type, "dims": dims}
    if reshape is not None:
        entry["reshape"] = {"shape": list(reshape)}
    return entry


def _instance_groups(model: LoadedModel) -> list[dict[str, Any]]:
    """What each instance really runs with: device, provider chain, and why it differs from
    the request (e.g. a GPU asked for on a CPU-only build)."""
    groups: list[dict[str, Any]] = []
    for placement in model.pool.placements:
        kind = "KIND_GPU" if placement.instance.kind == "gpu" else "KIND_CPU"
        entry: dict[str, Any] = {"name": f"{model.key.name}_{len(groups)}", "kind": kind,
                                 "count": 1, "providers": list(placement.names)}
        if kind == "KIND_GPU":
            entry["gpus"] = [placement.instance.device_id]
        if placement.note:
            entry["note"] = placement.note
        last = groups[-1] if groups else None
        if last and all(last.get(k) == entry.get(k) for k in ("kind", "gpus", "providers",
                                                                "note")):
            last["count"] += 1
        else:
            groups.append(entry)
    return groups


def _parameter(value: object) -> str:
    """A configured parameter as Triton's string_value (booleans as config.pbtxt spells them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _model_shape(model: LoadedModel, output: str) -> tuple[int, ...] | None:
    """An output's reshape is the model's shape; the signature keeps the client's."""
    for override in model.config.output:
        if override.name == output and override.reshape is not None:
            return tuple(override.reshape.shape)
    return None


def effective_config(model: LoadedModel, platform: str) -> dict[str, Any]:
    """What the server actually runs, as Triton's ModelConfig JSON (a documented subset)."""
    signature = model.signature
    batched = signature.max_batch_size > 0
    config: dict[str, Any] = {
        "name": model.key.name,
        "platform": platform,
        "backend": BACKEND,
        "max_batch_size": signature.max_batch_size,
        "input": [_tensor(s, batched, signature.reshape_inputs.get(s.name))
                  for s in signature.inputs],
        "output": [_tensor(s, batched, _model_shape(model, s.name))
                   for s in signature.outputs],
        "instance_group": _instance_groups(model),
        "parameters": {"intra_op_thread_count": {"string_value": str(model.intra_op_threads)},
                       **{key: {"string_value": _parameter(value)}
                          for key, value in model.config.parameters.items()
                          if key != "intra_op_thread_count"},
                       **{key: {"string_value": str(value)}
                          for key, value in model.parameters.items()}},
        "default_model_filename": model.config.default_model_filename,
        "version_policy": model.config.version_policy.model_dump(exclude_none=True)
        or {"latest": {"num_versions": 1}},
    }
    config.update(model.scheduler.describe())
    _configured(config, model)
    return config


def _configured(config: dict[str, Any], model: LoadedModel) -> None:
    """What the model's configuration set that the sessions do not report themselves:
    input formats, the optimization section, warmup samples (Triton's spellings)."""
    formats = {t.name: t.format for t in model.config.input if t.format != "FORMAT_NONE"}
    for entry in config["input"]:
        if entry["name"] in formats:
            entry["format"] = formats[entry["name"]]
    optimization = model.config.optimization.model_dump(mode="json")
    for kind in ("gpu_execution_accelerator", "cpu_execution_accelerator"):
        for accelerator in optimization["execution_accelerators"][kind]:
            accelerator["parameters"] = {key: _parameter(value) for key, value
                                         in accelerator["parameters"].items()}
    config["optimization"] = optimization
    if model.config.model_operations.op_library_filename:
        config["model_operations"] = model.config.model_operations.model_dump()
    if model.config.model_warmup:
        config["model_warmup"] = [
            {**warmup.model_dump(mode="json", exclude={"inputs"}),
             "inputs": {name: sample.model_dump(mode="json", exclude_none=True,
                                                exclude_defaults=True)
                        | {"data_type": sample.data_type, "dims": sample.dims}
                        for name, sample in warmup.inputs.items()}}
            for warmup in model.config.model_warmup]
