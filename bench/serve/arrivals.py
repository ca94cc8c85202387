"""When requests arrive: seconds from the start of a sweep point, non-decreasing, from 0.

    poisson   gaps ~ Exponential(mean 1 / rate)
    gamma     gaps ~ Gamma(shape 1 / cv², scale cv² / rate): the same mean rate, burstier when
              cv > 1 (cv = 1 is Poisson). cv is the gaps' coefficient of variation (std / mean);
              vLLM's `--burstiness b` is the shape, b = 1 / cv².
    trace     the trace's own times (times a scale), or its gaps rescaled to a target mean rate

The first request arrives at 0 in every process, so a point's wall time is its last arrival plus
the time to drain. Pure numpy; deterministic for a given generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROCESSES = ("poisson", "gamma", "trace")


def _from_gaps(gaps: np.ndarray) -> list[float]:
    """Arrival times with the first at 0: gaps[i] separates request i from request i + 1."""
    if len(gaps) == 0:
        return []
    return [0.0, *np.cumsum(gaps[:-1]).tolist()]


def poisson_arrivals(rate: float, num_requests: int, rng: np.random.Generator) -> list[float]:
    """`num_requests` Poisson arrivals at `rate` requests per second."""
    _check(rate, num_requests)
    return _from_gaps(rng.exponential(1.0 / rate, num_requests))


def gamma_arrivals(
    rate: float, num_requests: int, cv: float, rng: np.random.Generator
) -> list[float]:
    """Gamma-distributed gaps with mean 1 / rate and coefficient of variation `cv`."""
    _check(rate, num_requests)
    if cv <= 0:
        raise ValueError(f"burstiness (cv) must be > 0, got {cv}")
    shape = 1.0 / cv**2
    return _from_gaps(rng.gamma(shape, 1.0 / (rate * shape), num_requests))


def scaled_trace_arrivals(times_s: Sequence[float], time_scale: float) -> list[float]:
    """A trace's times from its first request, each multiplied by `time_scale` (0.5 replays
    the trace twice as fast)."""
    if time_scale <= 0:
        raise ValueError(f"time scale must be > 0, got {time_scale}")
    if not times_s:
        return []
    start = min(times_s)
    return sorted((t - start) * time_scale for t in times_s)


def rescaled_trace_arrivals(times_s: Sequence[float], rate: float) -> list[float]:
    """A trace's arrival pattern stretched or squeezed so that its mean rate is `rate`
    (HydraInfer's way of sweeping rates with a real trace): the mean rate of n arrivals is
    (n - 1) / span."""
    arrivals = scaled_trace_arrivals(times_s, 1.0)
    if len(arrivals) < 2 or arrivals[-1] == 0:
        return [0.0] * len(arrivals)
    return scaled_trace_arrivals(arrivals, (len(arrivals) - 1) / (arrivals[-1] * rate))


def mean_rate(arrivals: Sequence[float]) -> float | None:
    """Requests per second between the first and the last arrival."""
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return None
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def _check(rate: float, num_requests: int) -> None:
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    if num_requests < 0:
        raise ValueError(f"number of requests must be >= 0, got {num_requests}")
