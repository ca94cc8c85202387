"""A run's model calls, one at a time: started under a deadline (charged to the budget and
traced), streamed until they end or the deadline passes, and finished (their usage, their
spans, the cost budget). turn.py and run.py drive them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from agent.budget import KIND_MODEL, Charge, LatencyBudget
from agent.model_calls import (
    CallDelta,
    ContextTooSmallError,
    ModelCall,
    ModelRequest,
    RunConversation,
    TextDelta,
)
from agent.run_request import RunUsage
from agent.run_trace import ModelSpan, RunTrace


class ModelCallRunner:
    def __init__(
        self,
        conversation: RunConversation,
        budget: LatencyBudget,
        trace: RunTrace,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conversation, self.budget, self.trace, self.clock = conversation, budget, trace, clock
        self._calls: dict[int, tuple[ModelCall, ModelSpan, Charge]] = {}
        self._usage = RunUsage()

    async def start_call(
        self, request: ModelRequest, kind: str, forecast_ms: float, deadline_s: float | None
    ) -> ModelCall | None:
        """The call, admitted and its first output there; None when `deadline_s` passed first
        (queue and prefill too slow: the request is cancelled)."""
        now = self.clock()
        span = ModelSpan("", request.model, kind, self.budget.elapsed_ms(now))
        charge = self.budget.charge(KIND_MODEL, f"{kind}:{request.model}", forecast_ms, now)
        self.trace.model_calls.append(span)
        timeout_s = None if deadline_s is None else max(0.0, deadline_s - now)
        try:
            call = await asyncio.wait_for(self._call(request), timeout_s)
        except asyncio.TimeoutError:
            span.end_ms = self._elapsed()
            self.budget.settle(charge, span.end_ms - span.start_ms)
            self.trace.decide(span.end_ms, "deadline", kind=kind, before="first_token")
            return None
        span.request_id = call.request_id
        self._calls[id(call)] = (call, span, charge)
        return call

    async def _call(self, request: ModelRequest) -> ModelCall:
        """A call routed to another model whose context turns out too small goes back to the
        session's model (whose room the run checks exactly)."""
        try:
            return await self.conversation.call(request)
        except ContextTooSmallError:
            if request.model == self.conversation.model:
                raise
            self.trace.decide(self._elapsed(), "route_refused", model=request.model)
            return await self.conversation.call(replace(request, model=self.conversation.model))

    async def stream(
        self, call: ModelCall, deadline_s: float | None
    ) -> AsyncIterator[TextDelta | CallDelta]:
        """The call's events until it ends or `deadline_s` (time.time()) passes: then it is
        closed (cancelled), and `call.end` stays None."""
        span = self._calls[id(call)][1]
        events = call.__aiter__()
        while True:
            timeout = None if deadline_s is None else max(0.0, deadline_s - self.clock())
            try:
                event = await asyncio.wait_for(events.__anext__(), timeout)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                self.trace.decide(self._elapsed(), "deadline", request_id=call.request_id)
                call.close()
                return
            if span.first_token_ms is None:
                span.first_token_ms = self._elapsed()
            yield event

    def finish_call(self, call: ModelCall) -> None:
        call.close()
        entry = self._calls.pop(id(call), None)
        if entry is None:
            return
        _, span, charge = entry
        span.end_ms = self._elapsed()
        self.budget.settle(charge, span.end_ms - span.start_ms)
        end = call.end
        if end is not None:
            span.prompt_tokens, span.cached_tokens = end.num_prompt_tokens, end.num_cached_tokens
            span.output_tokens = end.num_output_tokens
            # The cost budget is spent by the profiled compute of what the call computed (its
            # engine time is read from the scheduler's trace only after the run).
            forecast = self.conversation.forecast(span.model)
            computed = end.num_prompt_tokens - end.num_cached_tokens
            compute_ms = forecast.per_prompt_token_ms * computed
            compute_ms += forecast.per_output_token_ms * end.num_output_tokens
            self.budget.spend_cost(compute_ms / 1000.0)
            self._usage = RunUsage(
                input_tokens=self._usage.input_tokens + end.num_prompt_tokens,
                cached_tokens=self._usage.cached_tokens + end.num_cached_tokens,
                output_tokens=self._usage.output_tokens + end.num_output_tokens,
            )

    def usage(self) -> RunUsage:
        return self._usage

    def budget_deadline_s(self) -> float | None:
        """When the budget runs out (time.time()); None without one."""
        if not self.budget.is_bounded:
            return None
        return self.budget.started_s + self.budget.total_ms / 1000.0

    def close(self) -> None:
        """Cancel the calls still open."""
        for call, _, _ in list(self._calls.values()):
            call.close()

    def _elapsed(self) -> float:
        return self.budget.elapsed_ms(self.clock())
