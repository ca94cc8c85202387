"""One run's latency budget and its ledger (seed 001 §4.2, §5.5: every action consumes from an
explicit budget).

The budget is wall-clock: what remains is the total less the time since the run started, so
actions running in parallel are not counted twice. Each model step and tool call is charged
with its forecast when it starts and settled with its actual duration when it ends; the
ledger (`charges`) goes to the trace, where forecast errors show which estimate was wrong.
An optional cost budget counts engine-seconds spent, apart from wall-clock time.

Time is passed in (`now_s`, seconds on the caller's clock), so the budget holds no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

KIND_MODEL = "model"  # a model step: prefill and decode of one assistant turn
KIND_TOOL = "tool"  # one tool call
KINDS = (KIND_MODEL, KIND_TOOL)


@dataclass(frozen=True)
class Charge:
    """One action in the ledger."""

    index: int  # its place in LatencyBudget.charges
    kind: str  # KIND_MODEL or KIND_TOOL
    name: str  # the model's name, or the tool's ToolSpec.key
    forecast_ms: float
    started_s: float
    actual_ms: float | None = None  # None until settled

    @property
    def is_settled(self) -> bool:
        return self.actual_ms is not None

    @property
    def forecast_error_ms(self) -> float | None:
        """Actual less forecast: positive when the action took longer than forecast."""
        return None if self.actual_ms is None else self.actual_ms - self.forecast_ms


class LatencyBudget:
    def __init__(
        self, total_ms: float | None, started_s: float, cost_budget_s: float | None = None
    ) -> None:
        if total_ms is not None and not total_ms >= 0:
            raise ValueError(f"total_ms must be non-negative or None, got {total_ms}")
        if cost_budget_s is not None and not cost_budget_s >= 0:
            raise ValueError(f"cost_budget_s must be non-negative or None, got {cost_budget_s}")
        self.total_ms = total_ms  # None: unbounded
        self.started_s = started_s
        self.cost_budget_s = cost_budget_s  # engine-seconds; None: unbounded
        self.cost_spent_s = 0.0
        self.charges: list[Charge] = []

    @property
    def is_bounded(self) -> bool:
        return self.total_ms is not None

    def elapsed_ms(self, now_s: float) -> float:
        return (now_s - self.started_s) * 1000.0

    def remaining_ms(self, now_s: float) -> float:
        """What is left, never below 0 (elapsed_ms shows an overrun); inf when unbounded."""
        if self.total_ms is None:
            return math.inf
        return max(0.0, self.total_ms - self.elapsed_ms(now_s))

    def charge(self, kind: str, name: str, forecast_ms: float, now_s: float) -> Charge:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        charge = Charge(
            index=len(self.charges),
            kind=kind,
            name=name,
            forecast_ms=forecast_ms,
            started_s=now_s,
        )
        self.charges.append(charge)
        return charge

    def settle(self, charge: Charge, actual_ms: float) -> Charge:
        """Record how long a charged action took; returns the settled charge."""
        if not 0 <= charge.index < len(self.charges) or self.charges[charge.index] != charge:
            raise ValueError(f"not a charge of this budget: {charge}")
        if charge.is_settled:
            raise ValueError(f"already settled: {charge}")
        settled = replace(charge, actual_ms=actual_ms)
        self.charges[charge.index] = settled
        return settled

    @property
    def num_tool_calls(self) -> int:
        return sum(1 for charge in self.charges if charge.kind == KIND_TOOL)

    @property
    def num_model_steps(self) -> int:
        return sum(1 for charge in self.charges if charge.kind == KIND_MODEL)

    def spend_cost(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"a cost is non-negative, got {seconds}")
        self.cost_spent_s += seconds

    @property
    def is_cost_exhausted(self) -> bool:
        return self.cost_budget_s is not None and self.cost_spent_s >= self.cost_budget_s
