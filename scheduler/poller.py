"""One task per worker: poll it for its next engine step's events and hand them to the driver.

    poll() -> WorkerEvents --epoch check--> load, cache deltas --> RequestDriver.apply

A worker's life as the poller sees it:

    answering --poll raises--> suspected: no new work (its view is draining), its requests
                               fail over at once, calls to it are deferred (worker_registry.py);
                               polled again after a backoff (BACKOFF_MIN_S, doubling to _MAX_S)
    suspected --answers, same epoch--> answering; the deferred aborts and releases are sent
    suspected --answers, newer epoch--> answering: the restarted process is taken back, what
              the old one held is forgotten (cache directory reset from its load; cost
              corrections stay: they describe the hardware, not the process)
    suspected --silent for worker_suspect_timeout_s--> lost: driver.lose_worker drops it, and the
              pool manager (cluster/control_plane.py) starts a replacement

Events of an older epoch were sent before the worker restarted and are dropped; a newer epoch,
suspected or not, means the worker restarted and lost what it held, so that fails over first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from scheduler.cache_directory import CacheDirectory
from scheduler.config import SchedulerConfig
from scheduler.driver import RequestDriver
from scheduler.worker_registry import WorkerRegistry, WorkerSlot
from workers.contract.messages import WorkerEvents, WorkerLoad

logger = logging.getLogger(__name__)
BACKOFF_MIN_S = 0.05  # first wait before polling a suspected worker again
BACKOFF_MAX_S = 1.0


class Poller:
    def __init__(
        self,
        workers: WorkerRegistry,
        driver: RequestDriver,
        caches: CacheDirectory,
        config: SchedulerConfig,
    ) -> None:
        self.workers = workers
        self.driver = driver
        self.caches = caches
        self.poll_timeout_s = config.poll_timeout_s
        self.suspect_timeout_s = config.worker_suspect_timeout_s

    def start(self, slot: WorkerSlot) -> None:
        slot.poll_task = asyncio.create_task(self._poll(slot), name=f"poll:{slot.worker_id}")

    async def _poll(self, slot: WorkerSlot) -> None:
        backoff_s = BACKOFF_MIN_S
        while self.workers.get(slot.worker_id) is slot:
            try:
                events = await slot.client.poll(self.poll_timeout_s)
                # A restarted worker's full cache contents (a poll carries only what changed).
                restart_load = await slot.client.load() if events.epoch > slot.epoch else None
            except Exception as error:  # its text may hold a traceback: the log only
                if not await asyncio.shield(self._suspect(slot, error)):
                    return
                await asyncio.sleep(backoff_s)
                backoff_s = min(2 * backoff_s, BACKOFF_MAX_S)
                continue
            backoff_s = BACKOFF_MIN_S
            if self.workers.get(slot.worker_id) is not slot:
                return
            try:  # shielded: removing a worker must not cut a request's transition in half
                await asyncio.shield(self._apply(slot, events, restart_load))
            except Exception:
                logger.exception("applying the events of worker %s failed", slot.worker_id)

    async def _suspect(self, slot: WorkerSlot, error: Exception) -> bool:
        """Suspect the worker on its first failed poll; drop it once it has been silent for
        `suspect_timeout_s`. Returns whether to keep polling it."""
        now_s = asyncio.get_running_loop().time()
        if slot.suspected_since_s is None:
            logger.warning("poll of worker %s raised; suspected", slot.worker_id, exc_info=error)
            slot.suspected_since_s = now_s
            await self.driver.fail_over(slot.worker_id, "failed to poll")
            return True
        silent_s = now_s - slot.suspected_since_s
        if silent_s < self.suspect_timeout_s:
            logger.debug("worker %s still silent: %r", slot.worker_id, error)
            return True
        await self.driver.lose_worker(slot.worker_id, f"did not answer for {silent_s:.0f} s")
        return False

    async def _apply(
        self, slot: WorkerSlot, events: WorkerEvents, restart_load: WorkerLoad | None
    ) -> None:
        if events.epoch < slot.epoch:
            return  # sent before the worker restarted
        if slot.is_suspected:
            slot.suspected_since_s = None
            logger.warning("worker %s answers again (epoch %d)", slot.worker_id, events.epoch)
            if events.epoch == slot.epoch:
                await self.workers.send_deferred(slot)
        if restart_load is not None:  # restarted: whatever it held for requests is gone
            reason = f"restarted (epoch {slot.epoch} -> {events.epoch})"
            slot.epoch = events.epoch
            slot.deferred_aborts, slot.deferred_releases = [], []
            await self.driver.fail_over(slot.worker_id, reason)
            # The load was read after these events: it already holds their cache changes.
            self.caches.reset_worker(
                slot.worker_id, restart_load.prefix_block_hashes, restart_load.embedding_cache_keys
            )
        else:
            self.caches.apply(
                worker_id=slot.worker_id,
                prefix_added=events.prefix_blocks_added,
                prefix_removed=events.prefix_blocks_removed,
                embeddings_added=events.embeddings_added,
                embeddings_removed=events.embeddings_removed,
            )
        if events.load is not None:
            slot.observe(events.load)
        await self.driver.apply(slot, events)


async def stopped(task: asyncio.Task | None) -> None:
    """Cancel a poll task and wait until it has stopped (not the calling task itself)."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
