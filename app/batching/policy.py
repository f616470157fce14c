"""Which queued requests run next: the dynamic batcher's decision, as a pure function."""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


class TimeoutAction(enum.Enum):
    """What happens to a request still queued at its deadline (Triton's names)."""

    REJECT = "REJECT"  # answered DEADLINE_EXCEEDED without running
    DELAY = "DELAY"  # runs after every request that has not timed out


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Limits of one priority level's queue; times in seconds (0 = none)."""

    max_queue_size: int
    timeout_s: float = 0.0
    timeout_action: TimeoutAction = TimeoutAction.REJECT
    allow_timeout_override: bool = False


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How one model version forms batches and queues requests.

    `max_batch_size` counts rows (a request of 3 rows fills 3); 0 means the model does not
    batch, so every run takes exactly one request. Priority levels run from 1 (highest) to
    `len(queues)`; `queues[level - 1]` is that level's policy.
    """

    max_batch_size: int
    queues: tuple[QueuePolicy, ...]
    default_priority: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    preserve_ordering: bool = False
    max_inflight: int = 0  # requests queued or running at once; 0 = no cap

    @property
    def priority_levels(self) -> int:
        return len(self.queues)


@dataclass(frozen=True, slots=True)
class Waiting:
    """What the policy sees of one queued request. Times are on one monotonic clock."""

    rows: int
    bucket: Hashable  # requests batch together only when their buckets are equal
    arrival: float
    deadline: float | None = None
    delay_on_timeout: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """Indexes into the sequence given to `decide`.

    `run`: the next batch, in batch order (empty: nothing runs yet). `expired`: requests to
    answer DEADLINE_EXCEEDED now. `wake_at`: when to decide again if no request arrives
    before (None: only on an arrival).
    """

    run: tuple[int, ...]
    expired: tuple[int, ...] = ()
    wake_at: float | None = None


def decide(waiting: Sequence[Waiting], now: float, policy: BatchPolicy) -> Decision:
    """Pick the next batch for an instance that is free now.

    `waiting` is in queue order: by priority level, then arrival. The head request (first
    one not timed out; timed-out DELAY requests come after all others) picks the shape
    bucket; later requests of that bucket join in order while they fit, so a batch never
    mixes shapes and never reorders requests within a bucket. The batch runs at once when
    it is full, when it reaches a preferred size (the largest one it can reach), or when
    its oldest request has waited `max_queue_delay_s`; otherwise the decision says when to
    look again.
    """
    expired: list[int] = []
    order: list[int] = []
    late: list[int] = []
    next_deadline: float | None = None
    for index, request in enumerate(waiting):
        deadline = request.deadline
        if deadline is not None and deadline <= now:
            (late if request.delay_on_timeout else expired).append(index)
            continue
        order.append(index)
        if deadline is not None and (next_deadline is None or deadline < next_deadline):
            next_deadline = deadline
    order += late
    if not order:
        return Decision((), tuple(expired), next_deadline)

    chosen, full = _fill(waiting, order, policy.max_batch_size)
    if not full:
        prefix = _preferred_prefix(waiting, chosen, policy.preferred_batch_sizes)
        if prefix:
            return Decision(tuple(chosen[:prefix]), tuple(expired))
        oldest = min(waiting[i].arrival for i in chosen)
        ready_at = oldest + policy.max_queue_delay_s
        if ready_at > now:
            wake_at = ready_at if next_deadline is None else min(ready_at, next_deadline)
            return Decision((), tuple(expired), wake_at)
    return Decision(tuple(chosen), tuple(expired))


def _fill(waiting: Sequence[Waiting], order: list[int], max_batch_size: int,
          ) -> tuple[list[int], bool]:
    """The head's bucket-mates, in order, while they fit; and whether the batch is full
    (no more rows fit, or the next request of the bucket does not)."""
    if max_batch_size == 0:  # a model that does not batch: one request per run
        return order[:1], True
    bucket = waiting[order[0]].bucket
    chosen: list[int] = []
    rows = 0
    for index in order:
        request = waiting[index]
        if request.bucket != bucket:
            continue
        if rows + request.rows > max_batch_size:
            return chosen or [index], True
        chosen.append(index)
        rows += request.rows
        if rows == max_batch_size:
            return chosen, True
    return chosen, False


def _preferred_prefix(waiting: Sequence[Waiting], chosen: list[int],
                      preferred: tuple[int, ...]) -> int:
    """How many of `chosen` make up the largest preferred batch size reachable (0: none)."""
    if not preferred:
        return 0
    best_rows, best_count, rows = 0, 0, 0
    for count, index in enumerate(chosen, start=1):
        rows += waiting[index].rows
        if rows in preferred and rows > best_rows:
            best_rows, best_count = rows, count
    return best_count
