"""Where a request's time went, read from its trace: the one parser of the trace's schema. The
Prometheus metrics, the overhead benchmark and the serving benchmark read traces through it.

    event                attributes read               -> field
    dispatched           stage, waited_ms              -> scheduler_queue_ms[stage]
    encode_done          queue_ms, compute_ms          -> queue_ms / compute_ms["encode"]
    first_token          queue_ms, compute_ms          -> queue_ms / compute_ms["prefill"]
    decode_steps         queue_ms, compute_ms, count   -> queue_ms / compute_ms["decode"],
                                                          num_decode_steps
    embedding_transfer   ms, bytes                     -> transfer_ms / transfer_bytes["embedding"]
    kv_transfer          ms, bytes                     -> transfer_ms / transfer_bytes["kv"]
    encode_skipped       num_images                    -> num_encode_skipped_images
    redrive                                            -> num_redrives
    classified           request_class, admission,     -> the scheduler's class, its admission
                         predicted_ttft_ms                decision and TTFT forecast
    queued               the first one's time          -> scheduler_arrival_ms
    encode_start or      the first one's time          -> first_dispatch_ms
    prefill_start
    first_token          the first one's time          -> server_ttft_ms
    any                  the last one's time           -> server_e2e_ms

Events that repeat (after a re-drive) add up. A stage appears in the queue and compute maps
when its event does; an attribute that is absent (or None) counts as 0 and is named in
`missing`, so a report can say its figures are incomplete; one that is not a number raises.
Times are ms since the request reached the ingress. trace_events.py says who writes each event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.stage import Stage
from scheduler.trace import TraceEvent
from scheduler.trace_events import TRANSFER_EVENTS, EventName

# stage -> the event that carries its worker-measured queue and compute times
STAGE_EVENTS = {
    Stage.ENCODE.value: EventName.ENCODE_DONE,
    Stage.PREFILL.value: EventName.FIRST_TOKEN,
    Stage.DECODE.value: EventName.DECODE_STEPS,
}
STAGES = tuple(STAGE_EVENTS)
TRANSFER_KINDS = tuple(TRANSFER_EVENTS)
# transfer kind -> the stage that waits for it (its input)
CONSUMER_STAGE = {"embedding": Stage.PREFILL.value, "kv": Stage.DECODE.value}
REQUIRED_STAGES = (Stage.PREFILL.value, Stage.DECODE.value)  # a text request has no encode


@dataclass(frozen=True)
class TraceBreakdown:
    scheduler_queue_ms: dict[str, float]  # stage -> waiting in the scheduler's stage queue
    queue_ms: dict[str, float]  # stage -> waiting on the worker for the engine
    compute_ms: dict[str, float]  # stage -> engine compute (a step's whole time, each request)
    transfer_ms: dict[str, float]  # embedding / kv -> the consumer's fetch and verify
    transfer_bytes: dict[str, int]
    num_decode_steps: int
    num_encode_skipped_images: int  # images whose encode an embedding cache made unnecessary
    num_redrives: int
    request_class: str | None  # the "classified" event's class (None: not classified)
    admission: str | None  # its admission decision: admit, degrade or best_effort
    predicted_ttft_ms: float | None  # what the scheduler predicted when it admitted it
    # Milestones to the first token (None: not reached).
    scheduler_arrival_ms: float | None  # "queued": the ingress built it, the scheduler took it
    first_dispatch_ms: float | None  # its first stage left the scheduler's queue for a worker
    server_ttft_ms: float | None  # "first_token"
    server_e2e_ms: float  # the last event's time: ingress arrival -> end (0: no event)
    missing: tuple[str, ...]  # "first_token", "first_token.queue_ms": absent, counted as 0


def trace_breakdown(events: Iterable[TraceEvent]) -> TraceBreakdown:
    """`events`: a trace's events in order (`Trace.events`, or the GetTrace response's through
    `cluster.state_messages.trace_events`)."""
    events = list(events)
    missing: list[str] = []
    queue, compute = {}, {}
    for stage, name in STAGE_EVENTS.items():
        matches = _named(events, name)
        if stage in REQUIRED_STAGES and not matches:
            missing.append(str(name))
        for key, into in (("compute_ms", compute), ("queue_ms", queue)):
            if any(_number(e.attrs, key) is None for e in matches):
                missing.append(f"{name}.{key}")
            if matches:
                into[stage] = _sum(matches, key)
    transfer_ms, transfer_bytes = {}, {}
    for kind, name in TRANSFER_EVENTS.items():
        matches = _named(events, name)
        if matches:
            transfer_ms[kind] = _sum(matches, "ms")
            transfer_bytes[kind] = sum(int(_number(e.attrs, "bytes") or 0) for e in matches)
    scheduler_queue: dict[str, float] = {}
    for event in _named(events, EventName.DISPATCHED):
        stage = event.attrs.get("stage")
        if stage is not None:
            waited = _number(event.attrs, "waited_ms") or 0.0
            scheduler_queue[str(stage)] = scheduler_queue.get(str(stage), 0.0) + waited
    classified = next(iter(_named(events, EventName.CLASSIFIED)), None)
    verdict = classified.attrs if classified is not None else {}
    return TraceBreakdown(
        scheduler_queue_ms=scheduler_queue,
        queue_ms=queue,
        compute_ms=compute,
        transfer_ms=transfer_ms,
        transfer_bytes=transfer_bytes,
        num_decode_steps=int(_sum(_named(events, EventName.DECODE_STEPS), "count")),
        num_encode_skipped_images=int(_sum(_named(events, EventName.ENCODE_SKIPPED), "num_images")),
        num_redrives=len(_named(events, EventName.REDRIVE)),
        request_class=_text(verdict, "request_class"),
        admission=_text(verdict, "admission"),
        predicted_ttft_ms=_number(verdict, "predicted_ttft_ms"),
        scheduler_arrival_ms=_first_time(events, (EventName.QUEUED,)),
        first_dispatch_ms=_first_time(events, (EventName.ENCODE_START, EventName.PREFILL_START)),
        server_ttft_ms=_first_time(events, (EventName.FIRST_TOKEN,)),
        server_e2e_ms=max((e.time_ms for e in events), default=0.0),
        missing=tuple(missing),
    )


def _named(events: list[TraceEvent], name: EventName) -> list[TraceEvent]:
    return [e for e in events if e.name == name]


def _number(attrs: Mapping[str, Any], key: str) -> float | None:
    """The attribute as a float; None where it is absent or None. Anything else is a bug in
    whoever recorded it, and raises."""
    value = attrs.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        raise ValueError(f"trace attribute {key}={value!r} is not a number")
    return float(value)


def _text(attrs: Mapping[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    return None if value is None else str(value)


def _sum(events: list[TraceEvent], key: str) -> float:
    return sum(_number(e.attrs, key) or 0.0 for e in events)


def _first_time(events: list[TraceEvent], names: tuple[EventName, ...]) -> float | None:
    return next((e.time_ms for e in events if e.name in names), None)
