"""Triton's ModelConfig (config.pbtxt, Triton's JSON form) -> our ModelConfig, refusing by name.

Parsing is protobuf's own (text format and JSON, protos/model_config.proto): comments, lists or
repeated blocks, `,`/`;` separators and enum names behave exactly as in Triton. What the
message sets is then walked against SUPPORTED: a field we do not implement that holds
anything but its default value refuses the model, naming the field (an explicit default, such
as `response_cache { enable: false }`, changes nothing and is accepted).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from app.errors import TritonConfigError
from app.protos_gen import model_config_pb2 as pb
from app.repository.ensemble_config import ENSEMBLE_PLATFORM

#: What we implement, as a tree of field names: True accepts the field and everything below
#: it (the pydantic schema checks the values); a dict accepts the message and, below it,
#: only the fields it lists. Anything else set to a non-default value is refused.
Tree = dict[str, "Tree | bool"]
_TENSOR: Tree = {"name": True, "data_type": True, "dims": True, "reshape": True}
SUPPORTED: Tree = {
    "name": True, "platform": True, "backend": True,
    "version_policy": True,
    "max_batch_size": True,
    "input": {**_TENSOR, "format": True},
    "output": {**_TENSOR, "label_filename": True},
    "optimization": {"graph": True, "execution_accelerators": True,
                     "input_pinned_memory": True, "output_pinned_memory": True,
                     "cuda": {}},
    "dynamic_batching": True,
    "instance_group": {"name": True, "kind": True, "count": True, "gpus": True},
    "default_model_filename": True,
    "parameters": True,
    "model_warmup": True,
    "model_transaction_policy": {},
    "response_cache": True,
    "ensemble_scheduling": {"step": {"model_name": True, "model_version": True,
                                     "input_map": True, "output_map": True}},
    "sequence_batching": {
        "direct": {}, "max_sequence_idle_microseconds": True, "control_input": True,
        "oldest": {"max_candidate_sequences": True, "preferred_batch_size": True,
                   "max_queue_delay_microseconds": True},
        "state": {"input_name": True, "output_name": True, "data_type": True, "dims": True,
                  "initial_state": True},
    },
    "model_operations": True,  # libraries inside the model's folder only (config.py)
}

#: Why a field is refused, where there is more to say than "not supported".
WHY: dict[str, str] = {
    "model_transaction_policy.decoupled": "decoupled (streaming) models are not supported",
    "ensemble_scheduling.step.model_namespace": "model namespaces are not supported",
    "ensemble_scheduling.max_inflight_requests": "an ensemble's in-flight cap is not "
    "supported (each step's model has its own max_inflight_requests)",
    "sequence_batching.iterative_sequence": "iterative sequences are not supported",
    "sequence_batching.direct.max_queue_delay_microseconds":
        "the direct strategy runs a slot's request at once (no queue delay)",
    "sequence_batching.direct.minimum_slot_utilization":
        "the direct strategy runs a slot's request at once (no slot utilisation wait)",
    "sequence_batching.oldest.preserve_ordering": "answers leave as their batches finish",
    "sequence_batching.state.use_same_buffer_for_input_output":
        "state is held in host memory (numpy), one buffer per sequence",
    "sequence_batching.state.use_growable_memory":
        "state is held in host memory (numpy), one buffer per sequence",
    "model_repository_agents": "repository agents are not supported",
    "cc_model_filenames": "per-GPU model files are not supported",
    "instance_group.host_policy": "host policies are not supported",
}

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"


def parse_text(text: str) -> pb.ModelConfig:
    """config.pbtxt -> the message (text_format.ParseError names line, column and field)."""
    return text_format.Parse(text, pb.ModelConfig())


#: onnx-serve's own fields (config.yaml's schema) that /config shows beside Triton's and a
#: load override takes back: at the top level, and inside dynamic_batching.
OURS = ("version_labels", "max_inflight_requests")
OURS_IN_BATCHING = ("padding",)


def parse_json_with_ours(text: str) -> tuple[pb.ModelConfig, dict[str, Any]]:
    """Triton's JSON form (what /config answers, what `load` takes) -> (the message,
    onnx-serve's own fields as config.yaml spells them: OURS, and {"dynamic_batching":
    {"padding": ...}}). Raises json_format.ParseError, also for a document that is not a
    JSON object."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise json_format.ParseError(f"not JSON: {err}") from err
    if not isinstance(document, dict):
        # protobuf's parser takes an empty list for an empty message
        raise json_format.ParseError("a configuration is a JSON object")
    document = without_reported(document)
    ours = {key: document.pop(key) for key in OURS if key in document}
    batching = document.get("dynamic_batching")
    if isinstance(batching, dict) and any(key in batching for key in OURS_IN_BATCHING):
        batching = document["dynamic_batching"] = dict(batching)
        ours["dynamic_batching"] = {key: batching.pop(key) for key in OURS_IN_BATCHING
                                    if key in batching}
    return json_format.ParseDict(document, pb.ModelConfig()), ours


def to_document(message: pb.ModelConfig, folder_name: str | None) -> dict[str, Any]:
    """The message as a document of our ModelConfig schema; refuses what we do not do.

    `folder_name`: the model's folder; a `name` that differs is refused, as Triton does."""
    _check_supported(message, SUPPORTED, "")
    if message.name and folder_name is not None and message.name != folder_name:
        raise TritonConfigError(f"name: '{message.name}' does not match the model's folder "
                                f"'{folder_name}'")
    policy = message.version_policy
    if policy.HasField("latest") and policy.latest.num_versions == 0:
        # Triton selects no version then, and refuses the model for it.
        raise TritonConfigError("version_policy.latest.num_versions: 0 selects no version "
                                "(at least 1)")
    _check_ensemble(message)
    if message.platform not in ("", PLATFORM, ENSEMBLE_PLATFORM):
        raise TritonConfigError(f"platform: '{message.platform}' is not supported (only "
                                f"'{PLATFORM}': onnx-serve runs ONNX models on onnxruntime)")
    if message.backend not in ("", BACKEND):
        raise TritonConfigError(f"backend: '{message.backend}' is not supported (only "
                                f"'{BACKEND}')")
    document: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    for metadata in ("name", "platform", "backend", "model_transaction_policy"):
        document.pop(metadata, None)
    optimization = document.get("optimization", {})
    optimization.pop("cuda", None)  # only its defaults got here
    for pinned in ("input_pinned_memory", "output_pinned_memory"):
        # Triton fills in `enable: true` only when the block is absent: `{}` means false
        if message.optimization.HasField(pinned):
            optimization[pinned] = {"enable": getattr(message.optimization, pinned).enable}
    for tensor in document.get("input", []) + document.get("output", []):
        tensor.setdefault("dims", [])  # a scalar, or left for the model check to refuse
    return document


def _check_ensemble(message: pb.ModelConfig) -> None:
    """Triton's pairing: platform "ensemble" if and only if ensemble_scheduling is set."""
    scheduled = message.HasField("ensemble_scheduling")
    if scheduled and message.platform != ENSEMBLE_PLATFORM:
        raise TritonConfigError(f"ensemble_scheduling needs platform: '{ENSEMBLE_PLATFORM}'")
    if message.platform == ENSEMBLE_PLATFORM and not scheduled:
        raise TritonConfigError(f"platform: '{ENSEMBLE_PLATFORM}' needs ensemble_scheduling "
                                "(its steps)")


def _check_supported(message: Message, tree: Tree, prefix: str) -> None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        rule = tree.get(field.name)
        if rule is None or rule is False:
            reason = WHY.get(path, "not supported by onnx-serve")
            raise TritonConfigError(f"{path}: {reason} (remove it)")
        if rule is True or field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        items = value if field.is_repeated else [value]
        for item in items:
            _check_supported(item, rule, f"{path}.")


_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def to_json(message: pb.ModelConfig) -> dict[str, Any]:
    """The message as /config answers it: Triton's JSON form with every field spelled out,
    except that 64-bit integers stay numbers (protobuf writes them as strings; both parse)."""
    document: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _numbers(message.DESCRIPTOR, document)
    return document


def _numbers(descriptor: Any, document: dict[str, Any]) -> None:  # a message Descriptor
    for field in descriptor.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        kind = field.message_type
        if kind is not None and kind.GetOptions().map_entry:
            item = kind.fields_by_name["value"]
            if item.message_type is not None:
                for entry in value.values():
                    _numbers(item.message_type, entry)
            elif item.type in _INT64:
                document[field.name] = {k: int(v) for k, v in value.items()}
        elif kind is not None:
            for entry in value if field.is_repeated else [value]:
                _numbers(kind, entry)
        elif field.type in _INT64:
            document[field.name] = [int(v) for v in value] if field.is_repeated else int(value)


#: What /config's JSON adds beside Triton's fields: facts the server reports (each instance
#: group's providers and note, the response cache's note, the model file's own `onnx.*`
#: parameters). A `load` override may carry them back (round trip); they are recomputed.
REPORTED_PARAMETER_PREFIX = "onnx."


def without_reported(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a /config-shaped document without what the server reports itself."""
    document = dict(document)
    groups = document.get("instance_group")
    if isinstance(groups, list):
        document["instance_group"] = [
            {k: v for k, v in g.items() if k not in ("providers", "io_binding", "note")}
            if isinstance(g, dict) else g for g in groups]
    cache = document.get("response_cache")
    if isinstance(cache, dict):
        document["response_cache"] = {k: v for k, v in cache.items() if k != "note"}
    parameters = document.get("parameters")
    if isinstance(parameters, dict):
        document["parameters"] = {k: v for k, v in parameters.items()
                                  if not str(k).startswith(REPORTED_PARAMETER_PREFIX)}
    return document
