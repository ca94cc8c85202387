"""Which model runs a run's next step (seed 001 §5.3, §6; notes/agents.md §7.5: the MixLLM /
RouteLLM shape).

Each candidate is scored

    score = quality * q - cost_per_s * cost_s - latency_per_s * latency_s  (+ stickiness if current)

Re-prefill is not a separate term: cost_ms and predicted_latency_ms must already count the
prefill of the prompt tokens the candidate's workers do not hold (num_prompt_tokens less
num_cached_tokens). The scheduler's forecast does (scheduler/forecast.py skips the prefix its
workers hold), so a weaker model with a hot prefix can beat a stronger cold one, and cache
affinity is part of the score rather than an afterthought (seed 001 §7.3). The stickiness
bonus keeps a session on its model unless another is clearly better, since switching also
throws away the session's paused KV. Ties go to the current model, then to the first name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Why a model was chosen (RoutingDecision.reason).
ROUTE_ONLY_CANDIDATE = "only_candidate"
ROUTE_STAYED = "stayed"  # the current model scored best (its stickiness included)
ROUTE_SWITCHED = "switched"  # another candidate beat the current model
ROUTE_BEST_SCORE = "best_score"  # no current model among the candidates


@dataclass(frozen=True)
class ModelCandidate:
    name: str
    quality: float  # a prior in [0, 1] from the cluster config
    cost_ms: float  # profiled compute of this call on this model, uncached prompt only
    predicted_latency_ms: float  # the scheduler's forecast: queue and uncached prefill included
    num_prompt_tokens: int
    num_cached_tokens: int  # prompt prefix already held on its workers

    @property
    def num_uncached_tokens(self) -> int:
        return self.num_prompt_tokens - self.num_cached_tokens


@dataclass(frozen=True)
class RoutingWeights:
    quality: float = 1.0
    cost_per_s: float = 0.1  # score lost per second of compute
    latency_per_s: float = 0.5  # score lost per second of predicted latency
    stickiness: float = 0.2  # bonus of the model the session is on


@dataclass(frozen=True)
class RoutingDecision:
    model: str
    scores: dict[str, float]  # by candidate name, stickiness included
    reason: str  # one of the ROUTE_* constants


def score(candidate: ModelCandidate, weights: RoutingWeights, is_current: bool) -> float:
    value = (
        weights.quality * candidate.quality
        - weights.cost_per_s * candidate.cost_ms / 1000.0
        - weights.latency_per_s * candidate.predicted_latency_ms / 1000.0
    )
    return value + weights.stickiness if is_current else value


def choose_model(
    candidates: Sequence[ModelCandidate],
    current: str | None,
    weights: RoutingWeights | None = None,
) -> RoutingDecision:
    if not candidates:
        raise ValueError("no candidate models")
    names = [candidate.name for candidate in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names repeat: {names}")
    weights = weights or RoutingWeights()
    scores = {
        candidate.name: score(candidate, weights, candidate.name == current)
        for candidate in candidates
    }
    chosen = min(names, key=lambda name: (-scores[name], name != current, name))
    if len(candidates) == 1:
        reason = ROUTE_ONLY_CANDIDATE
    elif current not in scores:
        reason = ROUTE_BEST_SCORE
    else:
        reason = ROUTE_STAYED if chosen == current else ROUTE_SWITCHED
    return RoutingDecision(model=chosen, scores=scores, reason=reason)
