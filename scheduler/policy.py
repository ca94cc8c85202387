"""Placement: which worker runs a request's next stage.

The scheduler asks the policy once per stage, when the stage's job leaves its queue (see
dispatcher.py), among the workers that have room for it. Policies see plain snapshots
(`WorkerView`) and return a worker id.

- `LeastLoadedPolicy` (policy "fcfs", the baseline): sticky to the previous stage's worker,
  else the fewest active jobs.
- `EarliestCompletionPolicy` (policy "slo"): the worker predicted to finish the stage first,
  queue + transfer + compute (forecast.py). Cached state lowers compute there: the prefill
  worker holding the most leading prefix blocks of the prompt computes fewer tokens (prefix
  affinity), an encoder holding an image's embeddings skips it (embedding affinity), and the
  previous stage's worker needs no transfer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler.forecast import Forecaster, RequestShape, StageForecast
from scheduler.request import RequestSpec
from scheduler.stage import Stage


@dataclass(frozen=True)
class WorkerView:
    """One worker as a policy sees it."""

    worker_id: str
    model: str
    stages: str  # e.g. "EPD"
    is_draining: bool  # takes no new work: draining, or suspected (its last poll failed)
    num_active: int  # the worker's last reported num_active, plus jobs dispatched since
    backlog_ms: float = 0.0  # predicted encode and prefill work given to it and not yet done

    def can_run(self, stage: Stage) -> bool:
        return stage.letter in self.stages


@dataclass(frozen=True)
class PlacementRequest:
    spec: RequestSpec
    stage: Stage
    previous_worker_id: str | None  # ran the previous stage; a handoff to itself costs nothing
    shape: RequestShape | None = None  # its costs, for cost-based policies
    # Only these workers may run the stage (None: any): embeddings kept in one worker's cache
    # only can be prefilled there alone.
    allowed: frozenset[str] | None = None
    priority: float | None = None  # a prefill's PrefillJob.priority (None: all work is ahead)
    # A continuation's prefill (sessions.py): the worker holding the paused KV it continues is
    # its only candidate, whatever its stages, as long as it can decode and takes work.
    continues_on: str | None = None


class PlacementPolicy(Protocol):
    def place(self, request: PlacementRequest, workers: Sequence[WorkerView]) -> str | None:
        """The id of the worker to run `request.stage`, or None when no worker can. No side
        effects: the scheduler also asks ahead (will prefill follow encode onto its worker?)."""
        ...


def capable_workers(workers: Sequence[WorkerView], model: str, stage: Stage) -> list[WorkerView]:
    """Workers that serve `model`, run `stage` and take new work."""
    return [w for w in workers if w.model == model and w.can_run(stage) and not w.is_draining]


def candidates_for(request: PlacementRequest, workers: Sequence[WorkerView]) -> list[WorkerView]:
    if request.continues_on is not None:
        holder = [w for w in workers if w.worker_id == request.continues_on]
        holder = capable_workers(holder, request.spec.model, Stage.DECODE)
        if holder:
            return holder
    capable = capable_workers(workers, request.spec.model, request.stage)
    if request.allowed is None:
        return capable
    return [w for w in capable if w.worker_id in request.allowed]


class LeastLoadedPolicy:
    """Stay on the previous stage's worker when it can run this stage; otherwise the capable
    worker with the fewest active jobs (ties: lowest worker id). A cluster of EPD workers thus
    runs every request on one worker with no transfer (the colocated baseline), and EP + D
    pools move only the KV."""

    def place(self, request: PlacementRequest, workers: Sequence[WorkerView]) -> str | None:
        candidates = candidates_for(request, workers)
        if not candidates:
            return None
        for worker in candidates:
            if worker.worker_id == request.previous_worker_id:
                return worker.worker_id
        return min(candidates, key=lambda w: (w.num_active, w.worker_id)).worker_id


class EarliestCompletionPolicy:
    """The capable worker predicted to finish the stage first (ties: lowest worker id)."""

    def __init__(self, forecaster: Forecaster) -> None:
        self.forecaster = forecaster

    def place(self, request: PlacementRequest, workers: Sequence[WorkerView]) -> str | None:
        forecasts = self.forecasts(request, workers)
        if not forecasts:
            return None
        return min(forecasts, key=lambda f: (f.completion_ms, f.worker_id)).worker_id

    def forecasts(
        self, request: PlacementRequest, workers: Sequence[WorkerView]
    ) -> list[StageForecast]:
        """The stage's forecast on every candidate worker."""
        if request.shape is None:
            raise ValueError("EarliestCompletionPolicy needs the request's shape")
        return [
            self.forecaster.stage(
                request.stage,
                request.shape,
                w.worker_id,
                request.previous_worker_id,
                request.priority,
            )
            for w in candidates_for(request, workers)
        ]
