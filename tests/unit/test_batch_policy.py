"""The batch-selection policy as a pure function: sizes, preferred sizes, delays, buckets,
priorities (queue order) and timeouts."""

from __future__ import annotations

from app.batching.policy import BatchPolicy, Decision, QueuePolicy, Waiting, decide


def policy(max_batch: int = 8, preferred: tuple[int, ...] = (), delay_s: float = 0.0
           ) -> BatchPolicy:
    return BatchPolicy(max_batch, (QueuePolicy(100),), 1, preferred, delay_s)


def w(rows: int = 1, arrival: float = 0.0, bucket: object = (16,),
      deadline: float | None = None, delay: bool = False) -> Waiting:
    return Waiting(rows, bucket, arrival, deadline, delay)


def test_an_empty_queue_runs_nothing_and_sleeps_until_an_arrival() -> None:
    assert decide([], 0.0, policy()) == Decision((), (), None)


def test_without_a_delay_whatever_is_queued_runs_at_once() -> None:
    assert decide([w(), w(2)], 1.0, policy()).run == (0, 1)


def test_a_batch_stops_at_max_batch_size_counting_rows() -> None:
    queue = [w(3), w(3), w(3), w(1)]
    # 3 + 3 fit in 8, the next 3 does not: the batch is full and stays in arrival order.
    assert decide(queue, 0.0, policy(max_batch=8)).run == (0, 1)


def test_exactly_full_batches_run_even_with_a_delay() -> None:
    queue = [w(4, arrival=0.0), w(4, arrival=0.001)]
    assert decide(queue, 0.001, policy(max_batch=8, delay_s=1.0)).run == (0, 1)


def test_a_delay_holds_a_small_batch_until_the_oldest_request_has_waited_it() -> None:
    queue = [w(arrival=10.0), w(arrival=10.2)]
    waiting = decide(queue, 10.3, policy(delay_s=0.5))
    assert waiting.run == () and waiting.wake_at == 10.5
    assert decide(queue, 10.5, policy(delay_s=0.5)).run == (0, 1)


def test_the_largest_reachable_preferred_size_runs_without_waiting() -> None:
    queue = [w(arrival=float(i)) for i in range(7)]
    decision = decide(queue, 7.0, policy(max_batch=8, preferred=(2, 4, 6), delay_s=100.0))
    assert decision.run == (0, 1, 2, 3, 4, 5)  # 6 rows; the 7th waits for the next batch


def test_preferred_sizes_count_rows_of_multi_row_requests() -> None:
    queue = [w(3), w(2), w(2)]
    # prefix sums 3, 5, 7: only 5 is preferred.
    assert decide(queue, 0.0, policy(preferred=(4, 5), delay_s=100.0)).run == (0, 1)


def test_no_reachable_preferred_size_waits_for_the_delay() -> None:
    decision = decide([w(3, arrival=1.0)], 1.0, policy(preferred=(4,), delay_s=0.25))
    assert decision.run == () and decision.wake_at == 1.25


def test_shapes_never_mix_the_head_picks_the_bucket() -> None:
    queue = [w(bucket=(5,)), w(bucket=(7,)), w(bucket=(5,)), w(bucket=(7,))]
    assert decide(queue, 0.0, policy()).run == (0, 2)
    assert decide(queue[1:], 0.0, policy()).run == (0, 2)


def test_a_model_that_does_not_batch_runs_one_request_at_a_time() -> None:
    queue = [w(), w(), w()]
    assert decide(queue, 0.0, policy(max_batch=0)).run == (0,)


def test_queue_order_is_priority_order() -> None:
    # The batcher hands over its queues highest level first; the policy keeps that order,
    # so a high-priority request that arrived last still leads the batch.
    queue = [w(arrival=5.0), w(arrival=1.0), w(arrival=2.0)]
    assert decide(queue, 5.0, policy(max_batch=2)).run == (0, 1)


def test_a_request_past_its_deadline_is_rejected_unless_its_policy_delays_it() -> None:
    queue = [w(arrival=0.0, deadline=1.0), w(arrival=0.5, deadline=1.0, delay=True), w(arrival=0.9)]
    decision = decide(queue, 2.0, policy())
    assert decision.expired == (0,)
    # The delayed request runs after the one that has not timed out.
    assert decision.run == (2, 1)


def test_only_expired_requests_leave_the_queue_empty_handed() -> None:
    decision = decide([w(deadline=1.0)], 1.0, policy())
    assert decision == Decision((), (0,), None)


def test_the_scheduler_wakes_for_the_next_deadline_before_the_delay() -> None:
    queue = [w(arrival=0.0), w(arrival=0.0, deadline=0.2)]
    decision = decide(queue, 0.1, policy(preferred=(8,), delay_s=1.0))
    assert decision.run == () and decision.wake_at == 0.2


def test_a_lone_request_bigger_than_the_batch_still_runs_alone() -> None:
    # Validation refuses these before they are queued; the policy must still not stall.
    assert decide([w(rows=12)], 0.0, policy(max_batch=8)).run == (0,)
