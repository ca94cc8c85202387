"""What `GetClusterState` and `ScalePool` report: pools and the scheduler's view of workers,
and the figures of finished agent runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.agent_metrics import AgentStatsSnapshot
from scheduler.cost_model import WorkerCostSnapshot
from scheduler.slo_ledger import SloLedger
from scheduler.snapshot import WorkerSnapshot


@dataclass(frozen=True)
class PoolSnapshot:
    name: str
    stages: str
    model: str
    target_workers: int  # what the pool is kept at: its configured size, then the last scale
    workers: list[WorkerSnapshot]  # as the scheduler knows them, draining and suspected ones too
    num_live: int = 0  # taking work: registered with the scheduler, not suspected, not draining
    num_starting: int = 0  # launched and loading their model (replacements included)
    num_suspected: int = 0  # their last poll failed; they get no work until they answer
    costs: dict[str, WorkerCostSnapshot] = field(default_factory=dict)  # of `workers`, by id


@dataclass(frozen=True)
class ClusterSnapshot:
    pools: list[PoolSnapshot]
    num_requests_by_state: dict[str, int]  # active requests by state; ended ones since start
    num_queued_by_stage: dict[str, int] = field(default_factory=dict)  # scheduler stage queues
    ledger: SloLedger | None = None  # SLO outcomes per class and cache hits since start-up
    # Finished agent runs per request class, then over all of them; empty before the first.
    agent: list[AgentStatsSnapshot] = field(default_factory=list)
