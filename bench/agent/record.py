"""What one agent run on one layout measured: the client's clock for FTR and E2E, the tool
calls it saw, the tokens, and the engine time the run's model calls took (read from traces).

    start ---- model call -- tool -- model call -- tool ... -- final call: first text -- end
    |<------------------------------- FTR -------------------------->|
    |<------------------------------- E2E ------------------------------------------------>|

Tool time before FTR is the wall time during which at least one tool call was running, on the
client's clock: calls that overlap count once (`busy_ms`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RunRecord:
    layout: str
    run: int  # AgentRun.index: the same run on every layout
    kind: str  # its class
    status: str  # "ok", or "failed" (an error; `error` says which)
    budget_ms: float
    response_status: str | None = None  # Responses: "completed" or "incomplete"
    incomplete_reason: str | None = None  # e.g. "latency_budget"
    ftr_ms: float | None = None  # the final answer's first text
    e2e_ms: float | None = None
    tool_ms_before_ftr: float = 0.0
    server_tool_ms_before_ftr: float | None = None  # the same, on the controller's clock
    num_tool_calls: int = 0  # calls started (a cached result counts: it was asked for)
    num_tool_errors: int = 0
    num_cached_tool_calls: int = 0  # answered by the controller's result cache (its trace)
    num_model_calls: int = 0
    prompt_tokens: int = 0  # over every model call of the run
    cached_tokens: int = 0
    output_tokens: int = 0
    engine_s: float | None = None  # engine compute of its model calls; None: no trace read
    models: tuple[str, ...] = ()  # the model of each model call, in order
    tool_names: tuple[str, ...] = ()  # the tool of each call started, in order
    stop_reason: str | None = None  # why the controller stopped calling tools (its trace)
    tool_decisions: tuple[str, ...] = ()  # why it called (or skipped) each asked-for tool
    error: str = ""


def busy_ms(intervals: Iterable[tuple[float, float]], end: float | None) -> float:
    """The length of the union of `intervals` (start, stop) cut at `end` (None: not cut)."""
    total, reach = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        stop = stop if end is None else min(stop, end)
        start = max(start, reach)
        if stop > start:
            total += stop - start
            reach = stop
    return round(total, 2)
