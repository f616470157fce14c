"""The effective model configuration: one typed Triton ModelConfig, configured and completed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from app.codecs import dtypes
from app.models.devices import Placement
from app.models.ensemble import ensemble_view, is_ensemble
from app.models.version import LoadedModel
from app.protos_gen import model_config_pb2 as pb
from app.repository import triton_config
from app.types import TensorSpec

BACKEND = "onnxruntime"


@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """What a version runs with: `message` (gRPC's answer, Triton's fields only) and the
    facts /config's JSON adds beside them (annotations: each instance group's providers and
    note, the response cache's note; `load` takes them back and recomputes them)."""

    message: pb.ModelConfig
    groups: list[dict[str, Any]] = field(default_factory=list)
    cache_note: str = ""
    #: onnx-serve's own settings beside Triton's (triton_config.OURS), where not defaults
    ours: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        document = triton_config.to_json(self.message)
        for entry, extra in zip(document.get("instance_group", []), self.groups, strict=False):
            entry.update(extra)
        if self.cache_note:
            document.setdefault("response_cache", {})["note"] = self.cache_note
        padding = self.ours.get("padding")
        if padding and "dynamic_batching" in document:
            document["dynamic_batching"]["padding"] = padding
        document.update({k: v for k, v in self.ours.items() if k != "padding"})
        return document


def _ours(model: LoadedModel) -> dict[str, Any]:
    config = model.config
    ours: dict[str, Any] = config.model_dump(mode="json", include=set(triton_config.OURS),
                                             exclude_defaults=True)
    if config.dynamic_batching.padding:
        ours["padding"] = [p.model_dump(mode="json") for p in config.dynamic_batching.padding]
    return ours


def _tensor(spec: TensorSpec, batched: bool, reshape: tuple[int, ...] | None) -> dict[str, Any]:
    # Triton lists dims without the batch dimension when the model batches.
    dims = list(spec.shape[1:] if batched else spec.shape)
    data_type = dtypes.BY_NAME[spec.datatype].triton_name
    entry: dict[str, Any] = {"name": spec.name, "data_type": data_type, "dims": dims}
    if reshape is not None:
        entry["reshape"] = {"shape": list(reshape)}
    return entry


def _instance_groups(model: LoadedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One entry per configured group (Triton's name, or `<model>_<index>`), split where its
    instances really differ (device, provider chain, why it differs from the request, e.g.
    a GPU asked for on a CPU-only build); and, beside each, its providers and note."""
    configured = model.config.instance_group
    groups: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    last: tuple[object, ...] | None = None
    for placement, runner in zip(model.pool.placements, model.pool.runners, strict=True):
        index = placement.instance.group
        key = (*_group_key(placement), runner.io_binding)
        if last == key:
            groups[-1]["count"] += 1
            continue
        last = key
        name = configured[index].name if index < len(configured) else ""
        entry: dict[str, Any] = {"name": name or f"{model.key.name}_{index}",
                                 "kind": key[1], "count": 1}
        if key[1] == "KIND_GPU":
            entry["gpus"] = [placement.instance.device_id]
        groups.append(entry)
        notes.append({"providers": list(placement.names)}
                     # inputs and outputs bound on the device (app/models/io_binding.py)
                     | ({"io_binding": True} if runner.io_binding else {})
                     | ({"note": placement.note} if placement.note else {}))
    return groups, notes


def _group_key(placement: Placement) -> tuple[object, ...]:
    instance = placement.instance
    kind = "KIND_GPU" if instance.kind == "gpu" else "KIND_CPU"
    device = instance.device_id if kind == "KIND_GPU" else None
    return instance.group, kind, device, placement.names, placement.note


def _parameter(value: object) -> str:
    """A configured parameter as Triton's string_value (booleans as config.pbtxt spells them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _model_shape(model: LoadedModel, output: str) -> tuple[int, ...] | None:
    """An output's reshape is the model's shape; the signature keeps the client's."""
    for override in model.config.output:
        if override.name == output and override.reshape is not None:
            return tuple(override.reshape.shape)
    return None


def effective_config(model: LoadedModel, platform: str, caches: bool = False,
                     cache_note: str = "") -> EffectiveConfig:
    """What the server actually runs, as one Triton ModelConfig: what the sessions and the
    scheduler report, then whatever else the configuration set, as it set it."""
    document = _document(model, platform)
    groups, notes = _instance_groups(model)
    document["instance_group"] = groups
    document["response_cache"] = {"enable": caches}
    if is_ensemble(model.config):
        document = ensemble_view(document)
    message = json_format.ParseDict(document, pb.ModelConfig())
    configured = model.config.triton_message()
    if configured is not None:
        keep_configured(message, configured)
    return EffectiveConfig(message, notes, cache_note, _ours(model))


def _document(model: LoadedModel, platform: str) -> dict[str, Any]:
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
    label_files = {t.name: t.label_filename for t in model.config.output if t.label_filename}
    for entry in config["output"]:
        if entry["name"] in label_files:
            entry["label_filename"] = label_files[entry["name"]]
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


def keep_configured(target: Message, configured: Message) -> None:
    """Copy into `target` what `configured` sets and `target` leaves out (metadata such as
    `model_transaction_policy`, explicit defaults such as `optimization.cuda`); entries of a
    list are matched by name. What `target` reports itself wins."""
    for descriptor, value in configured.ListFields():
        name = descriptor.name
        if descriptor.is_repeated:
            mine = getattr(target, name)
            if not len(mine):
                mine.MergeFrom(value)
            elif descriptor.message_type is not None and "name" in \
                    descriptor.message_type.fields_by_name and \
                    not descriptor.message_type.GetOptions().map_entry:
                by_name = {item.name: item for item in mine}
                for item in value:
                    if item.name in by_name:
                        keep_configured(by_name[item.name], item)
        elif descriptor.message_type is not None:
            if target.HasField(name):
                keep_configured(getattr(target, name), value)
            else:
                getattr(target, name).CopyFrom(value)
        elif not target.HasField(name) if descriptor.has_presence else \
                getattr(target, name) == descriptor.default_value:
            setattr(target, name, value)
