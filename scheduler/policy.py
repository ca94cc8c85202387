"""Placement: which worker runs a request's next stage.

The scheduler asks the policy once per stage, in the order requests become ready for that stage
(first come, first served per stage); workers queue what they are given. Policies see plain
snapshots (`WorkerView`) and return a worker id, so smarter, SLO-aware ones slot in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler.request import RequestSpec
from scheduler.stage import Stage


@dataclass(frozen=True)
class WorkerView:
    """One worker as a policy sees it."""

    worker_id: str
    model: str
    stages: str  # e.g. "EPD"
    is_draining: bool  # takes no new work
    num_active: int  # the worker's last reported num_active, plus jobs dispatched since

    def can_run(self, stage: Stage) -> bool:
        return stage.letter in self.stages


@dataclass(frozen=True)
class PlacementRequest:
    spec: RequestSpec
    stage: Stage
    previous_worker_id: str | None  # ran the previous stage; a handoff to itself costs nothing


class PlacementPolicy(Protocol):
    def place(self, request: PlacementRequest, workers: Sequence[WorkerView]) -> str | None:
        """The id of the worker to run `request.stage`, or None when no worker can. No side
        effects: the scheduler also asks ahead (will prefill follow encode onto its worker?)."""
        ...


def capable_workers(workers: Sequence[WorkerView], model: str, stage: Stage) -> list[WorkerView]:
    """Workers that serve `model`, run `stage` and take new work."""
    return [w for w in workers if w.model == model and w.can_run(stage) and not w.is_draining]


class LeastLoadedPolicy:
    """Stay on the previous stage's worker when it can run this stage; otherwise the capable
    worker with the fewest active jobs (ties: lowest worker id). A cluster of EPD workers thus
    runs every request on one worker with no transfer (the colocated baseline), and EP + D
    pools move only the KV."""

    def place(self, request: PlacementRequest, workers: Sequence[WorkerView]) -> str | None:
        candidates = capable_workers(workers, request.spec.model, request.stage)
        if not candidates:
            return None
        for worker in candidates:
            if worker.worker_id == request.previous_worker_id:
                return worker.worker_id
        return min(candidates, key=lambda w: (w.num_active, w.worker_id)).worker_id
