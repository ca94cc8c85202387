"""The global scheduler: admits requests, keeps the workers, and polls each of them.

    generate(spec) -> admit -> [encode] -> prefill -> [decode elsewhere] -> stream to the client
    one task per worker:  poll() -> WorkerEvents (one engine step) -> RequestDriver.apply

Tokens of all a worker's requests arrive in one message per engine step: the scheduler makes no
per-token call. How events move requests along is in driver.py, failures and re-drives in
recovery.py, the request lifecycle in lifecycle.py, placement in policy.py, and the rules a
worker keeps in worker_client.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from scheduler.active_request import ActiveRequest
from scheduler.config import SchedulerConfig
from scheduler.driver import RequestDriver
from scheduler.errors import (
    DuplicateRequestError,
    NoWorkerAvailableError,
    RequestFailedError,
    UnknownModelError,
)
from scheduler.lifecycle import RequestState
from scheduler.policy import LeastLoadedPolicy, PlacementPolicy, capable_workers
from scheduler.request import RequestOutput, RequestSpec
from scheduler.snapshot import SchedulerSnapshot
from scheduler.stage import stages_for
from scheduler.trace import Trace
from scheduler.worker_client import WorkerClient
from scheduler.worker_registry import WorkerRegistry, WorkerSlot
from workers.protocol import WorkerEvents

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        policy: PlacementPolicy | None = None,
        config: SchedulerConfig | None = None,
        clock: Callable[[], float] = time.time,  # the clock of RequestSpec.arrival_time
    ) -> None:
        self.policy: PlacementPolicy = policy or LeastLoadedPolicy()
        self.config = config or SchedulerConfig()
        self._clock = clock
        self._workers = WorkerRegistry()
        self._driver = RequestDriver(self._workers, self.policy, self.config, self._lose_worker)

    # ------------------------------------------------------------------ workers
    async def add_worker(self, client: WorkerClient) -> None:
        """Register a worker (its first load gives its epoch) and start polling it."""
        load = await client.load()
        slot = WorkerSlot(client, load, load.epoch)
        self._workers.add(slot)
        slot.poll_task = asyncio.create_task(self._poll(slot), name=f"poll:{client.worker_id}")

    async def remove_worker(self, worker_id: str) -> None:
        """Stop using a worker (KeyError if unknown). Requests that still need it are re-driven
        elsewhere; the worker itself gets no further call."""
        slot = self._workers[worker_id]
        await self._lose_worker(worker_id, "was removed")
        await _stopped(slot.poll_task)

    def set_draining(self, worker_id: str, is_draining: bool = True) -> None:
        """A draining worker gets no new work; it finishes what it has."""
        self._workers[worker_id].is_draining = is_draining

    def is_idle(self, worker_id: str) -> bool:
        """The worker reports nothing active and no request still needs it."""
        slot = self._workers[worker_id]
        if slot.load.num_active or slot.num_dispatched_since_load:
            return False
        return not any(req.depends_on(worker_id) for req in self._driver.requests.values())

    # ------------------------------------------------------------------ requests
    async def generate(self, spec: RequestSpec) -> AsyncIterator[RequestOutput]:
        """Admit and start a request; iterate the result for its outputs.

        Raises UnknownModelError, NoWorkerAvailableError or DuplicateRequestError at once. The
        outputs raise RequestFailedError, NoWorkerAvailableError or InvalidRequestError when
        the request fails later. Leaving the iteration early cancels the request.
        """
        self._admit(spec)
        req = ActiveRequest(spec, self._clock)
        await self._driver.start(req)
        return self._outputs(req)

    async def cancel(self, request_id: str) -> bool:
        """Abort the request on every worker it touched; its outputs end with "abort"."""
        req = self._driver.requests.get(request_id)
        if req is None:
            return False
        await self._driver.end(req, RequestState.CANCELLED)
        return True

    def trace(self, request_id: str) -> Trace | None:
        """The trace of an active request, or of one of the last ended ones."""
        req = self._driver.requests.get(request_id)
        return req.trace if req is not None else self._driver.traces.get(request_id)

    def snapshot(self) -> SchedulerSnapshot:
        counts = {state.value: 0 for state in RequestState}
        for req in self._driver.requests.values():
            counts[req.state.value] += 1
        for state, count in self._driver.num_ended.items():
            counts[state.value] += count
        workers = {slot.worker_id: slot.snapshot() for slot in self._workers}
        return SchedulerSnapshot(workers, counts)

    async def close(self) -> None:
        """Fail what is still running, then stop polling every worker."""
        shut_down = RequestFailedError("the scheduler shut down")
        for req in list(self._driver.requests.values()):
            await self._driver.end(req, RequestState.FAILED, error=shut_down)
        for slot in self._workers:
            self._workers.pop(slot.worker_id)
            await _stopped(slot.poll_task)

    def _admit(self, spec: RequestSpec) -> None:
        if spec.request_id in self._driver.requests:
            raise DuplicateRequestError(f"request {spec.request_id!r} is already running")
        views = [view for view in self._workers.views() if view.model == spec.model]
        if not views:
            raise UnknownModelError(f"no worker serves model {spec.model!r}")
        for stage in stages_for(spec.has_images):
            if not capable_workers(views, spec.model, stage):
                raise NoWorkerAvailableError.for_stage(spec.model, stage.value)

    async def _outputs(self, req: ActiveRequest) -> AsyncIterator[RequestOutput]:
        try:
            async for output in req.stream:
                yield output
        finally:
            if not req.state.is_done:  # the client went away
                await self._driver.end(req, RequestState.CANCELLED)

    # ------------------------------------------------------------------ polling
    async def _poll(self, slot: WorkerSlot) -> None:
        while self._workers.get(slot.worker_id) is slot:
            try:
                events = await slot.client.poll(self.config.poll_timeout_s)
            except Exception as error:  # its text may hold a traceback: the log only
                logger.warning("poll of worker %s raised", slot.worker_id, exc_info=error)
                await asyncio.shield(self._lose_worker(slot.worker_id, "failed to poll"))
                return
            if self._workers.get(slot.worker_id) is not slot:
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
            await self._driver.recovery.fail_over(slot.worker_id, reason)
        if events.load is not None:
            slot.observe(events.load)
        await self._driver.apply(slot, events)

    async def _lose_worker(self, worker_id: str, reason: str) -> None:
        """`reason`: a short phrase ("failed to poll") for the log and the traces."""
        slot = self._workers.pop(worker_id)
        if slot is None:
            return
        logger.warning("worker %s %s", worker_id, reason)
        if slot.poll_task is not None and slot.poll_task is not asyncio.current_task():
            slot.poll_task.cancel()
        await self._driver.recovery.fail_over(worker_id, reason)


async def _stopped(task: asyncio.Task | None) -> None:
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
