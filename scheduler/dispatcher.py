"""The dispatcher: encode and prefill jobs wait in the scheduler's stage queues until a worker
has room, then leave in queue order (stage_queue.py) for the worker placement picks (policy.py).

    enqueue(req, stage) --> StageQueue[stage] --dispatch()--> policy.place(job, workers with room)
                                                              --> launch(req, stage, slot, forecast)

Why hold jobs here rather than at the workers: a worker runs what it is given in arrival order,
so a job handed over is a job that can no longer be overtaken. With policy "slo" a worker has
room while its backlog (predicted work given and not done) is under `dispatch_horizon_ms`;
everything else waits here, where a text request that arrives behind a burst of rocks still
goes first. With policy "fcfs" every worker always has room: jobs leave at once, in arrival
order, and queue at the workers (the baseline).

Decode jobs are not held: the KV is already waiting, and a decode joins the worker's batch at
its next step.

`dispatch()` may be called from any task at any time (a new request, a worker's events); a call
made while another is dispatching makes that one go round again, so jobs are never placed
twice and a new opening is never missed.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

from scheduler.active_request import ActiveRequest
from scheduler.config import SchedulerConfig
from scheduler.forecast import Forecaster
from scheduler.policy import PlacementPolicy, PlacementRequest, WorkerView, candidates_for
from scheduler.stage import Stage
from scheduler.stage_queue import QueuedJob, StageQueue
from scheduler.worker_registry import WorkerRegistry, WorkerSlot

Launch = Callable[[ActiveRequest, Stage, WorkerSlot, float], Awaitable[None]]
NoWorker = Callable[[ActiveRequest, Stage], Awaitable[None]]
HELD_STAGES = (Stage.PREFILL, Stage.ENCODE)  # prefill first: it is closer to a first token


class Dispatcher:
    def __init__(
        self,
        config: SchedulerConfig,
        workers: WorkerRegistry,
        policy: PlacementPolicy,
        forecaster: Forecaster,
        clock_ms: Callable[[], float],
    ) -> None:
        self.holds_jobs = config.policy == "slo"
        self.horizon_ms = config.dispatch_horizon_ms
        self.workers = workers
        self.policy = policy
        self.forecaster = forecaster
        self.clock_ms = clock_ms
        self.queues = {
            stage: StageQueue(
                stage, self.holds_jobs, config.best_effort_max_wait_ms, config.arrival_window_ms
            )
            for stage in HELD_STAGES
        }
        self.max_queued = config.max_queued_per_stage
        self._requests: dict[str, ActiveRequest] = {}  # queued, by request id
        self._allowed: dict[tuple[str, Stage], frozenset[str] | None] = {}
        self._num_dispatched = itertools.count(1)  # the order jobs left their queues in
        self._is_dispatching = False
        self._again = False
        self.launch: Launch | None = None  # set by the driver
        self.no_worker: NoWorker | None = None

    def is_full(self, stage: Stage) -> bool:
        return len(self.queues[stage]) >= self.max_queued

    def enqueue(
        self,
        req: ActiveRequest,
        stage: Stage,
        predicted_ms: float,
        allowed: frozenset[str] | None = None,
    ) -> None:
        """Queue `stage` of `req`; `predicted_ms`: its compute on its likeliest worker."""
        job = QueuedJob(
            req.request_id, stage, req.latest_start_ms, self.clock_ms(), predicted_ms,
            req.is_low_priority,
        )  # fmt: skip
        self.queues[stage].push(job)
        self._requests[req.request_id] = req
        self._allowed[(req.request_id, stage)] = allowed

    def forget(self, req: ActiveRequest) -> None:
        """Drop the request's queued job, if any (it ended or is re-driven)."""
        for stage, queue in self.queues.items():
            queue.remove(req.request_id)
            self._allowed.pop((req.request_id, stage), None)
        self._requests.pop(req.request_id, None)

    def work_ahead_ms(self, stage: Stage, latest_start_ms: float, is_low_priority: bool) -> float:
        """Queued compute of `stage` that would leave before a job with this key queued now."""
        if stage not in self.queues:
            return 0.0
        now = self.clock_ms()
        probe = QueuedJob("", stage, latest_start_ms, now, 0.0, is_low_priority)
        probe.seq = 1 << 62  # after every job already queued with the same key
        return self.queues[stage].work_ahead_ms(probe, now)

    def has_room(self, view: WorkerView, req: ActiveRequest, stage: Stage) -> bool:
        """Whether the work the worker would run before this job fits the horizon."""
        if not self.holds_jobs:
            return True
        priority = req.prefill_priority(True) if stage is Stage.PREFILL else None
        return self.workers[view.worker_id].backlog_ms(self.clock_ms(), priority) < self.horizon_ms

    async def dispatch(self) -> None:
        if self._is_dispatching:
            self._again = True
            return
        self._is_dispatching = True
        try:
            while True:
                self._again = False
                if not await self._dispatch_one() and not self._again:
                    return
        finally:
            self._is_dispatching = False

    async def _dispatch_one(self) -> bool:
        """Place the first queued job some worker has room for; False when none can go."""
        now = self.clock_ms()
        views = self.workers.views(now)
        for stage in HELD_STAGES:
            queue = self.queues[stage]
            for job in queue.in_order(now):
                req = self._requests[job.request_id]
                placement = self._placement(req, stage)
                with_room = [view for view in views if self.has_room(view, req, stage)]
                worker_id = self.policy.place(placement, with_room)
                if worker_id is None:
                    if candidates_for(placement, views):
                        continue  # busy: it waits for room
                    self._take(req, stage)
                    assert self.no_worker is not None
                    await self.no_worker(req, stage)
                    return True
                self._take(req, stage)
                slot = self.workers[worker_id]
                predicted_ms = self._predicted_ms(placement, slot)
                req.trace.record(
                    "dispatched", stage=stage.value, worker=worker_id,
                    order=next(self._num_dispatched), waited_ms=now - job.enqueued_ms,
                    predicted_ms=predicted_ms, latest_start_ms=job.latest_start_ms,
                )  # fmt: skip
                assert self.launch is not None
                await self.launch(req, stage, slot, predicted_ms)
                return True
        return False

    def _placement(self, req: ActiveRequest, stage: Stage) -> PlacementRequest:
        previous = req.encode_worker if stage is Stage.PREFILL else None
        allowed = self._allowed.get((req.request_id, stage))
        priority = req.prefill_priority(self.holds_jobs) if stage is Stage.PREFILL else None
        return PlacementRequest(req.spec, stage, previous, req.shape, allowed, priority)

    def _take(self, req: ActiveRequest, stage: Stage) -> None:
        self.queues[stage].remove(req.request_id)
        self._allowed.pop((req.request_id, stage), None)
        if not any(req.request_id in queue for queue in self.queues.values()):
            self._requests.pop(req.request_id, None)

    def _predicted_ms(self, placement: PlacementRequest, slot: WorkerSlot) -> float:
        """The stage's compute on the chosen worker, whatever the policy: backlogs need it."""
        if placement.shape is None:
            return 0.0
        forecast = self.forecaster.stage(
            placement.stage, placement.shape, slot.worker_id, placement.previous_worker_id,
            placement.priority,
        )  # fmt: skip
        return forecast.compute_ms
