"""What a request's server-side trace (GetTrace) says about it: per-stage queueing and compute,
transfers, cache skips and the class the scheduler gave it.

    encode_done          queue_ms, compute_ms         -> encode queue / compute
    first_token          queue_ms, compute_ms         -> prefill queue / compute
    decode_steps         queue_ms, compute_ms, count  -> decode queue / compute, steps
    embedding_transfer   ms, bytes                    -> E -> P transfer
    kv_transfer          ms, bytes                    -> P -> D transfer
    encode_skipped       num_images                   -> images whose embeddings were cached
    classified           request_class, admission     -> the scheduler's class and admission
                         (strings), predicted_ttft_ms    decision (admit, degrade, best_effort)
    queued               its time                     -> ingress arrival -> in the scheduler
    encode_start or      the first one's time         -> ... -> its first stage dispatched
    prefill_start
    first_token          its time                     -> ... -> first token (server TTFT)
    redrive                                           -> re-drives

Events that repeat (after a re-drive) add up; absent ones count as 0 (the class as None).
Numeric attributes come from the event's `values` map, strings from its `detail` text
("key=value, ..."). Pure Python: events need only `.event`, `.values` and `.detail`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

STAGE_EVENTS = {"encode": "encode_done", "prefill": "first_token", "decode": "decode_steps"}
TRANSFER_EVENTS = {"embedding": "embedding_transfer", "kv": "kv_transfer"}
DONE_STATES = ("finished", "failed", "cancelled")


@dataclass(frozen=True)
class TraceStats:
    state: str  # the trace's last state: finished, failed, cancelled (or still active)
    queue_ms: dict[str, float]  # stage -> waiting for the engine (stages that ran)
    compute_ms: dict[str, float]  # stage -> engine compute
    transfer_ms: dict[str, float]  # embedding / kv -> the consumer's fetch
    transfer_bytes: dict[str, int]
    num_decode_steps: int
    num_encode_skipped_images: int  # images whose encode a cache made unnecessary
    num_redrives: int
    server_class: str | None  # the "classified" event's request_class, when recorded
    admission: str | None  # its admission decision: admit, degrade or best_effort
    predicted_ttft_ms: float | None  # what the scheduler predicted when it admitted it
    # Milestones to the first token, in ms from the ingress's arrival (None: not reached).
    scheduler_arrival_ms: float | None  # "queued": the ingress built it, the scheduler took it
    first_dispatch_ms: float | None  # its first stage left the scheduler's queue for a worker
    server_ttft_ms: float | None  # "first_token"
    server_e2e_ms: float  # the last event's time: ingress arrival -> end

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def detail_fields(detail: str) -> dict[str, str]:
    """'a=1, request_class=sand' -> {'a': '1', 'request_class': 'sand'}."""
    fields = {}
    for item in detail.split(", "):
        key, sep, value = item.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def trace_stats(state: str, events: Iterable) -> TraceStats:
    events = list(events)
    queue, compute, transfer_ms, transfer_bytes = {}, {}, {}, {}
    for stage, name in STAGE_EVENTS.items():
        matches = [e for e in events if e.event == name]
        if matches:
            queue[stage] = sum(float(e.values.get("queue_ms", 0.0)) for e in matches)
            compute[stage] = sum(float(e.values.get("compute_ms", 0.0)) for e in matches)
    for kind, name in TRANSFER_EVENTS.items():
        matches = [e for e in events if e.event == name]
        if matches:
            transfer_ms[kind] = sum(float(e.values.get("ms", 0.0)) for e in matches)
            transfer_bytes[kind] = sum(int(e.values.get("bytes", 0)) for e in matches)
    classified = next((e for e in events if e.event == "classified"), None)
    fields = detail_fields(classified.detail) if classified is not None else {}
    predicted = classified.values.get("predicted_ttft_ms") if classified is not None else None
    return TraceStats(
        state=state,
        queue_ms=queue,
        compute_ms=compute,
        transfer_ms=transfer_ms,
        transfer_bytes=transfer_bytes,
        num_decode_steps=int(
            sum(e.values.get("count", 0) for e in events if e.event == "decode_steps")
        ),
        num_encode_skipped_images=int(
            sum(e.values.get("num_images", 0) for e in events if e.event == "encode_skipped")
        ),
        num_redrives=sum(1 for e in events if e.event == "redrive"),
        server_class=fields.get("request_class"),
        admission=fields.get("admission"),
        predicted_ttft_ms=float(predicted) if predicted is not None else None,
        scheduler_arrival_ms=_first_time(events, ("queued",)),
        first_dispatch_ms=_first_time(events, ("encode_start", "prefill_start")),
        server_ttft_ms=_first_time(events, ("first_token",)),
        server_e2e_ms=max((e.time_ms for e in events), default=0.0),
    )


def _first_time(events: list, names: tuple[str, ...]) -> float | None:
    return next((e.time_ms for e in events if e.event in names), None)
