"""Finding, killing and counting a cluster's workers from outside, as an operator would.

A worker is a Ray actor named `triserve-<cluster id>-<worker id>`; `kill -9` of its process is
the fault (Ray may restart the actor; the pool manager replaces one that stays dead). Capacity
is back when every pool has as many live, unsuspected workers as its target.
"""

from __future__ import annotations

import os
import signal
import time


def worker_pid(worker_id: str) -> int:
    """The process id of the live actor of `worker_id` (ValueError when there is none)."""
    import ray

    suffix = f"-{worker_id}"
    # From the GCS directly: the state API needs the dashboard, which local clusters leave off.
    for actor in ray._private.state.state.actor_table(None, actor_state_name="ALIVE").values():
        if (actor["Name"] or "").endswith(suffix) and actor["Pid"]:
            return int(actor["Pid"])
    raise ValueError(f"no live actor for worker {worker_id!r}")


def kill_worker(worker_id: str) -> int:
    """SIGKILL the worker's process; its pid."""
    pid = worker_pid(worker_id)
    os.kill(pid, signal.SIGKILL)
    return pid


def corrupt_next_transfers(pool_workers: list[str], num_transfers: int) -> None:
    """Make each of these workers' next `num_transfers` exports fail their consumer's checksum
    (WorkerActor.corrupt_next_transfers, fault injection)."""
    import ray

    from workers.actor import find_worker_actors

    handles = find_worker_actors()
    for worker_id in pool_workers:
        handle = next(h for name, h in handles.items() if name.endswith(f"-{worker_id}"))
        ray.get(handle.corrupt_next_transfers.remote(num_transfers), timeout=30)


def pool_worker_ids(client, pool: str) -> list[str]:
    state = client.cluster_state()
    return [w.worker_id for w in next(p.workers for p in state.pools if p.name == pool)]


def busiest_worker(client, pool: str) -> str:
    """The worker of `pool` running the most requests now (the first one on a tie)."""
    state = client.cluster_state()
    workers = list(next(p.workers for p in state.pools if p.name == pool))
    return max(workers, key=lambda w: (w.running + w.waiting, -workers.index(w))).worker_id


def pools_at_capacity(client) -> bool:
    """Every pool has its target number of live workers, none suspected or starting."""
    return all(
        pool.live_workers >= pool.target_workers
        and not pool.starting_workers
        and not pool.suspected_workers
        for pool in client.cluster_state().pools
    )


def seconds_to_capacity(client, since: float, timeout_s: float = 120.0) -> float | None:
    """Seconds from `since` (time.monotonic) until every pool is back at capacity; None when it
    is not after `timeout_s`."""
    deadline = since + timeout_s
    while time.monotonic() < deadline:
        try:
            if pools_at_capacity(client):
                return time.monotonic() - since
        except Exception:  # the control plane may be busy recovering: ask again
            pass
        time.sleep(0.2)
    return None
