"""SLO targets and what attaining them means, in one place for the scheduler and the benchmark.

A request attains its SLO when its time to first token is within the TTFT target and its time
per output token (the mean gap between tokens after the first: (e2e - ttft) / (tokens - 1)) is
within the TPOT target. Goodput is the highest request rate at which at least 90 % of the
requests attain (DistServe, HydraInfer); a rejected request does not attain.
"""

from __future__ import annotations

from dataclasses import dataclass

GOODPUT_ATTAINMENT = 0.9  # the share of requests that must attain for a rate to count


@dataclass(frozen=True)
class SloTargets:
    ttft_ms: float
    tpot_ms: float


def tpot_ms(ttft_ms: float, e2e_ms: float, num_tokens: int) -> float | None:
    """Mean time per output token after the first; None with fewer than two tokens."""
    if num_tokens < 2:
        return None
    return (e2e_ms - ttft_ms) / (num_tokens - 1)


def attains(targets: SloTargets, ttft_ms: float, tpot: float | None) -> bool:
    """Whether a finished request met both targets (a one-token request has no TPOT to miss)."""
    return ttft_ms <= targets.ttft_ms and (tpot is None or tpot <= targets.tpot_ms)
