"""The global scheduler: admits requests, keeps the workers, and polls each of them.

    generate(spec) -> admit -> [encode] -> prefill -> [decode elsewhere] -> stream to the client
                      |          each stage waits in a stage queue until a worker has room
                      classify, forecast, admit / degrade / best effort / reject
    one task per worker:  poll() -> WorkerEvents (one engine step) -> RequestDriver.apply

Policy "slo" (the default) orders the stage queues by slack and admits against the SLO;
policy "fcfs" is the first-come-first-served baseline. Admission is in admission.py, queue
order in stage_queue.py, dispatch in dispatcher.py, placement in policy.py, predictions in
forecast.py and cost_model.py, what events teach the scheduler in feedback.py.

Tokens of all a worker's requests arrive in one message per engine step: the scheduler makes no
per-token call. How events move requests along is in driver.py, failures and re-drives in
recovery.py, the request lifecycle in lifecycle.py, placement in policy.py, and the rules a
worker keeps in worker_client.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable

from scheduler.active_request import ActiveRequest
from scheduler.admission import Admission, AdmissionControl, Admitted
from scheduler.cache_directory import CacheDirectory
from scheduler.config import SchedulerConfig
from scheduler.cost_model import CostModel
from scheduler.dispatcher import Dispatcher
from scheduler.driver import RequestDriver
from scheduler.errors import (
    AdmissionRejectedError,
    DuplicateRequestError,
    NoWorkerAvailableError,
    RequestFailedError,
    UnknownModelError,
)
from scheduler.feedback import Feedback
from scheduler.forecast import Forecaster, WorkerLoadView
from scheduler.lifecycle import RequestState
from scheduler.policy import (
    EarliestCompletionPolicy,
    LeastLoadedPolicy,
    PlacementPolicy,
    capable_workers,
)
from scheduler.request import RequestOutput, RequestSpec
from scheduler.request_class import classify
from scheduler.slo_ledger import EndedRequest, SloLedger
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
        self.config = config or SchedulerConfig()
        self._clock = clock
        self._workers = WorkerRegistry()
        self.costs = CostModel(self.config.cost_ewma_alpha)
        self.caches = CacheDirectory()
        self.ledger = SloLedger()
        self.forecaster = Forecaster(self.costs, self.caches, self._load_view)
        if policy is None and self.config.policy == "slo":
            policy = EarliestCompletionPolicy(self.forecaster)
        self.policy: PlacementPolicy = policy or LeastLoadedPolicy()
        dispatcher = Dispatcher(
            self.config, self._workers, self.policy, self.forecaster, self._clock_ms
        )
        feedback = Feedback(self.costs, self.ledger, self._clock_ms, dispatcher.holds_jobs)
        self.admission = AdmissionControl(
            self.config, self.forecaster, dispatcher.work_ahead_ms, dispatcher.is_full
        )
        self._driver = RequestDriver(
            self._workers, self.policy, self.config, self._lose_worker, dispatcher, feedback,
            self.caches,
        )  # fmt: skip

    # ------------------------------------------------------------------ workers
    async def add_worker(self, client: WorkerClient) -> None:
        """Register a worker (its first load gives its epoch) and start polling it."""
        load = await client.load()
        slot = WorkerSlot(client, load, load.epoch)
        self._workers.add(slot)
        self.costs.add_worker(client.worker_id, load.profile)
        self.admission.learn_model(client.model, load.profile)
        self.caches.reset_worker(
            client.worker_id, load.prefix_block_hashes, load.embedding_cache_keys
        )
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

        Raises UnknownModelError, NoWorkerAvailableError, DuplicateRequestError or
        AdmissionRejectedError at once. The outputs raise RequestFailedError,
        NoWorkerAvailableError or InvalidRequestError when the request fails later. Leaving the
        iteration early cancels the request.
        """
        self._check(spec)
        try:
            admitted = self.admission.admit(spec, self._workers.views(), self._clock_ms())
        except AdmissionRejectedError:
            request_class = classify(self.admission.shape(spec).cost, self.config).value
            self.ledger.classes[request_class].num_rejected += 1
            ended = EndedRequest(spec.request_id, request_class, "rejected", None, None)
            for observer in self._driver.observers:
                observer(ended)
            raise
        req = ActiveRequest(
            admitted.spec, self._clock, admitted.shape, admitted.request_class,
            admitted.targets, admitted.latest_start_ms, admitted.is_low_priority,
        )  # fmt: skip
        self._record_admission(req, admitted)
        await self._driver.start(req)
        return self._outputs(req)

    async def cancel(self, request_id: str) -> bool:
        """Abort the request on every worker it touched; its outputs end with "abort"."""
        req = self._driver.requests.get(request_id)
        if req is None:
            return False
        await self._driver.end(req, RequestState.CANCELLED)
        return True

    def _clock_ms(self) -> float:
        return self._clock() * 1000.0

    def _load_view(self, worker_id: str, prefill_priority: float | None) -> WorkerLoadView:
        slot = self._workers[worker_id]
        return WorkerLoadView(
            worker_id, slot.backlog_ms(self._clock_ms(), prefill_priority), len(slot.decoding),
            sum(slot.decoding.values()),
        )  # fmt: skip

    def add_observer(self, observer: Callable[[EndedRequest], None]) -> None:
        """Call `observer` whenever a request ends or is rejected (on the scheduler's loop:
        it must be quick and must not raise)."""
        self._driver.observers.append(observer)

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
        queued = {stage.value: len(q) for stage, q in self._driver.dispatcher.queues.items()}
        ledger = copy.deepcopy(self.ledger)
        return SchedulerSnapshot(workers, counts, queued, self.costs.snapshot(), ledger)

    async def close(self) -> None:
        """Fail what is still running, then stop polling every worker."""
        shut_down = RequestFailedError("the scheduler shut down")
        for req in list(self._driver.requests.values()):
            await self._driver.end(req, RequestState.FAILED, error=shut_down)
        for slot in self._workers:
            self._workers.pop(slot.worker_id)
            await _stopped(slot.poll_task)

    def _record_admission(self, req: ActiveRequest, admitted: Admitted) -> None:
        decision = admitted.decision
        counts = self.ledger.classes[admitted.request_class.value]
        counts.num_degraded += decision.action is Admission.DEGRADE
        counts.num_best_effort += decision.action is Admission.BEST_EFFORT
        self.ledger.num_images += len(req.spec.images)
        req.trace.record(
            "classified", request_class=admitted.request_class.value,
            admission=decision.action.value, predicted_ttft_ms=decision.predicted_ttft_ms,
            predicted_tpot_ms=decision.predicted_tpot_ms,
            ttft_target_ms=admitted.targets.ttft_ms, tpot_target_ms=admitted.targets.tpot_ms,
            image_tokens=admitted.shape.cost.num_image_tokens,
            model_ttft_ms=admitted.model_ttft_ms, model_tpot_ms=admitted.model_tpot_ms,
        )  # fmt: skip

    def _check(self, spec: RequestSpec) -> None:
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
        self.caches.apply(
            slot.worker_id, events.prefix_blocks_added, events.prefix_blocks_removed,
            events.embeddings_added, events.embeddings_removed,
        )  # fmt: skip
        await self._driver.apply(slot, events)

    async def _lose_worker(self, worker_id: str, reason: str) -> None:
        """`reason`: a short phrase ("failed to poll") for the log and the traces."""
        slot = self._workers.pop(worker_id)
        if slot is None:
            return
        self.costs.remove_worker(worker_id)
        self.caches.remove_worker(worker_id)
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
