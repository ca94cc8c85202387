"""How long each tool takes, learned online (notes/agents.md §7.2, Continuum-style).

Each tool keeps an empirical CDF of its last calls. Before it has many, a prior fills in: an
exponential distribution with the configured (or the tier's) expected latency as its mean,
counted as `prior_weight` pseudo-observations. The blended CDF

    F(x) = (w * (1 - exp(-x / prior_ms)) + #{samples <= x}) / (w + n)

is the prior alone with no samples and tends to the empirical CDF as samples come in. The
call/skip rule (decision.py) reads P(latency <= available time) from it, the timeout is one of
its quantiles, and its coefficient of variation decides hedging. The exponential prior is
chosen for its heavy enough tail: a tool nobody has timed is not assumed to be punctual.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from agent.tools import Tier, ToolSpec

DEFAULT_PRIOR_MS = 200.0  # a tool with no expected latency configured and no tier default


class LatencyDistribution:
    def __init__(self, prior_ms: float, prior_weight: float = 4.0, max_samples: int = 256) -> None:
        if not prior_ms > 0 or not math.isfinite(prior_ms):
            raise ValueError(f"prior_ms must be positive and finite, got {prior_ms}")
        if not prior_weight > 0:
            # With no weight and no samples the CDF would be undefined.
            raise ValueError(f"prior_weight must be positive, got {prior_weight}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        self.prior_ms = prior_ms
        self.prior_weight = prior_weight
        self.max_samples = max_samples
        self._recent: deque[float] = deque()  # arrival order, for forgetting the oldest
        self._sorted: list[float] = []  # the same samples, sorted, for the CDF

    def observe(self, ms: float) -> None:
        if not ms >= 0 or not math.isfinite(ms):
            raise ValueError(f"a latency must be non-negative and finite, got {ms}")
        if len(self._recent) == self.max_samples:
            oldest = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._recent.append(ms)
        bisect.insort(self._sorted, ms)

    @property
    def num_samples(self) -> int:
        return len(self._sorted)

    def probability_within(self, ms: float) -> float:
        """P(latency <= ms) under the blended CDF."""
        if ms < 0:
            return 0.0
        num_within = bisect.bisect_right(self._sorted, ms)
        prior_within = -math.expm1(-ms / self.prior_ms) if math.isfinite(ms) else 1.0
        return (self.prior_weight * prior_within + num_within) / (
            self.prior_weight + self.num_samples
        )

    def quantile(self, q: float) -> float:
        """The smallest x with F(x) >= q; with no samples exactly -prior_ms * ln(1 - q).

        F rises continuously (the prior) and jumps at each sample. Between two distinct sample
        values the number of samples counted is fixed, so the prior's inverse solves for x
        there; at a sample the jump may already reach q, and x is that sample.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile is in [0, 1], got {q}")
        target = q * (self.prior_weight + self.num_samples)
        num_counted = 0
        lower_ms = 0.0
        index = 0
        while index < self.num_samples:
            sample = self._sorted[index]
            x = max(lower_ms, self._prior_inverse((target - num_counted) / self.prior_weight))
            if x < sample:
                return x
            while index < self.num_samples and self._sorted[index] == sample:
                num_counted += 1
                index += 1
            lower_ms = sample
        return max(lower_ms, self._prior_inverse((target - num_counted) / self.prior_weight))

    @property
    def mean_ms(self) -> float:
        return (self.prior_weight * self.prior_ms + sum(self._sorted)) / (
            self.prior_weight + self.num_samples
        )

    @property
    def cov(self) -> float:
        """Coefficient of variation (std / mean) of the blend; the prior's own is 1."""
        mean = self.mean_ms
        # An exponential's second moment is 2 * mean^2.
        second_moment = (
            self.prior_weight * 2.0 * self.prior_ms**2 + sum(x * x for x in self._sorted)
        ) / (self.prior_weight + self.num_samples)
        return math.sqrt(max(0.0, second_moment - mean * mean)) / mean

    def _prior_inverse(self, p: float) -> float:
        if p <= 0.0:
            return 0.0
        if p >= 1.0:
            return math.inf
        return -self.prior_ms * math.log1p(-p)


class ToolLatencies:
    """The latency distribution of every tool seen, by ToolSpec.key, and the tier each tool is
    treated as (tools.py): the configured one, else one learned from its median latency."""

    def __init__(
        self,
        default_prior_ms_by_tier: dict[Tier, float] | None = None,
        fast_tier_max_ms: float = 100.0,
        default_prior_ms: float = DEFAULT_PRIOR_MS,
        prior_weight: float = 4.0,
        max_samples: int = 256,
    ) -> None:
        self.default_prior_ms_by_tier = dict(default_prior_ms_by_tier or {})
        self.fast_tier_max_ms = fast_tier_max_ms
        self.default_prior_ms = default_prior_ms
        self.prior_weight = prior_weight
        self.max_samples = max_samples
        self._distributions: dict[str, LatencyDistribution] = {}
        self._specs: dict[str, ToolSpec] = {}  # the latest spec seen, for its configured tier

    def for_tool(self, spec: ToolSpec) -> LatencyDistribution:
        self._specs[spec.key] = spec
        distribution = self._distributions.get(spec.key)
        if distribution is None:
            distribution = LatencyDistribution(
                prior_ms=self._prior_ms(spec),
                prior_weight=self.prior_weight,
                max_samples=self.max_samples,
            )
            self._distributions[spec.key] = distribution
        return distribution

    def observe(self, spec: ToolSpec, ms: float) -> None:
        self.for_tool(spec).observe(ms)

    def tier_of(self, spec: ToolSpec) -> Tier:
        """The configured tier; else FAST when the median latency is within fast_tier_max_ms,
        SLOW otherwise. CACHED and WORKFLOW are never learned: a cache is a property of the
        result (result_cache.py) and a workflow one of what the tool does, not of its speed."""
        if spec.settings.tier is not None:
            return spec.settings.tier
        median_ms = self.for_tool(spec).quantile(0.5)
        return Tier.FAST if median_ms <= self.fast_tier_max_ms else Tier.SLOW

    def snapshot(self) -> dict[str, dict]:
        """Per tool, for the cluster state: its samples, p50/p90/p99 and mean (ms), and tier."""
        return {
            key: {
                "num_samples": distribution.num_samples,
                "p50_ms": distribution.quantile(0.5),
                "p90_ms": distribution.quantile(0.9),
                "p99_ms": distribution.quantile(0.99),
                "mean_ms": distribution.mean_ms,
                "tier": self.tier_of(self._specs[key]).name,
            }
            for key, distribution in sorted(self._distributions.items())
        }

    def _prior_ms(self, spec: ToolSpec) -> float:
        settings = spec.settings
        if settings.expected_ms is not None:
            return settings.expected_ms
        if settings.tier is not None and settings.tier in self.default_prior_ms_by_tier:
            return self.default_prior_ms_by_tier[settings.tier]
        return self.default_prior_ms
