"""The sweep points of a run: one per rate (and an overload point), each a fixed list of requests
with arrival times. Built once, before any cluster starts, and sent unchanged to every layout.

Common random numbers across points: every point draws its arrival gaps (at unit rate, then
scaled) and its requests' shapes (kinds, lengths, counts, reuse) from the same two seeds, so a
point at a higher rate sends the same sequence of requests, only closer together, and more of
them. Its content (words, pixels) comes from a seed of its own, so no point's images or text
repeat another's: caches do not carry over from one point to the next on the same cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bench.serve.arrivals import (
    gamma_arrivals,
    mean_rate,
    poisson_arrivals,
    rescaled_trace_arrivals,
    scaled_trace_arrivals,
)
from bench.serve.settings import BenchSettings
from bench.serve.trace_files import TraceRequest
from bench.serve.workload import BenchRequest, WorkloadBuilder

WARMUP_SEED = 2**31 - 1


@dataclass(frozen=True)
class SweepPoint:
    name: str  # "rate=2", "overload=24" or "trace"
    kind: str  # "sweep" or "overload"
    rate: float  # the rate the point was generated for (a trace: its mean rate)
    requests: list[BenchRequest]

    @property
    def offered_rate(self) -> float | None:
        """The mean rate of the drawn arrivals (a short point strays from `rate`)."""
        return mean_rate([r.arrival_s for r in self.requests])


def _rate_name(rate: float) -> str:
    return f"{rate:g}"


def _generators(settings: BenchSettings, number: int) -> tuple:
    """(arrivals, shape, content) generators of point `number`."""
    return (
        np.random.default_rng([settings.seed, 1]),
        np.random.default_rng([settings.seed, 2]),
        np.random.default_rng([settings.seed, 3, number]),
    )


def _arrivals(settings: BenchSettings, rate: float, count: int, rng) -> list[float]:
    if settings.arrival == "gamma":
        return gamma_arrivals(rate, count, settings.burstiness, rng)
    return poisson_arrivals(rate, count, rng)


def synthetic_points(settings: BenchSettings, builder: WorkloadBuilder) -> list[SweepPoint]:
    plan = [("sweep", rate, settings.duration_s) for rate in settings.rates]
    if settings.overload_rate is not None:
        duration = settings.overload_duration_s or settings.duration_s / 2
        plan.append(("overload", settings.overload_rate, duration))
    points = []
    for number, (kind, rate, duration) in enumerate(plan):
        arrival_rng, shape, content = _generators(settings, number)
        count = settings.num_requests or max(1, round(rate * duration))
        if kind == "overload" and settings.num_requests:
            count = round(settings.num_requests * settings.overload_factor)
        requests = builder.synthetic(_arrivals(settings, rate, count, arrival_rng), shape, content)
        name = f"rate={_rate_name(rate)}" if kind == "sweep" else f"overload={_rate_name(rate)}"
        points.append(SweepPoint(name=name, kind=kind, rate=rate, requests=requests))
    return points


def trace_points(
    settings: BenchSettings, builder: WorkloadBuilder, rows: list[TraceRequest]
) -> list[SweepPoint]:
    """With --time-scale: one point at the trace's own (scaled) times. Without: one point per
    rate, the trace's gaps rescaled to that mean rate."""
    times = [row.time_s for row in rows]
    if settings.time_scale is not None:
        arrivals = scaled_trace_arrivals(times, settings.time_scale)
        requests = builder.from_trace(rows, arrivals, _generators(settings, 0)[2])
        rate = mean_rate(arrivals) or 0.0
        name = f"trace x{settings.time_scale:g}"
        return [SweepPoint(name=name, kind="sweep", rate=rate, requests=requests)]
    points = []
    for number, rate in enumerate(settings.rates):
        content = _generators(settings, number)[2]
        requests = builder.from_trace(rows, rescaled_trace_arrivals(times, rate), content)
        name = f"rate={_rate_name(rate)}"
        points.append(SweepPoint(name=name, kind="sweep", rate=rate, requests=requests))
    return points


def warmup_requests(settings: BenchSettings, builder: WorkloadBuilder) -> list[BenchRequest]:
    """One request of each kind in the mix, with images no point uses."""
    shape = np.random.default_rng([settings.seed, WARMUP_SEED, 0])
    content = np.random.default_rng([settings.seed, WARMUP_SEED, 1])
    requests = []
    for kind in builder.spec.mix:
        spec = replace(builder.spec, mix={kind: 1.0}, reuse_fraction=0.0)
        only = WorkloadBuilder(
            spec=spec, limits=builder.limits, scheduler=builder.scheduler, text=builder.text
        )
        requests += only.synthetic([0.0], shape, content)
    return requests
