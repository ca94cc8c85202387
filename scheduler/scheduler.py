"""The global scheduler: admits requests, keeps the workers, and polls each of them.

    generate(spec) -> admit -> [encode] -> prefill -> [decode elsewhere] -> stream to the client
                      |          each stage waits in a stage queue until a worker has room
                      classify, forecast, admit / degrade / best effort / reject
    one task per worker:  poll() -> WorkerEvents (one engine step) -> RequestDriver.apply
                          (poller.py)

The SLO mode (the default) orders the stage queues by slack and admits against the SLO; FCFS
is the baseline (mode.py says all that the switch changes). Admission is in admission.py, queue
order in stage_queue.py, dispatch in dispatcher.py, placement in placement.py (policies in
policy.py), predictions in forecast.py and cost_model.py, what events teach the scheduler in
feedback.py, sessions (paused KV between a conversation's calls) in sessions.py.

Tokens of all a worker's requests arrive in one message per engine step: the scheduler makes no
per-token call. The request lifecycle is in lifecycle.py. What events do to requests is decided
in event_applier.py, what failures do in recovery.py; driver.py alone acts on those decisions.
The rules a worker keeps are in workers/contract/worker_client.py.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncIterator, Callable

from scheduler.active_request import ActiveRequest
from scheduler.admission import Admission, AdmissionControl, Admitted
from scheduler.admission_gate import AdmissionGate, admission_gate
from scheduler.cache_directory import CacheDirectory
from scheduler.config import SchedulerConfig
from scheduler.cost_model import CostModel
from scheduler.decisions import End
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
from scheduler.in_flight import InFlight
from scheduler.lifecycle import RequestState
from scheduler.pause_policy import PausePlanner
from scheduler.placement import Placement, default_policy
from scheduler.policy import PlacementPolicy, capable_workers
from scheduler.poller import Poller, stopped
from scheduler.recovery import Recovery
from scheduler.request import RequestOutput, RequestSpec
from scheduler.request_class import classify
from scheduler.session_router import SessionRouter
from scheduler.sessions import SessionDirectory
from scheduler.slo_ledger import EndedRequest, SloLedger
from scheduler.snapshot import SchedulerSnapshot
from scheduler.stage import stages_for
from scheduler.trace import Trace, TraceStore
from scheduler.trace_events import EventName
from scheduler.worker_registry import WorkerRegistry, WorkerSlot
from workers.contract.worker_client import WorkerClient

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
        self.costs = CostModel(
            self.config.cost_ewma_alpha,
            self._clock_ms,
            correction_half_life_ms=self.config.correction_half_life_s * 1000.0,
            residual_half_life_ms=self.config.residual_half_life_s * 1000.0,
        )
        self.caches = CacheDirectory()
        self.ledger = SloLedger()
        self.forecaster = Forecaster(self.costs, self.caches, self._load_view)
        mode = self.config.mode
        self.policy: PlacementPolicy = policy or default_policy(mode, self.forecaster)
        placement = Placement(
            policy=self.policy,
            mode=mode,
            workers=self._workers,
            forecaster=self.forecaster,
            caches=self.caches,
            clock_ms=self._clock_ms,
        )
        self._dispatcher = Dispatcher(
            config=self.config,
            workers=self._workers,
            placement=placement,
            forecaster=self.forecaster,
            clock_ms=self._clock_ms,
        )
        self.admission = AdmissionControl(
            config=self.config,
            forecaster=self.forecaster,
            work_ahead_ms=self._dispatcher.work_ahead_ms,
            is_queue_full=self._dispatcher.is_full,
            is_idle=self._is_idle,
        )
        self._requests = InFlight()
        self._traces = TraceStore(self.config.trace_capacity)
        self._observers: list[Callable[[EndedRequest], None]] = []
        self.sessions = SessionDirectory(self._clock_ms)
        self._sessions = SessionRouter(self.sessions, self._workers, mode, self._clock_ms)
        self._driver = RequestDriver(
            requests=self._requests,
            workers=self._workers,
            placement=placement,
            dispatcher=self._dispatcher,
            feedback=Feedback(self.costs, self.ledger, self._clock_ms, mode),
            recovery=Recovery(self.config, self._requests, self._workers),
            traces=self._traces,
            observers=self._observers,
            sessions=self.sessions,
            pauses=PausePlanner(self.config, self.forecaster, self.sessions),
        )
        self._poller = Poller(self._workers, self._driver, self.caches, self.config)

    # ------------------------------------------------------------------ workers
    async def add_worker(self, client: WorkerClient) -> None:
        """Register a worker (its first load gives its epoch) and start polling it."""
        load = await client.load()
        slot = WorkerSlot(client=client, load=load, epoch=load.epoch)
        self._workers.add(slot)
        self.costs.add_worker(client.worker_id, load.profile)
        self.admission.learn_model(client.model, load.profile)
        self.caches.reset_worker(
            client.worker_id, load.prefix_block_hashes, load.embedding_cache_keys
        )
        self._poller.start(slot)

    async def remove_worker(self, worker_id: str) -> None:
        """Stop using a worker (KeyError if unknown). Requests that still need it are re-driven
        elsewhere; the worker itself gets no further call."""
        slot = self._workers[worker_id]
        await self._driver.lose_worker(worker_id, "was removed")
        await stopped(slot.poll_task)

    def has_worker(self, worker_id: str) -> bool:
        """Registered and not lost (a suspected worker still counts: see poller.py)."""
        return worker_id in self._workers

    def set_draining(self, worker_id: str, is_draining: bool = True) -> None:
        """A draining worker gets no new work; it finishes what it has."""
        self._workers[worker_id].is_draining = is_draining

    def is_idle(self, worker_id: str) -> bool:
        """The worker reports nothing active and no request still needs it."""
        slot = self._workers[worker_id]
        if slot.load.num_active or slot.num_dispatched_since_load:
            return False
        return not self._requests.depending_on(worker_id)

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
            self._count_rejected(request_class, spec.request_id)
            raise
        req = ActiveRequest(
            spec=admitted.spec,
            clock=self._clock,
            shape=admitted.shape,
            request_class=admitted.request_class,
            targets=admitted.targets,
            latest_start_ms=admitted.latest_start_ms,
            is_low_priority=admitted.is_low_priority,
        )
        self._record_admission(req, admitted)
        self._sessions.place(req)
        await self._driver.start(req)
        return self._outputs(req)

    def admission_gate(self) -> AdmissionGate:
        """What the ingress may refuse before building a request (admission_gate.py)."""
        models = sorted({slot.client.model for slot in self._workers})
        views = self._workers.views()
        return admission_gate(self.admission, self.config, views, models, self._clock())

    def refused_at_door(self, request_class: str, num_requests: int = 1) -> None:
        """Count requests the ingress refused by the gate, as if admission had."""
        for _ in range(num_requests):
            self._count_rejected(request_class)

    def _count_rejected(self, request_class: str, request_id: str = "") -> None:
        self.ledger.classes[request_class].num_rejected += 1
        ended = EndedRequest(request_id, request_class, "rejected", outcome=None, trace=None)
        for observer in self._observers:
            observer(ended)

    async def cancel(self, request_id: str) -> bool:
        """Abort the request on every worker it touched; its outputs end with "abort"."""
        req = self._requests.get(request_id)
        if req is None:
            return False
        await self._driver.end(End(req, RequestState.CANCELLED))
        return True

    async def forget_paused(self, request_id: str) -> bool:
        """The client is done with a call of a session: its paused KV, if any, is released."""
        return await self._sessions.forget(request_id)

    def _clock_ms(self) -> float:
        return self._clock() * 1000.0

    def _is_idle(self) -> bool:
        """Nothing is queued and no worker holds a job: a request admitted now waits for no one."""
        if any(self._dispatcher.queued_counts().values()):
            return False
        return not any(
            slot.outstanding
            or slot.decoding
            or slot.load.num_active
            or slot.num_dispatched_since_load
            for slot in self._workers
        )

    def _load_view(self, worker_id: str, prefill_priority: float | None) -> WorkerLoadView:
        slot = self._workers[worker_id]
        return WorkerLoadView(
            worker_id=worker_id,
            backlog_ms=slot.backlog_ms(self._clock_ms(), prefill_priority),
            num_decoding=len(slot.decoding),
            decode_context_tokens=sum(slot.decoding.values()),
        )

    def add_observer(self, observer: Callable[[EndedRequest], None]) -> None:
        """Call `observer` whenever a request ends or is rejected (on the scheduler's loop:
        it must be quick and must not raise)."""
        self._observers.append(observer)

    def trace(self, request_id: str) -> Trace | None:
        """The trace of an active request, or of one of the last ended ones."""
        req = self._requests.get(request_id)
        return req.trace if req is not None else self._traces.get(request_id)

    def snapshot(self) -> SchedulerSnapshot:
        counts = {state.value: 0 for state in RequestState}
        for req in self._requests:
            counts[req.state.value] += 1
        for state, count in self._driver.num_ended.items():
            counts[state.value] += count
        workers = {slot.worker_id: slot.snapshot() for slot in self._workers}
        queued = self._dispatcher.queued_counts()
        ledger = copy.deepcopy(self.ledger)
        return SchedulerSnapshot(
            workers=workers,
            num_requests_by_state=counts,
            num_queued_by_stage=queued,
            costs=self.costs.snapshot(),
            ledger=ledger,
        )

    async def close(self) -> None:
        """Fail what is still running, then stop polling every worker."""
        shut_down = RequestFailedError("the scheduler shut down")
        for req in self._requests:
            await self._driver.end(End(req, RequestState.FAILED, error=shut_down))
        for slot in self._workers:
            self._workers.pop(slot.worker_id)
            await stopped(slot.poll_task)

    def _record_admission(self, req: ActiveRequest, admitted: Admitted) -> None:
        decision = admitted.decision
        counts = self.ledger.classes[admitted.request_class.value]
        counts.num_degraded += decision.action is Admission.DEGRADE
        counts.num_best_effort += decision.action is Admission.BEST_EFFORT
        self.ledger.num_images += len(req.spec.images)
        req.trace.record(
            EventName.CLASSIFIED,
            request_class=admitted.request_class.value,
            admission=decision.action.value,
            predicted_ttft_ms=decision.predicted_ttft_ms,
            predicted_tpot_ms=decision.predicted_tpot_ms,
            ttft_target_ms=admitted.targets.ttft_ms,
            tpot_target_ms=admitted.targets.tpot_ms,
            image_tokens=admitted.shape.cost.num_image_tokens,
            model_ttft_ms=admitted.model_ttft_ms,
            model_tpot_ms=admitted.model_tpot_ms,
        )

    def _check(self, spec: RequestSpec) -> None:
        if spec.request_id in self._requests:
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
                await self._driver.end(End(req, RequestState.CANCELLED))
