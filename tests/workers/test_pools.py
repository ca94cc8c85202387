"""Pools grow by starting workers and shrink by draining them first: no request is cut off."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from cluster.config import ClusterConfig, PoolConfig
from cluster.config_sources import parse_pools
from cluster.pools import PoolManager, WorkerBusyError
from workers.contract.worker_config import WorkerConfig


@dataclass
class FakeWorker:
    worker_id: str
    pool: str
    stages: str
    is_draining: bool = False
    is_busy: bool = False
    is_stopped: bool = False

    async def drain(self) -> None:
        self.is_draining = True

    async def is_idle(self) -> bool:
        return not self.is_busy

    async def stop(self) -> None:
        self.is_stopped = True


class FakeLauncher:
    def __init__(self, fail_pool: str | None = None) -> None:
        self.launched: list[FakeWorker] = []
        self.configs: list[WorkerConfig] = []
        self.fail_pool = fail_pool

    async def launch(self, worker: WorkerConfig, pool: PoolConfig) -> FakeWorker:
        self.configs.append(worker)
        self.launched.append(FakeWorker(worker.worker_id, worker.pool, worker.stages))
        if pool.name == self.fail_pool:
            raise RuntimeError(f"cannot start {worker.worker_id}")
        return self.launched[-1]


def ids(workers) -> list[str]:
    return [worker.worker_id for worker in workers]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


@pytest.fixture
def manager(tiny_model_dir) -> PoolManager:
    return PoolManager(ClusterConfig(pools=parse_pools("ep=2,d=1")), FakeLauncher())


def test_start_launches_every_pool_at_its_size(manager):
    started = run(manager.start())
    assert ids(started) == ["ep-0", "ep-1", "d-0"]
    assert [(w.pool, w.stages) for w in started] == [("ep", "EP"), ("ep", "EP"), ("d", "D")]
    assert ids(manager.workers("ep")) == ["ep-0", "ep-1"]
    assert ids(manager.workers()) == ["ep-0", "ep-1", "d-0"]


def test_growing_a_pool_starts_new_workers_with_fresh_ids(manager):
    run(manager.start())
    change = run(manager.scale("d", 3))
    assert (ids(change.added), change.draining) == (["d-1", "d-2"], [])
    assert manager.size("d") == 3


def test_shrinking_drains_the_newest_workers_and_retires_them_once_idle(manager):
    run(manager.start())
    run(manager.scale("ep", 4))
    change = run(manager.scale("ep", 1))
    assert (change.added, change.draining) == ([], ["ep-1", "ep-2", "ep-3"])
    assert ids(manager.workers("ep")) == ["ep-0"]  # the scheduler places work here only
    draining = {w.worker_id: w for w in manager.launcher.launched if w.is_draining}
    assert sorted(draining) == ["ep-1", "ep-2", "ep-3"]

    draining["ep-2"].is_busy = True
    assert run(manager.retire_idle()) == ["ep-1", "ep-3"]
    assert manager.draining() == ["ep-2"]
    with pytest.raises(WorkerBusyError, match="ep-2 still holds work"):
        run(manager.retire("ep-2"))
    run(manager.retire("ep-2", force=True))
    assert manager.draining() == []
    assert [w.worker_id for w in manager.launcher.launched if w.is_stopped] == [
        "ep-1", "ep-2", "ep-3"
    ]  # fmt: skip


def test_only_draining_workers_can_be_retired(manager):
    run(manager.start())
    with pytest.raises(KeyError, match="ep-0 is not draining"):
        run(manager.retire("ep-0"))


def test_a_failed_launch_starts_nothing(tiny_model_dir):
    launcher = FakeLauncher(fail_pool="d")
    manager = PoolManager(ClusterConfig(pools=parse_pools("ep=2,d=1")), launcher)
    with pytest.raises(RuntimeError, match="cannot start d-0"):
        run(manager.start())
    assert manager.workers() == []
    assert [w.is_stopped for w in launcher.launched] == [True, True, False]


def test_unknown_pools_and_negative_sizes_are_refused(manager):
    with pytest.raises(KeyError, match="no pool named 'x'"):
        run(manager.scale("x", 1))
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        run(manager.scale("d", -1))


def test_workers_profile_at_start_for_the_strictest_tpot_unless_their_pool_opts_out(
    tiny_model_dir,
):
    config = ClusterConfig.from_dict(
        {
            "pools": [
                {"name": "ep", "stages": "EP"},
                {"name": "d", "stages": "D", "profile_at_start": False},
            ],
            "scheduler": {"rock_tpot_ms": 150.0},
        }
    )
    launcher = FakeLauncher()
    run(PoolManager(config, launcher).start())
    assert [(c.worker_id, c.profile_at_start, c.tpot_target_ms) for c in launcher.configs] == [
        ("ep-0", True, 150.0), ("d-0", False, 150.0),
    ]  # fmt: skip
