"""One task per worker: poll it for its next engine step's events and hand them to the driver.

    poll() -> WorkerEvents --epoch check--> load, cache deltas --> RequestDriver.apply

A worker whose poll raises is gone: the driver loses it (its requests fail over). Events of an
older epoch were sent before the worker restarted and are dropped; a newer epoch means the
worker restarted and lost what it held for requests, so those fail over first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from scheduler.cache_directory import CacheDirectory
from scheduler.driver import RequestDriver
from scheduler.worker_registry import WorkerRegistry, WorkerSlot
from workers.contract.messages import WorkerEvents

logger = logging.getLogger(__name__)


class Poller:
    def __init__(
        self,
        workers: WorkerRegistry,
        driver: RequestDriver,
        caches: CacheDirectory,
        poll_timeout_s: float,
    ) -> None:
        self.workers = workers
        self.driver = driver
        self.caches = caches
        self.poll_timeout_s = poll_timeout_s

    def start(self, slot: WorkerSlot) -> None:
        slot.poll_task = asyncio.create_task(self._poll(slot), name=f"poll:{slot.worker_id}")

    async def _poll(self, slot: WorkerSlot) -> None:
        while self.workers.get(slot.worker_id) is slot:
            try:
                events = await slot.client.poll(self.poll_timeout_s)
            except Exception as error:  # its text may hold a traceback: the log only
                logger.warning("poll of worker %s raised", slot.worker_id, exc_info=error)
                await asyncio.shield(self.driver.lose_worker(slot.worker_id, "failed to poll"))
                return
            if self.workers.get(slot.worker_id) is not slot:
                return
            try:  # shielded: removing a worker must not cut a request's transition in half
                await asyncio.shield(self._apply(slot, events))
            except Exception:
                logger.exception("applying the events of worker %s failed", slot.worker_id)

    async def _apply(self, slot: WorkerSlot, events: WorkerEvents) -> None:
        if events.epoch < slot.epoch:
            return  # sent before the worker restarted
        if events.epoch > slot.epoch:  # restarted: whatever it held for requests is gone
            reason = f"restarted (epoch {slot.epoch} -> {events.epoch})"
            slot.epoch = events.epoch
            await self.driver.fail_over(slot.worker_id, reason)
        if events.load is not None:
            slot.observe(events.load)
        self.caches.apply(
            worker_id=slot.worker_id,
            prefix_added=events.prefix_blocks_added,
            prefix_removed=events.prefix_blocks_removed,
            embeddings_added=events.embeddings_added,
            embeddings_removed=events.embeddings_removed,
        )
        await self.driver.apply(slot, events)


async def stopped(task: asyncio.Task | None) -> None:
    """Cancel a poll task and wait until it has stopped (not the calling task itself)."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
