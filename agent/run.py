"""One agent run: model calls and tool calls under one latency budget, until an answer.

    loop:
      stop?  (model answered, max_tool_calls, budget nearly spent, cost, redundant results,
              no context room for another turn)
        -> the answer: one call with tool_choice "none", its length degraded to what fits
      route  (the candidate models' scores; sticky by default; FEWER_MODELS: stay)
      a tool turn (turn.py): the model writes calls; each starts the moment its arguments
                   close (decided first: cached, affordable, or skipped), all of them at once,
                   and the decode stops once max_tool_calls are written; while they run the
                   turn's KV waits paused on its worker, and results that are complete in call
                   order are appended and prefilled at once
      results appended in call order (the prompt stays prefix-stable)

The degradation order (degradation.py) applies as the budget runs out. A run that a timeout,
a skip or the budget cut short ends `incomplete` with reason "latency_budget". Each call gets a
deadline from the budget (a tool turn's leaves the answer its forecast time), so a run returns
within its budget plus about one engine step.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from agent.budget import LatencyBudget
from agent.decision import (
    REASON_NO_BUDGET,
    REASON_TIER_NOT_ALLOWED,
    REASON_UNLIKELY_IN_BUDGET,
    STOP_BUDGET_NEARLY_SPENT,
    STOP_MODEL_ANSWERED,
    RunProgress,
    stop_reason,
)
from agent.degradation import Degradation, level_for, max_output_tokens
from agent.model_call_runner import ModelCallRunner
from agent.model_calls import ModelRequest, RunConversation, TextDelta
from agent.routing import RoutingWeights
from agent.run_request import (
    INCOMPLETE_LATENCY_BUDGET,
    INCOMPLETE_MAX_OUTPUT_TOKENS,
    MIN_TOOL_TURN_TOKENS,
    AnswerDelta,
    FunctionCalls,
    RunEnd,
    RunEvent,
    RunRequest,
)
from agent.run_routing import route
from agent.run_trace import RunTrace
from agent.tool_runner import ToolOutcome, ToolRunner, ToolServices
from agent.turn import ModelTurn, answer_ms

STOP_CONTEXT_NEARLY_FULL = "context_nearly_full"
RESULT_TOKENS_RESERVED = 256  # room kept for a tool turn's results
# Skips that leave evidence out for the budget's sake: the answer is then partial.
BUDGET_SKIPS = (REASON_UNLIKELY_IN_BUDGET, REASON_TIER_NOT_ALLOWED, REASON_NO_BUDGET)


class AgentRun:
    def __init__(
        self,
        request: RunRequest,
        conversation: RunConversation,
        services: ToolServices,
        quality: dict[str, float],
        weights: RoutingWeights,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.request, self.conversation, self.clock = request, conversation, clock
        self.policy = services.policy
        self.quality, self.weights = quality, weights
        uses_budget = request.options.budget
        self.budget = LatencyBudget(
            request.budget_ms if uses_budget else None, request.started_s, request.cost_budget_s
        )
        self.trace = RunTrace(request.run_id, self.budget.total_ms)
        tools = ToolRunner(
            services, request.tools, request.endpoints, self.budget, self.trace, uses_budget, clock
        )
        self.calls = ModelCallRunner(conversation, self.budget, self.trace, clock)
        self.turn = ModelTurn(
            request,
            conversation,
            tools,
            self.calls,
            services.latencies,
            self.budget,
            self.trace,
            clock,
        )
        self.result_texts: list[str] = []
        self.is_cut_by_budget = False  # a skip, a timeout or a deadline left evidence out
        self.answer_finish_reason: str | None = None

    async def events(self) -> AsyncIterator[RunEvent]:
        request = self.request
        choice = request.tool_choice if (request.tools or request.client_tools) else "none"
        reason, answered, handed_back = None, False, False
        try:
            while choice != "none":
                reason = self._stop_reason()
                if reason is not None:
                    break
                level = self._level()
                model = self._route(level, MIN_TOOL_TURN_TOKENS)
                outcomes: list[ToolOutcome] = []
                client_calls = []
                async for event in self.turn.run(model, choice, level, outcomes, client_calls):
                    if isinstance(event, AnswerDelta) and self.trace.ftr_ms is None:
                        self.trace.ftr_ms = self._elapsed()
                    yield event
                if client_calls:  # the client runs its functions, then continues the run
                    yield FunctionCalls(tuple(client_calls))
                    handed_back = True
                    break
                if not outcomes and self.turn.was_cut:  # its deadline: no time for tools
                    self.is_cut_by_budget, reason = True, STOP_BUDGET_NEARLY_SPENT
                    break
                if not outcomes:  # the model answered without calling a tool
                    answered, reason = True, STOP_MODEL_ANSWERED
                    self.answer_finish_reason = self.turn.finish_reason
                    break
                self._learn(outcomes)
            self.trace.stop_reason = reason or "no_tools"
            if not answered and not handed_back:
                async for event in self._answer():
                    yield event
            yield self._end()
        finally:
            await self.turn.close()

    def _learn(self, outcomes: list[ToolOutcome]) -> None:
        for outcome in outcomes:
            self.result_texts.append(outcome.text.strip())
            timed_out = outcome.result is not None and outcome.result.is_timed_out
            skipped = outcome.result is None and outcome.skipped in BUDGET_SKIPS
            if (timed_out or skipped) and self.budget.is_bounded:
                self.is_cut_by_budget = True

    async def _answer(self) -> AsyncIterator[RunEvent]:
        """The final call: no tools, as many tokens as the budget leaves."""
        level = self._level()
        model = self._route(level, self.request.max_output_tokens)
        forecast = self.conversation.forecast(model)
        remaining = self.budget.remaining_ms(self.clock())
        if remaining <= 0.0:  # nothing left: no answer (with time left, a partial one)
            self.is_cut_by_budget = True
            self.trace.decide(self._elapsed(), "no_answer", remaining_ms=round(remaining, 1))
            return
        requested = self.request.max_output_tokens
        limit = max_output_tokens(
            level, requested, remaining, forecast.first_token_ms, forecast.per_output_token_ms
        )
        if limit < requested:
            self.is_cut_by_budget = True
            self.trace.decide(self._elapsed(), "shorter_output", max_output_tokens=limit)
        request = ModelRequest(model=model, tool_choice="none", max_output_tokens=limit)
        deadline = self.calls.budget_deadline_s()
        call = await self.calls.start_call(request, "answer", forecast.total_ms(0, limit), deadline)
        if call is None:  # no first token within the budget: no answer
            self.is_cut_by_budget = True
            return
        try:
            async for event in self.calls.stream(call, deadline):
                if isinstance(event, TextDelta) and event.text:
                    if self.trace.ftr_ms is None:
                        self.trace.ftr_ms = self._elapsed()
                    yield AnswerDelta(event.text)
        finally:
            self.calls.finish_call(call)
        self.answer_finish_reason = None if call.end is None else call.end.finish_reason
        if self.answer_finish_reason in (None, "cancelled"):
            self.is_cut_by_budget = True

    # ------------------------------------------------------------------ state
    def _route(self, level: Degradation, max_tokens: int) -> str:
        candidates = self.request.candidate_models if self.request.options.routing else ()
        decision = route(
            candidates,
            self.conversation,
            level,
            self.quality,
            self.weights,
            max_tokens,
            min_tokens_left=self._tokens_needed(),
        )
        if decision is None:
            return self.conversation.model
        scores = {name: round(value, 4) for name, value in decision.scores.items()}
        self.trace.decide(
            self._elapsed(), "route", model=decision.model, reason=decision.reason, scores=scores
        )
        return decision.model

    def _answer_ms(self) -> float:
        return answer_ms(self.conversation, self.request.max_output_tokens)

    def _level(self) -> Degradation:
        if not self.budget.is_bounded:
            return Degradation.FULL
        remaining = self.budget.remaining_ms(self.clock())
        level = level_for(remaining, self.budget.total_ms, self._answer_ms())
        self.trace.decide(self._elapsed(), "level", level=level.name)
        return level

    def _stop_reason(self) -> str | None:
        """decision.py's reasons, and one of the context's: no room for another tool turn, its
        results and the answer."""
        if self.conversation.num_tokens_left(self.conversation.model) < self._tokens_needed():
            return STOP_CONTEXT_NEARLY_FULL
        bounded = self.budget.is_bounded
        progress = RunProgress(
            num_tool_calls=self.turn.num_tool_calls,
            max_tool_calls=self.request.max_tool_calls,
            remaining_ms=self.budget.remaining_ms(self.clock()) if bounded else None,
            answer_ms=self._answer_ms() if bounded else 0.0,
            last_result_texts=tuple(self.result_texts),
            is_cost_exhausted=self.budget.is_cost_exhausted,
        )
        reason = stop_reason(progress, self.policy)
        if reason is not None and bounded:  # what the budget rule saw
            self.trace.decide(
                self._elapsed(),
                "stop",
                reason=reason,
                remaining_ms=round(progress.remaining_ms, 1),
                answer_ms=round(progress.answer_ms, 1),
            )
        return reason

    def _tokens_needed(self) -> int:
        """Context room another tool turn needs: its calls, their results, the answer."""
        return MIN_TOOL_TURN_TOKENS + RESULT_TOKENS_RESERVED + self.request.max_output_tokens

    def _elapsed(self) -> float:
        return self.budget.elapsed_ms(self.clock())

    def _end(self) -> RunEnd:
        status, reason = "completed", None
        if self.is_cut_by_budget:
            status, reason = "incomplete", INCOMPLETE_LATENCY_BUDGET
        elif self.answer_finish_reason == "length":
            status, reason = "incomplete", INCOMPLETE_MAX_OUTPUT_TOKENS
        self.trace.status = status
        self.trace.e2e_ms = self._elapsed()
        return RunEnd(
            status=status,
            incomplete_reason=reason,
            usage=self.calls.usage(),
            trace=self.trace,
            last_request_id=self.conversation.last_request_id,
        )
