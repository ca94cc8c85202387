"""Workers that die come back: a killed worker process is restarted by Ray and taken back by the
scheduler; a worker that is dead for good is replaced by its pool, which returns to its target
size. `status` counts live, starting and suspected workers truthfully throughout.

The Ray tests share the package's cluster (conftest.py); the pool tests use fake workers.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest

from cluster.config import ClusterConfig
from cluster.config_sources import parse_pools
from cluster.metrics import ClusterReadings, ServingMetrics
from cluster.pools import PoolManager
from scheduler.snapshot import SchedulerSnapshot, WorkerSnapshot
from tests.cluster.test_metrics import sample
from tests.workers.test_pools import FakeLauncher, ids

RECOVERY_TIMEOUT_S = 180.0  # a restart or a replacement loads its model (2 shared cores)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


# ---------------------------------------------------------------- the pool manager, fake workers
def test_discarded_worker_is_replaced_with_a_fresh_id_until_the_pool_is_at_target():
    manager = PoolManager(ClusterConfig(pools=parse_pools("ep=1,d=2")), FakeLauncher())
    run(manager.start())
    run(manager.discard("d-0"))
    assert (manager.size("d"), manager.target("d"), manager.num_missing("d")) == (1, 2, 1)

    assert ids(run(manager.replenish("d"))) == ["d-2"]
    assert ids(manager.workers("d")) == ["d-1", "d-2"]
    assert [w.worker_id for w in manager.launcher.launched if w.is_stopped] == ["d-0"]
    assert run(manager.replenish("d")) == []  # at target: nothing more


def test_scaling_after_a_loss_starts_what_is_missing():
    manager = PoolManager(ClusterConfig(pools=parse_pools("p=1,d=2")), FakeLauncher())
    run(manager.start())
    run(manager.discard("d-1"))

    change = run(manager.scale("d", 2))
    assert ids(change.added) == ["d-2"]
    assert ids(manager.workers("d")) == ["d-0", "d-2"]


def test_replacements_beyond_a_target_lowered_while_they_loaded_are_stopped():
    class SlowLauncher(FakeLauncher):
        async def launch(self, worker, pool):
            await asyncio.sleep(0.05)
            return await super().launch(worker, pool)

    async def body(manager: PoolManager) -> list:
        await manager.start()
        await manager.discard("d-0")
        replacing = asyncio.create_task(manager.replenish("d"))
        await asyncio.sleep(0)
        assert manager.num_starting("d") == 1
        await manager.scale("d", 1)
        return await replacing

    manager = PoolManager(ClusterConfig(pools=parse_pools("p=1,d=2")), SlowLauncher())
    assert run(body(manager)) == []
    assert ids(manager.workers("d")) == ["d-1"]
    stopped = {w.worker_id: w.is_stopped for w in manager.launcher.launched}
    assert stopped == {"p-0": False, "d-0": True, "d-1": False, "d-2": True}


def test_suspected_workers_gauge_counts_each_pools_suspects():
    def worker(worker_id: str, pool: str, is_suspected: bool) -> WorkerSnapshot:
        return WorkerSnapshot(
            worker_id=worker_id, pool=pool, model="m", stages="D", epoch=1, is_draining=False,
            load=None, num_dispatched_since_load=0, is_suspected=is_suspected,
        )  # fmt: skip

    workers = [worker("d-0", "d", True), worker("d-1", "d", False), worker("p-0", "p", False)]
    snapshot = SchedulerSnapshot({w.worker_id: w for w in workers}, num_requests_by_state={})
    metrics = ServingMetrics()
    metrics.watch(lambda: ClusterReadings(snapshot, {"d": 2, "p": 1}))

    assert sample(metrics, "triserve_pool_suspected_workers", pool="d") == 1
    assert sample(metrics, "triserve_pool_suspected_workers", pool="p") == 0


# ---------------------------------------------------------------- real Ray: kill a worker
def wait_for(condition, what: str, timeout_s: float = RECOVERY_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")


def pool_state(client, name: str):
    return next(pool for pool in client.cluster_state().pools if pool.name == name)


def worker_actor(worker_id: str):
    """The Ray actor of a worker, found by its name `triserve-<cluster id>-<worker id>`."""
    import ray

    # `triserve-<8 hex>-<worker id>` exactly: "decode-0" must not find "cross-decode-0".
    name = re.compile(rf"triserve-[0-9a-f]{{8}}-{re.escape(worker_id)}")
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if name.fullmatch(actor["name"]):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise LookupError(f"no actor for worker {worker_id}")


def kill_process(worker_id: str) -> None:
    """`kill -9` of the worker's process, as an operator (or the OOM killer) would."""
    from ray._private import state  # the public state API needs the dashboard, which is off

    pid = state.actors(worker_actor(worker_id)._actor_id.hex())["Pid"]
    os.kill(pid, signal.SIGKILL)


def serves(client) -> bool:
    text = "Tell me about the sea."
    done = client.complete(prompt=text, model="disagg", max_tokens=8, ignore_eos=True)
    return len(done.token_ids) == 8


def at_capacity(pool) -> bool:
    counts = (pool.live_workers, pool.starting_workers, pool.suspected_workers)
    return counts == (pool.target_workers, 0, 0)


def test_killed_decode_worker_is_restarted_by_ray_and_taken_back(client):
    before = pool_state(client, "decode")
    assert at_capacity(before)
    (worker,) = before.workers

    killed = time.monotonic()
    kill_process(worker.worker_id)
    after = wait_for(
        lambda: (
            (p := pool_state(client, "decode")).workers
            and p.workers[0].epoch > worker.epoch
            and at_capacity(p)
            and p
        ),
        "the restarted worker is taken back",
    )
    print(f"\ndecode worker restarted and taken back in {time.monotonic() - killed:.1f} s")

    assert [w.worker_id for w in after.workers] == [worker.worker_id]  # the same worker
    assert not after.workers[0].suspected
    assert serves(client)


def test_decode_worker_dead_for_good_is_replaced_and_the_pool_is_whole_again(client):
    import ray

    (worker,) = pool_state(client, "decode").workers
    killed = time.monotonic()
    ray.kill(worker_actor(worker.worker_id), no_restart=True)
    after = wait_for(
        lambda: (
            (p := pool_state(client, "decode")).workers
            and p.workers[0].worker_id != worker.worker_id
            and at_capacity(p)
            and p
        ),
        "a replacement serves",
    )
    print(f"\ndecode worker replaced in {time.monotonic() - killed:.1f} s")

    assert (after.target_workers, after.live_workers, len(after.workers)) == (1, 1, 1)
    with pytest.raises(LookupError):
        worker_actor(worker.worker_id)  # the dead one is gone, not kept aside
    assert serves(client)
