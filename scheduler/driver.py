"""The request driver: moves each request through its stages, one worker event at a time.

start             -> EncodeJob, with export=False when placement would keep prefill on the
                     encode worker: its embeddings then never leave its embedding cache
EncodeDone        -> PrefillJob: on the encode worker itself when it can prefill (refs None:
                     it reads its own embedding cache; unused refs are released), else on the
                     least-loaded prefill worker, with the refs (none exported: encode again)
PrefillDone       -> stream the first token; DecodeJob with the KV ref on a decode worker
                     (with decode_here, the prefill worker streams every token itself)
TokenDelta        -> stream, only from the worker decoding the current attempt
TransferConsumed  -> producer.release([transfer_id]); trace bytes and fetch time
StageFailed       -> invalid input: fail with InvalidRequestError; else re-drive from the last
                     good stage while retries last, else fail
worker lost       -> re-drive or fail every request that needed the worker

Each event's worker-measured times go into the trace (see lifecycle.py for the names).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from scheduler.active_request import ActiveRequest
from scheduler.config import SchedulerConfig
from scheduler.errors import NoWorkerAvailableError, RequestFailedError
from scheduler.lifecycle import RequestState, redrive_refusal, restart_stage
from scheduler.policy import PlacementPolicy, PlacementRequest
from scheduler.stage import Stage
from scheduler.trace import TraceStore
from scheduler.worker_registry import PendingTransfer, WorkerRegistry, WorkerSlot
from workers.engine.errors import InvalidRequestError
from workers.protocol import (
    DecodeJob,
    EncodeDone,
    EncodeJob,
    PrefillDone,
    PrefillJob,
    StageFailed,
    TokenDelta,
    TransferConsumed,
    WorkerEvents,
)

_S = RequestState
Job = EncodeJob | PrefillJob | DecodeJob


class RequestDriver:
    def __init__(
        self,
        workers: WorkerRegistry,
        policy: PlacementPolicy,
        config: SchedulerConfig,
        lose_worker: Callable[[str, str], Awaitable[None]],  # forget a worker, then fail_over
    ) -> None:
        self.workers = workers
        self.policy = policy
        self.config = config
        self._lose_worker = lose_worker
        self.requests: dict[str, ActiveRequest] = {}  # by request id
        self._jobs: dict[str, ActiveRequest] = {}  # by the job id of their current attempt
        self.traces = TraceStore(config.trace_capacity)  # of ended requests
        self.num_ended = {state: 0 for state in RequestState if state.is_done}

    async def start(self, req: ActiveRequest) -> None:
        self.requests[req.request_id] = self._jobs[req.job_id] = req
        await (self._start_encode(req) if req.spec.has_images else self._start_prefill(req))

    async def apply(self, slot: WorkerSlot, events: WorkerEvents) -> None:
        """One engine step of one worker, in the order that keeps traces causal."""
        for consumed in events.consumed:
            await self._on_consumed(slot, consumed)
        for encoded in events.encodes:
            await self._on_encode_done(slot, encoded)
        for prefilled in events.prefills:
            await self._on_prefill_done(slot, prefilled)
        for delta in events.tokens:
            await self._on_tokens(slot, delta)
        for failure in events.failures:
            await self._on_stage_failed(slot, failure)

    async def fail_over(self, worker_id: str, reason: str) -> None:
        """Re-drive (or fail) every request that needs what this worker had."""
        for req in [r for r in self.requests.values() if r.depends_on(worker_id)]:
            stage = req.lifecycle.stage
            if stage is None or not req.depends_on(worker_id):
                continue  # ended, or already being re-driven
            suspect = req.encode_worker == worker_id
            await self._stage_failed(req, stage, f"worker {worker_id} {reason}", True, suspect)

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
        req.lifecycle.advance(state, **attrs)
        self.requests.pop(req.request_id, None)
        self._jobs.pop(req.job_id, None)
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

    # ------------------------------------------------------------------ stages
    async def _start_encode(self, req: ActiveRequest) -> None:
        slot = self._place(req, Stage.ENCODE, None)
        if slot is None:
            return await self._fail_no_worker(req, Stage.ENCODE)
        req.encode_worker = slot.worker_id
        # Asked ahead, the policy says whether prefill will follow encode onto this worker.
        export = self._place(req, Stage.PREFILL, slot.worker_id) is not slot
        req.lifecycle.advance(_S.ENCODING, worker=slot.worker_id)
        await self._submit(req, slot, EncodeJob(req.job_id, list(req.spec.images), export))

    async def _start_prefill(self, req: ActiveRequest) -> None:
        slot = self._place(req, Stage.PREFILL, req.encode_worker)
        if slot is None:
            return await self._fail_no_worker(req, Stage.PREFILL)
        images = req.embeddings_for(slot.worker_id, self.workers) if req.spec.has_images else []
        if images is None:
            reason = "the image embeddings are no longer reachable"
            return await self._stage_failed(req, Stage.PREFILL, reason, True, True)
        decode_slot = self._place(req, Stage.DECODE, slot.worker_id)
        if decode_slot is None:
            return await self._fail_no_worker(req, Stage.DECODE)
        req.prefill_worker, req.decode_here = slot.worker_id, decode_slot is slot
        req.decode_worker = slot.worker_id if req.decode_here else None
        unrouted = req.take_transfers("embedding") if slot.worker_id == req.encode_worker else []
        req.lifecycle.advance(_S.PREFILLING, worker=slot.worker_id, decode_here=req.decode_here)
        job = PrefillJob(
            req.job_id, list(req.spec.prompt_token_ids), req.spec.sampling_params, images,
            req.decode_here, self.workers.epochs_of(images),
        )  # fmt: skip
        await self._submit(req, slot, job)
        await self.workers.release(unrouted)

    async def _start_decode(self, req: ActiveRequest, prefill: WorkerSlot, done: PrefillDone):
        slot = self._place(req, Stage.DECODE, prefill.worker_id)
        if slot is None:
            return await self._fail_no_worker(req, Stage.DECODE)
        req.decode_worker = slot.worker_id
        req.lifecycle.advance(_S.DECODING, worker=slot.worker_id)
        job = DecodeJob(
            req.job_id, list(req.spec.prompt_token_ids), req.spec.sampling_params,
            done.first_token_id, list(done.image_spans), done.kv, done.kv_dtype,
            {done.kv.producer_id: prefill.epoch},
        )  # fmt: skip
        await self._submit(req, slot, job)

    def _place(self, req: ActiveRequest, stage: Stage, previous: str | None) -> WorkerSlot | None:
        placement = PlacementRequest(req.spec, stage, previous)
        return self.workers.get(self.policy.place(placement, self.workers.views()))

    async def _submit(self, req: ActiveRequest, slot: WorkerSlot, job: Job) -> None:
        attempt = req.attempt
        req.touched.add(slot.worker_id)
        slot.num_dispatched_since_load += 1
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
            await self._lose_worker(slot.worker_id, f"failed a submit: {error!r}")
            return
        if not req.is_current(attempt):  # cancelled or re-driven while the job was on its way
            await self.workers.abort([slot.worker_id], job.request_id)

    # ------------------------------------------------------------------ worker events
    async def _on_consumed(self, slot: WorkerSlot, consumed: TransferConsumed) -> None:
        req = self._jobs.get(consumed.request_id)
        transfer = req.transfers.pop(consumed.transfer_id, None) if req is not None else None
        if transfer is None:
            return
        req.trace.record(
            f"{transfer.kind}_transfer", bytes=consumed.nbytes, ms=consumed.fetch_ms,
            producer=transfer.producer_id, consumer=slot.worker_id,
        )  # fmt: skip
        await self.workers.release([transfer])

    async def _on_encode_done(self, slot: WorkerSlot, done: EncodeDone) -> None:
        req = self._jobs.get(done.request_id)
        if req is None or req.state is not _S.ENCODING or req.encode_worker != slot.worker_id:
            return
        req.trace.record(
            "encode_done", worker=slot.worker_id, compute_ms=done.compute_ms,
            queue_ms=done.queue_ms,
        )  # fmt: skip
        req.embeddings = list(done.embeddings)
        for ref in (e.ref for e in done.embeddings if e.ref is not None):
            req.transfers[ref.transfer_id] = PendingTransfer(
                ref.transfer_id, "embedding", ref.producer_id, ref.nbytes
            )
        if len(done.embeddings) != len(req.spec.images):
            message = f"encode on {slot.worker_id} returned {len(done.embeddings)} embeddings"
            return await self.end(req, _S.FAILED, error=RequestFailedError(message))
        await self._start_prefill(req)

    async def _on_prefill_done(self, slot: WorkerSlot, done: PrefillDone) -> None:
        req = self._jobs.get(done.request_id)
        if req is None or req.state is not _S.PREFILLING or req.prefill_worker != slot.worker_id:
            return
        if req.decode_here:
            return  # its tokens, the first included, come as TokenDeltas (see worker_client.py)
        req.stream.num_cached_prompt_tokens = done.num_cached_tokens
        if done.kv is not None:
            req.transfers[done.kv.transfer_id] = PendingTransfer(
                done.kv.transfer_id, "kv", done.kv.producer_id, done.kv.nbytes
            )
        req.trace.record(
            "first_token", worker=slot.worker_id, compute_ms=done.compute_ms,
            queue_ms=done.queue_ms,
        )  # fmt: skip
        if not await self._stream(req, [done.first_token_id], done.finish_reason):
            return
        if done.kv is None:
            message = f"prefill on {slot.worker_id} handed off no KV"
            return await self.end(req, _S.FAILED, error=RequestFailedError(message))
        await self._start_decode(req, slot, done)

    async def _on_tokens(self, slot: WorkerSlot, delta: TokenDelta) -> None:
        req = self._jobs.get(delta.request_id)
        if req is None or req.token_worker != slot.worker_id:
            return
        if delta.finish_reason == "abort":  # the scheduler's own aborts end the attempt first
            reason = f"worker {slot.worker_id} aborted the request"
            return await self._stage_failed(req, Stage.DECODE, reason, True, False)
        if not delta.token_ids and delta.finish_reason is None:
            return
        if req.state is _S.PREFILLING:  # decode_here: this delta starts with the first token
            if delta.num_cached_tokens is not None:
                req.stream.num_cached_prompt_tokens = delta.num_cached_tokens
            req.trace.record(
                "first_token", worker=slot.worker_id, compute_ms=delta.prefill_compute_ms,
                queue_ms=delta.prefill_queue_ms,
            )  # fmt: skip
            if delta.finish_reason is None:
                req.lifecycle.advance(_S.DECODING, worker=slot.worker_id)
        req.trace.add_decode_steps(
            delta.num_decode_steps, delta.decode_compute_ms, delta.decode_queue_ms
        )
        await self._stream(req, list(delta.token_ids), delta.finish_reason)

    async def _on_stage_failed(self, slot: WorkerSlot, failure: StageFailed) -> None:
        req = self._jobs.get(failure.request_id)
        if req is None or slot.worker_id not in req.touched:
            return
        if failure.is_invalid_input:  # no re-drive can fix the client's input
            error = InvalidRequestError(f"request {req.request_id!r}: {failure.reason}")
            return await self.end(req, _S.FAILED, error=error)
        stages = {stage.value: stage for stage in Stage}
        stage = stages.get(failure.stage) or req.lifecycle.stage or Stage.PREFILL
        reason = f"{failure.reason} (on {slot.worker_id})"
        # A failed prefill may have fetched bad embeddings: never reuse them.
        await self._stage_failed(req, stage, reason, failure.retriable, stage is Stage.PREFILL)

    async def _stream(self, req: ActiveRequest, token_ids: list[int], finish: str | None) -> bool:
        """Send tokens to the client; False when the request ended."""
        try:
            req.stream.push(token_ids, finish)
        except RequestFailedError as error:
            await self.end(req, _S.FAILED, error=error)
            return False
        if finish is None:
            return True
        await self.end(req, _S.FINISHED, finish_reason=finish)
        return False

    # ------------------------------------------------------------------ failures
    async def _stage_failed(
        self, req: ActiveRequest, stage: Stage, reason: str, retriable: bool, suspect: bool
    ) -> None:
        """Re-drive from the last good stage, or fail. `suspect`: the embeddings may be bad."""
        num_streamed = len(req.stream.token_ids)
        refusal = redrive_refusal(stage, reason, retriable, req.attempt, num_streamed, self.config)
        if refusal is not None:
            error = RequestFailedError(f"request {req.request_id!r}: {refusal}")
            return await self.end(req, _S.FAILED, error=error)
        reusable = not suspect and self._embeddings_reachable(req)
        restart = restart_stage(stage, req.spec.has_images, reusable)
        await self._redrive(req, restart, f"{stage.value}: {reason}")

    def _embeddings_reachable(self, req: ActiveRequest) -> bool:
        slot = self.workers.get(req.encode_worker)
        if slot is None or not req.embeddings:
            return False
        view = slot.view()
        return req.has_embedding_refs() or (view.can_run(Stage.PREFILL) and not view.is_draining)

    async def _redrive(self, req: ActiveRequest, stage: Stage, reason: str) -> None:
        old_job, old_touched = req.job_id, req.touched
        self._jobs.pop(old_job, None)
        req.begin_attempt()
        self._jobs[req.job_id] = req
        req.trace.record("redrive", stage=stage.value, attempt=req.attempt, reason=reason)
        if req.state is not _S.QUEUED:
            req.lifecycle.advance(_S.QUEUED)
        dropped = req.take_transfers("kv")
        if stage is Stage.ENCODE:
            dropped += req.forget_embeddings()
        attempt = req.attempt
        await self.workers.abort(old_touched, old_job)
        await self.workers.release(dropped)
        if req.is_current(attempt):
            await (self._start_encode(req) if stage is Stage.ENCODE else self._start_prefill(req))

    async def _fail_no_worker(self, req: ActiveRequest, stage: Stage) -> None:
        error = NoWorkerAvailableError.for_stage(req.spec.model, stage.value)
        await self.end(req, _S.FAILED, error=error)
