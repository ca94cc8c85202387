"""An abort that reaches a worker before its job does still stops the job: the job never runs."""

from __future__ import annotations

from tests.workers.support import GREEDY, is_finished, poll_until, token_ids
from workers.contract.messages import PrefillJob, WorkerEvents
from workers.contract.sampling_params import SamplingParams
from workers.job_arrivals import JobArrivals

LONG = SamplingParams(max_tokens=200, ignore_eos=True, seed=0)


def text_job(request_id: str, sampling_params: SamplingParams = LONG) -> PrefillJob:
    return PrefillJob(
        request_id=request_id,
        prompt_token_ids=list(range(5, 25)),
        sampling_params=sampling_params,
        images=[],
        decode_here=True,
    )


def failures(seen: list[WorkerEvents]) -> list[tuple[str, str, bool]]:
    return [(f.request_id, f.stage, f.retriable) for e in seen for f in e.failures]


def test_a_job_aborted_before_it_arrives_is_dropped():
    arrivals = JobArrivals()
    assert arrivals.abort("r1") is False  # nothing here yet: remembered
    assert arrivals.arrive("r1") is False
    assert arrivals.num_early_aborts == 0
    assert arrivals.arrive("r2") is True
    assert arrivals.abort("r2") is True  # it is here: aborted in order, not remembered
    assert arrivals.num_early_aborts == 0


def test_an_early_abort_is_forgotten_after_its_ttl_and_the_memory_is_bounded():
    now = [0.0]
    arrivals = JobArrivals(max_early_aborts=2, ttl_s=10.0, clock=lambda: now[0])
    arrivals.abort("old")
    now[0] = 11.0
    assert arrivals.arrive("old") is True  # its job never came in time: a later one runs
    for job_id in ("a", "b", "c"):
        arrivals.abort(job_id)
    assert arrivals.num_early_aborts == 2
    assert (arrivals.arrive("a"), arrivals.arrive("c")) == (True, False)


def test_the_abort_of_a_job_that_already_ran_does_not_drop_a_later_one_with_its_id():
    arrivals = JobArrivals(max_jobs=2)
    arrivals.arrive("r1")
    assert arrivals.abort("r1") is True
    assert arrivals.arrive("r1") is True


def test_worker_never_runs_a_job_whose_abort_came_first(start_worker):
    worker = start_worker("epd-0", "EPD")
    worker.abort("gone")
    worker.submit_prefill(text_job("gone"))
    worker.submit_prefill(text_job("next", GREEDY))
    seen = poll_until(worker.poll, is_finished("next"))
    assert token_ids(seen, "gone") == []
    assert failures(seen) == [("gone", "prefill", True)]  # a scheduler that ended it drops it
    assert len(token_ids(seen, "next")) == GREEDY.max_tokens
    load = worker.load()
    assert (load.num_running, load.num_waiting, load.num_kv_blocks_used) == (0, 0, 0)


def test_worker_aborts_a_running_job_within_a_step_or_two(start_worker):
    worker = start_worker("epd-0", "EPD")
    worker.submit_prefill(text_job("r1"))
    before = poll_until(worker.poll, lambda seen: len(token_ids(seen, "r1")) >= 2)
    worker.abort("r1")
    after = poll_until(worker.poll, is_finished("r1"))
    num_before, num_late = len(token_ids(before, "r1")), len(token_ids(after, "r1"))
    assert num_late <= 2, f"{num_late} tokens after the abort, {num_before} before"
    load = worker.load()
    assert (load.num_running, load.num_kv_blocks_used) == (0, 0)
