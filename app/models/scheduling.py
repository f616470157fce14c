"""From a model's config to its scheduler (policy and layout), checked against its signature."""

from __future__ import annotations

import dataclasses

from app.batching.batcher import DynamicBatcher
from app.batching.layout import BatchLayout, Padding
from app.batching.policy import BatchPolicy, QueuePolicy, TimeoutAction
from app.batching.scheduler import Runner, Scheduler
from app.batching.sequence import SequenceBatcher
from app.batching.sequence_state import SequencePlan
from app.batching.stats import ModelStats
from app.batching.unbatched import UnbatchedScheduler
from app.codecs import dtypes
from app.errors import UnsupportedModel
from app.models.signature import Signature
from app.repository.batching_config import PaddedInput, QueuePolicyConfig
from app.repository.config import ModelConfig

_LENGTH_TYPES = {"INT32": "int32", "INT64": "int64"}


def build_scheduler(runner: Runner, config: ModelConfig, policy: BatchPolicy,
                    layout: BatchLayout, stats: ModelStats, label: str,
                    batches: bool = True, *,
                    sequence: SequencePlan | None = None) -> Scheduler:
    """The sequence batcher of a stateful model, the dynamic batcher, or the trivial
    scheduler for a model that does not batch (or, `batches` false, one that Triton would
    run without its dynamic batcher) and whose config has no dynamic_batching (whose queue
    policies and priorities need the batcher's queues even at batch size 1)."""
    if sequence is not None:
        return SequenceBatcher(runner, sequence, stats, label,
                               max_waiting=policy.queues[0].max_queue_size)
    if (policy.max_batch_size and batches) or "dynamic_batching" in config.model_fields_set:
        return DynamicBatcher(runner, policy, layout, stats, label)
    return UnbatchedScheduler(runner, stats, label, max_waiting=policy.queues[0].max_queue_size,
                              max_inflight=policy.max_inflight)


def batch_policy(config: ModelConfig, signature: Signature, max_queue_size: int) -> BatchPolicy:
    """The queue and batch limits; preferred sizes above max_batch_size are refused."""
    batching = config.dynamic_batching
    max_batch = signature.max_batch_size
    too_big = [s for s in batching.preferred_batch_size if s > max_batch]
    if too_big and max_batch > 0:
        raise UnsupportedModel(f"dynamic_batching.preferred_batch_size {too_big[0]} is above "
                               f"max_batch_size {max_batch}")
    levels = max(batching.priority_levels, 1)
    queues = tuple(
        _queue(batching.priority_queue_policy.get(level, batching.default_queue_policy),
               max_queue_size)
        for level in range(1, levels + 1))
    return BatchPolicy(
        max_batch_size=max_batch,
        queues=queues,
        default_priority=batching.default_priority_level or levels,
        preferred_batch_sizes=tuple(batching.preferred_batch_size) if max_batch else (),
        max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6 if max_batch else 0.0,
        preserve_ordering=batching.preserve_ordering,
        max_inflight=config.max_inflight_requests,
    )


def _queue(config: QueuePolicyConfig, default_size: int) -> QueuePolicy:
    return QueuePolicy(
        max_queue_size=config.max_queue_size or default_size,
        timeout_s=config.default_timeout_microseconds / 1e6,
        timeout_action=TimeoutAction(config.timeout_action),
        allow_timeout_override=config.allow_timeout_override,
    )


def batch_layout(config: ModelConfig, signature: Signature) -> tuple[BatchLayout, Signature]:
    """The padding geometry, and the signature clients see: inputs the server fills (the
    length inputs of padding) are not theirs to send."""
    padded = config.dynamic_batching.padding
    if not padded:
        return BatchLayout(), signature
    if signature.max_batch_size == 0:
        raise UnsupportedModel("dynamic_batching.padding needs a model that batches "
                               "(max_batch_size > 0)")
    padding = {p.input: _padding(p, signature) for p in padded}
    filled = {p.length_input for p in padded if p.length_input is not None}
    visible = dataclasses.replace(
        signature, inputs=tuple(s for s in signature.inputs if s.name not in filled))
    return BatchLayout(padding), visible


def _padding(entry: PaddedInput, signature: Signature) -> Padding:
    where = f"dynamic_batching.padding '{entry.input}'"
    spec = signature.input(entry.input)
    if spec is None:
        raise UnsupportedModel(f"{where}: the model has no input of that name")
    if entry.input in signature.reshape_inputs:
        raise UnsupportedModel(f"{where}: a reshaped input cannot be padded")
    axes = tuple(axis for axis, d in enumerate(spec.shape) if axis > 0 and d < 0)
    if not axes:
        raise UnsupportedModel(f"{where}: the input has no dynamic dimension to pad "
                               f"besides the batch one ({list(spec.shape)})")
    if dtypes.BY_NAME[spec.datatype].is_bytes and entry.value != 0:
        raise UnsupportedModel(f"{where}: a BYTES input pads with empty strings only")
    length_dtype, length_rank = "int64", 1
    if entry.length_input is not None:
        length = signature.input(entry.length_input)
        if length is None or length.datatype not in _LENGTH_TYPES \
                or length.shape not in ((-1,), (-1, 1)):
            raise UnsupportedModel(f"{where}: length_input '{entry.length_input}' must be a "
                                   "model input of INT32 or INT64 [-1] or [-1, 1]")
        length_dtype, length_rank = _LENGTH_TYPES[length.datatype], len(length.shape)
    outputs = {s.name: s for s in signature.outputs}
    for name in entry.slice_outputs:
        output = outputs.get(name)
        if output is None:
            raise UnsupportedModel(f"{where}: slice_outputs: the model has no output '{name}'")
        if any(axis >= len(output.shape) or output.shape[axis] >= 0 for axis in axes):
            raise UnsupportedModel(f"{where}: slice_outputs: output '{name}' "
                                   f"{list(output.shape)} has no dynamic dims at {list(axes)}")
    return Padding(axes, entry.value, entry.length_input, length_dtype, length_rank,
                   tuple(entry.slice_outputs))
