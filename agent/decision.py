"""Whether to call a tool the model asked for, and when to stop calling tools (seed 001
§8.1-§8.3, notes/agents.md §7.2).

The call/skip rule. The answer still has to be written after the tool returns, so the time a
tool may take is what remains less the answer's forecast, with a margin:

    available = remaining - answer_ms * answer_margin

A tool is called when P(its latency <= available) (latency.py) reaches its tier's required
probability: a slow tool needs the budget's clear leave, a fast one only even odds, a cached
one is used freely. A tier above the degradation level's ceiling (degradation.py) is skipped.
A called tool gets a hard timeout at a high quantile of its latency, cut to the available time.
When its latency varies widely (CoV at least hedge_min_cov; Sutradhara sees CoV above 100 %),
a lower-tier alternative that is more likely to finish in time is started alongside it.

Early exit. Tool use stops at the first of these, in this order: the model answered; the call
count is spent; the answer alone would use up what remains; the cost budget is spent; the last
two results said the same thing (redundant evidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.latency import LatencyDistribution
from agent.tools import Tier, ToolSpec

# Why a tool was called or skipped (ToolDecision.reason).
REASON_CACHED = "cached"  # tier 0: called whatever the budget
REASON_AFFORDABLE = "affordable"  # likely enough to return within the available time
REASON_UNLIKELY_IN_BUDGET = "unlikely_in_budget"  # not likely enough
REASON_TIER_NOT_ALLOWED = "tier_not_allowed"  # above the ceiling of the degradation level
REASON_NO_BUDGET = "no_budget"  # no time left once the answer is provided for

# Why tool use stops (stop_reason), in priority order.
STOP_MODEL_ANSWERED = "model_answered"
STOP_MAX_TOOL_CALLS = "max_tool_calls"
STOP_BUDGET_NEARLY_SPENT = "budget_nearly_spent"
STOP_COST_BUDGET = "cost_budget"
STOP_REDUNDANT_RESULTS = "redundant_results"


def _default_min_probability_by_tier() -> dict[Tier, float]:
    return {Tier.FAST: 0.5, Tier.SLOW: 0.8, Tier.WORKFLOW: 0.95}


@dataclass(frozen=True)
class ToolPolicy:
    # The probability of returning within the available time each tier needs to be called
    # (tier 0 is always called). Not mutated after construction.
    min_probability_by_tier: dict[Tier, float] = field(
        default_factory=_default_min_probability_by_tier
    )
    timeout_quantile: float = 0.95  # the hard timeout: this quantile of the tool's latency
    hedge_min_cov: float = 1.0  # hedge a call whose latency's CoV is at least this
    answer_margin: float = 1.2  # the answer's forecast is scaled by this before it is reserved

    def __post_init__(self) -> None:
        for tier in (Tier.FAST, Tier.SLOW, Tier.WORKFLOW):
            probability = self.min_probability_by_tier.get(tier)
            if probability is None or not 0.0 <= probability <= 1.0:
                raise ValueError(f"min_probability_by_tier[{tier.name}] must be in [0, 1]")
        if not 0.0 < self.timeout_quantile < 1.0:
            raise ValueError(f"timeout_quantile must be in (0, 1), got {self.timeout_quantile}")

    def required_probability(self, tier: Tier) -> float:
        return 0.0 if tier == Tier.CACHED else self.min_probability_by_tier[tier]


@dataclass(frozen=True)
class ToolDecision:
    call: bool
    timeout_ms: float | None  # None when not called
    probability: float  # P(latency <= available time); 1.0 when unbounded
    reason: str  # one of the REASON_* constants
    hedge_with: str | None = None  # the ToolSpec.key of the alternative started alongside


def available_ms(remaining_ms: float | None, answer_ms: float, policy: ToolPolicy) -> float:
    """Time a tool may take and still leave the answer time to be written; inf if unbounded."""
    if remaining_ms is None or math.isinf(remaining_ms):
        return math.inf
    return remaining_ms - answer_ms * policy.answer_margin


def decide_call(
    spec: ToolSpec,
    tier: Tier,
    distribution: LatencyDistribution,
    remaining_ms: float | None,
    answer_ms: float,
    policy: ToolPolicy,
    max_tier: Tier = Tier.WORKFLOW,
    faster_alternatives: Sequence[tuple[ToolSpec, Tier, LatencyDistribution]] = (),
) -> ToolDecision:
    """Call or skip `spec` (its `tier` as ToolLatencies.tier_of says). remaining_ms None or inf
    means an unbounded budget. faster_alternatives are in the caller's order of preference."""
    available = available_ms(remaining_ms, answer_ms, policy)
    probability = distribution.probability_within(available) if available > 0 else 0.0
    if tier > max_tier:
        return ToolDecision(
            call=False, timeout_ms=None, probability=probability, reason=REASON_TIER_NOT_ALLOWED
        )
    quantile_ms = distribution.quantile(policy.timeout_quantile)
    if tier == Tier.CACHED:
        # A local lookup: its own timeout only, so a late budget does not cut it to nothing.
        return ToolDecision(
            call=True, timeout_ms=quantile_ms, probability=probability, reason=REASON_CACHED
        )
    if available <= 0:
        return ToolDecision(call=False, timeout_ms=None, probability=0.0, reason=REASON_NO_BUDGET)
    if probability < policy.required_probability(tier):
        return ToolDecision(
            call=False,
            timeout_ms=None,
            probability=probability,
            reason=REASON_UNLIKELY_IN_BUDGET,
        )
    hedge_with = None
    if distribution.cov >= policy.hedge_min_cov:
        hedge_with = _hedge(tier, probability, available, faster_alternatives)
    return ToolDecision(
        call=True,
        timeout_ms=min(quantile_ms, available),
        probability=probability,
        reason=REASON_AFFORDABLE,
        hedge_with=hedge_with,
    )


def _hedge(
    tier: Tier,
    probability: float,
    available: float,
    alternatives: Sequence[tuple[ToolSpec, Tier, LatencyDistribution]],
) -> str | None:
    """The first alternative of a lower tier more likely than the call to finish in time."""
    for alternative, alternative_tier, alternative_distribution in alternatives:
        if (
            alternative_tier < tier
            and alternative_distribution.probability_within(available) > probability
        ):
            return alternative.key
    return None


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands after its latest step, as stop_reason needs it."""

    num_tool_calls: int
    max_tool_calls: int | None  # None: no cap
    remaining_ms: float | None  # None or inf: unbounded
    answer_ms: float  # forecast of writing the answer from here
    last_result_texts: tuple[str, ...] = ()  # canonical content of each result so far, in order
    model_answered: bool = False  # the latest model step produced an answer, no tool calls
    is_cost_exhausted: bool = False


def stop_reason(progress: RunProgress, policy: ToolPolicy) -> str | None:
    """The first STOP_* reason that holds (see the module docstring), or None: keep going."""
    if progress.model_answered:
        return STOP_MODEL_ANSWERED
    if progress.max_tool_calls is not None and progress.num_tool_calls >= progress.max_tool_calls:
        return STOP_MAX_TOOL_CALLS
    remaining_ms = progress.remaining_ms
    if remaining_ms is not None and remaining_ms < progress.answer_ms * policy.answer_margin:
        return STOP_BUDGET_NEARLY_SPENT
    if progress.is_cost_exhausted:
        return STOP_COST_BUDGET
    texts = progress.last_result_texts
    if len(texts) >= 2 and texts[-1] == texts[-2]:
        return STOP_REDUNDANT_RESULTS
    return None
