"""Hand-built request traces for tests."""

from __future__ import annotations

from scheduler.trace import Trace
from scheduler.trace_events import EventName


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def redriven_image_trace() -> Trace:
    """One image request: encode, prefill, a lost decode worker, prefill again, decode."""
    clock = Clock()
    trace = Trace("r", 100.0, clock)
    trace.record(EventName.QUEUED)
    trace.record(
        EventName.CLASSIFIED, request_class="pebble", admission="admit", predicted_ttft_ms=90.0
    )
    clock.now += 0.002
    trace.record(EventName.DISPATCHED, stage="encode", worker="e0", waited_ms=1.5)
    trace.record(EventName.ENCODE_START, worker="e0")
    trace.record(EventName.ENCODE_DONE, worker="e0", compute_ms=10.0, queue_ms=2.0)
    trace.record(EventName.DISPATCHED, stage="prefill", worker="p0", waited_ms=0.5)
    trace.record(EventName.PREFILL_START, worker="p0")
    trace.record(EventName.EMBEDDING_TRANSFER, bytes=1000, ms=3.0, producer="e0", consumer="p0")
    clock.now += 0.03
    trace.record(EventName.FIRST_TOKEN, worker="p0", compute_ms=20.0, queue_ms=4.0)
    trace.record(EventName.KV_TRANSFER, bytes=4096, ms=6.0, producer="p0", consumer="d0")
    trace.record(EventName.REDRIVE, stage="decode", attempt=1, reason="decode worker lost")
    trace.record(EventName.QUEUED)
    trace.record(EventName.DISPATCHED, stage="prefill", worker="p1", waited_ms=2.0)
    trace.record(EventName.PREFILL_START, worker="p1")
    trace.record(EventName.FIRST_TOKEN, worker="p1", compute_ms=25.0, queue_ms=None)
    trace.record(EventName.DECODE_STEPS, count=7, compute_ms=70.0, queue_ms=1.0)
    clock.now += 0.1
    trace.record(EventName.FINISHED, finish_reason="length", num_tokens=8)
    return trace
