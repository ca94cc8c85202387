"""The request lifecycle: which state may follow which, and what the trace records for each.

    generate(spec)
         |
         v
      QUEUED ----------------------------------------------+
         |  images?                                        |  text-only: no encode
         v                                                 |
      ENCODING     encode worker: images -> embeddings     |
         |         (embedding_transfer when prefill runs elsewhere)
         v                                                 |
      PREFILLING <-----------------------------------------+
         |         prefill worker: prompt -> KV + first token
         |         decode_here (worker also decodes): no KV transfer
         |         handoff: PrefillDone -> DecodeJob, kv_transfer
         v
      DECODING     decode worker: one TokenDelta per engine step
         |
         v
      FINISHED (stop | length)

    any active state --cancel()-------------------------> CANCELLED (stream ends with "abort")
    any active state --failure, nothing left to try-----> FAILED (stream raises)
    any active state --retriable failure, worker lost---> QUEUED (re-drive, new attempt)

A worker that runs several stages (EP, PD, EPD) moves the request through the same states with
no transfer in between. A re-drive restarts from the last good stage (`restart_stage`): it
starts a new *attempt* whose jobs carry a fresh job id, so late events of the old attempt are
ignored. The attempt *resumes* after the tokens the client already has, however many: its
prefill takes the prompt followed by them (`PrefillJob.num_resumed_tokens`, the prefix cache
and cache affinity apply to all of it), and the engine counts them as outputs already
produced, so its first token is the client's next one, drawn at the same output index and seed
as without the failure, with max_tokens and stop conditions counted from the prompt's end:

    client has:  t0 .. tk                     (streamed by the lost attempt)
    re-drive:    QUEUED -> [ENCODING] -> PREFILLING(prompt t0 .. tk) -> t(k+1) -> DECODING ...

Nothing is regenerated or replayed, so the client sees no gap and no duplicate
(`output_stream.py`). A request is re-driven at most `SchedulerConfig.max_retries` times.

Every transition is timestamped into the request's trace: queued, encode_start, prefill_start,
decode_start, then decode_steps and finished, failed or cancelled. The scheduler adds the stage
events in between: encode_done, embedding_transfer, first_token, kv_transfer, redrive
(trace_events.py names every event and its attributes). Their numeric attributes (ms, measured
by the workers) split a request's latency into engine compute, queueing, transfer and the rest
(ingress, scheduler, Ray hops); trace_breakdown.py reads them:

    encode_done          compute_ms, queue_ms     vision tower; job arrival -> encode start
    first_token          compute_ms, queue_ms     prefill steps; arrival -> first prefill step
    decode_steps         count, compute_ms,       steps that produced its decode tokens;
                         queue_ms                 arrival for decode -> first decode step
    embedding_transfer,  ms, bytes                the consumer's fetch (not in any queue_ms)
    kv_transfer

compute_ms charges each step's full time to every request in it (a step computes the whole
batch). decode_steps sums over re-drives.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from scheduler.config import SchedulerConfig
from scheduler.errors import IllegalTransitionError
from scheduler.stage import Stage
from scheduler.trace import Trace
from scheduler.trace_events import EventName


class RequestState(Enum):
    QUEUED = "queued"
    ENCODING = "encoding"
    PREFILLING = "prefilling"
    DECODING = "decoding"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_done(self) -> bool:
        return self in (RequestState.FINISHED, RequestState.FAILED, RequestState.CANCELLED)


_S = RequestState
_ENDS = {_S.FAILED, _S.CANCELLED}
_NEXT: dict[RequestState, set[RequestState]] = {
    _S.QUEUED: {_S.ENCODING, _S.PREFILLING} | _ENDS,
    _S.ENCODING: {_S.PREFILLING, _S.QUEUED} | _ENDS,
    _S.PREFILLING: {_S.DECODING, _S.FINISHED, _S.QUEUED} | _ENDS,  # FINISHED: at the first token
    _S.DECODING: {_S.FINISHED, _S.QUEUED} | _ENDS,
    _S.FINISHED: set(),
    _S.FAILED: set(),
    _S.CANCELLED: set(),
}
_TRACE_EVENT = {
    _S.QUEUED: EventName.QUEUED,
    _S.ENCODING: EventName.ENCODE_START,
    _S.PREFILLING: EventName.PREFILL_START,
    _S.DECODING: EventName.DECODE_START,
    _S.FINISHED: EventName.FINISHED,
    _S.FAILED: EventName.FAILED,
    _S.CANCELLED: EventName.CANCELLED,
}
_STAGE = {_S.ENCODING: Stage.ENCODE, _S.PREFILLING: Stage.PREFILL, _S.DECODING: Stage.DECODE}


class Lifecycle:
    """The state of one request; every change is checked, then recorded in its trace."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.state = RequestState.QUEUED
        trace.record(EventName.QUEUED)

    @property
    def stage(self) -> Stage | None:
        """The stage a worker is running for this request now (None while queued or done)."""
        return _STAGE.get(self.state)

    def can_advance(self, to: RequestState) -> bool:
        return to in _NEXT[self.state]

    def advance(self, to: RequestState, **attrs: Any) -> None:
        if not self.can_advance(to):
            raise IllegalTransitionError(
                f"request {self.trace.request_id!r} cannot go from {self.state.value} to {to.value}"
            )
        trace = self.trace
        if to.is_done and trace.num_decode_steps:
            trace.record(
                EventName.DECODE_STEPS,
                count=trace.num_decode_steps,
                compute_ms=trace.decode_compute_ms,
                queue_ms=trace.decode_queue_ms,
            )
        self.state = to
        trace.state = to.value
        trace.record(_TRACE_EVENT[to], **attrs)


def restart_stage(failed: Stage, has_images: bool, embeddings_reusable: bool) -> Stage:
    """The stage a re-drive starts from, after `failed` failed or lost its worker.

    Decode never restarts on its own: its input, the KV of the prompt and of the tokens streamed
    so far, is gone or suspect, so prefill runs again over both. Prefill restarts from encode
    when its embeddings cannot be reused (they were freed, their worker left, or the failure was
    fetching them).
    """
    if has_images and (failed is Stage.ENCODE or not embeddings_reusable):
        return Stage.ENCODE
    return Stage.PREFILL


def redrive_refusal(
    failed: Stage, cause: str, retriable: bool, num_redrives: int, config: SchedulerConfig
) -> str | None:
    """Why the failure of `failed` ends the request, as the client reads it; None when a
    re-drive may recover it. `cause` is a failure class ("decode worker lost"), never a
    worker's or an exception's text (see recovery.py)."""
    if not retriable:
        return f"{failed.value} failed: {cause}"
    if num_redrives >= config.max_retries:
        return f"{failed.value} failed after {num_redrives} re-drives: {cause}"
    return None
