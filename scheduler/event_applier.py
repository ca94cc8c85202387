"""Worker events -> what happens to each request. The applier records what the events tell
(trace, transfers, feedback) and decides what follows (decisions.py); the driver acts.

EncodeDone        -> StartStage(prefill); dispatched to the encode worker itself
                     when its embeddings were not exported (refs None: it reads its own
                     embedding cache), else where placement says, with the refs
PrefillDone       -> Stream(first token), then StartDecode: a DecodeJob with the KV ref on a
                     decode worker (with decode_here, the prefill worker streams every token)
TokenDelta        -> Stream, only from the worker decoding the current attempt
TransferConsumed  -> Release([transfer]) to its producer; trace bytes and fetch time
StageFailed       -> recovery.py: End (fail), or Redrive from the last good stage

An EncodeDone or PrefillDone of an attempt that ended (cancelled, failed, re-driven) is dropped,
and the arrays it carries are released at once: nobody will fetch them, and their producer
would otherwise hold them forever. Each event's worker-measured times go into the trace (see
lifecycle.py for the names), and each stage's end into the feedback (feedback.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from scheduler.active_request import ActiveRequest
from scheduler.decisions import Decision, Release, StartDecode, StartStage, Stream
from scheduler.feedback import Feedback
from scheduler.in_flight import InFlight
from scheduler.lifecycle import RequestState
from scheduler.recovery import Recovery, StageFailure
from scheduler.stage import Stage
from scheduler.trace_events import EventName
from scheduler.worker_registry import PendingTransfer, WorkerSlot
from workers.contract.messages import (
    EncodeDone,
    PrefillDone,
    StageFailed,
    TokenDelta,
    TransferConsumed,
    TransferRef,
    WorkerEvents,
)

_S = RequestState
WorkerEvent = TransferConsumed | EncodeDone | PrefillDone | TokenDelta | StageFailed


def in_causal_order(events: WorkerEvents) -> Iterator[WorkerEvent]:
    """One engine step's events, in the order that keeps traces causal."""
    yield from events.consumed
    yield from events.encodes
    yield from events.prefills
    yield from events.tokens
    yield from events.failures


class EventApplier:
    def __init__(self, requests: InFlight, feedback: Feedback, recovery: Recovery) -> None:
        self.requests = requests
        self.feedback = feedback
        self.recovery = recovery

    def decide(self, slot: WorkerSlot, event: WorkerEvent) -> list[Decision]:
        """What one event of `slot` makes happen. Decide each event after the driver carried
        out the previous one's decisions: they see the state those left."""
        if isinstance(event, TransferConsumed):
            return self._on_consumed(slot, event)
        if isinstance(event, EncodeDone):
            return self._on_encode_done(slot, event)
        if isinstance(event, PrefillDone):
            return self._on_prefill_done(slot, event)
        if isinstance(event, TokenDelta):
            return self._on_tokens(slot, event)
        return _some(self.recovery.on_stage_failed(slot, event))

    def _on_consumed(self, slot: WorkerSlot, consumed: TransferConsumed) -> list[Decision]:
        req = self.requests.job(consumed.request_id)
        transfer = req.transfers.pop(consumed.transfer_id, None) if req is not None else None
        if transfer is None:
            return []
        req.trace.record(
            EventName.transfer(transfer.kind),
            bytes=consumed.nbytes,
            ms=consumed.fetch_ms,
            producer=transfer.producer_id,
            consumer=slot.worker_id,
        )
        self.feedback.transfer(req, transfer.kind, consumed.nbytes, consumed.fetch_ms)
        return [Release((transfer,))]

    def _on_encode_done(self, slot: WorkerSlot, done: EncodeDone) -> list[Decision]:
        self.feedback.stage_done(slot, done.request_id, Stage.ENCODE, done.compute_ms)
        req = self.requests.job(done.request_id)
        if req is None or req.state is not _S.ENCODING or req.encode_worker != slot.worker_id:
            return _unclaimed("embedding", [e.ref for e in done.embeddings])
        req.trace.record(
            EventName.ENCODE_DONE,
            worker=slot.worker_id,
            compute_ms=done.compute_ms,
            queue_ms=done.queue_ms,
        )
        req.embeddings = list(done.embeddings)
        for ref in (e.ref for e in done.embeddings if e.ref is not None):
            req.transfers[ref.transfer_id] = _pending("embedding", ref)
        if len(done.embeddings) != len(req.spec.images):
            detail = f"encode on {slot.worker_id} returned {len(done.embeddings)} embeddings"
            return [self.recovery.protocol_error(req, Stage.ENCODE, detail)]
        return [StartStage(req, Stage.PREFILL)]

    def _on_prefill_done(self, slot: WorkerSlot, done: PrefillDone) -> list[Decision]:
        self.feedback.stage_done(slot, done.request_id, Stage.PREFILL, done.compute_ms)
        req = self.requests.job(done.request_id)
        if req is None or req.state is not _S.PREFILLING or req.prefill_worker != slot.worker_id:
            return _unclaimed("kv", [done.kv])
        if req.decode_here:  # its tokens, the first included, come as TokenDeltas
            return _unclaimed("kv", [done.kv])
        req.stream.num_cached_prompt_tokens = done.num_cached_tokens
        self.feedback.prefill_hits(req, done.num_cached_tokens)
        if done.kv is not None:
            req.transfers[done.kv.transfer_id] = _pending("kv", done.kv)
        self._first_token(req, slot, done.compute_ms, done.queue_ms)
        stream = Stream(req, [done.first_token_id], done.finish_reason)
        if done.kv is None:
            detail = f"prefill on {slot.worker_id} handed off no KV"
            return [stream, self.recovery.protocol_error(req, Stage.PREFILL, detail)]
        return [stream, StartDecode(req, slot, done)]

    def _on_tokens(self, slot: WorkerSlot, delta: TokenDelta) -> list[Decision]:
        req = self.requests.job(delta.request_id)
        if req is None or req.token_worker != slot.worker_id:
            return []
        if delta.finish_reason == "abort":  # the scheduler's own aborts end the attempt first
            detail = f"worker {slot.worker_id} aborted the request"
            failure = StageFailure(
                stage=Stage.DECODE,
                cause="worker aborted the request",
                detail=detail,
                retriable=True,
            )
            return [self.recovery.stage_failed(req, failure)]
        if not delta.token_ids and delta.finish_reason is None:
            return []
        if req.state is _S.PREFILLING:  # decode_here: this delta starts with the first token
            self.feedback.stage_done(
                slot, delta.request_id, Stage.PREFILL, delta.prefill_compute_ms
            )
            if delta.num_cached_tokens is not None:
                req.stream.num_cached_prompt_tokens = delta.num_cached_tokens
                self.feedback.prefill_hits(req, delta.num_cached_tokens)
            self._first_token(req, slot, delta.prefill_compute_ms, delta.prefill_queue_ms)
            if delta.finish_reason is None:
                req.lifecycle.advance(_S.DECODING, worker=slot.worker_id)
        req.trace.add_decode_steps(
            delta.num_decode_steps, delta.decode_compute_ms, delta.decode_queue_ms
        )
        return [Stream(req, list(delta.token_ids), delta.finish_reason)]

    def _first_token(
        self, req: ActiveRequest, slot: WorkerSlot, compute_ms: float, queue_ms: float | None
    ) -> None:
        req.trace.record(
            EventName.FIRST_TOKEN, worker=slot.worker_id, compute_ms=compute_ms, queue_ms=queue_ms
        )
        self.feedback.first_token(req)


def _pending(kind: str, ref: TransferRef) -> PendingTransfer:
    return PendingTransfer(
        transfer_id=ref.transfer_id, kind=kind, producer_id=ref.producer_id, nbytes=ref.nbytes
    )


def _unclaimed(kind: str, refs: Iterable[TransferRef | None]) -> list[Decision]:
    """Free the arrays a stale event carries: no job of a current attempt will fetch them."""
    transfers = tuple(_pending(kind, ref) for ref in refs if ref is not None)
    return [Release(transfers)] if transfers else []


def _some(decision: Decision | None) -> list[Decision]:
    return [decision] if decision is not None else []
