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
from google.protobuf.message import Message

from app.protos_gen import model_config_pb2 as pb

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
    "output": _TENSOR,
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
    "model_operations": True,  # libraries inside the model's folder only (config.py)
}

#: Why a field is refused, where there is more to say than "not supported".
WHY: dict[str, str] = {
    "output.label_filename": "labels and the classification extension are not implemented",
    "model_transaction_policy.decoupled": "decoupled (streaming) models are not supported",
    "sequence_batching": "stateful (sequence) models are not supported",
    "ensemble_scheduling": "ensembles are not supported",
    "model_repository_agents": "repository agents are not supported",
    "cc_model_filenames": "per-GPU model files are not supported",
    "instance_group.host_policy": "host policies are not supported",
}

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"


class TritonConfigError(ValueError):
    """The message parsed but asks for something we do not do; the text names the field."""


def parse_text(text: str) -> pb.ModelConfig:
    """config.pbtxt -> the message (text_format.ParseError names line, column and field)."""
    return text_format.Parse(text, pb.ModelConfig())


def parse_json(text: str) -> pb.ModelConfig:
    """Triton's JSON form (what /config answers, what `load` takes) -> the message.
    Raises json_format.ParseError, also for a document that is not a JSON object."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise json_format.ParseError(f"not JSON: {err}") from err
    if not isinstance(document, dict):
        # protobuf's parser takes an empty list for an empty message
        raise json_format.ParseError("a configuration is a JSON object")
    return json_format.ParseDict(document, pb.ModelConfig())


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
    if message.platform not in ("", PLATFORM):
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
