"""One tool turn of a run: a model call that may write tool calls, each dispatched the moment
its arguments close (decided first, run at once), the decode stopped once `max_tool_calls` are
written, and the results awaited, those complete in call order appended and prefilled while
the others run (run.py has the loop around it; model_call_runner.py starts and streams the
model calls)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from agent.budget import LatencyBudget
from agent.degradation import Degradation, max_tool_tier
from agent.dispatch import CallAssembler
from agent.latency import ToolLatencies
from agent.model_call_runner import ModelCallRunner
from agent.model_calls import (
    FinishedCall,
    ModelRequest,
    RunConversation,
    TextDelta,
    ToolOutput,
)
from agent.run_request import (
    MIN_TOOL_TURN_TOKENS,
    AnswerDelta,
    McpCallDone,
    McpCallStarted,
    RunEvent,
    RunRequest,
)
from agent.run_trace import RunTrace
from agent.tool_runner import ToolOutcome, ToolRunner
from agent.tools import Tier, ToolSpec

PREFILL_WAIT_S = 5.0  # a warm-up call still running when the last result is in: wait this long


@dataclass
class _Dispatched:
    call: FinishedCall
    spec: ToolSpec | None
    is_allowed: bool  # a known tool, within max_tool_calls: decided when it starts
    answer_ms: float  # the answer's forecast when the call was written
    max_tier: Tier
    task: asyncio.Task[ToolOutcome] | None = None  # None until started (sequential dispatch)


def answer_ms(conversation: RunConversation, max_output_tokens: int) -> float:
    """The forecast of writing the answer from here, on the session's model."""
    forecast = conversation.forecast(conversation.model)
    return forecast.total_ms(conversation.num_pending_tokens, max_output_tokens)


class ModelTurn:
    def __init__(
        self,
        request: RunRequest,
        conversation: RunConversation,
        tools: ToolRunner,
        calls: ModelCallRunner,
        latencies: ToolLatencies,
        budget: LatencyBudget,
        trace: RunTrace,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.request, self.conversation, self.tools = request, conversation, tools
        self.latencies, self.budget, self.trace, self.clock = latencies, budget, trace, clock
        self.num_tool_calls = 0
        self.num_tool_turns = 0
        self.was_cut = False  # the last tool turn's model call was closed at its deadline
        self.finish_reason: str | None = None  # how the last tool turn's model call ended
        self.calls = calls
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ the tool turn
    async def run(
        self,
        model: str,
        choice: str,
        level: Degradation,
        outcomes: list[ToolOutcome],
        client_calls: list[FinishedCall],
    ) -> AsyncIterator[RunEvent]:
        """One call that may write tool calls, and the calls it makes. `outcomes` gains the
        server-side calls' outcomes in call order; `client_calls` the client's functions."""
        options = self.request.options
        max_tokens = max(self.request.max_output_tokens, MIN_TOOL_TURN_TOKENS)
        pause_s = self._pause_s() if options.pause_kv else None
        answer = answer_ms(self.conversation, self.request.max_output_tokens)
        forecast = self.conversation.forecast(model)
        request = ModelRequest(model=model, tool_choice=choice, max_output_tokens=max_tokens,
                               pause_s=pause_s)  # fmt: skip
        deadline = None  # what leaves the answer its forecast time
        if self.budget.is_bounded:
            slack_ms = self.budget.remaining_ms(self.clock()) - answer * self.tools.answer_margin
            deadline = self.clock() + max(0.0, slack_ms) / 1000.0
        call = await self.calls.start_call(
            request, "tools", forecast.total_ms(0, max_tokens), deadline
        )
        self.num_tool_turns += 1
        self.was_cut, self.finish_reason = call is None, None
        if call is None:
            return
        assembler, dispatched, written = CallAssembler(), [], []
        try:
            async for event in self.calls.stream(call, deadline):
                if isinstance(event, TextDelta):
                    if event.text:
                        yield AnswerDelta(event.text)
                    continue
                for closed in assembler.add(event):
                    written.append(closed)
                    started = self._dispatch(closed, level, answer, dispatched, client_calls)
                    if started is not None:
                        yield started
                if self._has_all_calls():  # decoding more calls would only be wasted
                    self.trace.decide(self._elapsed(), "enough_calls", calls=len(written))
                    call.stop(tuple(written))
                    break
        finally:
            self.calls.finish_call(call)
        self.was_cut = call.end is None  # closed at its deadline
        self.finish_reason = None if call.end is None else call.end.finish_reason
        whole = call.end.calls if call.end is not None else ()
        for closed in assembler.finish(whole):
            started = self._dispatch(closed, level, answer, dispatched, client_calls)
            if started is not None:
                yield started
        async for event in self._await_tools(model, dispatched, pause_s):
            yield event
        outcomes.extend(item.task.result() for item in dispatched)

    def _has_all_calls(self) -> bool:
        limit = self.request.max_tool_calls
        return limit is not None and self.num_tool_calls >= limit

    def _dispatch(
        self,
        call: FinishedCall,
        level: Degradation,
        answer: float,
        dispatched: list[_Dispatched],
        client_calls: list[FinishedCall],
    ) -> McpCallStarted | None:
        if call.name in self.request.client_tools:
            client_calls.append(call)
            return None
        spec = self.request.tool_named(call.name)
        limit = self.request.max_tool_calls
        self.num_tool_calls += spec is not None
        is_allowed = spec is not None and (limit is None or self.num_tool_calls <= limit)
        item = _Dispatched(call, spec, is_allowed, answer, max_tool_tier(level))
        dispatched.append(item)
        if self.request.options.parallel_dispatch:
            item.task = self._start(item)
        label = spec.server_label if spec else ""
        return McpCallStarted(call.call_id, label, call.name, call.arguments)

    def _start(self, item: _Dispatched) -> asyncio.Task[ToolOutcome]:
        """Decide (now: a call run after others is priced with the time they took) and start."""
        decision = None
        if item.is_allowed:
            decision = self.tools.decide(
                item.spec, item.call.arguments, item.answer_ms, item.max_tier
            )
        task = self.tools.start(item.call, item.spec, decision, self.num_tool_turns - 1)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _await_tools(
        self, model: str, dispatched: list[_Dispatched], pause_s: float | None
    ) -> AsyncIterator[RunEvent]:
        """Each call's result as it lands; meanwhile results complete in call order are
        appended and prefilled (the KV stays paused), so the last leaves only its own tokens."""
        appended, reported, warm_up = 0, set(), None
        for item in dispatched:
            if item.task is None:  # sequential dispatch: one after another, now
                item.task = self._start(item)
                await asyncio.wait({item.task})
        while True:
            for i, item in enumerate(dispatched):
                if i not in reported and item.task.done():
                    reported.add(i)
                    yield done_event(item.task.result())
            ready = appended
            while ready < len(dispatched) and dispatched[ready].task.done():
                ready += 1
            if ready == len(dispatched):
                break
            if pause_s is not None and ready > appended and (warm_up is None or warm_up.done()):
                self._append(dispatched[appended:ready])
                appended = ready
                warm_up = asyncio.ensure_future(self._warm_up(model, pause_s))
                self._tasks.add(warm_up)
            undone = {item.task for item in dispatched if not item.task.done()}
            await asyncio.wait(undone, return_when=asyncio.FIRST_COMPLETED)
        if warm_up is not None:  # the next call continues its KV once it is paused
            wait_s = min(PREFILL_WAIT_S, self.budget.remaining_ms(self.clock()) / 1000.0)
            await asyncio.wait({warm_up}, timeout=wait_s)
            warm_up.cancel()
        self._append(dispatched[appended:])

    def _append(self, items: list[_Dispatched]) -> None:
        outputs = [ToolOutput(item.call, item.task.result().text) for item in items]
        if outputs:
            self.conversation.add_tool_results(outputs)

    async def _warm_up(self, model: str, pause_s: float) -> None:
        """Prefill the conversation so far; its KV is paused for the next call."""
        request = ModelRequest(model=model, tool_choice="none", max_output_tokens=1,
                               pause_s=pause_s, prefill_only=True)  # fmt: skip
        forecast = self.conversation.forecast(model)
        try:
            call = await self.calls.start_call(
                request, "prefill", forecast.first_token_ms, self.calls.budget_deadline_s()
            )
        except Exception as e:  # a refused warm-up costs the next call its prefill, nothing else
            self.trace.decide(self._elapsed(), "warm_up_failed", error=str(e)[:200])
            return
        if call is None:
            return
        try:
            async for _ in self.calls.stream(call, self.calls.budget_deadline_s()):
                pass
        finally:
            self.calls.finish_call(call)

    def _pause_s(self) -> float:
        """How long the KV should wait: the slowest tool's usual latency."""
        means = [self.latencies.for_tool(tool).mean_ms for tool in self.request.tools]
        return max(means, default=1000.0) / 1000.0

    def _elapsed(self) -> float:
        return self.budget.elapsed_ms(self.clock())

    async def close(self) -> None:
        """Cancel what still runs (the run ended, or its client went away)."""
        self.calls.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)


def done_event(outcome: ToolOutcome) -> McpCallDone:
    spec, call = outcome.spec, outcome.call
    label = spec.server_label if spec else ""
    output = None if outcome.error is not None else outcome.text
    return McpCallDone(call.call_id, label, call.name, call.arguments, output, outcome.error)
