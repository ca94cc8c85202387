"""Placement: least-loaded capable worker, sticky to the previous stage's worker."""

from __future__ import annotations

from scheduler.policy import LeastLoadedPolicy, PlacementRequest, WorkerView
from scheduler.request import RequestSpec
from scheduler.stage import Stage
from scheduler.worker_registry import WorkerSlot
from tests.scheduler.fake_transport import FakeTransport
from tests.scheduler.fake_worker import FakeWorker
from workers.contract.messages import WorkerLoad


def worker(worker_id, stages="EPD", num_active=0, is_draining=False, model="tiny"):
    return WorkerView(worker_id, model, stages, is_draining, num_active)


def place(workers, stage=Stage.PREFILL, previous=None, model="tiny"):
    request = PlacementRequest(RequestSpec("r1", model, [1, 2, 3]), stage, previous)
    return LeastLoadedPolicy().place(request, workers)


def test_least_loaded_capable_worker_is_chosen():
    workers = [worker("a", num_active=3), worker("b", num_active=1), worker("c", num_active=2)]

    assert place(workers) == "b"


def test_ties_go_to_the_lowest_worker_id():
    assert place([worker("b"), worker("a"), worker("c")]) == "a"


def test_workers_that_cannot_run_the_stage_are_skipped():
    workers = [worker("e", "E"), worker("d", "D", num_active=5), worker("p", "P", num_active=9)]

    assert place(workers, Stage.ENCODE) == "e"
    assert place(workers, Stage.PREFILL) == "p"
    assert place(workers, Stage.DECODE) == "d"


def test_draining_worker_gets_no_new_work():
    workers = [worker("a", is_draining=True), worker("b", num_active=7)]

    assert place(workers) == "b"
    assert place([worker("a", is_draining=True)]) is None


def test_workers_of_another_model_are_never_chosen():
    workers = [worker("a", model="other"), worker("b", num_active=4)]

    assert place(workers) == "b"
    assert place(workers, model="unknown") is None


def test_next_stage_stays_on_the_previous_worker_even_when_busier():
    workers = [worker("ep", "EP", num_active=5), worker("p", "P", num_active=0)]

    assert place(workers, Stage.PREFILL, previous="ep") == "ep"


def test_previous_worker_that_cannot_run_the_stage_is_left():
    workers = [worker("e", "E"), worker("p2", "P", num_active=2), worker("p1", "P", num_active=1)]

    assert place(workers, Stage.PREFILL, previous="e") == "p1"
    assert (
        place([worker("pd", "PD", is_draining=True), worker("d", "D")], Stage.DECODE, "pd") == "d"
    )


def test_worker_load_counts_jobs_dispatched_since_its_last_report():
    fake = FakeWorker("a", "EPD", FakeTransport())
    load = WorkerLoad("a", 3, "EPD", False, 1, 2, 4, 64, 10, 0)
    slot = WorkerSlot(fake, load, load.epoch)
    slot.num_dispatched_since_load = 2

    assert slot.view() == WorkerView("a", "tiny", "EPD", is_draining=False, num_active=9)
    slot.observe(WorkerLoad("a", 3, "EPD", True, 0, 0, 1, 64, 1, 0))
    assert slot.view() == WorkerView("a", "tiny", "EPD", is_draining=True, num_active=1)
