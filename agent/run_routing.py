"""Where a run's next model call goes: the candidate models scored on quality (a prior from
config), compute cost, the scheduler's latency forecast (queue and uncached prefill included)
and the cached prefix on their workers (routing.py). Sticky by default: the model holding the
session's KV gets the stickiness bonus, and moving loses its cache, which the forecast counts
as prefill of the whole conversation."""

from __future__ import annotations

from agent.degradation import Degradation, allows_routing
from agent.model_calls import RunConversation
from agent.routing import ModelCandidate, RoutingDecision, RoutingWeights, choose_model

DEFAULT_QUALITY = 0.5


def route(
    candidate_models: tuple[str, ...],
    conversation: RunConversation,
    level: Degradation,
    quality: dict[str, float],
    weights: RoutingWeights,
    max_tokens: int,
    min_tokens_left: int = 0,
) -> RoutingDecision | None:
    """The model for the next call; None: stay where the session is (one candidate, or a
    degradation level that allows no routing). A model whose context has less than
    `min_tokens_left` past the conversation is no candidate."""
    if not allows_routing(level) or len(candidate_models) < 2:
        return None
    num_tokens = conversation.num_tokens
    fitting = [
        name
        for name in candidate_models
        if name == conversation.model or conversation.num_tokens_left(name) >= min_tokens_left
    ]
    if len(fitting) < 2:
        return None
    candidates = []
    for name in fitting:
        forecast = conversation.forecast(name)
        num_cached = min(conversation.num_cached_tokens(name), num_tokens)
        num_uncached = num_tokens - num_cached
        compute_ms = forecast.per_prompt_token_ms * num_uncached
        compute_ms += forecast.per_output_token_ms * max_tokens
        candidates.append(
            ModelCandidate(
                name=name,
                quality=quality.get(name, DEFAULT_QUALITY),
                cost_ms=compute_ms,
                predicted_latency_ms=forecast.total_ms(num_uncached, max_tokens),
                num_prompt_tokens=num_tokens,
                num_cached_tokens=num_cached,
            )
        )
    return choose_model(candidates, conversation.model, weights)
