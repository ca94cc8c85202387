"""A point-in-time view of the scheduler, for the admin API and tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.cost_model import WorkerCostSnapshot
from scheduler.slo_ledger import SloLedger
from workers.contract.messages import WorkerLoad


@dataclass(frozen=True)
class WorkerSnapshot:
    worker_id: str
    pool: str
    model: str
    stages: str
    epoch: int
    is_draining: bool
    load: WorkerLoad | None  # as last reported
    num_dispatched_since_load: int  # jobs sent after that report
    is_suspected: bool = False  # its last poll failed: no new work until it answers (poller.py)


@dataclass(frozen=True)
class SchedulerSnapshot:
    workers: dict[str, WorkerSnapshot]
    # Every state's count: active requests by their state, ended ones since start-up.
    num_requests_by_state: dict[str, int]
    num_queued_by_stage: dict[str, int] = field(default_factory=dict)  # in the stage queues
    costs: dict[str, WorkerCostSnapshot] = field(default_factory=dict)  # by worker id
    ledger: SloLedger | None = None  # SLO outcomes and cache hits since start-up
