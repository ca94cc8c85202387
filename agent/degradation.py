"""What a run gives up, in a fixed order, as its latency budget runs out (seed 001 §4.5).

The order is documented so that users see predictable behaviour, not a different shortcut each
time. Each level keeps every restriction of the levels before it:

    level                 applies when remaining is below     restriction
    FULL                  -                                   none
    FEWER_MODELS          50 % of the budget                  only the current (sticky) model
    NO_SPECULATIVE_TOOLS  35 %                                only tools of tier <= FAST
    SHORTER_OUTPUT        20 %                                the answer's max tokens cut to fit
    TEXT_ONLY             10 %                                no new images once images are encoded
    PARTIAL               the answer's own forecast           stop; the answer is marked incomplete

The level only falls as remaining time falls (monotone), so a run never regains what it gave up
while its time runs out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from agent.tools import Tier


class Degradation(IntEnum):
    FULL = 0
    FEWER_MODELS = 1
    NO_SPECULATIVE_TOOLS = 2
    SHORTER_OUTPUT = 3
    TEXT_ONLY = 4
    PARTIAL = 5


@dataclass(frozen=True)
class DegradationThresholds:
    """Fractions of the budget remaining below which each level applies."""

    fewer_models: float = 0.5
    no_speculative_tools: float = 0.35
    shorter_output: float = 0.2
    text_only: float = 0.1

    def __post_init__(self) -> None:
        if not (
            1.0 >= self.fewer_models >= self.no_speculative_tools >= self.shorter_output
            and self.shorter_output >= self.text_only >= 0.0
        ):
            raise ValueError(f"thresholds must fall in [0, 1] in the level order: {self}")


def level_for(
    remaining_ms: float | None,
    budget_ms: float | None,
    answer_ms: float,
    thresholds: DegradationThresholds | None = None,
) -> Degradation:
    """The level for what remains of a budget; FULL when unbounded (None or inf)."""
    if budget_ms is None or remaining_ms is None or math.isinf(budget_ms):
        return Degradation.FULL
    if remaining_ms < answer_ms:
        return Degradation.PARTIAL
    thresholds = thresholds or DegradationThresholds()
    fraction = remaining_ms / budget_ms if budget_ms > 0 else 0.0
    if fraction < thresholds.text_only:
        return Degradation.TEXT_ONLY
    if fraction < thresholds.shorter_output:
        return Degradation.SHORTER_OUTPUT
    if fraction < thresholds.no_speculative_tools:
        return Degradation.NO_SPECULATIVE_TOOLS
    if fraction < thresholds.fewer_models:
        return Degradation.FEWER_MODELS
    return Degradation.FULL


def max_output_tokens(
    level: Degradation,
    requested: int,
    remaining_ms: float | None,
    first_token_ms: float,
    tpot_ms: float,
) -> int:
    """The answer's max tokens: as requested below SHORTER_OUTPUT; from there the tokens that
    fit in what remains, n with first_token_ms + (n - 1) * tpot_ms <= remaining_ms, kept in
    [1, requested] (one token at least, so the answer is never empty)."""
    if level < Degradation.SHORTER_OUTPUT or remaining_ms is None or math.isinf(remaining_ms):
        return requested
    if tpot_ms <= 0:
        return requested
    num_fitting = 1 + math.floor((remaining_ms - first_token_ms) / tpot_ms)
    return max(1, min(requested, num_fitting))


def allows_routing(level: Degradation) -> bool:
    """Whether models other than the current one may be candidates."""
    return level < Degradation.FEWER_MODELS


def max_tool_tier(level: Degradation) -> Tier:
    """The highest tier that may be called; at PARTIAL only cached results, which cost nothing."""
    if level >= Degradation.PARTIAL:
        return Tier.CACHED
    if level >= Degradation.NO_SPECULATIVE_TOOLS:
        return Tier.FAST
    return Tier.WORKFLOW


def allows_new_images(level: Degradation) -> bool:
    """Whether the model may be sent images not yet encoded for this run."""
    return level < Degradation.TEXT_ONLY
