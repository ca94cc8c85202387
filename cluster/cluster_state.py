"""What `GetClusterState` and `ScalePool` report: pools and the scheduler's view of workers."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.snapshot import WorkerSnapshot


@dataclass(frozen=True)
class PoolSnapshot:
    name: str
    stages: str
    model: str
    target_workers: int  # active workers; draining ones are listed but not counted
    workers: list[WorkerSnapshot]


@dataclass(frozen=True)
class ClusterSnapshot:
    pools: list[PoolSnapshot]
    num_requests_by_state: dict[str, int]  # active requests by state; ended ones since start
