"""The request driver: moves each request through its stages.

start             -> queue encode (dispatcher.py), or straight to prefill when a prefill
                     worker already holds every image's embeddings (policy "slo")
dispatch(encode)  -> EncodeJob, with export=False when placement would keep prefill on the
                     encode worker: its embeddings then never leave its embedding cache
dispatch(prefill) -> PrefillJob; decode_here when placement keeps decode on the same worker
                     (unused embedding refs are released)
first token       -> DecodeJob with the KV ref on a decode worker (start_decode)
worker events     -> event_applier.py: stage done, tokens, transfers, failures
worker lost       -> recovery.py: re-drive or fail every request that needed the worker
end               -> abort on every worker it touched, release its arrays, tell observers
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from scheduler.active_request import ActiveRequest
from scheduler.cache_directory import CacheDirectory
from scheduler.config import SchedulerConfig
from scheduler.dispatcher import Dispatcher
from scheduler.event_applier import EventApplier
from scheduler.feedback import Feedback
from scheduler.lifecycle import RequestState
from scheduler.policy import PlacementPolicy, PlacementRequest, capable_workers
from scheduler.recovery import Recovery, StageFailure
from scheduler.slo_ledger import EndedRequest
from scheduler.stage import Stage
from scheduler.trace import TraceStore
from scheduler.worker_registry import WorkerRegistry, WorkerSlot
from workers.engine.errors import InvalidRequestError
from workers.protocol import (
    DecodeJob,
    EmbeddingInput,
    EncodeJob,
    PrefillDone,
    PrefillJob,
    WorkerEvents,
)

logger = logging.getLogger(__name__)
_S = RequestState
Job = EncodeJob | PrefillJob | DecodeJob


class RequestDriver:
    def __init__(
        self,
        workers: WorkerRegistry,
        policy: PlacementPolicy,
        config: SchedulerConfig,
        lose_worker: Callable[[str, str], Awaitable[None]],  # forget a worker, then fail_over
        dispatcher: Dispatcher,
        feedback: Feedback,
        caches: CacheDirectory,
    ) -> None:
        self.workers = workers
        self.policy = policy
        self.config = config
        self._lose_worker = lose_worker
        self.dispatcher = dispatcher
        self.feedback = feedback
        self.caches = caches
        self.observers: list[Callable[[EndedRequest], None]] = []  # told when a request ends
        dispatcher.launch, dispatcher.no_worker = self._launch, self._no_worker
        self.events = EventApplier(self)
        self.requests: dict[str, ActiveRequest] = {}  # by request id
        self._jobs: dict[str, ActiveRequest] = {}  # by the job id of their current attempt
        self.traces = TraceStore(config.trace_capacity)  # of ended requests
        self.num_ended = {state: 0 for state in RequestState if state.is_done}
        self.recovery = Recovery(self)

    async def start(self, req: ActiveRequest) -> None:
        self.requests[req.request_id] = self._jobs[req.job_id] = req
        await self.start_stage(req, Stage.ENCODE if req.spec.has_images else Stage.PREFILL)

    async def start_stage(self, req: ActiveRequest, stage: Stage) -> None:
        """Queue encode or prefill; the dispatcher launches it when a worker has room, and each
        stage queues the next when it is done."""
        if stage is Stage.ENCODE and self._skip_encode(req):
            stage = Stage.PREFILL
        allowed = None
        if stage is Stage.PREFILL and req.encode_worker and not req.has_embedding_refs():
            allowed = frozenset([req.encode_worker])  # its embeddings are in that cache only
        self.dispatcher.enqueue(req, stage, self._predicted_compute_ms(req, stage), allowed)
        await self.dispatcher.dispatch()

    def job(self, job_id: str) -> ActiveRequest | None:
        """The request whose current attempt has this job id (None: ended or superseded)."""
        return self._jobs.get(job_id)

    def begin_attempt(self, req: ActiveRequest) -> None:
        """A re-drive: the request's jobs get a new id, so the old attempt's events are stale."""
        self._jobs.pop(req.job_id, None)
        self.dispatcher.forget(req)
        self.feedback.forget(req.job_id, self.workers)
        req.begin_attempt()
        self._jobs[req.job_id] = req

    async def apply(self, slot: WorkerSlot, events: WorkerEvents) -> None:
        """One engine step of one worker (event_applier.py), then whatever it made room for."""
        await self.events.apply(slot, events)
        self.feedback.decode_steps(slot, events)
        await self.dispatcher.dispatch()

    async def end(
        self,
        req: ActiveRequest,
        state: RequestState,
        finish_reason: str | None = None,
        error: Exception | None = None,
    ) -> None:
        if req.state.is_done:
            return
        if state is _S.FINISHED:
            attrs = {"finish_reason": finish_reason, "num_tokens": len(req.stream.token_ids)}
        else:
            attrs = {"reason": str(error)} if error is not None else {}
        outcome = self.feedback.ended(req, state)
        ended = EndedRequest(
            req.request_id, req.request_class.value, state.value, outcome, req.trace
        )
        for observer in self.observers:
            observer(ended)
        req.lifecycle.advance(state, **attrs)
        self.requests.pop(req.request_id, None)
        self._jobs.pop(req.job_id, None)
        self.dispatcher.forget(req)
        self.feedback.forget(req.job_id, self.workers)
        self.traces.put(req.trace)
        self.num_ended[state] += 1
        pending = req.take_transfers()
        if state is not _S.FINISHED:  # workers free a finished request's blocks themselves
            await self.workers.abort(req.touched, req.job_id)
        await self.workers.release(pending)
        # Last, so that a client seeing the end knows every worker was told.
        if error is not None:
            req.stream.fail(error)
        elif state is _S.CANCELLED:
            req.stream.end("abort")
        await self.dispatcher.dispatch()

    # ------------------------------------------------------------------ stages
    async def _launch(
        self, req: ActiveRequest, stage: Stage, slot: WorkerSlot, predicted_ms: float
    ) -> None:
        if stage is Stage.ENCODE:
            await self._start_encode(req, slot, predicted_ms)
        else:
            await self._start_prefill(req, slot, predicted_ms)

    async def _no_worker(self, req: ActiveRequest, stage: Stage) -> None:
        if stage is Stage.PREFILL and req.encode_worker and not req.has_embedding_refs():
            return await self.recovery.stage_failed(req, _embeddings_lost())
        await self.recovery.fail_no_worker(req, stage)

    async def _start_encode(self, req: ActiveRequest, slot: WorkerSlot, predicted_ms: float):
        req.encode_worker = slot.worker_id
        # Asked ahead, the policy says whether prefill will follow encode onto this worker.
        export = self._place(req, Stage.PREFILL, slot.worker_id) is not slot
        req.lifecycle.advance(_S.ENCODING, worker=slot.worker_id)
        job = EncodeJob(req.job_id, list(req.spec.images), export)
        await self._submit(req, slot, job, Stage.ENCODE, predicted_ms)

    async def _start_prefill(self, req: ActiveRequest, slot: WorkerSlot, predicted_ms: float):
        images = req.embeddings_for(slot.worker_id, self.workers) if req.spec.has_images else []
        if images is None:
            return await self.recovery.stage_failed(req, _embeddings_lost())
        decode_slot = self._place(req, Stage.DECODE, slot.worker_id)
        if decode_slot is None:
            return await self.recovery.fail_no_worker(req, Stage.DECODE)
        req.prefill_worker, req.decode_here = slot.worker_id, decode_slot is slot
        req.decode_worker = slot.worker_id if req.decode_here else None
        unrouted = req.take_transfers("embedding") if slot.worker_id == req.encode_worker else []
        req.lifecycle.advance(_S.PREFILLING, worker=slot.worker_id, decode_here=req.decode_here)
        job = PrefillJob(
            req.job_id, list(req.spec.prompt_token_ids), req.spec.sampling_params, images,
            req.decode_here, self.workers.epochs_of(images),
            req.prefill_priority(self.dispatcher.holds_jobs),
        )  # fmt: skip
        await self._submit(req, slot, job, Stage.PREFILL, predicted_ms)
        await self.workers.release(unrouted)

    async def start_decode(self, req: ActiveRequest, prefill: WorkerSlot, done: PrefillDone):
        slot = self._place(req, Stage.DECODE, prefill.worker_id)
        if slot is None:
            return await self.recovery.fail_no_worker(req, Stage.DECODE)
        req.decode_worker = slot.worker_id
        req.lifecycle.advance(_S.DECODING, worker=slot.worker_id)
        job = DecodeJob(
            req.job_id, list(req.spec.prompt_token_ids), req.spec.sampling_params,
            done.first_token_id, list(done.image_spans), done.kv, done.kv_dtype,
            {done.kv.producer_id: prefill.epoch},
        )  # fmt: skip
        await self._submit(req, slot, job, Stage.DECODE)

    def _place(self, req: ActiveRequest, stage: Stage, previous: str | None) -> WorkerSlot | None:
        placement = PlacementRequest(req.spec, stage, previous, req.shape)
        views = self.workers.views(self.dispatcher.clock_ms())
        return self.workers.get(self.policy.place(placement, views))

    def _predicted_compute_ms(self, req: ActiveRequest, stage: Stage) -> float:
        """The stage's compute on the fastest capable worker, for the work-ahead of others."""
        if req.shape is None:
            return 0.0
        views = capable_workers(self.workers.views(), req.spec.model, stage)
        forecasts = [
            self.dispatcher.forecaster.stage(stage, req.shape, v.worker_id, None) for v in views
        ]
        return min((f.compute_ms for f in forecasts), default=0.0)

    def _skip_encode(self, req: ActiveRequest) -> bool:
        """Embedding affinity (policy "slo", first attempt): a prefill worker that already
        holds every image's embeddings prefills from its own cache, and encode never runs."""
        if not self.dispatcher.holds_jobs or req.attempt or req.shape is None:
            return False
        hashes = req.shape.image_hashes
        views = capable_workers(self.workers.views(), req.spec.model, Stage.PREFILL)
        holders = [v.worker_id for v in views if self.caches.holds_embeddings(v.worker_id, hashes)]
        if not holders:
            return False
        req.encode_worker = min(holders, key=lambda w: (self.workers[w].backlog_ms(0), w))
        req.embeddings = [EmbeddingInput(image_hash, None) for image_hash in hashes]
        req.trace.record("encode_skipped", worker=req.encode_worker, num_images=len(hashes))
        self.feedback.ledger.num_images_not_encoded += len(hashes)
        return True

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
                await self.end(req, _S.FAILED, error=error)
            return
        except Exception as error:  # a worker that cannot take a job is gone
            logger.warning("submit to worker %s raised", slot.worker_id, exc_info=error)
            await self._lose_worker(slot.worker_id, "failed a submit")
            return
        if not req.is_current(attempt):  # cancelled or re-driven while the job was on its way
            await self.workers.abort([slot.worker_id], job.request_id)


def _embeddings_lost() -> StageFailure:
    """Prefill cannot get the embeddings (their only holder left): encode again."""
    return StageFailure(
        Stage.PREFILL, "image embeddings lost", "the image embeddings are no longer reachable",
        retriable=True, suspect=True,
    )  # fmt: skip
