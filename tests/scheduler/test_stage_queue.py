"""Stage queues: which waiting job a worker gets next (slack order, FCFS, best-effort aging)."""

from __future__ import annotations

import pytest

from scheduler.mode import SchedulingMode
from scheduler.stage import Stage
from scheduler.stage_queue import QueuedJob, StageQueue, wait_with_overtaking

MAX_WAIT_MS = 1_000.0


def queue(by_slack=True, max_wait_ms=MAX_WAIT_MS, arrival_window_ms=0.0):
    """By default the queue forecasts no overtaking (see the tests at the end for that)."""
    mode = SchedulingMode.SLO if by_slack else SchedulingMode.FCFS
    return StageQueue(
        stage=Stage.PREFILL,
        mode=mode,
        low_priority_max_wait_ms=max_wait_ms,
        arrival_window_ms=arrival_window_ms,
    )


def job(request_id, latest_start_ms, enqueued_ms=0.0, predicted_ms=10.0, is_low_priority=False):
    return QueuedJob(
        request_id, Stage.PREFILL, latest_start_ms, enqueued_ms, predicted_ms, is_low_priority
    )


def order(q, now_ms):
    return [j.request_id for j in q.in_order(now_ms)]


def test_jobs_leave_in_order_of_latest_start_not_arrival():
    q = queue()
    q.push(job("relaxed", latest_start_ms=900.0))
    q.push(job("urgent", latest_start_ms=100.0))
    q.push(job("middle", latest_start_ms=500.0))

    assert order(q, now_ms=0.0) == ["urgent", "middle", "relaxed"]


def test_fcfs_queue_keeps_arrival_order_whatever_the_deadlines():
    q = queue(by_slack=False)
    q.push(job("relaxed", latest_start_ms=900.0))
    q.push(job("urgent", latest_start_ms=100.0, is_low_priority=True))
    q.push(job("middle", latest_start_ms=500.0))

    assert order(q, now_ms=0.0) == ["relaxed", "urgent", "middle"]


def test_equal_latest_start_is_served_in_arrival_order():
    q = queue()
    q.push(job("second", latest_start_ms=300.0, enqueued_ms=5.0))
    q.push(job("third", latest_start_ms=300.0, enqueued_ms=1.0))
    q.push(job("earlier_deadline", latest_start_ms=299.0))

    assert order(q, now_ms=10.0) == ["earlier_deadline", "second", "third"]


def test_best_effort_job_yields_to_every_other_job_while_young():
    q = queue()
    q.push(job("best_effort", latest_start_ms=-5_000.0, is_low_priority=True))
    q.push(job("relaxed", latest_start_ms=50_000.0))
    q.push(job("urgent", latest_start_ms=200.0))

    assert order(q, now_ms=0.0) == ["urgent", "relaxed", "best_effort"]


def test_best_effort_job_moves_ahead_exactly_when_it_has_waited_the_max_wait():
    q = queue(max_wait_ms=1_000.0)
    q.push(job("best_effort", latest_start_ms=500.0, enqueued_ms=250.0, is_low_priority=True))
    q.push(job("interactive", latest_start_ms=2_000.0, enqueued_ms=300.0))

    assert order(q, now_ms=1_249.999) == ["interactive", "best_effort"]
    assert order(q, now_ms=1_250.0) == ["best_effort", "interactive"]


def test_aged_best_effort_job_competes_by_latest_start_like_the_rest():
    q = queue(max_wait_ms=1_000.0)
    q.push(job("best_effort", latest_start_ms=1_500.0, is_low_priority=True))
    q.push(job("urgent", latest_start_ms=1_200.0))
    q.push(job("relaxed", latest_start_ms=3_000.0))

    assert order(q, now_ms=1_000.0) == ["urgent", "best_effort", "relaxed"]


def rock_and_sand_queue(sand_arrival_ms):
    """A rock queued at t=0: TTFT target 15 s, 5 s of work, so it must start by 10 000 ms.
    Sand: TTFT target 1 s, 100 ms of work, so it must start by its arrival + 900 ms; it sorts
    ahead of the rock only while arrival + 900 < 10 000, i.e. when it arrives before 9 100 ms."""
    q = queue()
    q.push(job("rock", latest_start_ms=0.0 + 15_000.0 - 5_000.0, predicted_ms=5_000.0))
    latest_start = sand_arrival_ms + 1_000.0 - 100.0
    q.push(job("sand", latest_start, enqueued_ms=sand_arrival_ms, predicted_ms=100.0))
    return q


def test_sand_arriving_soon_after_a_rock_overtakes_it():
    q = rock_and_sand_queue(sand_arrival_ms=50.0)

    assert order(q, now_ms=50.0) == ["sand", "rock"]


def test_sand_overtakes_a_waiting_rock_only_until_the_rock_has_aged():
    just_before = rock_and_sand_queue(sand_arrival_ms=9_099.0)
    at_boundary = rock_and_sand_queue(sand_arrival_ms=9_100.0)

    assert order(just_before, now_ms=9_099.0) == ["sand", "rock"]
    assert order(at_boundary, now_ms=9_100.0) == ["rock", "sand"]


def test_work_ahead_sums_exactly_the_jobs_dispatched_before_the_candidate():
    q = queue()
    q.push(job("a", latest_start_ms=100.0, predicted_ms=30.0))
    q.push(job("b", latest_start_ms=200.0, predicted_ms=7.0))
    q.push(job("c", latest_start_ms=400.0, predicted_ms=500.0))
    q.push(
        job("young_best_effort", latest_start_ms=0.0, predicted_ms=1_000.0, is_low_priority=True)
    )
    candidate = job("new", latest_start_ms=300.0)
    candidate.seq = 1 << 62

    assert q.work_ahead_ms(candidate, now_ms=0.0) == 37.0


def test_queued_job_does_not_count_itself_or_the_jobs_behind_it_as_work_ahead():
    q = queue()
    first, second, third = (
        job("first", 100.0, predicted_ms=1.0),
        job("second", 200.0, predicted_ms=2.0),
        job("third", 300.0, predicted_ms=4.0),
    )
    for j in (first, second, third):
        q.push(j)

    assert [q.work_ahead_ms(j, now_ms=0.0) for j in (first, second, third)] == [0.0, 1.0, 3.0]


def test_empty_queue_has_no_work_ahead():
    assert queue().work_ahead_ms(job("new", 0.0), now_ms=0.0) == 0.0
    assert queue(by_slack=False).work_ahead_ms(job("new", 0.0), now_ms=0.0) == 0.0


def test_fcfs_work_ahead_is_everything_queued():
    q = queue(by_slack=False)
    q.push(job("a", latest_start_ms=900.0, predicted_ms=30.0))
    q.push(job("b", latest_start_ms=100.0, predicted_ms=12.0, is_low_priority=True))

    assert q.work_ahead_ms(job("new", latest_start_ms=0.0), now_ms=0.0) == 42.0


def test_queueing_a_request_twice_for_one_stage_is_refused():
    q = queue()
    q.push(job("r1", latest_start_ms=100.0))

    with pytest.raises(ValueError, match="request 'r1' is already queued for prefill"):
        q.push(job("r1", latest_start_ms=50.0))
    assert len(q) == 1
    assert q.in_order(0.0)[0].latest_start_ms == 100.0


def test_removed_job_leaves_the_queue_and_a_second_remove_is_a_no_op():
    q = queue()
    q.push(job("r1", latest_start_ms=100.0))
    q.push(job("r2", latest_start_ms=200.0))

    removed = q.remove("r1")

    assert removed is not None and removed.request_id == "r1"
    assert "r1" not in q and "r2" in q
    assert order(q, now_ms=0.0) == ["r2"]
    assert q.remove("r1") is None
    assert len(q) == 1


def test_request_removed_can_be_queued_again_and_goes_behind_equal_keys():
    q = queue()
    q.push(job("r1", latest_start_ms=100.0))
    q.push(job("r2", latest_start_ms=100.0))
    q.remove("r1")
    q.push(job("r1", latest_start_ms=100.0))

    assert order(q, now_ms=0.0) == ["r2", "r1"]


# ------------------------------------------------------------------ overtaking
def test_wait_with_overtaking_solves_the_fixed_point_exactly():
    # Two flows of 0.1 ms of work per ms, open for 2 s: W = 100 + 0.2 W.
    assert wait_with_overtaking(100.0, [(0.1, 2_000.0), (0.1, 2_000.0)]) == pytest.approx(125.0)
    # Over one ms per ms: the first flow runs to the end of its window, then W = 1300 + 0.6 W
    # would pass the second's window too, so all of both windows get ahead.
    assert wait_with_overtaking(1_000.0, [(0.6, 3_000.0), (0.6, 500.0)]) == 3_100.0
    assert wait_with_overtaking(40.0, []) == 40.0


def test_a_pebble_queued_now_counts_the_sand_that_will_arrive_and_overtake_it():
    q = queue(arrival_window_ms=1_000.0)
    # Sand must start 500 ms after it arrives; one came at 100 ms (already dispatched), one at
    # 900 ms is still queued: a flow of 2 x 100 ms of prefill per second.
    q.push(job("sand0", latest_start_ms=600.0, enqueued_ms=100.0, predicted_ms=100.0))
    q.remove("sand0")
    q.push(job("sand1", latest_start_ms=1_400.0, enqueued_ms=900.0, predicted_ms=100.0))
    pebble = job("pebble", latest_start_ms=3_500.0, enqueued_ms=1_000.0)
    pebble.seq = 1 << 62

    # sand1 is ahead (100 ms); sand arriving before 3500 - 500 overtakes: W = 100 + 0.2 W.
    assert q.work_ahead_ms(pebble, now_ms=1_000.0) == pytest.approx(125.0)
    # 2 s later both samples have left the window: only what is queued counts.
    assert q.work_ahead_ms(pebble, now_ms=3_000.0) == 100.0


def test_a_flow_is_not_extrapolated_further_ahead_than_the_window_it_was_measured_in():
    q = queue(arrival_window_ms=1_000.0)
    q.push(job("sand", latest_start_ms=900.0, enqueued_ms=400.0, predicted_ms=2_000.0))
    rock = job("rock", latest_start_ms=15_000.0, enqueued_ms=500.0)
    rock.seq = 1 << 62

    # 2 ms of work per ms for 14 s would be 28 s ahead; for 1 s (the window) it is 2 s.
    assert q.work_ahead_ms(rock, now_ms=500.0) == 2_000.0 + 2.0 * 1_000.0


def test_nothing_overtakes_an_urgent_job_or_a_job_in_a_fcfs_queue():
    for q in (queue(arrival_window_ms=1_000.0), queue(by_slack=False, arrival_window_ms=1_000.0)):
        q.push(job("sand", latest_start_ms=600.0, enqueued_ms=100.0, predicted_ms=100.0))
        urgent = job("urgent", latest_start_ms=550.0, enqueued_ms=500.0)
        urgent.seq = 1 << 62
        # Slack order: sand sorts after it and later sand starts later still; FCFS: the queue.
        assert q.work_ahead_ms(urgent, now_ms=500.0) == (0.0 if q.mode.is_slo_aware else 100.0)
