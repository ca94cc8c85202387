"""The request driver: the one part of the scheduler that acts. It moves each request through
its stages (lifecycle.py has the states), calls the workers and talks to the client; the other
parts decide (decisions.py) and the driver carries their decisions out.

    start             -> StartStage: queue encode (dispatcher.py), or straight to prefill
                         when placement finds a prefill worker holding every image's embeddings
    dispatch()        -> Launch(encode): EncodeJob, with export=False when placement keeps
                         prefill on the encode worker (its embeddings never leave its cache)
                         Launch(prefill): PrefillJob, decode_here when placement keeps decode
                         on the prefill worker (unused embedding refs are released)
                         NoWorker: recovery.py decides
    worker events     -> event_applier.py decides, one event at a time: stream, start decode
                         (StartDecode: DecodeJob with the KV ref), release, end, re-drive
    worker lost       -> recovery.py decides, per request that needed the worker
    end               -> abort on every worker it touched, release its arrays, tell observers
    sessions          -> the job that ends a session's call carries its pause plan
                         (pause_policy.py); paused and released KV go to sessions.py
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from scheduler.active_request import ActiveRequest
from scheduler.decisions import (
    Decision,
    End,
    Launch,
    NoWorker,
    Redrive,
    Release,
    StartDecode,
    StartStage,
    Stream,
)
from scheduler.dispatcher import Dispatcher
from scheduler.event_applier import EventApplier, in_causal_order
from scheduler.feedback import Feedback
from scheduler.in_flight import InFlight
from scheduler.lifecycle import RequestState
from scheduler.pause_policy import PausePlanner
from scheduler.placement import Placement
from scheduler.recovery import Recovery
from scheduler.sessions import SessionDirectory
from scheduler.slo_ledger import EndedRequest
from scheduler.stage import Stage
from scheduler.trace import TraceStore
from scheduler.trace_events import EventName
from scheduler.worker_registry import WorkerRegistry, WorkerSlot
from workers.contract.errors import InvalidRequestError
from workers.contract.messages import DecodeJob, EmbeddingInput, EncodeJob, PrefillJob, WorkerEvents

logger = logging.getLogger(__name__)
_S = RequestState
Job = EncodeJob | PrefillJob | DecodeJob


class RequestDriver:
    def __init__(
        self,
        requests: InFlight,
        workers: WorkerRegistry,
        placement: Placement,
        dispatcher: Dispatcher,
        feedback: Feedback,
        recovery: Recovery,
        traces: TraceStore,  # of ended requests
        observers: list[Callable[[EndedRequest], None]],  # told when a request ends
        sessions: SessionDirectory,
        pauses: PausePlanner,
    ) -> None:
        self.requests = requests
        self.workers = workers
        self.placement = placement
        self.dispatcher = dispatcher
        self.feedback = feedback
        self.recovery = recovery
        self.events = EventApplier(requests, feedback, recovery)
        self.traces = traces
        self.observers = observers
        self.sessions = sessions
        self.pauses = pauses
        self.num_ended = {state: 0 for state in RequestState if state.is_done}
        self._is_dispatching = False
        self._dispatch_again = False

    async def start(self, req: ActiveRequest) -> None:
        self.requests.add(req)
        first = Stage.ENCODE if req.spec.has_images else Stage.PREFILL
        await self.carry_out([StartStage(req, first)])

    async def apply(self, slot: WorkerSlot, events: WorkerEvents) -> None:
        """One engine step of one worker, then whatever it made room for."""
        # Paused KV first: the call its tokens end is then pinned before its client can send
        # the next call (sessions.py).
        self.sessions.apply(slot.worker_id, events.paused, events.pauses_released)
        for event in in_causal_order(events):
            await self.carry_out(self.events.decide(slot, event))
        self.feedback.decode_steps(slot, events)
        await self.dispatch()

    async def lose_worker(self, worker_id: str, reason: str) -> None:
        """Stop using a worker that is gone, and fail over what needed it. `reason`: a short
        phrase ("failed to poll") for the log and the traces."""
        slot = self.workers.pop(worker_id)
        if slot is None:
            return
        self.feedback.costs.remove_worker(worker_id)
        self.placement.caches.remove_worker(worker_id)
        self.sessions.forget_worker(worker_id)
        logger.warning("worker %s %s", worker_id, reason)
        if slot.poll_task is not None and slot.poll_task is not asyncio.current_task():
            slot.poll_task.cancel()
        await self.fail_over(worker_id, reason)

    async def fail_over(self, worker_id: str, reason: str) -> None:
        """Re-drive (or fail) every request that needs what this worker had."""
        for req in self.requests.depending_on(worker_id):
            await self.carry_out([self.recovery.worker_lost(req, worker_id, reason)])

    async def dispatch(self) -> None:
        """Launch the queued jobs that workers have room for. A call made while another is
        dispatching makes that one go round again."""
        if self._is_dispatching:
            self._dispatch_again = True
            return
        self._is_dispatching = True
        try:
            while True:
                self._dispatch_again = False
                launch = self.dispatcher.next_launch()
                if launch is None and not self._dispatch_again:
                    return
                await self.carry_out([launch])
        finally:
            self._is_dispatching = False

    async def carry_out(self, decisions: Iterable[Decision | None]) -> None:
        """Act on decisions in order; those about a request that has ended are dropped."""
        for decision in decisions:
            if decision is None:
                continue
            if isinstance(decision, Release):
                await self.workers.release(decision.transfers)
            elif decision.req.state.is_done:
                continue
            elif isinstance(decision, StartStage):
                await self._start_stage(decision.req, decision.stage)
            elif isinstance(decision, Launch):
                await self._launch(decision)
            elif isinstance(decision, NoWorker):
                await self.carry_out([self.recovery.no_worker(decision.req, decision.stage)])
            elif isinstance(decision, StartDecode):
                await self._start_decode(decision)
            elif isinstance(decision, Stream):
                await self._stream(decision)
            elif isinstance(decision, Redrive):
                await self._redrive(decision)
            else:
                await self.end(decision)

    async def end(self, decision: End) -> None:
        req, state = decision.req, decision.state
        if req.state.is_done:
            return
        if state is _S.FINISHED:
            num_tokens = len(req.stream.token_ids)
            attrs = {"finish_reason": decision.finish_reason, "num_tokens": num_tokens}
        else:
            attrs = {"reason": str(decision.error)} if decision.error is not None else {}
        outcome = self.feedback.ended(req, state)
        ended = EndedRequest(
            request_id=req.request_id,
            request_class=req.request_class.value,
            state=state.value,
            outcome=outcome,
            trace=req.trace,
        )
        for observer in self.observers:
            observer(ended)
        req.lifecycle.advance(state, **attrs)
        self.requests.remove(req)
        self.dispatcher.forget(req)
        self.feedback.forget(req.job_id, self.workers)
        self.traces.put(req.trace)
        self.num_ended[state] += 1
        pending = req.take_transfers()
        if state is not _S.FINISHED:  # workers free a finished request's blocks themselves
            await self.workers.abort(req.touched, req.job_id)
        elif req.pause is not None and req.decode_worker is not None:
            self.sessions.ended_paused(req.spec, req.job_id, req.decode_worker)
        await self.workers.release(pending)
        # Last, so that a client seeing the end knows every worker was told.
        if decision.error is not None:
            req.stream.fail(decision.error)
        elif state is _S.CANCELLED:
            req.stream.end("abort")
        await self.dispatch()

    # ------------------------------------------------------------------ acting on decisions
    async def _start_stage(self, req: ActiveRequest, stage: Stage) -> None:
        """Queue encode or prefill; a Launch starts it when a worker has room."""
        if stage is Stage.ENCODE:
            holder = self.placement.embedding_holder(req)
            if holder is not None:
                self._skip_encode(req, holder)
                stage = Stage.PREFILL
        allowed = self.placement.allowed_workers(req, stage)
        predicted_ms = self.placement.fastest_compute_ms(req, stage)
        self.dispatcher.enqueue(req, stage, predicted_ms, allowed)
        await self.dispatch()

    def _skip_encode(self, req: ActiveRequest, holder: str) -> None:
        """Prefill on `holder` reads every image's embeddings from its own cache."""
        hashes = req.shape.image_hashes if req.shape is not None else ()
        req.encode_worker = holder
        req.embeddings = [EmbeddingInput(image_hash, None) for image_hash in hashes]
        req.trace.record(EventName.ENCODE_SKIPPED, worker=holder, num_images=len(hashes))
        self.feedback.ledger.num_images_not_encoded += len(hashes)

    async def _launch(self, launch: Launch) -> None:
        req, slot = launch.req, launch.slot
        if launch.stage is Stage.ENCODE:
            req.encode_worker = slot.worker_id
            export = self.placement.exports_embeddings(req, slot.worker_id)
            req.lifecycle.advance(_S.ENCODING, worker=slot.worker_id)
            job = req.encode_job(export)
            return await self._submit(req, slot, job, Stage.ENCODE, launch.predicted_ms)
        images = req.embeddings_for(slot.worker_id, self.workers) if req.spec.has_images else []
        if images is None:
            return await self.carry_out([self.recovery.embeddings_unreachable(req)])
        decode_worker = self.placement.decode_worker(req, slot.worker_id)
        if decode_worker is None:
            return await self.carry_out([self.recovery.fail_no_worker(req, Stage.DECODE)])
        req.prefill_worker, req.decode_here = slot.worker_id, decode_worker == slot.worker_id
        req.decode_worker = slot.worker_id if req.decode_here else None
        unrouted = req.take_transfers("embedding") if slot.worker_id == req.encode_worker else []
        req.lifecycle.advance(_S.PREFILLING, worker=slot.worker_id, decode_here=req.decode_here)
        priority = self.placement.mode.prefill_priority(req.latest_start_ms)
        req.pause = self.pauses.plan(req, slot) if req.decode_here else None
        job = req.prefill_job(images, self.workers.epochs_of(images), priority, slot.worker_id)
        await self._submit(req, slot, job, Stage.PREFILL, launch.predicted_ms)
        await self.workers.release(unrouted)

    async def _start_decode(self, decision: StartDecode) -> None:
        req, prefill, done = decision.req, decision.prefill, decision.done
        slot = self.workers.get(self.placement.decode_worker(req, prefill.worker_id))
        if slot is None:
            return await self.carry_out([self.recovery.fail_no_worker(req, Stage.DECODE)])
        req.decode_worker = slot.worker_id
        req.pause = self.pauses.plan(req, slot)
        req.lifecycle.advance(_S.DECODING, worker=slot.worker_id)
        await self._submit(req, slot, req.decode_job(done, prefill.epoch), Stage.DECODE)

    async def _stream(self, stream: Stream) -> None:
        req = stream.req
        req.stream.push(stream.token_ids, stream.finish_reason)
        if stream.finish_reason is not None:
            await self.end(End(req, _S.FINISHED, finish_reason=stream.finish_reason))

    async def _redrive(self, redrive: Redrive) -> None:
        req, stage = redrive.req, redrive.stage
        old_job, old_touched = req.job_id, req.touched
        self.dispatcher.forget(req)
        self.feedback.forget(req.job_id, self.workers)
        self.requests.new_attempt(req)  # the old attempt's events are stale from here
        req.trace.record(
            EventName.REDRIVE,
            stage=stage.value,
            attempt=req.attempt,
            resumed_tokens=req.num_resumed_tokens,
            reason=redrive.reason,
        )
        if req.state is not _S.QUEUED:
            req.lifecycle.advance(_S.QUEUED)
        dropped = req.take_transfers("kv")
        if stage is Stage.ENCODE:
            dropped += req.forget_embeddings()
        attempt = req.attempt
        await self.workers.abort(old_touched, old_job)
        await self.workers.release(dropped)
        if req.is_current(attempt):
            await self._start_stage(req, stage)

    async def _submit(
        self, req: ActiveRequest, slot: WorkerSlot, job: Job, stage: Stage, predicted_ms=0.0
    ) -> None:
        attempt = req.attempt
        req.touched.add(slot.worker_id)
        slot.num_dispatched_since_load += 1
        self.feedback.dispatched(slot, req, stage, predicted_ms)
        try:
            if isinstance(job, EncodeJob):
                await slot.client.submit_encode(job)
            elif isinstance(job, PrefillJob):
                await slot.client.submit_prefill(job)
            else:
                await slot.client.submit_decode(job)
        except InvalidRequestError as error:
            if req.is_current(attempt):
                await self.end(End(req, _S.FAILED, error=error))
            return
        except Exception as error:  # a worker that cannot take a job is gone
            logger.warning("submit to worker %s raised", slot.worker_id, exc_info=error)
            await self.lose_worker(slot.worker_id, "failed a submit")
            return
        if not req.is_current(attempt):  # cancelled or re-driven while the job was on its way
            await self.workers.abort([slot.worker_id], job.request_id)
