"""The questions the run answers, layout against layout (all from the same run):

1. text TTFT: p90 TTFT of text requests on the SLO layout vs the colocated baseline, at the
   highest swept rate where the baseline still attains 90 % (the lowest rate when it never does);
2. goodput ratio: goodput(SLO layout) / goodput(baseline);
3. overload: at `overload_factor` x the base rate, the SLO layout's admitted requests attain
   >= 90 % and every rejection arrives within REJECT_LATENCY_TARGET_MS.

Inputs are the `layouts` section of results.json: layout -> {"sweep": [point, ...],
"overload": point | None, "goodput": rate | None}, where a point has "rate", "summary" and
"by_kind".
"""

from __future__ import annotations

from scheduler.slo import GOODPUT_ATTAINMENT

BASELINE = "colocated-fcfs"
CANDIDATE = "disagg-slo"
REJECT_LATENCY_TARGET_MS = 50.0


def _text_ttft_p90(point: dict) -> float | None:
    text = point["by_kind"].get("text")
    return text["ttft_ms"]["p90"] if text else None


def text_ttft(layouts: dict, baseline: str = BASELINE, candidate: str = CANDIDATE) -> dict | None:
    if baseline not in layouts or candidate not in layouts:
        return None
    base_sweep = {point["rate"]: point for point in layouts[baseline]["sweep"]}
    cand_sweep = {point["rate"]: point for point in layouts[candidate]["sweep"]}
    rates = sorted(set(base_sweep) & set(cand_sweep))
    if not rates:
        return None
    attaining = [
        r for r in rates if (base_sweep[r]["summary"]["attainment"] or 0) >= GOODPUT_ATTAINMENT
    ]
    rate = max(attaining) if attaining else min(rates)
    base, cand = _text_ttft_p90(base_sweep[rate]), _text_ttft_p90(cand_sweep[rate])
    return {
        "rate": rate,
        "baseline_attains": bool(attaining),
        "baseline": baseline,
        "candidate": candidate,
        "baseline_p90_ms": base,
        "candidate_p90_ms": cand,
        "candidate_over_baseline": cand / base if base and cand is not None else None,
    }


def goodput_ratio(
    layouts: dict, baseline: str = BASELINE, candidate: str = CANDIDATE
) -> dict | None:
    if baseline not in layouts or candidate not in layouts:
        return None
    base = layouts.get(baseline, {}).get("goodput")
    cand = layouts.get(candidate, {}).get("goodput")
    return {
        "baseline": baseline,
        "candidate": candidate,
        "baseline_goodput": base,
        "candidate_goodput": cand,
        "ratio": cand / base if base and cand is not None else None,
    }


def overload_check(layouts: dict, layout: str = CANDIDATE) -> dict | None:
    point = layouts.get(layout, {}).get("overload")
    if point is None:
        return None
    summary = point["summary"]
    admitted = summary["admitted_attainment"]
    reject = summary["reject_ms"]
    rejections_fast = reject["max"] is None or reject["max"] < REJECT_LATENCY_TARGET_MS
    return {
        "layout": layout,
        "rate": point["rate"],
        "num_requests": summary["num_requests"],
        "num_rejected": summary["num_rejected"],
        "num_failed": summary.get("num_failed", 0) + summary.get("num_timeout", 0),
        "error_codes": summary.get("error_codes", []),
        "admitted_attainment": admitted,
        "admitted_attains": admitted is not None and admitted >= GOODPUT_ATTAINMENT,
        "reject_ms_p99": reject["p99"],
        "reject_ms_max": reject["max"],
        "rejections_fast": rejections_fast,
        "passed": admitted is not None and admitted >= GOODPUT_ATTAINMENT and rejections_fast,
    }


def compare(layouts: dict) -> dict:
    return {
        "text_ttft": text_ttft(layouts),
        "goodput": goodput_ratio(layouts),
        "overload": overload_check(layouts),
    }
