"""Worker events -> what happens to each request: the driver's other half.

EncodeDone        -> queue prefill (driver.start_stage); dispatched to the encode worker itself
                     when its embeddings were not exported (refs None: it reads its own
                     embedding cache), else where placement says, with the refs
PrefillDone       -> stream the first token; DecodeJob with the KV ref on a decode worker
                     (with decode_here, the prefill worker streams every token itself)
TokenDelta        -> stream, only from the worker decoding the current attempt
TransferConsumed  -> producer.release([transfer_id]); trace bytes and fetch time
StageFailed       -> recovery.py: fail, or re-drive from the last good stage

An EncodeDone or PrefillDone of an attempt that ended (cancelled, failed, re-driven) is dropped,
and the arrays it carries are released at once: nobody will fetch them, and their producer
would otherwise hold them forever. Each event's worker-measured times go into the trace (see
lifecycle.py for the names), and each stage's end into the feedback (feedback.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from scheduler.errors import RequestFailedError
from scheduler.lifecycle import RequestState
from scheduler.recovery import StageFailure
from scheduler.stage import Stage
from scheduler.worker_registry import PendingTransfer, WorkerSlot
from workers.protocol import (
    EncodeDone,
    PrefillDone,
    TokenDelta,
    TransferConsumed,
    TransferRef,
    WorkerEvents,
)

if TYPE_CHECKING:
    from scheduler.active_request import ActiveRequest
    from scheduler.driver import RequestDriver

_S = RequestState


class EventApplier:
    def __init__(self, driver: RequestDriver) -> None:
        self.driver = driver

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
            await self.driver.recovery.on_stage_failed(slot, failure)

    async def _on_consumed(self, slot: WorkerSlot, consumed: TransferConsumed) -> None:
        req = self.driver.job(consumed.request_id)
        transfer = req.transfers.pop(consumed.transfer_id, None) if req is not None else None
        if transfer is None:
            return
        req.trace.record(
            f"{transfer.kind}_transfer", bytes=consumed.nbytes, ms=consumed.fetch_ms,
            producer=transfer.producer_id, consumer=slot.worker_id,
        )  # fmt: skip
        self.driver.feedback.transfer(req, transfer.kind, consumed.nbytes, consumed.fetch_ms)
        await self.driver.workers.release([transfer])

    async def _on_encode_done(self, slot: WorkerSlot, done: EncodeDone) -> None:
        self.driver.feedback.stage_done(slot, done.request_id, Stage.ENCODE, done.compute_ms)
        req = self.driver.job(done.request_id)
        if req is None or req.state is not _S.ENCODING or req.encode_worker != slot.worker_id:
            return await self._release_unclaimed("embedding", [e.ref for e in done.embeddings])
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
            detail = f"encode on {slot.worker_id} returned {len(done.embeddings)} embeddings"
            return await self.driver.recovery.fail(req, Stage.ENCODE, detail)
        await self.driver.start_stage(req, Stage.PREFILL)

    async def _on_prefill_done(self, slot: WorkerSlot, done: PrefillDone) -> None:
        self.driver.feedback.stage_done(slot, done.request_id, Stage.PREFILL, done.compute_ms)
        req = self.driver.job(done.request_id)
        if req is None or req.state is not _S.PREFILLING or req.prefill_worker != slot.worker_id:
            return await self._release_unclaimed("kv", [done.kv])
        if req.decode_here:  # its tokens, the first included, come as TokenDeltas
            return await self._release_unclaimed("kv", [done.kv])
        req.stream.num_cached_prompt_tokens = done.num_cached_tokens
        self.driver.feedback.prefill_hits(req, done.num_cached_tokens)
        if done.kv is not None:
            req.transfers[done.kv.transfer_id] = PendingTransfer(
                done.kv.transfer_id, "kv", done.kv.producer_id, done.kv.nbytes
            )
        req.trace.record(
            "first_token", worker=slot.worker_id, compute_ms=done.compute_ms,
            queue_ms=done.queue_ms,
        )  # fmt: skip
        self.driver.feedback.first_token(req)
        if not await self._stream(req, [done.first_token_id], done.finish_reason):
            return
        if done.kv is None:
            detail = f"prefill on {slot.worker_id} handed off no KV"
            return await self.driver.recovery.fail(req, Stage.PREFILL, detail)
        await self.driver.start_decode(req, slot, done)

    async def _on_tokens(self, slot: WorkerSlot, delta: TokenDelta) -> None:
        req = self.driver.job(delta.request_id)
        if req is None or req.token_worker != slot.worker_id:
            return
        if delta.finish_reason == "abort":  # the scheduler's own aborts end the attempt first
            detail = f"worker {slot.worker_id} aborted the request"
            failure = StageFailure(Stage.DECODE, "worker aborted the request", detail, True)
            return await self.driver.recovery.stage_failed(req, failure)
        if not delta.token_ids and delta.finish_reason is None:
            return
        if req.state is _S.PREFILLING:  # decode_here: this delta starts with the first token
            self.driver.feedback.stage_done(
                slot, delta.request_id, Stage.PREFILL, delta.prefill_compute_ms
            )
            if delta.num_cached_tokens is not None:
                req.stream.num_cached_prompt_tokens = delta.num_cached_tokens
                self.driver.feedback.prefill_hits(req, delta.num_cached_tokens)
            req.trace.record(
                "first_token", worker=slot.worker_id, compute_ms=delta.prefill_compute_ms,
                queue_ms=delta.prefill_queue_ms,
            )  # fmt: skip
            self.driver.feedback.first_token(req)
            if delta.finish_reason is None:
                req.lifecycle.advance(_S.DECODING, worker=slot.worker_id)
        req.trace.add_decode_steps(
            delta.num_decode_steps, delta.decode_compute_ms, delta.decode_queue_ms
        )
        await self._stream(req, list(delta.token_ids), delta.finish_reason)

    async def _stream(self, req: ActiveRequest, token_ids: list[int], finish: str | None) -> bool:
        """Send tokens to the client; False when the request ended."""
        try:
            req.stream.push(token_ids, finish)
        except RequestFailedError as error:
            await self.driver.end(req, _S.FAILED, error=error)
            return False
        if finish is None:
            return True
        await self.driver.end(req, _S.FINISHED, finish_reason=finish)
        return False

    async def _release_unclaimed(self, kind: str, refs: Iterable[TransferRef | None]) -> None:
        """Free the arrays a stale event carries: no job of a current attempt will fetch them."""
        unclaimed = [r for r in refs if r is not None]
        await self.driver.workers.release(
            PendingTransfer(r.transfer_id, kind, r.producer_id, r.nbytes) for r in unclaimed
        )
