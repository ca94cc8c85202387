import pytest

from agent.routing import (
    ROUTE_BEST_SCORE,
    ROUTE_ONLY_CANDIDATE,
    ROUTE_STAYED,
    ROUTE_SWITCHED,
    ModelCandidate,
    RoutingWeights,
    choose_model,
    score,
)


def _candidate(name: str, quality: float, latency_ms: float = 1000.0, cost_ms: float = 500.0):
    return ModelCandidate(
        name=name,
        quality=quality,
        cost_ms=cost_ms,
        predicted_latency_ms=latency_ms,
        num_prompt_tokens=4000,
        num_cached_tokens=0,
    )


def test_score_weighs_quality_cost_latency_and_stickiness():
    candidate = _candidate("small", quality=0.7, latency_ms=1000.0, cost_ms=500.0)
    # 0.7 - 0.1 * 0.5 s - 0.5 * 1.0 s
    assert score(candidate, RoutingWeights(), is_current=False) == pytest.approx(0.15)
    assert score(candidate, RoutingWeights(), is_current=True) == pytest.approx(0.35)


def test_session_stays_on_its_model_when_another_is_only_slightly_better():
    decision = choose_model([_candidate("small", 0.7), _candidate("large", 0.8)], current="small")
    assert decision.model == "small"
    assert decision.reason == ROUTE_STAYED
    assert decision.scores == {"small": pytest.approx(0.35), "large": pytest.approx(0.25)}


def test_session_switches_when_another_model_is_clearly_better():
    decision = choose_model([_candidate("small", 0.7), _candidate("large", 0.95)], current="small")
    assert decision.model == "large"
    assert decision.reason == ROUTE_SWITCHED


def test_hot_prefix_on_a_weaker_model_beats_a_cold_stronger_one():
    # The cold model must re-prefill the whole prompt: its forecast is 800 ms longer.
    hot = _candidate("small", quality=0.7, latency_ms=400.0)
    cold = _candidate("large", quality=0.8, latency_ms=1200.0)
    decision = choose_model([cold, hot], current=None)
    assert decision.model == "small"
    assert decision.reason == ROUTE_BEST_SCORE


def test_ties_go_to_the_current_model_then_to_the_first_name():
    no_stickiness = RoutingWeights(stickiness=0.0)
    same = [_candidate("b", 0.5), _candidate("a", 0.5), _candidate("c", 0.5)]
    assert choose_model(same, current="c", weights=no_stickiness).model == "c"
    assert choose_model(same, current=None, weights=no_stickiness).model == "a"
    assert choose_model(same, current="gone", weights=no_stickiness).model == "a"


def test_single_candidate_is_chosen_whatever_its_score():
    decision = choose_model([_candidate("only", 0.0, latency_ms=60_000.0)], current="other")
    assert decision.model == "only"
    assert decision.reason == ROUTE_ONLY_CANDIDATE


def test_no_candidates_or_repeated_names_are_refused():
    with pytest.raises(ValueError):
        choose_model([], current=None)
    with pytest.raises(ValueError):
        choose_model([_candidate("a", 0.5), _candidate("a", 0.6)], current=None)


def test_uncached_tokens_are_the_prompt_less_the_held_prefix():
    candidate = ModelCandidate(
        name="m",
        quality=0.5,
        cost_ms=1.0,
        predicted_latency_ms=1.0,
        num_prompt_tokens=4000,
        num_cached_tokens=3000,
    )
    assert candidate.num_uncached_tokens == 1000
