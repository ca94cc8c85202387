"""Where a run's next call goes: the candidates' scores from the forecasts, the session's model
kept for its cache, and no model whose context cannot hold the conversation."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.degradation import Degradation
from agent.model_calls import CallForecast
from agent.routing import ROUTE_STAYED, ROUTE_SWITCHED, RoutingWeights
from agent.run_routing import route


@dataclass
class Conversation:
    """What routing reads of a run's conversation."""

    model: str = "big"
    num_tokens: int = 1000
    forecasts: dict[str, CallForecast] = field(default_factory=dict)
    context: dict[str, int] = field(default_factory=dict)  # model -> context length

    def forecast(self, model: str) -> CallForecast:
        return self.forecasts[model]

    def num_tokens_left(self, model: str) -> int:
        return self.context[model] - self.num_tokens

    def num_cached_tokens(self, model: str) -> int:
        return self.num_tokens if model == self.model else 0


SLOW = CallForecast(first_token_ms=500.0, per_output_token_ms=40.0, per_prompt_token_ms=2.0)
FAST = CallForecast(first_token_ms=50.0, per_output_token_ms=4.0, per_prompt_token_ms=0.2)
EQUAL = {"big": 0.5, "small": 0.5}


def conversation(**fields) -> Conversation:
    defaults = {"forecasts": {"big": SLOW, "small": FAST}, "context": {"big": 8192, "small": 8192}}
    return Conversation(**{**defaults, **fields})


def test_a_much_faster_model_of_equal_quality_takes_the_call():
    decision = route(("big", "small"), conversation(), Degradation.FULL, EQUAL,
                     RoutingWeights(), max_tokens=64)  # fmt: skip
    assert decision.model == "small" and decision.reason == ROUTE_SWITCHED
    # big: 0.5 - 0.1 * 2.56 - 0.5 * 3.02 + 0.2 (sticky, all cached); small, nothing cached:
    # 0.5 - 0.1 * (200 + 256) ms - 0.5 * (50 + 200 + 63 * 4) ms
    assert round(decision.scores["big"], 4) == round(0.5 - 0.256 - 1.51 + 0.2, 4)
    assert round(decision.scores["small"], 4) == round(0.5 - 0.0456 - 0.251, 4)


def test_the_session_model_stays_when_quality_outweighs_speed():
    quality = {"big": 0.9, "small": 0.3}
    decision = route(("big", "small"), conversation(), Degradation.FULL, quality,
                     RoutingWeights(quality=4.0), max_tokens=64)  # fmt: skip
    assert decision.model == "big" and decision.reason == ROUTE_STAYED


def test_a_model_whose_context_cannot_hold_the_conversation_is_no_candidate():
    short = conversation(context={"big": 8192, "small": 1024})
    decision = route(("big", "small"), short, Degradation.FULL, EQUAL, RoutingWeights(),
                     max_tokens=64, min_tokens_left=400)  # fmt: skip
    assert decision is None  # one candidate left: the session's model


def test_no_routing_once_the_budget_is_half_spent():
    decision = route(("big", "small"), conversation(), Degradation.FEWER_MODELS, EQUAL,
                     RoutingWeights(), max_tokens=64)  # fmt: skip
    assert decision is None
