"""Per-model `dynamic_batching` in Triton's names, plus padding (ours): schema and checks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueuePolicyConfig(_Strict):
    """Triton's ModelQueuePolicy: how long a request may wait and how many may wait."""

    timeout_action: Literal["REJECT", "DELAY"] = Field(
        "REJECT", description="When a queued request times out: REJECT answers 504 / "
        "DEADLINE_EXCEEDED; DELAY moves it behind every request that has not timed out.")
    default_timeout_microseconds: int = Field(
        0, ge=0, description="How long a request may wait in the queue; 0 is no limit.")
    allow_timeout_override: bool = Field(
        False, description="Let a request's `timeout` parameter (µs) shorten or lengthen it.")
    max_queue_size: int = Field(
        0, ge=0, description="Requests that may wait at this priority; more get 429 / "
        "RESOURCE_EXHAUSTED. 0: the server's batching.default_max_queue_size.")


class PaddedInput(_Strict):
    """Batch requests whose `input` differs in its dynamic non-batch dims, padded to the
    longest in the batch (no peer does this: Triton server#3395, BentoML#2913)."""

    input: str = Field(description="A batched input whose dynamic dims may differ.")
    value: float = Field(0, description="Fill value for the padding (cast to the input type).")
    length_input: str | None = Field(
        None, description="A model input (INT32/INT64 [-1] or [-1, 1]) that the server fills "
        "with each row's length along the first padded dim; clients do not send it.")
    slice_outputs: list[str] = Field(
        default_factory=list, description="Outputs cut back to each request's own lengths "
        "along the same dims as the input's padded ones.")


class DynamicBatching(_Strict):
    """Triton's `dynamic_batching`; present or not, a model with max_batch_size > 0 batches
    (as Triton's onnxruntime backend auto-completes it), and the queue policy also applies
    to models that do not batch."""

    preferred_batch_size: list[int] = Field(
        default_factory=list, description="Batch sizes to form as soon as they are reached.")
    max_queue_delay_microseconds: int = Field(
        0, ge=0, description="How long a batch may wait to grow once an instance is free; "
        "0 runs whatever is queued at once (batches still grow under load).")
    preserve_ordering: bool = Field(
        False, description="Answer requests in the order they arrived, across instances.")
    priority_levels: int = Field(0, ge=0, description="Levels 1 (highest) .. N; 0 is one level.")
    default_priority_level: int = Field(0, ge=0, description="Level of requests without "
                                        "`priority` (0: the lowest level).")
    default_queue_policy: QueuePolicyConfig = Field(default_factory=QueuePolicyConfig)
    priority_queue_policy: dict[int, QueuePolicyConfig] = Field(
        default_factory=dict, description="Per-level policies overriding the default one.")
    padding: list[PaddedInput] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DynamicBatching:
        levels = max(self.priority_levels, 1)
        if self.default_priority_level > levels:
            raise ValueError(f"default_priority_level {self.default_priority_level} is above "
                             f"priority_levels {levels}")
        wrong = [level for level in self.priority_queue_policy if not 1 <= level <= levels]
        if wrong:
            raise ValueError(f"priority_queue_policy: level {wrong[0]} is not in 1..{levels}")
        if any(size < 1 for size in self.preferred_batch_size):
            raise ValueError("preferred_batch_size: sizes must be at least 1")
        names = [p.input for p in self.padding]
        if len(set(names)) != len(names):
            raise ValueError("padding: an input is listed twice")
        return self
