"""The cluster comes back by itself when the control plane dies: Ray restarts it, and it takes
back the same workers (they outlive it) instead of launching new ones. A stream open at the
kill ends with UNAVAILABLE; calls after it are served again once the control plane is back.

The pool tests use fake workers; the Ray test kills the package cluster's control plane
(conftest.py) and leaves the cluster whole again, with the same workers and metrics address.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from cluster.client import TriserveError
from cluster.config import ClusterConfig
from cluster.config_sources import parse_pools
from cluster.pools import PoolManager
from tests.cluster.test_worker_lifecycle import at_capacity, wait_for
from tests.workers.test_pools import FakeLauncher, FakeWorker, ids

RECOVERY_TIMEOUT_S = 60.0  # a restart loads no model


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


# ---------------------------------------------------------------- the pool manager, fake workers
def test_adopted_workers_rejoin_their_pools_and_new_ids_follow_theirs():
    manager = PoolManager(ClusterConfig(pools=parse_pools("p=1,d=1")), FakeLauncher())
    found = [FakeWorker("d-2", "d", "D"), FakeWorker("d-0", "d", "D"), FakeWorker("x-0", "x", "D")]

    adopted = run(manager.adopt(found))

    assert ids(adopted) == ["d-0", "d-2"]  # oldest first; pool x is not configured
    assert [w.is_stopped for w in found] == [False, False, True]
    assert (manager.target("d"), manager.target("p"), manager.num_missing("p")) == (2, 1, 1)
    assert ids(run(manager.replenish("p"))) == ["p-0"]
    assert ids(run(manager.scale("d", 3)).added) == ["d-3"]  # never a second "d-0"


def test_pool_that_lost_workers_while_the_control_plane_was_down_is_refilled():
    manager = PoolManager(ClusterConfig(pools=parse_pools("p=1,d=3")), FakeLauncher())
    run(manager.adopt([FakeWorker("d-1", "d", "D")]))

    assert (manager.target("d"), manager.num_missing("d")) == (3, 2)
    assert ids(run(manager.replenish("d"))) == ["d-2", "d-3"]


# ---------------------------------------------------------------- real Ray: kill the control plane
def workers_by_pool(client) -> dict[str, list[tuple[str, int]]]:
    return {
        pool.name: [(w.worker_id, w.epoch) for w in pool.workers]
        for pool in client.cluster_state().pools
    }


def test_killed_control_plane_comes_back_with_the_same_workers(cluster, client):
    import ray

    from workers.actor import find_worker_actors

    before = workers_by_pool(client)
    assert all(at_capacity(pool) for pool in client.cluster_state().pools)
    stream = client.generate(prompt="Tell me", model="disagg", max_tokens=1000, ignore_eos=True)
    next(stream)  # the request is decoding now

    refusals = []

    def serves() -> bool:
        try:
            done = client.complete(prompt="The sea", model="disagg", max_tokens=8, ignore_eos=True)
        except TriserveError as e:
            refusals.append((e.code, e.details))
            return False
        return len(done.token_ids) == 8

    killed = time.monotonic()
    ray.kill(cluster.control_plane, no_restart=False)
    if not serves():  # sent at once: it reached the dead process, or waits for the new one
        wait_for(serves, "a new request is served", RECOVERY_TIMEOUT_S)
    with pytest.raises(TriserveError) as ended:
        for _ in stream:
            pass
    assert ended.value.code == grpc.StatusCode.UNAVAILABLE
    recovered_s = time.monotonic() - killed
    print(f"\ncontrol plane back and serving in {recovered_s:.1f} s; refused: {refusals}")
    assert all(code == grpc.StatusCode.UNAVAILABLE for code, _ in refusals)

    assert workers_by_pool(client) == before  # the same workers, neither relaunched nor restarted
    assert all(at_capacity(pool) for pool in client.cluster_state().pools)
    assert len(find_worker_actors(cluster.cluster_id)) == sum(map(len, before.values()))
    assert client.health() == "SERVING"
