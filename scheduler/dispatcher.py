"""The dispatcher: encode and prefill jobs wait in the scheduler's stage queues until a worker
has room, then leave in queue order (stage_queue.py) for the worker placement picks
(placement.py). It decides; the driver launches.

    enqueue(req, stage) --> StageQueue[stage] --next_launch()--> placement.place(job, with room)
                                                                 --> Launch(req, stage, slot)
                                                                     or NoWorker(req, stage)

Why hold jobs here rather than at the workers: a worker runs what it is given in arrival order,
so a job handed over is a job that can no longer be overtaken. Under the SLO mode (mode.py) a
worker has room while its backlog (predicted work given and not done) is under
`dispatch_horizon_ms`; everything else waits here, where a text request that arrives behind a
burst of rocks still goes first. Under FCFS every worker always has room: jobs leave at once,
in arrival order, and queue at the workers (the baseline).

Decode jobs are not held: the KV is already waiting, and a decode joins the worker's batch at
its next step.

The driver asks `next_launch()` until it answers None, whenever a request or a worker's events
may have opened room (driver.dispatch: one loop at a time, so jobs are never placed twice and a
new opening is never missed).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from scheduler.active_request import ActiveRequest
from scheduler.config import SchedulerConfig
from scheduler.decisions import Launch, NoWorker
from scheduler.forecast import Forecaster
from scheduler.placement import Placement
from scheduler.policy import PlacementRequest, WorkerView, candidates_for
from scheduler.stage import Stage
from scheduler.stage_queue import QueuedJob, StageQueue
from scheduler.trace_events import EventName
from scheduler.worker_registry import WorkerRegistry, WorkerSlot

HELD_STAGES = (Stage.PREFILL, Stage.ENCODE)  # prefill first: it is closer to a first token


class Dispatcher:
    def __init__(
        self,
        config: SchedulerConfig,
        workers: WorkerRegistry,
        placement: Placement,
        forecaster: Forecaster,
        clock_ms: Callable[[], float],
    ) -> None:
        self.mode = config.mode
        self.horizon_ms = config.dispatch_horizon_ms
        self.workers = workers
        self.placement = placement
        self.forecaster = forecaster
        self.clock_ms = clock_ms
        self.queues = {
            stage: StageQueue(
                stage=stage,
                mode=self.mode,
                low_priority_max_wait_ms=config.best_effort_max_wait_ms,
                arrival_window_ms=config.arrival_window_ms,
            )
            for stage in HELD_STAGES
        }
        self.max_queued = config.max_queued_per_stage
        self._requests: dict[str, ActiveRequest] = {}  # queued, by request id
        self._allowed: dict[tuple[str, Stage], frozenset[str] | None] = {}
        self._num_dispatched = itertools.count(1)  # the order jobs left their queues in

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
            request_id=req.request_id,
            stage=stage,
            latest_start_ms=req.latest_start_ms,
            enqueued_ms=self.clock_ms(),
            predicted_ms=predicted_ms,
            is_low_priority=req.is_low_priority,
        )
        self.queues[stage].push(job)
        self._requests[req.request_id] = req
        self._allowed[(req.request_id, stage)] = allowed

    def forget(self, req: ActiveRequest) -> None:
        """Drop the request's queued job, if any (it ended or is re-driven)."""
        for stage, queue in self.queues.items():
            queue.remove(req.request_id)
            self._allowed.pop((req.request_id, stage), None)
        self._requests.pop(req.request_id, None)

    def queued_counts(self) -> dict[str, int]:
        """Jobs waiting, by stage name."""
        return {stage.value: len(queue) for stage, queue in self.queues.items()}

    def work_ahead_ms(self, stage: Stage, latest_start_ms: float, is_low_priority: bool) -> float:
        """Queued compute of `stage` that would leave before a job with this key queued now."""
        if stage not in self.queues:
            return 0.0
        now = self.clock_ms()
        probe = QueuedJob(
            request_id="",
            stage=stage,
            latest_start_ms=latest_start_ms,
            enqueued_ms=now,
            predicted_ms=0.0,
            is_low_priority=is_low_priority,
        )
        probe.seq = 1 << 62  # after every job already queued with the same key
        return self.queues[stage].work_ahead_ms(probe, now)

    def has_room(self, view: WorkerView, req: ActiveRequest, stage: Stage) -> bool:
        """Whether the work the worker would run before this job fits the horizon."""
        if not self.mode.is_slo_aware:
            return True
        priority = req.latest_start_ms if stage is Stage.PREFILL else None
        return self.workers[view.worker_id].backlog_ms(self.clock_ms(), priority) < self.horizon_ms

    def next_launch(self) -> Launch | NoWorker | None:
        """Take the first queued job some worker has room for off its queue; None when no job
        can go now. A job no worker can ever run leaves as NoWorker."""
        now = self.clock_ms()
        views = self.workers.views(now)
        for stage in HELD_STAGES:
            queue = self.queues[stage]
            for job in queue.in_order(now):
                req = self._requests[job.request_id]
                placement = self.placement.request(
                    req, stage, self._allowed.get((req.request_id, stage))
                )
                with_room = [view for view in views if self.has_room(view, req, stage)]
                worker_id = self.placement.place(placement, with_room)
                if worker_id is None:
                    if candidates_for(placement, views):
                        continue  # busy: it waits for room
                    self._take(req, stage)
                    return NoWorker(req, stage)
                self._take(req, stage)
                slot = self.workers[worker_id]
                predicted_ms = self._predicted_ms(placement, slot)
                req.trace.record(
                    EventName.DISPATCHED,
                    stage=stage.value,
                    worker=worker_id,
                    order=next(self._num_dispatched),
                    waited_ms=now - job.enqueued_ms,
                    predicted_ms=predicted_ms,
                    latest_start_ms=job.latest_start_ms,
                )
                return Launch(req, stage, slot, predicted_ms)
        return None

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
            placement.stage,
            placement.shape,
            slot.worker_id,
            placement.previous_worker_id,
            placement.priority,
        )
        return forecast.compute_ms
