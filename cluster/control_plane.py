"""The control plane: one named async Ray actor holding the global scheduler and the pools.

The ingress (stateless, scalable) calls it for every request; it calls the workers. Draining
workers are retired here once the scheduler says nothing is active on them or still needs
them. Everything runs on the actor's one event loop (the scheduler's asyncio state is bound to
it; Ray concurrency groups would add loops), with a concurrency limit high enough that open
streams never delay a health check, a cancel or a scale. The Prometheus endpoint is served from
a thread of this actor; its scrapes read the scheduler on that loop (cluster/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from cluster.cluster_state import ClusterSnapshot, PoolSnapshot
from cluster.config import ClusterConfig
from cluster.errors import UnknownPoolError
from cluster.metrics import (
    SCRAPE_TIMEOUT_S,
    ClusterReadings,
    MetricsServer,
    ServingMetrics,
    on_loop,
)
from cluster.pools import PoolManager, RayWorkerLauncher
from scheduler.request import RequestOutput, RequestSpec
from scheduler.scheduler import Scheduler
from scheduler.snapshot import SchedulerSnapshot
from scheduler.trace import Trace

logger = logging.getLogger("triserve.control_plane")
CONTROL_PLANE_NAME = "triserve-control-plane"
RETIRE_INTERVAL_S = 0.5
MAX_CONCURRENCY = 100_000  # open streams plus control calls


class ControlPlane:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.scheduler = Scheduler(config=config.scheduler)
        self.pools = PoolManager(config, RayWorkerLauncher(config))
        self.metrics = ServingMetrics()
        self.scheduler.add_observer(self.metrics.observe)
        self._metrics_server: MetricsServer | None = None
        self._retire_task: asyncio.Task | None = None

    async def start(self) -> str | None:
        """Serve the metrics, launch every pool and register its workers; returns once all
        models are loaded, with the metrics address (host:port; None when metrics are off)."""
        if self.config.metrics_port is not None:
            loop = asyncio.get_running_loop()
            self.metrics.watch(lambda: on_loop(loop, self._metrics_readings, SCRAPE_TIMEOUT_S))
            self._metrics_server = MetricsServer(
                self.metrics.registry, self.config.host, self.config.metrics_port
            )
        for worker in await self.pools.start():
            await self.scheduler.add_worker(worker)
        self._retire_task = asyncio.create_task(self._retire_drained_workers())
        return self._metrics_server.address if self._metrics_server else None

    async def ping(self) -> bool:
        return True

    async def generate(self, spec: RequestSpec) -> AsyncIterator[RequestOutput]:
        """A streaming method: one RequestOutput per worker step that produced tokens."""
        outputs = await self.scheduler.generate(spec)
        async for output in outputs:
            yield output

    async def cancel(self, request_id: str) -> bool:
        return await self.scheduler.cancel(request_id)

    def trace(self, request_id: str) -> Trace | None:
        return self.scheduler.trace(request_id)

    def cluster_state(self) -> ClusterSnapshot:
        snapshot = self.scheduler.snapshot()
        return ClusterSnapshot(
            pools=[self._pool_snapshot(pool.name, snapshot) for pool in self.config.pools],
            num_requests_by_state=snapshot.num_requests_by_state,
            num_queued_by_stage=snapshot.num_queued_by_stage,
            ledger=snapshot.ledger,
        )

    async def scale(self, pool: str, num_workers: int) -> PoolSnapshot:
        """Grow or shrink a pool while traffic flows; shrinking drains (no request is lost)."""
        try:
            self.config.pool(pool)
        except KeyError:
            names = [p.name for p in self.config.pools]
            raise UnknownPoolError(f"unknown pool {pool!r}; pools: {names}") from None
        # Stop placing work on the leaving workers before they start refusing it.
        for worker in self.pools.workers(pool)[num_workers:]:
            self.scheduler.set_draining(worker.worker_id)
        change = await self.pools.scale(pool, num_workers)
        for worker in change.added:
            await self.scheduler.add_worker(worker)
        return self._pool_snapshot(pool)

    async def shutdown(self) -> None:
        if self._retire_task is not None:
            self._retire_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retire_task
        await self.scheduler.close()
        await self.pools.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.stop()

    def _pool_snapshot(self, name: str, snapshot: SchedulerSnapshot | None = None) -> PoolSnapshot:
        pool = self.config.pool(name)
        snapshot = snapshot or self.scheduler.snapshot()
        workers = [w for w in snapshot.workers.values() if w.pool == name]
        return PoolSnapshot(
            name=pool.name,
            stages=pool.stages,
            model=pool.model,
            target_workers=self.pools.size(name),
            workers=workers,
            costs={
                w.worker_id: snapshot.costs[w.worker_id]
                for w in workers
                if w.worker_id in snapshot.costs
            },
        )

    def _metrics_readings(self) -> ClusterReadings:
        sizes = {pool.name: self.pools.size(pool.name) for pool in self.config.pools}
        return ClusterReadings(self.scheduler.snapshot(), sizes)

    async def _retire_drained_workers(self) -> None:
        while True:
            await asyncio.sleep(RETIRE_INTERVAL_S)
            for worker_id in self.pools.draining():
                try:
                    if not self.scheduler.is_idle(worker_id):
                        continue
                    await self.scheduler.remove_worker(worker_id)
                    await self.pools.retire(worker_id, force=True)
                except KeyError:  # the scheduler already lost it (it died)
                    await self.pools.retire(worker_id, force=True)
                except Exception:
                    logger.exception("retiring %s failed", worker_id)
