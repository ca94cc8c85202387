"""One run's tool calls: the result cache, the call-or-skip decision, the hard timeout, what
each call teaches the latency distributions, and its span in the run's trace.

    runner.decide(call, spec, level) -> ToolDecision      (from the budget and the tool's CDF)
    task = runner.start(call, spec, decision)             (an asyncio task; never raises)
    outcome = await task                                  -> ToolOutcome (the model's text)

A skipped call is not an error of the run: the model is told it was not called and why, as
its result, and the answer is marked partial (the evidence is incomplete).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from agent.budget import KIND_TOOL, LatencyBudget
from agent.decision import (
    REASON_CACHED,
    ToolDecision,
    ToolPolicy,
    available_ms,
    decide_call,
)
from agent.latency import ToolLatencies
from agent.mcp_client import McpConnections, McpEndpoint
from agent.model_calls import FinishedCall
from agent.result_cache import ToolResultCache
from agent.run_trace import RunTrace, ToolSpan
from agent.tools import Tier, ToolResult, ToolSpec, canonical_arguments

UNKNOWN_TOOL = "unknown_tool"
OVER_MAX_TOOL_CALLS = "max_tool_calls"


@dataclass(frozen=True)
class ToolServices:
    """What every run of one controller shares: connections, the cache, what latencies taught."""

    connections: McpConnections
    cache: ToolResultCache
    latencies: ToolLatencies
    policy: ToolPolicy
    tool_timeout_s: float  # a call's limit when the budget sets none


@dataclass(frozen=True)
class ToolOutcome:
    call: FinishedCall
    spec: ToolSpec | None
    result: ToolResult | None  # None: not called (see `skipped`)
    skipped: str | None = None  # why it was not called

    @property
    def text(self) -> str:
        """What the model reads as the call's result."""
        if self.result is None:
            return f"error: not called ({self.skipped})"
        return f"error: {self.result.text}" if self.result.is_error else self.result.text

    @property
    def error(self) -> str | None:
        if self.result is None:
            return f"not called: {self.skipped}"
        return self.result.text if self.result.is_error else None


class ToolRunner:
    def __init__(
        self,
        services: ToolServices,
        tools: tuple[ToolSpec, ...],
        endpoints: dict[str, McpEndpoint],
        budget: LatencyBudget,
        trace: RunTrace,
        uses_budget: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._services = services
        self._tools = tools  # the run's: where a hedge is found
        self._stragglers: set[asyncio.Task] = set()  # a hedge's loser, left to finish
        self._endpoints = endpoints
        self._budget = budget
        self._trace = trace
        self._uses_budget = uses_budget
        self._clock = clock

    @property
    def answer_margin(self) -> float:
        return self._services.policy.answer_margin

    def decide(self, spec: ToolSpec, arguments: str, answer_ms: float, max_tier: Tier):
        """Call or skip `spec` now; a cached result is always taken. The timeout is the tool's
        quantile, capped by the time the budget leaves; a tool with no latency known yet (no
        call seen, none configured) gets all that time, and a run without a budget
        `tool_timeout_s`."""
        services, now = self._services, self._clock()
        distribution = services.latencies.for_tool(spec)
        if services.cache.get(spec, arguments, now) is not None:
            tier = Tier.CACHED
        else:
            tier = services.latencies.tier_of(spec)
        limit_ms = services.tool_timeout_s * 1000.0
        if not self._uses_budget:
            return ToolDecision(call=True, timeout_ms=limit_ms, probability=1.0, reason="")
        remaining = self._budget.remaining_ms(now)
        decision = decide_call(
            spec,
            tier,
            distribution,
            remaining,
            answer_ms,
            services.policy,
            max_tier,
            self._alternatives(spec, arguments),
        )
        if not decision.call or decision.reason == REASON_CACHED:
            return decision
        if not self._budget.is_bounded:
            return replace(decision, timeout_ms=limit_ms)
        if distribution.num_samples == 0 and spec.settings.expected_ms is None:
            available = available_ms(remaining, answer_ms, services.policy)
            return replace(decision, timeout_ms=min(available, limit_ms))
        return decision

    def _alternatives(self, spec: ToolSpec, arguments: str) -> list:
        """The run's other tools that take these arguments, fastest tier first: what a
        high-variance call may be hedged with."""
        latencies = self._services.latencies
        found = [
            (other, latencies.tier_of(other), latencies.for_tool(other))
            for other in self._tools
            if other.key != spec.key and _accepts(other, arguments)
        ]
        return sorted(found, key=lambda alternative: alternative[1])

    def start(
        self,
        call: FinishedCall,
        spec: ToolSpec | None,
        decision: ToolDecision | None,
        turn: int,
    ) -> asyncio.Task[ToolOutcome]:
        return asyncio.ensure_future(self._run(call, spec, decision, turn))

    async def _run(
        self, call: FinishedCall, spec: ToolSpec | None, decision: ToolDecision | None, turn: int
    ) -> ToolOutcome:
        if spec is None:
            return ToolOutcome(call, None, None, skipped=f"{UNKNOWN_TOOL} {call.name!r}")
        if decision is None:  # over max_tool_calls
            return ToolOutcome(call, spec, None, skipped=OVER_MAX_TOOL_CALLS)
        now = self._clock()
        span = ToolSpan(
            call_id=call.call_id,
            tool=spec.key,
            arguments=call.arguments,
            start_ms=self._budget.elapsed_ms(now),
            tier=int(self._tier(spec, decision)),
            decision=decision.reason or "called",
            probability=decision.probability,
            turn=turn,
        )
        self._trace.tool_calls.append(span)
        if not decision.call:
            span.end_ms = span.start_ms
            return ToolOutcome(call, spec, None, skipped=decision.reason)
        span.hedged_with = decision.hedge_with
        result, winner = await self._result(spec, call, decision, now)
        span.hedge_won = winner.key != spec.key
        span.end_ms = self._budget.elapsed_ms(self._clock())
        span.latency_ms = result.latency_ms
        span.is_cached = result.is_cached
        span.is_timed_out = result.is_timed_out
        span.error = result.text if result.is_error else None
        return ToolOutcome(call, spec, result)

    def _tier(self, spec: ToolSpec, decision: ToolDecision) -> Tier:
        if decision.reason == REASON_CACHED:
            return Tier.CACHED
        return self._services.latencies.tier_of(spec)

    async def _result(
        self, spec: ToolSpec, call: FinishedCall, decision: ToolDecision, now: float
    ) -> tuple[ToolResult, ToolSpec]:
        """The call's result, and the tool that gave it: `spec`, or the faster tool it was
        hedged with, whichever succeeded first (the other is left to finish, and learned)."""
        services = self._services
        if decision.reason == REASON_CACHED:  # `decide` looked it up (and counted the hit)
            cached = services.cache.peek(spec, call.arguments, now)
            if cached is not None:
                return cached, spec
        arguments = _arguments_object(call.arguments)
        if arguments is None:
            text = f"the arguments are not a JSON object: {call.arguments!r}"
            return ToolResult(text=text, is_error=True, latency_ms=0.0), spec
        timeout_s = (decision.timeout_ms or services.tool_timeout_s * 1000.0) / 1000.0
        hedge = next((t for t in self._tools if t.key == decision.hedge_with), None)
        if hedge is None:
            return await self._call(spec, arguments, timeout_s, now), spec
        tasks = {
            asyncio.ensure_future(self._call(tool, arguments, timeout_s, now)): tool
            for tool in (spec, hedge)
        }
        pending, best = set(tasks), None
        while pending and (best is None or best[0].is_error):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if best is None or (best[0].is_error and not task.result().is_error):
                    best = (task.result(), tasks[task])
        self._stragglers.update(pending)
        for task in pending:
            task.add_done_callback(self._stragglers.discard)
        return best

    async def _call(
        self, spec: ToolSpec, arguments: dict, timeout_s: float, now: float
    ) -> ToolResult:
        services = self._services
        distribution = services.latencies.for_tool(spec)
        charge = self._budget.charge(KIND_TOOL, spec.key, distribution.mean_ms, now)
        endpoint = self._endpoints[spec.server_label]
        result = await services.connections.call(endpoint, spec.name, arguments, timeout_s)
        self._budget.settle(charge, result.latency_ms)
        if not result.is_error or result.is_timed_out:
            # A timed-out call says only that it takes at least this long: it is learned as
            # that, which keeps the tail in the distribution.
            services.latencies.observe(spec, result.latency_ms)
        if not result.is_error:
            services.cache.put(spec, canonical_arguments(arguments), result, self._clock())
        return result


def _arguments_object(text: str) -> dict | None:
    try:
        arguments = json.loads(text or "{}")
    except ValueError:
        return None
    return arguments if isinstance(arguments, dict) else None


def _accepts(tool: ToolSpec, arguments: str) -> bool:
    """Whether `tool`'s schema takes these arguments as they are (the names it knows, the
    ones it requires)."""
    given = _arguments_object(arguments)
    schema = tool.input_schema
    if given is None or schema.get("type") != "object":
        return False
    known = set(schema.get("properties", {}))
    return set(given) <= known and set(schema.get("required", ())) <= set(given)
