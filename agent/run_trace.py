"""One trace per agent run: every model call and tool call, with their times, and the
controller's decisions (what it skipped, why it stopped, where it routed, how it degraded).

Times are ms since the run started. A model call's queue, compute and transfer times come from
the scheduler's trace of its request, read when the run ends (`ModelSpan.breakdown`); the
run's cost is the engine time they add up to.

    {"run_id", "budget_ms", "status", "stop_reason", "ftr_ms", "e2e_ms",
     "model_calls": [{"request_id", "model", "kind", "start_ms", "end_ms", "first_token_ms",
                      "prompt_tokens", "cached_tokens", "output_tokens",
                      "queue_ms", "compute_ms", "transfer_ms"}],
     "tool_calls": [{"call_id", "tool", "arguments", "turn", "start_ms", "end_ms",
                     "latency_ms", "tier", "is_cached", "is_timed_out", "error", "decision",
                     "probability"}],
     "decisions": [{"at_ms", "what", ...}]}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ModelSpan:
    request_id: str
    model: str
    kind: str  # "tools" (may call tools), "answer" (tool_choice none) or "prefill" (warm-up)
    start_ms: float
    end_ms: float | None = None
    first_token_ms: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    queue_ms: float | None = None  # from the scheduler's trace, when it could be read
    compute_ms: float | None = None
    transfer_ms: float | None = None


@dataclass
class ToolSpan:
    call_id: str
    tool: str  # ToolSpec.key: server_label.name
    arguments: str
    start_ms: float
    tier: int
    decision: str  # decision.py's reason: why it was called (or skipped)
    probability: float
    turn: int  # which of the run's tool turns wrote it (0 first): one turn's calls run together
    end_ms: float | None = None
    latency_ms: float | None = None
    is_cached: bool = False
    is_timed_out: bool = False
    error: str | None = None
    hedged_with: str | None = None  # a faster tool started with the same arguments
    hedge_won: bool = False  # the result is the hedge's


@dataclass
class RunTrace:
    run_id: str
    budget_ms: float | None
    model_calls: list[ModelSpan] = field(default_factory=list)
    tool_calls: list[ToolSpan] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    status: str = "in_progress"
    stop_reason: str | None = None
    ftr_ms: float | None = None  # the final answer's first token
    e2e_ms: float | None = None

    def decide(self, at_ms: float, what: str, **details) -> None:
        self.decisions.append({"at_ms": round(at_ms, 3), "what": what, **details})

    @property
    def engine_s(self) -> float:
        """Engine time the run used (its model calls' compute), in seconds."""
        return sum(span.compute_ms or 0.0 for span in self.model_calls) / 1000.0

    @property
    def tool_ms_before_ftr(self) -> float:
        """Wall time before the first answer token during which at least one tool ran."""
        end = self.ftr_ms if self.ftr_ms is not None else self.e2e_ms or 0.0
        intervals = sorted(
            (span.start_ms, min(span.end_ms, end))
            for span in self.tool_calls
            if span.end_ms is not None and not span.is_cached and span.start_ms < end
        )
        total, reach = 0.0, 0.0
        for start, stop in intervals:
            start = max(start, reach)
            if stop > start:
                total += stop - start
                reach = stop
        return total

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "budget_ms": self.budget_ms,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "ftr_ms": self.ftr_ms,
            "e2e_ms": self.e2e_ms,
            "engine_s": self.engine_s,
            "tool_ms_before_ftr": self.tool_ms_before_ftr,
            "model_calls": [asdict(span) for span in self.model_calls],
            "tool_calls": [asdict(span) for span in self.tool_calls],
            "decisions": self.decisions,
        }
