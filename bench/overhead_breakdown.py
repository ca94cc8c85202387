"""Where the time of one request went, read from its trace: engine compute, queueing, transfers,
and everything else (ingress, scheduler, Ray hops), all against the client's end-to-end time.

    client e2e (send -> last token)
    |-- compute   encode_done.compute_ms + first_token.compute_ms + decode_steps.compute_ms
    |-- queue     encode_done.queue_ms   + first_token.queue_ms   + decode_steps.queue_ms
    |-- transfer  embedding_transfer.ms  + kv_transfer.ms          (consumer's fetch + verify)
    `-- other     e2e - compute - queue - transfer

    overhead fraction = (e2e - compute) / e2e     (everything that is not the model running)

A trace attribute that is absent counts as 0 and is named in `missing`, so a report can say
that its compute or queue figures are incomplete. Pure Python: no Ray, no gRPC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

STAGE_EVENTS = {"encode": "encode_done", "prefill": "first_token", "decode": "decode_steps"}
TRANSFER_EVENTS = {"embedding": "embedding_transfer", "kv": "kv_transfer"}


@dataclass(frozen=True)
class RequestTiming:
    """What the client saw of one request (time.perf_counter based, in ms)."""

    request_id: str
    request_class: str  # "text" or "one_image"
    e2e_ms: float  # send -> last token
    ttft_ms: float  # send -> first token
    num_chunks: int  # streamed messages that carried tokens
    num_output_tokens: int
    num_prompt_tokens: int
    num_cached_prompt_tokens: int


@dataclass(frozen=True)
class Breakdown:
    timing: RequestTiming
    compute_ms: dict[str, float]  # stage -> engine compute
    queue_ms: dict[str, float]  # stage -> waiting for the engine
    transfer_ms: dict[str, float]  # embedding / kv -> fetch time
    transfer_bytes: dict[str, int]
    server_e2e_ms: float  # the trace's last event: scheduler arrival -> finished
    missing: list[str] = field(default_factory=list)  # "first_token.compute_ms", ...

    @property
    def e2e_ms(self) -> float:
        return self.timing.e2e_ms

    @property
    def total_compute_ms(self) -> float:
        return sum(self.compute_ms.values())

    @property
    def total_queue_ms(self) -> float:
        return sum(self.queue_ms.values())

    @property
    def total_transfer_ms(self) -> float:
        return sum(self.transfer_ms.values())

    @property
    def other_ms(self) -> float:
        return self.e2e_ms - self.total_compute_ms - self.total_queue_ms - self.total_transfer_ms

    @property
    def outside_scheduler_ms(self) -> float:
        """Client -> ingress -> scheduler and the stream back: the part of `other` the trace's
        clock cannot see."""
        return self.e2e_ms - self.server_e2e_ms

    @property
    def overhead_fraction(self) -> float:
        return (self.e2e_ms - self.total_compute_ms) / self.e2e_ms

    def kv_gbps(self) -> float | None:
        """KV handoff bandwidth of this request: bytes / fetch time, in 1e9 bytes per second."""
        ms, nbytes = self.transfer_ms.get("kv", 0.0), self.transfer_bytes.get("kv", 0)
        return nbytes / (ms * 1e6) if ms > 0 and nbytes > 0 else None


def breakdown(timing: RequestTiming, events: Iterable) -> Breakdown:
    """`events`: a trace's events, each with `.event`, `.time_ms` and `.values` (a mapping of its
    numeric attributes), as in the GetTrace response. Repeated events (after a re-drive) add."""
    events = list(events)
    missing: list[str] = []
    compute, queue = {}, {}
    for stage, name in STAGE_EVENTS.items():
        matches = [e for e in events if e.event == name]
        if stage != "encode" and not matches:
            missing.append(name)
        for key, into in (("compute_ms", compute), ("queue_ms", queue)):
            if any(key not in e.values for e in matches):
                missing.append(f"{name}.{key}")
            if matches:
                into[stage] = sum(float(e.values.get(key, 0.0)) for e in matches)
    transfer_ms, transfer_bytes = {}, {}
    for kind, name in TRANSFER_EVENTS.items():
        matches = [e for e in events if e.event == name]
        if matches:
            transfer_ms[kind] = sum(float(e.values.get("ms", 0.0)) for e in matches)
            transfer_bytes[kind] = sum(int(e.values.get("bytes", 0)) for e in matches)
    server_e2e_ms = max((e.time_ms for e in events), default=0.0)
    return Breakdown(timing, compute, queue, transfer_ms, transfer_bytes, server_e2e_ms, missing)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90 (linear interpolation between samples) and the mean."""
    if not values:
        return {"p50": None, "p90": None, "mean": None}
    array = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(array, 50)),
        "p90": float(np.percentile(array, 90)),
        "mean": float(array.mean()),
    }


def class_summary(breakdowns: Sequence[Breakdown]) -> dict:
    """Percentiles over the requests of one class. Means of the parts add up to the mean e2e;
    percentiles of the parts do not add up to anything."""
    stages = list(STAGE_EVENTS)
    kv = [b.kv_gbps() for b in breakdowns]

    def over(get) -> dict:
        return percentiles([get(b) for b in breakdowns])

    return {
        "num_requests": len(breakdowns),
        "e2e_ms": over(lambda b: b.e2e_ms),
        "ttft_ms": over(lambda b: b.timing.ttft_ms),
        "overhead_fraction": over(lambda b: b.overhead_fraction),
        "breakdown_ms": {
            "compute": over(lambda b: b.total_compute_ms),
            "queue": over(lambda b: b.total_queue_ms),
            "transfer": over(lambda b: b.total_transfer_ms),
            "other": over(lambda b: b.other_ms),
        },
        "compute_ms_by_stage": {s: over(lambda b, s=s: b.compute_ms.get(s, 0.0)) for s in stages},
        "queue_ms_by_stage": {s: over(lambda b, s=s: b.queue_ms.get(s, 0.0)) for s in stages},
        "transfer_ms_by_kind": {
            k: over(lambda b, k=k: b.transfer_ms.get(k, 0.0)) for k in TRANSFER_EVENTS
        },
        "outside_scheduler_ms": over(lambda b: b.outside_scheduler_ms),
        "kv_bytes": over(lambda b: b.transfer_bytes.get("kv", 0)),
        "kv_handoff_gbps": percentiles([g for g in kv if g is not None]),
        "prompt_tokens": over(lambda b: b.timing.num_prompt_tokens),
        "cached_prompt_tokens": sum(b.timing.num_cached_prompt_tokens for b in breakdowns),
        "output_tokens": over(lambda b: b.timing.num_output_tokens),
        "chunks_per_request": over(lambda b: b.timing.num_chunks),
        "missing_attributes": dict(Counter(m for b in breakdowns for m in b.missing)),
    }


def request_record(b: Breakdown) -> dict:
    """One request's numbers, as stored in the JSON."""
    t = b.timing
    return {
        "request_id": t.request_id, "class": t.request_class, "e2e_ms": t.e2e_ms,
        "ttft_ms": t.ttft_ms, "server_e2e_ms": b.server_e2e_ms, "compute_ms": b.compute_ms,
        "queue_ms": b.queue_ms, "transfer_ms": b.transfer_ms, "transfer_bytes": b.transfer_bytes,
        "other_ms": b.other_ms, "overhead_fraction": b.overhead_fraction,
        "prompt_tokens": t.num_prompt_tokens, "cached_prompt_tokens": t.num_cached_prompt_tokens,
        "output_tokens": t.num_output_tokens, "chunks": t.num_chunks, "missing": b.missing,
    }  # fmt: skip
