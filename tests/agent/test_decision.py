import math

import pytest

from agent.decision import (
    REASON_AFFORDABLE,
    REASON_CACHED,
    REASON_NO_BUDGET,
    REASON_TIER_NOT_ALLOWED,
    REASON_UNLIKELY_IN_BUDGET,
    STOP_BUDGET_NEARLY_SPENT,
    STOP_COST_BUDGET,
    STOP_MAX_TOOL_CALLS,
    STOP_MODEL_ANSWERED,
    STOP_REDUNDANT_RESULTS,
    RunProgress,
    ToolDecision,
    ToolPolicy,
    decide_call,
    stop_reason,
)
from agent.latency import LatencyDistribution
from agent.tools import Tier, ToolSpec

SEARCH = ToolSpec(server_label="web", name="search")
LOOKUP = ToolSpec(server_label="kb", name="lookup")
INDEX = ToolSpec(server_label="kb", name="index")
P95_OF_100_MS = -100.0 * math.log(0.05)  # 299.57 ms


def _steady(ms: float, num_samples: int = 100) -> LatencyDistribution:
    distribution = LatencyDistribution(prior_ms=ms)
    for _ in range(num_samples):
        distribution.observe(ms)
    return distribution


def test_slow_tool_is_called_when_the_budget_clearly_affords_it():
    # available = 1000 - 100 * 1.2 = 880 ms; P = 1 - exp(-8.8).
    decision = decide_call(
        SEARCH, Tier.SLOW, LatencyDistribution(prior_ms=100.0), 1000.0, 100.0, ToolPolicy()
    )
    assert decision.call
    assert decision.reason == REASON_AFFORDABLE
    assert decision.probability == pytest.approx(1.0 - math.exp(-8.8))
    assert decision.timeout_ms == pytest.approx(P95_OF_100_MS)
    assert decision.hedge_with is None


def test_same_odds_skip_a_slow_tool_but_call_a_fast_one_with_the_time_left_as_timeout():
    # available = 250 - 120 = 130 ms; P = 1 - exp(-1.3) = 0.727: below 0.8, above 0.5.
    distribution = LatencyDistribution(prior_ms=100.0)
    slow = decide_call(SEARCH, Tier.SLOW, distribution, 250.0, 100.0, ToolPolicy())
    assert slow == ToolDecision(
        call=False,
        timeout_ms=None,
        probability=pytest.approx(1.0 - math.exp(-1.3)),
        reason=REASON_UNLIKELY_IN_BUDGET,
    )
    fast = decide_call(SEARCH, Tier.FAST, distribution, 250.0, 100.0, ToolPolicy())
    assert fast.call
    assert fast.timeout_ms == pytest.approx(130.0)


def test_call_is_made_exactly_at_the_required_probability():
    distribution = LatencyDistribution(prior_ms=100.0)
    for ms in (40.0, 60.0, 500.0):
        distribution.observe(ms)
    probability = distribution.probability_within(300.0 - 100.0 * 1.2)
    at = ToolPolicy(
        min_probability_by_tier={Tier.FAST: probability, Tier.SLOW: 1, Tier.WORKFLOW: 1}
    )
    above = ToolPolicy(
        min_probability_by_tier={
            Tier.FAST: math.nextafter(probability, 1.0),
            Tier.SLOW: 1.0,
            Tier.WORKFLOW: 1.0,
        }
    )
    assert decide_call(LOOKUP, Tier.FAST, distribution, 300.0, 100.0, at).call
    assert decide_call(LOOKUP, Tier.FAST, distribution, 300.0, 100.0, above).reason == (
        REASON_UNLIKELY_IN_BUDGET
    )


def test_tier_above_the_ceiling_is_skipped_however_affordable():
    decision = decide_call(
        SEARCH,
        Tier.SLOW,
        LatencyDistribution(prior_ms=1.0),
        math.inf,
        0.0,
        ToolPolicy(),
        max_tier=Tier.FAST,
    )
    assert not decision.call
    assert decision.reason == REASON_TIER_NOT_ALLOWED


def test_no_time_after_the_answer_skips_the_call():
    decision = decide_call(
        LOOKUP, Tier.FAST, LatencyDistribution(prior_ms=1.0), 120.0, 100.0, ToolPolicy()
    )
    assert decision == ToolDecision(
        call=False, timeout_ms=None, probability=0.0, reason=REASON_NO_BUDGET
    )


def test_cached_tier_is_called_even_with_no_time_left():
    decision = decide_call(
        LOOKUP, Tier.CACHED, LatencyDistribution(prior_ms=100.0), 0.0, 100.0, ToolPolicy()
    )
    assert decision.call
    assert decision.reason == REASON_CACHED
    assert decision.timeout_ms == pytest.approx(P95_OF_100_MS)


def test_unbounded_budget_calls_with_the_quantile_as_timeout():
    decision = decide_call(
        SEARCH, Tier.WORKFLOW, LatencyDistribution(prior_ms=100.0), None, 100.0, ToolPolicy()
    )
    assert decision.call
    assert decision.probability == 1.0
    assert decision.timeout_ms == pytest.approx(P95_OF_100_MS)


def test_high_variance_call_is_hedged_with_a_faster_tool():
    alternatives = [(LOOKUP, Tier.FAST, LatencyDistribution(prior_ms=20.0))]
    # The prior alone has CoV 1: at the hedge threshold.
    decision = decide_call(
        SEARCH,
        Tier.SLOW,
        LatencyDistribution(prior_ms=300.0),
        2000.0,
        100.0,
        ToolPolicy(),
        faster_alternatives=alternatives,
    )
    assert decision.call
    assert decision.hedge_with == "kb.lookup"


def test_steady_call_is_not_hedged():
    alternatives = [(LOOKUP, Tier.FAST, LatencyDistribution(prior_ms=20.0))]
    decision = decide_call(
        SEARCH,
        Tier.SLOW,
        _steady(300.0),
        2000.0,
        100.0,
        ToolPolicy(),
        faster_alternatives=alternatives,
    )
    assert decision.call
    assert decision.hedge_with is None


def test_hedge_takes_the_first_lower_tier_alternative_more_likely_in_time():
    alternatives = [
        (INDEX, Tier.SLOW, LatencyDistribution(prior_ms=1.0)),  # same tier: not faster
        (LOOKUP, Tier.FAST, LatencyDistribution(prior_ms=50_000.0)),  # less likely in time
        (ToolSpec(server_label="kb", name="memo"), Tier.FAST, _steady(10.0)),
        (ToolSpec(server_label="kb", name="other"), Tier.FAST, _steady(5.0)),
    ]
    decision = decide_call(
        SEARCH,
        Tier.SLOW,
        LatencyDistribution(prior_ms=300.0),
        2000.0,
        100.0,
        ToolPolicy(),
        faster_alternatives=alternatives,
    )
    assert decision.hedge_with == "kb.memo"


def test_policy_needs_a_probability_for_every_called_tier():
    with pytest.raises(ValueError):
        ToolPolicy(min_probability_by_tier={Tier.FAST: 0.5, Tier.SLOW: 0.8})
    assert ToolPolicy().required_probability(Tier.CACHED) == 0.0


def _progress(**changes) -> RunProgress:
    fields = {
        "num_tool_calls": 4,
        "max_tool_calls": 4,
        "remaining_ms": 100.0,
        "answer_ms": 100.0,
        "last_result_texts": ("same", "same"),
        "model_answered": True,
        "is_cost_exhausted": True,
    }
    fields.update(changes)
    return RunProgress(**fields)


def test_stop_reasons_apply_in_priority_order():
    policy = ToolPolicy()
    assert stop_reason(_progress(), policy) == STOP_MODEL_ANSWERED
    assert stop_reason(_progress(model_answered=False), policy) == STOP_MAX_TOOL_CALLS
    assert stop_reason(_progress(model_answered=False, max_tool_calls=None), policy) == (
        STOP_BUDGET_NEARLY_SPENT
    )
    room = {"model_answered": False, "max_tool_calls": None, "remaining_ms": 120.0}
    assert stop_reason(_progress(**room), policy) == STOP_COST_BUDGET
    assert stop_reason(_progress(**room, is_cost_exhausted=False), policy) == (
        STOP_REDUNDANT_RESULTS
    )
    assert (
        stop_reason(
            _progress(**room, is_cost_exhausted=False, last_result_texts=("same", "new")), policy
        )
        is None
    )


def test_budget_nearly_spent_below_the_answer_with_its_margin():
    policy = ToolPolicy()
    base = {"model_answered": False, "max_tool_calls": None, "is_cost_exhausted": False}
    base["last_result_texts"] = ()
    assert stop_reason(_progress(**base, remaining_ms=119.9), policy) == STOP_BUDGET_NEARLY_SPENT
    assert stop_reason(_progress(**base, remaining_ms=120.0), policy) is None
    assert stop_reason(_progress(**base, remaining_ms=None), policy) is None
    assert stop_reason(_progress(**base, remaining_ms=math.inf), policy) is None


def test_only_the_last_two_results_count_as_redundant():
    policy = ToolPolicy()
    base = {"model_answered": False, "max_tool_calls": 10, "remaining_ms": None}
    base["is_cost_exhausted"] = False
    assert stop_reason(_progress(**base, last_result_texts=("a", "b", "a")), policy) is None
    assert stop_reason(_progress(**base, last_result_texts=("a",)), policy) is None
    assert stop_reason(_progress(**base, last_result_texts=("b", "a", "a")), policy) == (
        STOP_REDUNDANT_RESULTS
    )
