"""Metrics over request records: latency percentiles, SLO attainment, cache hit rates, the
per-stage split from traces, and goodput over a sweep. Pure Python and numpy.

    attainment            attained / all requests (rejected, failed, timed out: not attained)
    admitted attainment   attained / requests not rejected
    prefix cache hit      sum cached_prompt_tokens / sum prompt_tokens   (requests with usage)
    embedding cache hit   sum encode_skipped images / sum images          (requests with traces)
    goodput               the highest swept rate whose attainment >= GOODPUT_ATTAINMENT (0.9)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from bench.common.stats import percentiles
from bench.serve.record import RequestRecord
from scheduler.slo import GOODPUT_ATTAINMENT
from scheduler.trace_breakdown import STAGES, TRANSFER_KINDS


def distribution(values: Iterable[float | None]) -> dict[str, float | None]:
    """n, mean, p50, p90, p99 of the values that are not None (the figures None when empty)."""
    present = [v for v in values if v is not None]
    return {"n": len(present), **percentiles(present, (50, 90, 99))}


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def attainment(records: Sequence[RequestRecord]) -> float | None:
    return ratio(sum(r.attained for r in records), len(records))


def admitted_attainment(records: Sequence[RequestRecord]) -> float | None:
    admitted = [r for r in records if r.is_admitted]
    return ratio(sum(r.attained for r in admitted), len(admitted))


def prefix_cache_hit_rate(records: Sequence[RequestRecord]) -> float | None:
    used = [r for r in records if r.prompt_tokens]
    return ratio(sum(r.cached_prompt_tokens or 0 for r in used), sum(r.prompt_tokens for r in used))


def embedding_cache_hit_rate(records: Sequence[RequestRecord]) -> float | None:
    traced = [r for r in records if r.trace is not None and r.num_images]
    skipped = sum(r.trace["num_encode_skipped_images"] for r in traced)
    return ratio(skipped, sum(r.num_images for r in traced))


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _stage_split(records: Sequence[RequestRecord]) -> dict:
    """Mean ms per stage over the requests whose trace shows that stage (a text request has no
    encode), mean transfer ms and bytes over the requests that transferred, and mean TTFT as
    the client and as the server saw it."""
    traced = [r.trace for r in records if r.trace is not None]
    both = [r for r in records if r.trace is not None and r.trace.get("server_ttft_ms") is not None]

    def mean_of(key: str, name: str) -> float | None:
        values = [t[key][name] for t in traced if name in t[key]]
        return float(np.mean(values)) if values else None

    return {
        "num_traced": len(traced),
        # TTFT from the client's send, and the milestones to the first token from the
        # ingress's arrival, over the same requests (scheduler/trace_breakdown.py).
        "ttft_ms": {
            "client": _mean([r.ttft_ms for r in both]),
            **{
                name: _mean([r.trace.get(f"{name}_ms") for r in both])
                for name in ("scheduler_arrival", "first_dispatch", "server_ttft")
            },
        },
        "queue_ms": {s: mean_of("queue_ms", s) for s in STAGES},
        "compute_ms": {s: mean_of("compute_ms", s) for s in STAGES},
        "transfer_ms": {k: mean_of("transfer_ms", k) for k in TRANSFER_KINDS},
        "transfer_bytes": {k: mean_of("transfer_bytes", k) for k in TRANSFER_KINDS},
        "num_redrives": sum(t["num_redrives"] for t in traced),
        "admissions": dict(Counter(t.get("admission") or "unknown" for t in traced)),
    }


def summarize(records: Sequence[RequestRecord], wall_s: float | None = None) -> dict:
    """Everything the report shows about one group of requests."""
    ok = [r for r in records if r.status == "ok"]
    rejected = [r for r in records if r.status == "rejected"]
    counts = {f"num_{s}": sum(r.status == s for r in records) for s in ("ok", "failed", "timeout")}
    output_tokens = sum(r.num_output_tokens for r in ok)
    return {
        "num_requests": len(records),
        **counts,
        "num_rejected": len(rejected),
        "attainment": attainment(records),
        "admitted_attainment": admitted_attainment(records),
        "ttft_ms": distribution(r.ttft_ms for r in ok),
        "tpot_ms": distribution(r.tpot_ms for r in ok),
        "itl_ms": distribution(gap for r in ok for gap in r.itl_ms),
        "e2e_ms": distribution(r.e2e_ms for r in ok),
        "reject_ms": {
            **distribution(r.reject_ms for r in rejected),
            "max": max((r.reject_ms for r in rejected), default=None),
        },  # fmt: skip
        "num_retry_after_hints": sum(r.retry_after_ms is not None for r in rejected),
        "prefix_cache_hit_rate": prefix_cache_hit_rate(ok),
        "embedding_cache_hit_rate": embedding_cache_hit_rate(ok),
        "stages": _stage_split(ok),
        "output_tokens": output_tokens,
        "output_tok_s": ratio(output_tokens, wall_s) if wall_s else None,
        "error_codes": sorted({r.error_code for r in records if r.error_code}),
        "send_lag_ms": distribution(r.send_lag_ms for r in records),
    }


def grouped(
    records: Sequence[RequestRecord], key: Callable[[RequestRecord], str], order: Sequence[str]
) -> dict[str, dict]:
    """summarize() per group, groups in `order` (those with requests only)."""
    groups: dict[str, list[RequestRecord]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    return {name: summarize(groups[name]) for name in order if name in groups}


def goodput(attainment_by_rate: dict[float, float | None]) -> float | None:
    """The highest rate with attainment >= GOODPUT_ATTAINMENT; None when none reaches it."""
    good = [
        rate for rate, a in attainment_by_rate.items() if a is not None and a >= GOODPUT_ATTAINMENT
    ]
    return max(good) if good else None


def class_mismatches(records: Sequence[RequestRecord]) -> int:
    """Requests whose trace reports another class than the harness computed."""
    return sum(1 for r in records if r.server_class and r.server_class != r.slo_class)
