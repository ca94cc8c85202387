"""Where the time of one request went, read from its trace: engine compute, queueing, transfers,
and everything else (ingress, scheduler, Ray hops), all against the client's end-to-end time.

    client e2e (send -> last token)
    |-- compute   encode_done.compute_ms + first_token.compute_ms + decode_steps.compute_ms
    |-- queue     encode_done.queue_ms   + first_token.queue_ms   + decode_steps.queue_ms
    |-- transfer  embedding_transfer.ms  + kv_transfer.ms          (consumer's fetch + verify)
    `-- other     e2e - compute - queue - transfer

    overhead fraction = (e2e - compute) / e2e     (everything that is not the model running)

The trace's side comes from the one parser of traces (scheduler/trace_breakdown.py): a trace
attribute that is absent counts as 0 and is named in `missing`, so a report can say that its
compute or queue figures are incomplete. Pure Python: no Ray, no gRPC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common.stats import percentiles
from scheduler.trace_breakdown import STAGES, TRANSFER_KINDS, TraceBreakdown

POINTS = (50, 90)  # the percentiles a summary reports, next to the mean


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
    timing: RequestTiming  # the client's clock
    trace: TraceBreakdown  # the server's

    @property
    def missing(self) -> list[str]:
        """Trace attributes counted as 0: "first_token.compute_ms", ..."""
        return list(self.trace.missing)

    @property
    def e2e_ms(self) -> float:
        return self.timing.e2e_ms

    @property
    def total_compute_ms(self) -> float:
        return sum(self.trace.compute_ms.values())

    @property
    def total_queue_ms(self) -> float:
        return sum(self.trace.queue_ms.values())

    @property
    def total_transfer_ms(self) -> float:
        return sum(self.trace.transfer_ms.values())

    @property
    def other_ms(self) -> float:
        return self.e2e_ms - self.total_compute_ms - self.total_queue_ms - self.total_transfer_ms

    @property
    def outside_scheduler_ms(self) -> float:
        """Client -> ingress -> scheduler and the stream back: the part of `other` the trace's
        clock cannot see."""
        return self.e2e_ms - self.trace.server_e2e_ms

    @property
    def overhead_fraction(self) -> float:
        return (self.e2e_ms - self.total_compute_ms) / self.e2e_ms

    def kv_gbps(self) -> float | None:
        """KV handoff bandwidth of this request: bytes / fetch time, in 1e9 bytes per second."""
        ms, nbytes = self.trace.transfer_ms.get("kv", 0.0), self.trace.transfer_bytes.get("kv", 0)
        return nbytes / (ms * 1e6) if ms > 0 and nbytes > 0 else None


def class_summary(breakdowns: Sequence[Breakdown]) -> dict:
    """Percentiles over the requests of one class. Means of the parts add up to the mean e2e;
    percentiles of the parts do not add up to anything."""
    kv = [b.kv_gbps() for b in breakdowns]

    def over(get) -> dict:
        return percentiles([get(b) for b in breakdowns], POINTS)

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
        "compute_ms_by_stage": {
            s: over(lambda b, s=s: b.trace.compute_ms.get(s, 0.0)) for s in STAGES
        },
        "queue_ms_by_stage": {s: over(lambda b, s=s: b.trace.queue_ms.get(s, 0.0)) for s in STAGES},
        "transfer_ms_by_kind": {
            k: over(lambda b, k=k: b.trace.transfer_ms.get(k, 0.0)) for k in TRANSFER_KINDS
        },
        "outside_scheduler_ms": over(lambda b: b.outside_scheduler_ms),
        "kv_bytes": over(lambda b: b.trace.transfer_bytes.get("kv", 0)),
        "kv_handoff_gbps": percentiles(kv, POINTS),
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
        "request_id": t.request_id,
        "class": t.request_class,
        "e2e_ms": t.e2e_ms,
        "ttft_ms": t.ttft_ms,
        "server_e2e_ms": b.trace.server_e2e_ms,
        "compute_ms": b.trace.compute_ms,
        "queue_ms": b.trace.queue_ms,
        "transfer_ms": b.trace.transfer_ms,
        "transfer_bytes": b.trace.transfer_bytes,
        "other_ms": b.other_ms,
        "overhead_fraction": b.overhead_fraction,
        "prompt_tokens": t.num_prompt_tokens,
        "cached_prompt_tokens": t.num_cached_prompt_tokens,
        "output_tokens": t.num_output_tokens,
        "chunks": t.num_chunks,
        "missing": b.missing,
    }
