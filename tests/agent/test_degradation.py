import pytest

from agent.degradation import (
    Degradation,
    DegradationThresholds,
    allows_new_images,
    allows_routing,
    level_for,
    max_output_tokens,
    max_tool_tier,
)
from agent.tools import Tier


@pytest.mark.parametrize(
    ("remaining_ms", "level"),
    [
        (1000.0, Degradation.FULL),
        (500.0, Degradation.FULL),  # at 50 %, not below
        (499.0, Degradation.FEWER_MODELS),
        (350.0, Degradation.FEWER_MODELS),
        (349.0, Degradation.NO_SPECULATIVE_TOOLS),
        (200.0, Degradation.NO_SPECULATIVE_TOOLS),
        (199.0, Degradation.SHORTER_OUTPUT),
        (100.0, Degradation.SHORTER_OUTPUT),
        (99.0, Degradation.TEXT_ONLY),
        (50.0, Degradation.TEXT_ONLY),  # the answer still just fits
        (49.0, Degradation.PARTIAL),
        (0.0, Degradation.PARTIAL),
    ],
)
def test_each_level_starts_below_its_threshold(remaining_ms, level):
    assert level_for(remaining_ms, budget_ms=1000.0, answer_ms=50.0) == level


def test_levels_only_rise_as_time_runs_out_and_visit_the_documented_order():
    levels = [
        level_for(float(remaining_ms), budget_ms=1000.0, answer_ms=50.0)
        for remaining_ms in range(1000, -1, -1)
    ]
    assert levels == sorted(levels)
    assert list(dict.fromkeys(levels)) == list(Degradation)


def test_answer_that_no_longer_fits_is_partial_at_any_fraction():
    assert level_for(900.0, budget_ms=1000.0, answer_ms=950.0) == Degradation.PARTIAL


def test_unbounded_budget_never_degrades():
    assert level_for(None, budget_ms=None, answer_ms=50.0) == Degradation.FULL
    assert level_for(0.0, budget_ms=float("inf"), answer_ms=50.0) == Degradation.FULL


def test_custom_thresholds_move_the_levels():
    thresholds = DegradationThresholds(
        fewer_models=0.9, no_speculative_tools=0.8, shorter_output=0.7, text_only=0.6
    )
    assert level_for(850.0, 1000.0, 0.0, thresholds) == Degradation.FEWER_MODELS
    assert level_for(650.0, 1000.0, 0.0, thresholds) == Degradation.SHORTER_OUTPUT
    with pytest.raises(ValueError):
        DegradationThresholds(fewer_models=0.2, no_speculative_tools=0.35)


def test_output_is_not_cut_before_shorter_output():
    tokens = max_output_tokens(Degradation.NO_SPECULATIVE_TOOLS, 512, 100.0, 50.0, 10.0)
    assert tokens == 512


def test_shorter_output_keeps_the_tokens_that_fit():
    # 100 ms to the first token, then 10 ms a token: 1 + (500 - 100) / 10 = 41 tokens.
    assert max_output_tokens(Degradation.SHORTER_OUTPUT, 512, 500.0, 100.0, 10.0) == 41
    assert max_output_tokens(Degradation.SHORTER_OUTPUT, 30, 500.0, 100.0, 10.0) == 30
    assert max_output_tokens(Degradation.PARTIAL, 512, 50.0, 100.0, 10.0) == 1
    assert max_output_tokens(Degradation.TEXT_ONLY, 512, None, 100.0, 10.0) == 512


@pytest.mark.parametrize(
    ("level", "routing", "tier", "images"),
    [
        (Degradation.FULL, True, Tier.WORKFLOW, True),
        (Degradation.FEWER_MODELS, False, Tier.WORKFLOW, True),
        (Degradation.NO_SPECULATIVE_TOOLS, False, Tier.FAST, True),
        (Degradation.SHORTER_OUTPUT, False, Tier.FAST, True),
        (Degradation.TEXT_ONLY, False, Tier.FAST, False),
        (Degradation.PARTIAL, False, Tier.CACHED, False),
    ],
)
def test_each_level_keeps_the_restrictions_of_the_ones_before(level, routing, tier, images):
    assert allows_routing(level) is routing
    assert max_tool_tier(level) == tier
    assert allows_new_images(level) is images
