"""PoolManager: starts the worker pools of a ClusterConfig, and grows and shrinks them.

Growing starts new workers and returns their clients. Shrinking is a handshake, so that no
request is cut off:

    change = await manager.scale("decode", 1)   # ScaleChange(added=[], draining=["decode-2"])
        the draining workers refuse new jobs (StageFailed, retriable) and finish what they
        hold; the scheduler stops placing work on them and releases their transfers
    await manager.retire_idle()                 # ["decode-2"] once it is idle: nothing queued
                                                # or running, no transfer waiting; actor killed
    await manager.retire("decode-2", force=True)   # kill now; its requests need re-driving

The newest workers of a pool are drained first. Each pool has a target size (its configured
size, then the last `scale`); a worker that is gone for good is `discard`ed, and `replenish`
starts replacements until live + starting workers reach the target again (the control plane's
supervision loop calls both, cluster/control_plane.py). A restarted control plane `adopt`s the
workers that outlived the old one. Workers are launched by a `WorkerLauncher`:
`RayWorkerLauncher` makes WorkerActors; tests can pass in-process or fake launchers. A worker
of a pool with `profile_at_start` (the default) measures its engine before it reports ready,
and sizes its steps to the scheduler's strictest TPOT target (workers/profiler.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Protocol

from cluster.config import ClusterConfig, PoolConfig
from workers.contract.worker_config import WorkerConfig

logger = logging.getLogger(__name__)


class ManagedWorker(Protocol):
    """A WorkerClient (see the scheduler) plus the calls the pool manager needs."""

    worker_id: str
    pool: str
    is_gone: bool  # dead for good: its process will not come back (no restarts left)

    async def drain(self) -> None: ...

    async def is_idle(self) -> bool: ...

    async def stop(self) -> None: ...


class WorkerLauncher(Protocol):
    async def launch(self, worker: WorkerConfig, pool: PoolConfig) -> ManagedWorker:
        """Start one worker and return its client once it is ready to take jobs."""


class WorkerBusyError(RuntimeError):
    """The worker still holds work; drain it and wait, or retire it with force=True."""


@dataclass(frozen=True)
class ScaleChange:
    added: list[ManagedWorker] = field(default_factory=list)  # started and ready
    draining: list[str] = field(default_factory=list)  # worker ids now refusing new jobs


class RayWorkerLauncher:
    """Each worker is a detached WorkerActor holding the pool's CPUs and GPUs (Ray resources),
    named after `cluster_id` (workers/actor.py), which stays the same across control plane
    restarts: a restarted control plane `find`s its workers by that name."""

    def __init__(
        self, config: ClusterConfig, cluster_id: str | None = None, ready_timeout_s: float = 600.0
    ) -> None:
        from workers.actor import new_cluster_id

        self.config = config
        self.cluster_id = cluster_id or new_cluster_id()  # None: workers no one will look for
        self.ready_timeout_s = ready_timeout_s  # model loading included

    async def launch(self, worker: WorkerConfig, pool: PoolConfig) -> ManagedWorker:
        from workers.actor import start_worker_actor
        from workers.ray_client import RayWorkerClient

        handle = start_worker_actor(
            worker,
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus,
            max_restarts=pool.max_restarts,
            cluster_id=self.cluster_id,
            fetch_timeout_s=self.config.fetch_timeout_s,
        )
        client = RayWorkerClient(handle, worker, self.config.call_timeout_s)
        try:
            await client.ready(self.ready_timeout_s)
        except BaseException:
            await client.stop()
            raise
        return client

    async def find(self) -> list[ManagedWorker]:
        """The live workers of this cluster, each with what it held for the requests of a dead
        control plane aborted. One that does not answer within `call_timeout_s` (a worker that
        is loading its model again, say) is killed: its pool replaces it."""
        from workers.actor import find_worker_actors
        from workers.ray_client import RayWorkerClient

        async def take_back(handle) -> ManagedWorker:
            config = await asyncio.wait_for(handle.config.remote(), self.config.call_timeout_s)
            client = RayWorkerClient(handle, config, self.config.call_timeout_s)
            try:
                await client.abort_all()
                if (await client.load()).is_draining:  # it was leaving: let it go
                    raise WorkerBusyError(f"{client.worker_id} was draining")
            except BaseException:
                await client.stop()
                raise
            return client

        handles = find_worker_actors(self.cluster_id)
        results = await asyncio.gather(*map(take_back, handles.values()), return_exceptions=True)
        for name, failure in zip(handles, results, strict=True):
            if isinstance(failure, BaseException):
                logger.warning("not taking back %s: %r", name, failure)
        return [r for r in results if not isinstance(r, BaseException)]


class PoolManager:
    def __init__(self, config: ClusterConfig, launcher: WorkerLauncher) -> None:
        self.config = config
        self.launcher = launcher
        self._active: dict[str, list[ManagedWorker]] = {pool.name: [] for pool in config.pools}
        self._draining: dict[str, ManagedWorker] = {}
        self._next_index = {pool.name: itertools.count() for pool in config.pools}
        self._targets = {pool.name: pool.num_workers for pool in config.pools}
        self._num_starting = {pool.name: 0 for pool in config.pools}  # replacements loading
        self._lock = asyncio.Lock()

    async def start(self) -> list[ManagedWorker]:
        """Start every pool at its configured size; all or nothing."""
        async with self._lock:
            launches = [(pool, pool.num_workers) for pool in self.config.pools]
            return await self._launch(launches)

    def workers(self, pool: str | None = None) -> list[ManagedWorker]:
        """Workers that take new jobs, oldest first (all pools when `pool` is None)."""
        names = [pool] if pool is not None else list(self._active)
        return [worker for name in names for worker in self._active[name]]

    def draining(self) -> list[str]:
        return list(self._draining)

    def size(self, pool: str) -> int:
        """Started workers that take new jobs (live or not: the scheduler knows which)."""
        return len(self._active[pool])

    def target(self, pool: str) -> int:
        return self._targets[pool]

    def num_starting(self, pool: str) -> int:
        """Replacements launched by `replenish` and still loading their model."""
        return self._num_starting[pool]

    def num_missing(self, pool: str) -> int:
        return max(0, self._targets[pool] - len(self._active[pool]) - self._num_starting[pool])

    async def adopt(self, workers: list[ManagedWorker]) -> list[ManagedWorker]:
        """Take back workers that outlived a control plane: each joins its pool (oldest id
        first), a pool's target rises to at least its number of workers (a scale-up survives;
        a scale below the configured size does not), and new ids follow theirs. Returns those
        adopted; one of a pool no longer configured is stopped."""
        adopted = [w for w in sorted(workers, key=_index) if w.pool in self._active]
        async with self._lock:
            for worker in adopted:
                self._active[worker.pool].append(worker)
            for pool, active in self._active.items():
                self._targets[pool] = max(self._targets[pool], len(active))
                if active:
                    self._next_index[pool] = itertools.count(_index(active[-1]) + 1)
        strays = [worker.stop() for worker in workers if worker.pool not in self._active]
        await asyncio.gather(*strays, return_exceptions=True)
        return adopted

    async def scale(self, pool: str, num_workers: int) -> ScaleChange:
        """Grow by starting workers, or shrink by draining the newest ones (see module doc)."""
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        pool_config = self.config.pool(pool)
        async with self._lock:
            self._targets[pool] = num_workers
            active = self._active[pool]
            if num_workers >= len(active):
                missing = self.num_missing(pool)
                added = await self._launch([(pool_config, missing)]) if missing else []
                change = ScaleChange(added=added)
            else:
                leaving = active[num_workers:]
                # A dead worker cannot be told to drain; it leaves all the same.
                await asyncio.gather(*(w.drain() for w in leaving), return_exceptions=True)
                del active[num_workers:]
                self._draining.update((worker.worker_id, worker) for worker in leaving)
                change = ScaleChange(draining=[worker.worker_id for worker in leaving])
            return change

    async def discard(self, worker_id: str) -> None:
        """Forget an active worker that is gone (the scheduler dropped it) and stop its actor;
        its pool is then below its target until `replenish` replaces it."""
        async with self._lock:
            for workers in self._active.values():
                gone = [worker for worker in workers if worker.worker_id == worker_id]
                workers[:] = [worker for worker in workers if worker.worker_id != worker_id]
                for worker in gone:
                    try:
                        await worker.stop()
                    except Exception:  # a dead actor may refuse even to be killed
                        logger.warning("stopping %s failed", worker_id, exc_info=True)

    async def replenish(self, pool: str) -> list[ManagedWorker]:
        """Start workers until the pool's live and starting workers reach its target; returns
        those that started (a launch that fails is logged; the next call tries again). The
        loading is not under the lock: scaling and retiring go on meanwhile."""
        pool_config = self.config.pool(pool)
        async with self._lock:
            count = self.num_missing(pool)
            self._num_starting[pool] += count
        if count == 0:
            return []
        try:
            results = await self._start_workers([(pool_config, count)])
        finally:
            self._num_starting[pool] -= count
        for failure in (r for r in results if isinstance(r, BaseException)):
            logger.error("a replacement worker of pool %s failed to start: %r", pool, failure)
        async with self._lock:
            started = [r for r in results if not isinstance(r, BaseException)]
            room = max(0, self._targets[pool] - len(self._active[pool]))
            extra = started[room:]  # the pool was scaled down while they loaded
            self._active[pool].extend(started[:room])
        await asyncio.gather(*(worker.stop() for worker in extra), return_exceptions=True)
        return started[:room]

    async def retire(self, worker_id: str, force: bool = False) -> None:
        """Kill a draining worker; unless `force`, only once it is idle."""
        async with self._lock:
            worker = self._draining.get(worker_id)
            if worker is None:
                raise KeyError(f"{worker_id} is not draining; scale its pool down first")
            if not force and not await worker.is_idle():
                raise WorkerBusyError(f"{worker_id} still holds work")
            del self._draining[worker_id]
            await worker.stop()

    async def retire_idle(self) -> list[str]:
        """Kill every draining worker that has become idle; returns their ids."""
        retired = []
        for worker_id in self.draining():
            try:
                await self.retire(worker_id)
            except (WorkerBusyError, KeyError):
                continue
            retired.append(worker_id)
        return retired

    async def shutdown(self) -> None:
        async with self._lock:
            everyone = self.workers() + list(self._draining.values())
            self._draining.clear()
            for workers in self._active.values():
                workers.clear()
            await asyncio.gather(*(worker.stop() for worker in everyone))

    async def _launch(self, launches: list[tuple[PoolConfig, int]]) -> list[ManagedWorker]:
        """Start workers, all or nothing, and make them active."""
        results = await self._start_workers(launches)
        started = [r for r in results if not isinstance(r, BaseException)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(worker.stop() for worker in started), return_exceptions=True)
            raise failures[0]
        for worker in started:
            self._active[worker.pool].append(worker)
        return started

    async def _start_workers(
        self, launches: list[tuple[PoolConfig, int]]
    ) -> list[ManagedWorker | BaseException]:
        configs = []
        # Under policy "slo" workers size their steps to the strictest TPOT target; the "fcfs"
        # baseline keeps the configured max_num_batched_tokens (they still profile).
        scheduler = self.config.scheduler
        tpot_ms = scheduler.strictest_tpot_ms if scheduler.mode.is_slo_aware else None
        for pool, count in launches:
            model_dir = await asyncio.to_thread(self.config.model_dir, pool.model)
            for _ in range(count):
                worker_id = f"{pool.name}-{next(self._next_index[pool.name])}"
                configs.append((pool, pool.worker_config(worker_id, model_dir, tpot_ms)))
        return await asyncio.gather(
            *(self.launcher.launch(worker, pool) for pool, worker in configs),
            return_exceptions=True,
        )


def _index(worker: ManagedWorker) -> int:
    """n of a worker id `<pool>-<n>` (see `_start_workers`)."""
    return int(worker.worker_id.rpartition("-")[2])
