"""The control plane: one named async Ray actor holding the global scheduler and the pools.

The ingress (stateless, scalable) calls it for every request; it calls the workers. A
supervision loop keeps the pools whole: it retires draining workers once the scheduler says
nothing is active on them or still needs them, discards workers the scheduler dropped (or that
Ray says are dead for good), and starts replacements until each pool is back at its target
(the worker lifecycle: scheduler/poller.py; README "Failures"). Everything runs on the actor's
one event loop (the scheduler's asyncio state is bound to it; Ray concurrency groups would add
loops), with a concurrency limit high enough that open streams never delay a health check, a
cancel or a scale. The Prometheus endpoint is served from a thread of this actor; its scrapes
read the scheduler on that loop (cluster/metrics.py).

Ray restarts this actor when it dies (the launcher sets `max_restarts`), re-running `__init__`
with the same arguments and calling no `start`. The workers outlive it (detached actors named
after the cluster id, cluster/pools.py), so a restarted control plane takes them back at once
(`_recover`): every call that needs the workers waits for that first (README "Failures").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import AsyncIterator

from agent.run_summary import RunSummary
from cluster.agent_metrics import AgentRunMetrics
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
from cluster.pools import ManagedWorker, PoolManager, RayWorkerLauncher
from scheduler.admission_gate import AdmissionGate
from scheduler.errors import AdmissionRejectedError, DuplicateRequestError
from scheduler.request import (
    NoWorkerAvailableError,
    Refusal,
    RequestOutput,
    RequestSpec,
    UnknownModelError,
)
from scheduler.scheduler import Scheduler
from scheduler.snapshot import SchedulerSnapshot
from scheduler.trace import Trace

logger = logging.getLogger("triserve.control_plane")
SUPERVISE_INTERVAL_S = 0.5
REPLACE_RETRY_S = 5.0  # after a replacement failed to start, wait this long before the next
MAX_CONCURRENCY = 100_000  # open streams plus control calls
# What Scheduler.generate raises at once; the ingress gets it as a Refusal, not across Ray.
REFUSALS = (
    AdmissionRejectedError,
    DuplicateRequestError,
    NoWorkerAvailableError,
    UnknownModelError,
)


class ControlPlane:
    def __init__(self, config: ClusterConfig, cluster_id: str) -> None:
        self.config = config
        self.scheduler = Scheduler(config=config.scheduler)
        self.launcher = RayWorkerLauncher(config, cluster_id)
        self.pools = PoolManager(config, self.launcher)
        self.metrics = ServingMetrics()
        self.scheduler.add_observer(self.metrics.observe)
        self.agent_metrics = AgentRunMetrics(self.metrics.registry)
        self._metrics_server: MetricsServer | None = None
        self._supervise_task: asyncio.Task | None = None
        self._registered: set[str] = set()  # worker ids given to the scheduler
        self._replacing: dict[str, asyncio.Task] = {}  # pool -> its replenish task
        self._next_replace_s: dict[str, float] = {}  # pool -> earliest next try (loop clock)
        # Ray runs an async actor's __init__ on its event loop: the recovery starts right away.
        self._recovery = asyncio.create_task(self._recover()) if _was_restarted() else None

    async def start(self) -> str | None:
        """Serve the metrics, launch every pool and register its workers; returns once all
        models are loaded, with the metrics address (host:port; None when metrics are off)."""
        self._serve_metrics()
        for worker in await self.pools.start():
            await self.scheduler.add_worker(worker)
            self._registered.add(worker.worker_id)
        self._supervise_task = asyncio.create_task(self._supervise())
        return self._metrics_server.address if self._metrics_server else None

    async def ping(self) -> bool:
        await self._ensure_started()
        return True

    async def generate(self, spec: RequestSpec) -> AsyncIterator[RequestOutput]:
        """A streaming method: one RequestOutput per worker step that produced tokens, or one
        Refusal when the scheduler refuses the request at once."""
        await self._ensure_started()
        try:
            outputs = await self.scheduler.generate(spec)
        except REFUSALS as error:
            yield Refusal(error)
            return
        async for output in outputs:
            yield output

    def admission_gate(self, refused: dict[str, int]) -> AdmissionGate:
        """The gate the ingress refuses at the door by (scheduler/admission_gate.py); `refused`:
        what it refused by the last one, per request class, for the ledger and the metrics."""
        for request_class, num_requests in refused.items():
            self.scheduler.refused_at_door(request_class, num_requests)
        return self.scheduler.admission_gate()

    async def cancel(self, request_id: str) -> bool:
        return await self.scheduler.cancel(request_id)

    async def forget_paused(self, request_id: str) -> bool:
        """A session's call the client is done with (e.g. a deleted response): its paused KV
        is released."""
        return await self.scheduler.forget_paused(request_id)

    def record_agent_run(self, summary: RunSummary) -> None:
        """One finished agent run, from the ingress that ran it (fire and forget)."""
        self.agent_metrics.record(summary)

    def trace(self, request_id: str) -> Trace | None:
        return self.scheduler.trace(request_id)

    async def cluster_state(self) -> ClusterSnapshot:
        await self._ensure_started()
        snapshot = self.scheduler.snapshot()
        return ClusterSnapshot(
            pools=[self._pool_snapshot(pool.name, snapshot) for pool in self.config.pools],
            num_requests_by_state=snapshot.num_requests_by_state,
            num_queued_by_stage=snapshot.num_queued_by_stage,
            ledger=snapshot.ledger,
            agent=self.agent_metrics.stats.snapshot(),
        )

    async def scale(self, pool: str, num_workers: int) -> PoolSnapshot:
        """Grow or shrink a pool while traffic flows; shrinking drains (no request is lost)."""
        try:
            self.config.pool(pool)
        except KeyError:
            names = [p.name for p in self.config.pools]
            raise UnknownPoolError(f"unknown pool {pool!r}; pools: {names}") from None
        await self._ensure_started()
        # Stop placing work on the leaving workers before they start refusing it.
        for worker in self.pools.workers(pool)[num_workers:]:
            if self.scheduler.has_worker(worker.worker_id):
                self.scheduler.set_draining(worker.worker_id)
        change = await self.pools.scale(pool, num_workers)
        for worker in change.added:
            await self._register(worker)
        return self._pool_snapshot(pool)

    async def shutdown(self) -> None:
        for task in [self._recovery, self._supervise_task, *self._replacing.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.scheduler.close()
        await self.pools.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.stop()

    def _serve_metrics(self) -> None:
        if self.config.metrics_port is not None:
            loop = asyncio.get_running_loop()
            self.metrics.watch(lambda: on_loop(loop, self._metrics_readings, SCRAPE_TIMEOUT_S))
            self._metrics_server = MetricsServer(
                self.metrics.registry, self.config.host, self.config.metrics_port
            )

    async def _ensure_started(self) -> None:
        if self._recovery is not None:
            await asyncio.shield(self._recovery)

    async def _recover(self) -> None:
        """Serve the metrics again, take back the workers that outlived the old control plane
        (what they held for its requests is aborted: nobody listens for those any more), and
        leave whatever is missing to the supervision loop. Never raises: a worker that cannot
        be taken back is replaced."""
        started = time.monotonic()
        try:
            self._serve_metrics()
        except Exception:
            logger.exception("serving the metrics again failed")
        try:
            for worker in await self.pools.adopt(await self.launcher.find()):
                await self._register(worker)
        except Exception:
            logger.exception("taking the workers back failed; the pools will start new ones")
        self._supervise_task = asyncio.create_task(self._supervise())
        logger.warning(
            "restarted: took back %s in %.1f s",
            sorted(self._registered), time.monotonic() - started,
        )  # fmt: skip

    def _pool_snapshot(self, name: str, snapshot: SchedulerSnapshot | None = None) -> PoolSnapshot:
        pool = self.config.pool(name)
        snapshot = snapshot or self.scheduler.snapshot()
        workers = [w for w in snapshot.workers.values() if w.pool == name]
        members = [w.worker_id for w in self.pools.workers(name)]
        known = [snapshot.workers[m] for m in members if m in snapshot.workers]
        num_suspected = sum(w.is_suspected for w in known)
        return PoolSnapshot(
            name=pool.name,
            stages=pool.stages,
            model=pool.model,
            target_workers=self.pools.target(name),
            num_live=len(known) - num_suspected,
            # Loading a model: replacements, and workers of a scale not yet registered.
            num_starting=self.pools.num_starting(name) + len(members) - len(known),
            num_suspected=num_suspected,
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

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            try:
                await self._retire_drained_workers()
                await self._discard_lost_workers()
                self._start_replacements()
            except Exception:
                logger.exception("supervising the pools failed")

    async def _retire_drained_workers(self) -> None:
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
            self._registered.discard(worker_id)

    async def _discard_lost_workers(self) -> None:
        """Workers the scheduler dropped (silent too long, failed a submit), or whose actor
        Ray says is dead for good, leave their pool; `_start_replacements` fills the gap."""
        for worker in self.pools.workers():
            worker_id = worker.worker_id
            if worker_id not in self._registered:
                continue  # still being registered
            if self.scheduler.has_worker(worker_id):
                if not worker.is_gone:
                    continue
                await self.scheduler.remove_worker(worker_id)
            logger.warning("worker %s is gone; its pool will replace it", worker_id)
            self._registered.discard(worker_id)
            await self.pools.discard(worker_id)

    def _start_replacements(self) -> None:
        now_s = asyncio.get_running_loop().time()
        for pool in self.config.pools:
            name = pool.name
            task = self._replacing.get(name)
            if task is not None and not task.done():
                continue
            if self.pools.num_missing(name) and now_s >= self._next_replace_s.get(name, 0.0):
                self._replacing[name] = asyncio.create_task(self._replace(name))

    async def _replace(self, pool: str) -> None:
        missing = self.pools.num_missing(pool)
        started = time.monotonic()
        workers = await self.pools.replenish(pool)
        for worker in workers:
            await self._register(worker)
        if len(workers) < missing:
            loop = asyncio.get_running_loop()
            self._next_replace_s[pool] = loop.time() + REPLACE_RETRY_S
        logger.warning(
            "pool %s: started %d of %d replacements in %.1f s",
            pool, len(workers), missing, time.monotonic() - started,
        )  # fmt: skip

    async def _register(self, worker: ManagedWorker) -> None:
        """Give a started worker to the scheduler; one that cannot even report its load is
        discarded (the supervision loop replaces it)."""
        try:
            await self.scheduler.add_worker(worker)
        except Exception:
            logger.exception("registering %s failed", worker.worker_id)
            await self.pools.discard(worker.worker_id)
            return
        self._registered.add(worker.worker_id)


def _was_restarted() -> bool:
    """True in an actor that Ray restarted (False outside an actor)."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    context = ray.get_runtime_context()
    with warnings.catch_warnings():  # it reads the deprecated `actor_id` inside Ray
        warnings.simplefilter("ignore")
        return bool(context.was_current_actor_reconstructed)
