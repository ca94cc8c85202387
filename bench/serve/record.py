"""One request as the client saw it (and its trace), the unit every metric is computed from.

    status     ok         streamed to its last chunk
               rejected   RESOURCE_EXHAUSTED (admission control): reject_ms = send -> status
               failed     any other error status (error_code says which)
               timeout    still streaming when the point's drain deadline passed; cancelled

Times are ms on the client's monotonic clock from the moment the request was sent. TTFT is the
first chunk with tokens; e2e the last one; TPOT (scheduler/slo.py) = (e2e - TTFT) / (tokens - 1).
Inter-token latency (ITL): for each chunk after the first, its gap to the previous chunk divided
by the tokens it carries, one sample per token (a chunk is one engine step's tokens).

The server's side comes from the request's trace, read by scheduler/trace_breakdown.py and
kept as `trace_fields` (a dict, as stored in results.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from scheduler.slo import SloTargets, attains, tpot_ms
from scheduler.trace_breakdown import TraceBreakdown

STATUSES = ("ok", "rejected", "failed", "timeout")


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    layout: str
    point: str  # the sweep point: "rate=2" or "overload=12"
    rate: float  # requests/s the point was generated at
    index: int  # position in the point, in arrival order
    kind: str  # text, image, ocr, multi_image, video
    slo_class: str  # sand, pebble or rock: the targets below are this class's
    ttft_target_ms: float
    tpot_target_ms: float
    arrival_s: float  # scheduled send time from the point's start
    send_lag_ms: float  # actual send - scheduled send (a busy client shows up here)
    status: str
    num_images: int = 0
    max_image_pixels: int = 0
    max_tokens: int = 0
    reuse_of: int | None = None
    error_code: str | None = None  # the gRPC status name, or "HTTP 429"
    error_details: str = ""
    reject_ms: float | None = None  # send -> RESOURCE_EXHAUSTED
    retry_after_ms: float | None = None  # the server's hint, when it sent one
    chunk_ms: list[float] = field(default_factory=list)  # arrival of each chunk with tokens
    chunk_tokens: list[int] = field(default_factory=list)  # tokens in each of those chunks
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # usage, from the final chunk
    cached_prompt_tokens: int | None = None
    trace: dict | None = None  # trace_fields(...), when the trace could be read
    extra: dict = field(default_factory=dict)  # a trace row's own lengths, before clamping
    api: str = "grpc"  # what it was sent over: "grpc" or "http"

    @property
    def is_admitted(self) -> bool:
        return self.status != "rejected"

    @property
    def ttft_ms(self) -> float | None:
        return self.chunk_ms[0] if self.chunk_ms else None

    @property
    def e2e_ms(self) -> float | None:
        return self.chunk_ms[-1] if self.status == "ok" and self.chunk_ms else None

    @property
    def num_output_tokens(self) -> int:
        return sum(self.chunk_tokens)

    @property
    def tpot_ms(self) -> float | None:
        if self.e2e_ms is None:
            return None
        return tpot_ms(self.ttft_ms, self.e2e_ms, self.num_output_tokens)

    @property
    def itl_ms(self) -> list[float]:
        samples = []
        for i in range(1, len(self.chunk_ms)):
            gap = (self.chunk_ms[i] - self.chunk_ms[i - 1]) / self.chunk_tokens[i]
            samples += [gap] * self.chunk_tokens[i]
        return samples

    @property
    def attained(self) -> bool:
        """Met both targets; a rejected, failed or timed-out request never attains."""
        if self.status != "ok" or self.ttft_ms is None:
            return False
        targets = SloTargets(ttft_ms=self.ttft_target_ms, tpot_ms=self.tpot_target_ms)
        return attains(targets, self.ttft_ms, self.tpot_ms)

    @property
    def server_class(self) -> str | None:
        return (self.trace or {}).get("server_class")

    def as_dict(self) -> dict:
        """Every field and the derived metrics, as stored in results.json."""
        derived = {
            "ttft_ms": self.ttft_ms, "e2e_ms": self.e2e_ms, "tpot_ms": self.tpot_ms,
            "num_output_tokens": self.num_output_tokens, "attained": self.attained,
        }  # fmt: skip
        fields = asdict(self)
        fields["chunk_ms"] = [round(ms, 1) for ms in self.chunk_ms]  # 0.1 ms is plenty
        return {**fields, **derived}

    @classmethod
    def from_dict(cls, raw: dict) -> RequestRecord:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in names})


def trace_fields(state: str, split: TraceBreakdown) -> dict:
    """What a record keeps of its trace: the trace's last state and the figures the metrics
    read (per-stage queue and compute, transfers, cache skips, the server's class and the
    milestones to the first token, in ms from the ingress's arrival)."""
    return {
        "state": state,
        "queue_ms": split.queue_ms,
        "compute_ms": split.compute_ms,
        "transfer_ms": split.transfer_ms,
        "transfer_bytes": split.transfer_bytes,
        "num_decode_steps": split.num_decode_steps,
        "num_encode_skipped_images": split.num_encode_skipped_images,
        "num_redrives": split.num_redrives,
        "server_class": split.request_class,
        "admission": split.admission,
        "predicted_ttft_ms": split.predicted_ttft_ms,
        "scheduler_arrival_ms": split.scheduler_arrival_ms,
        "first_dispatch_ms": split.first_dispatch_ms,
        "server_ttft_ms": split.server_ttft_ms,
        "server_e2e_ms": split.server_e2e_ms,
    }
