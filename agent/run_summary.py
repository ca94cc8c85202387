"""What one finished run reports to the cluster's metrics and state (seed 001 §9): the ingress
that ran it sends one `RunSummary` to the control plane, which keeps the Prometheus series and
the per-class figures that cluster state shows (cluster/agent_metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.run_trace import RunTrace

REQUEST_CLASSES = ("text", "image", "images")  # no image, one, several (seed 001 §9)


@dataclass(frozen=True)
class RunSummary:
    request_class: str  # one of REQUEST_CLASSES
    status: str  # "completed", "incomplete", "failed" or "cancelled"
    ftr_ms: float | None  # first token of the final answer, from the call's arrival
    e2e_ms: float
    budget_ms: float | None
    num_tool_calls: int  # calls the model made that the controller answered (skips included)
    num_tool_cache_hits: int
    tool_ms_before_ftr: float  # wall time before FTR during which a tool ran
    num_prompt_tokens: int  # over the run's model calls
    num_cached_tokens: int  # of those, KV reused (paused KV or the prefix cache)
    num_model_calls: int
    engine_s: float  # compute of its model calls, from their traces

    @property
    def num_reprefilled_tokens(self) -> int:
        return self.num_prompt_tokens - self.num_cached_tokens

    @property
    def is_within_budget(self) -> bool:
        return self.budget_ms is None or self.e2e_ms <= self.budget_ms

    @classmethod
    def of(cls, trace: RunTrace, request_class: str, status: str) -> RunSummary:
        return cls(
            request_class=request_class,
            status=status,
            ftr_ms=trace.ftr_ms,
            e2e_ms=trace.e2e_ms or 0.0,
            budget_ms=trace.budget_ms,
            num_tool_calls=len(trace.tool_calls),
            num_tool_cache_hits=sum(1 for span in trace.tool_calls if span.is_cached),
            tool_ms_before_ftr=trace.tool_ms_before_ftr,
            num_prompt_tokens=sum(span.prompt_tokens for span in trace.model_calls),
            num_cached_tokens=sum(span.cached_tokens for span in trace.model_calls),
            num_model_calls=len(trace.model_calls),
            engine_s=trace.engine_s,
        )
