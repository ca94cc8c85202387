"""An agent run end to end without Ray: AgentController against a real demo MCP server served
in-process, and a scripted in-memory conversation standing in for the serving plane (each
model call yields its scripted fragments, with sleeps for decode time)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import pytest

from agent.config import AgentConfig, McpServerConfig
from agent.controller import AgentController
from agent.demo_tools import DemoLatencies, demo_text, start_demo_server
from agent.mcp_client import McpEndpoint
from agent.model_calls import (
    CallDelta,
    CallForecast,
    ContextTooSmallError,
    FinishedCall,
    ModelCallEnd,
    ModelRequest,
    TextDelta,
    ToolOutput,
)
from agent.run_request import (
    AgentOptions,
    McpCallDone,
    McpCallStarted,
    RunEnd,
    RunRequest,
    RunUsage,
)
from agent.tools import ToolSettings, ToolSpec

# sigma 0: every call of a tool takes exactly its median.
LATENCIES = DemoLatencies(tools={"lookup": (20.0, 0.0), "search": (300.0, 0.0)})
FORECAST = CallForecast(first_token_ms=10.0, per_output_token_ms=0.1)  # the answer: 19.9 ms
STEP_S = 0.005  # decode time between two scripted fragments


@pytest.fixture(scope="module")
def server():
    served = start_demo_server(LATENCIES)
    yield served
    served.close()


# ----------------------------------------------------------------------------- the double
@dataclass
class Script:
    """One model call: (seconds before, event) steps, the calls and usage its end reports."""

    steps: list[tuple[float, TextDelta | CallDelta]]
    calls: tuple[FinishedCall, ...] = ()
    usage: tuple[int, int, int] = (100, 0, 10)  # prompt, cached, output tokens


def calls(*written: tuple[str, str, str], tail_s: float = 0.0) -> Script:
    """A tool turn writing (call_id, name, arguments) calls, each in two fragments."""
    steps = []
    for index, (call_id, name, arguments) in enumerate(written):
        steps.append((STEP_S, CallDelta(index, call_id, name, arguments[:3])))
        steps.append((STEP_S, CallDelta(index, None, None, arguments[3:])))
    if tail_s:
        steps.append((tail_s, TextDelta("")))  # decoding goes on after the last call closed
    return Script(steps, tuple(FinishedCall(*call) for call in written))


ANSWER = Script([(STEP_S, TextDelta("the answer"))], usage=(300, 200, 20))
PREFILL = Script([(STEP_S, TextDelta("."))], usage=(40, 30, 1))


class ScriptedCall:
    def __init__(self, request_id: str, script: Script) -> None:
        self.request_id, self.script = request_id, script
        self.end: ModelCallEnd | None = None
        self.ended_s: float | None = None

    async def __aiter__(self):
        for delay_s, event in self.script.steps:
            await asyncio.sleep(delay_s)
            yield event
        self.ended_s = time.time()
        self.end = ModelCallEnd(self.request_id, "stop", None, self.script.calls,
                                *self.script.usage)  # fmt: skip

    def close(self) -> None:
        pass  # a scripted call holds nothing

    def stop(self, calls: tuple[FinishedCall, ...]) -> None:
        self.ended_s = time.time()
        self.end = ModelCallEnd(self.request_id, "stop", None, calls, *self.script.usage)


@dataclass
class ScriptedConversation:
    """The serving plane: tool turns run `turns` in order, then answer; `log` is what it saw."""

    turns: list[Script]
    forecast_of: CallForecast = FORECAST
    model: str = "m"
    num_tokens: int = 1000
    num_pending_tokens: int = 0
    last_request_id: str = ""
    requests: list[ModelRequest] = field(default_factory=list)
    model_calls: list[ScriptedCall] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    results: list[tuple[str, str]] = field(default_factory=list)  # (call_id, output)

    async def call(self, request: ModelRequest) -> ScriptedCall:
        if request.prefill_only:
            kind, script = "prefill", PREFILL
        elif request.tool_choice == "none" or not self.turns:
            kind, script = "answer", ANSWER
        else:
            kind, script = "tools", self.turns.pop(0)
        self.requests.append(request)
        self.log.append(kind)
        call = ScriptedCall(f"r{len(self.requests)}", script)
        self.model_calls.append(call)
        return call

    def add_tool_results(self, results: list[ToolOutput]) -> None:
        self.log.append("results " + " ".join(result.call.call_id for result in results))
        self.results.extend((result.call.call_id, result.output) for result in results)

    def forecast(self, model: str) -> CallForecast:
        return self.forecast_of

    def num_tokens_left(self, model: str) -> int:
        return 1_000_000

    def num_cached_tokens(self, model: str) -> int:
        return 0


@dataclass
class Ran:
    events: list[tuple[float, object]]  # (time.time(), event)
    end: RunEnd
    wall_ms: float

    def of(self, kind: type) -> list:
        return [event for _, event in self.events if isinstance(event, kind)]

    def time_of(self, event: object) -> float:
        return next(at for at, seen in self.events if seen is event)


REQUEST = {
    "run_id": "run",
    "model": "m",
    "candidate_models": ("m",),
    "client_tools": frozenset(),
    "tool_choice": "auto",
    "max_tool_calls": None,
    "max_output_tokens": 100,
    "budget_ms": None,
}


def run(server, conversation, controller: AgentController | None = None, **fields) -> Ran:
    """One run of `conversation` with the demo server's tools; `fields` override REQUEST's."""
    controller = controller or AgentController(AgentConfig())

    async def main() -> Ran:
        endpoint = McpEndpoint(label="demo", url=server.url)
        try:
            tools = await controller.list_tools([endpoint])
            request = RunRequest(**{**REQUEST, "tools": tools, "endpoints": {"demo": endpoint},
                                    "started_s": time.time(), **fields})  # fmt: skip
            events = []
            async for event in controller.run(request, conversation).events():
                events.append((time.time(), event))
            return Ran(events, events[-1][1], (time.time() - request.started_s) * 1000.0)
        finally:
            await controller.close()

    return asyncio.run(main())


SEARCH_A = ("c1", "search", '{"query": "a"}')
SEARCH_B = ("c2", "search", '{"query": "b"}')
LOOKUP_K = ("c2", "lookup", '{"key": "k"}')


# ----------------------------------------------------------------------------- the tests
def test_a_tool_call_starts_while_the_model_call_that_wrote_it_still_decodes(server):
    conversation = ScriptedConversation([calls(SEARCH_A, tail_s=0.3)])
    ran = run(server, conversation)
    started = ran.of(McpCallStarted)[0]
    assert started == McpCallStarted("c1", "demo", "search", '{"query": "a"}')
    writer = conversation.model_calls[0]
    assert ran.time_of(started) < writer.ended_s - 0.25
    tool_span, model_span = ran.end.trace.tool_calls[0], ran.end.trace.model_calls[0]
    assert tool_span.start_ms < model_span.end_ms - 250.0
    assert ran.of(McpCallDone)[0].output == demo_text("search", "a")


def test_calls_written_in_one_turn_run_at_once(server):
    ran = run(server, ScriptedConversation([calls(SEARCH_A, SEARCH_B)]))
    first, second = ran.end.trace.tool_calls
    assert second.start_ms - first.start_ms < 50.0
    assert 300.0 <= max(first.end_ms, second.end_ms) - first.start_ms < 450.0


def test_without_parallel_dispatch_calls_run_one_after_the_other(server):
    options = AgentOptions(parallel_dispatch=False)
    ran = run(server, ScriptedConversation([calls(SEARCH_A, SEARCH_B)]), options=options)
    first, second = ran.end.trace.tool_calls
    assert second.start_ms >= first.end_ms
    assert second.end_ms - first.start_ms >= 600.0


def test_results_are_appended_in_call_order_when_the_second_returns_first(server):
    conversation = ScriptedConversation([calls(SEARCH_A, LOOKUP_K)])
    ran = run(server, conversation)
    assert [done.call_id for done in ran.of(McpCallDone)] == ["c2", "c1"]  # as they landed
    assert conversation.results == [
        ("c1", demo_text("search", "a")),
        ("c2", demo_text("lookup", "k")),
    ]
    assert conversation.log == ["tools", "results c1 c2", "answer"]


def test_a_result_that_arrives_first_in_call_order_is_prefilled_while_the_slow_one_runs(server):
    lookup_first = ("c1", "lookup", '{"key": "k"}')
    search_second = ("c2", "search", '{"query": "a"}')
    conversation = ScriptedConversation([calls(lookup_first, search_second)])
    ran = run(server, conversation)
    assert conversation.log == ["tools", "results c1", "prefill", "results c2", "answer"]
    lookup, search = ran.end.trace.tool_calls
    prefill = next(span for span in ran.end.trace.model_calls if span.kind == "prefill")
    assert lookup.end_ms <= prefill.start_ms < search.end_ms
    tool_turn, warm_up = conversation.requests[:2]
    assert tool_turn.pause_s == warm_up.pause_s == 0.2  # the slowest tool's prior mean: 200 ms
    assert warm_up == ModelRequest("m", "none", 1, pause_s=0.2, prefill_only=True)


def test_without_pause_kv_nothing_is_prefilled_and_no_call_pauses(server):
    lookup_first = ("c1", "lookup", '{"key": "k"}')
    conversation = ScriptedConversation([calls(lookup_first, SEARCH_B)])
    run(server, conversation, options=AgentOptions(pause_kv=False))
    assert conversation.log == ["tools", "results c1 c2", "answer"]
    assert [request.pause_s for request in conversation.requests] == [None, None]
    assert not any(request.prefill_only for request in conversation.requests)


def test_at_max_tool_calls_the_model_call_stops_and_the_answer_follows(server):
    """The turn would write a third call (and decode 300 ms more): it is stopped as soon as
    the second closes, and the third is neither decoded nor made."""
    read_c = ("c3", "read_page", '{"url": "c"}')
    before = server.num_calls("read_page")
    turn = calls(SEARCH_A, LOOKUP_K, read_c, tail_s=0.3)
    conversation = ScriptedConversation([turn, calls(SEARCH_B)])
    ran = run(server, conversation, max_tool_calls=2, options=AgentOptions(pause_kv=False))
    assert [event.call_id for event in ran.of(McpCallDone)] == ["c2", "c1"]  # lookup first
    assert server.num_calls("read_page") == before
    stopped = [d for d in ran.end.trace.decisions if d["what"] == "enough_calls"]
    assert stopped == [{**stopped[0], "calls": 2}]
    first = conversation.model_calls[0]
    assert first.end.calls == tuple(FinishedCall(*call) for call in (SEARCH_A, LOOKUP_K))
    second_started = ran.time_of(ran.of(McpCallStarted)[1])
    assert first.ended_s - second_started < 0.1  # not the 0.3 s of decoding left
    assert [span.call_id for span in ran.end.trace.tool_calls] == ["c1", "c2"]
    assert [request.tool_choice for request in conversation.requests] == ["auto", "none"]
    assert ran.end.trace.stop_reason == "max_tool_calls"
    assert (ran.end.status, ran.end.incomplete_reason) == ("completed", None)


def test_a_slow_tool_that_the_budget_cannot_afford_is_skipped_and_the_run_is_incomplete(server):
    slow = ToolSettings(expected_ms=5000.0)
    endpoint = McpEndpoint(label="demo", url=server.url)
    config = AgentConfig(mcp_servers=(McpServerConfig(endpoint, {"search": slow}),))
    before = server.num_calls("search")
    conversation = ScriptedConversation([calls(SEARCH_A)])
    ran = run(server, conversation, AgentController(config), budget_ms=1000.0)
    (span,) = ran.end.trace.tool_calls
    assert span.decision == "unlikely_in_budget"
    assert ran.of(McpCallDone)[0].error == "not called: unlikely_in_budget"
    assert conversation.results == [("c1", "error: not called (unlikely_in_budget)")]
    assert server.num_calls("search") == before
    assert (ran.end.status, ran.end.incomplete_reason) == ("incomplete", "latency_budget")


def test_a_tool_learned_to_be_slow_is_skipped_under_a_small_budget(server):
    controller = AgentController(AgentConfig())
    for _ in range(20):  # what earlier runs of this controller taught it
        controller.services.latencies.observe(ToolSpec("demo", "search"), 3000.0)
    conversation = ScriptedConversation([calls(SEARCH_A)])
    ran = run(server, conversation, controller, budget_ms=1000.0)
    (span,) = ran.end.trace.tool_calls
    assert span.decision == "unlikely_in_budget"
    assert span.tier == 2
    assert conversation.results == [("c1", "error: not called (unlikely_in_budget)")]
    assert (ran.end.status, ran.end.incomplete_reason) == ("incomplete", "latency_budget")


def test_a_hanging_tool_times_out_and_the_run_ends_within_its_budget(server):
    hang = ("c1", "hang", '{"seconds": 3}')
    forecast = CallForecast(first_token_ms=50.0, per_output_token_ms=0.0)  # reserves 60 ms
    conversation = ScriptedConversation([calls(hang)], forecast_of=forecast)
    ran = run(server, conversation, budget_ms=600.0)
    (span,) = ran.end.trace.tool_calls
    assert span.is_timed_out
    assert span.decision == "affordable"
    assert ran.of(McpCallDone)[0].error.startswith("demo.hang timed out after 0.5")
    assert ran.end.trace.stop_reason == "budget_nearly_spent"
    assert (ran.end.status, ran.end.incomplete_reason) == ("incomplete", "latency_budget")
    assert ran.wall_ms < 600.0 + 100.0


def test_two_identical_results_stop_tool_use(server):
    lookup = ("c1", "lookup", '{"key": "k"}')
    again = ("c2", "lookup", '{"key": "k"}')
    conversation = ScriptedConversation([calls(lookup), calls(again), calls(SEARCH_A)])
    ran = run(server, conversation)
    assert ran.end.trace.stop_reason == "redundant_results"
    assert conversation.log == ["tools", "results c1", "tools", "results c2", "answer"]
    assert [request.tool_choice for request in conversation.requests] == ["auto", "auto", "none"]


def test_run_usage_sums_every_model_calls_tokens(server):
    tool_turn = replace(calls(LOOKUP_K), usage=(120, 0, 15))
    ran = run(server, ScriptedConversation([tool_turn]))
    # the tool turn (120, 0, 15) and the answer (300, 200, 20)
    assert ran.end.usage == RunUsage(input_tokens=420, cached_tokens=200, output_tokens=35)
    assert (ran.end.status, ran.end.incomplete_reason) == ("completed", None)


def test_a_spent_cost_budget_stops_tool_use(server):
    """A tool turn computing 100 prompt and 10 output tokens at 1 ms each costs 0.11 engine-s:
    over a 0.1 s cost budget, so the next step is the answer."""
    costly = CallForecast(first_token_ms=1.0, per_output_token_ms=1.0, per_prompt_token_ms=1.0)
    lookups = [calls(("c1", "lookup", '{"key": "a"}')), calls(("c2", "lookup", '{"key": "b"}'))]
    conversation = ScriptedConversation(lookups, forecast_of=costly)
    ran = run(server, conversation, cost_budget_s=0.1)
    assert ran.end.trace.stop_reason == "cost_budget"
    assert conversation.log == ["tools", "results c1", "answer"]


class SmallContextConversation(ScriptedConversation):
    """Model "tiny" is faster (routing picks it) but its context cannot hold the prompt."""

    async def call(self, request: ModelRequest) -> ScriptedCall:
        if request.model == "tiny":
            raise ContextTooSmallError("prompt has 1,100 tokens; the limit is 1,023")
        return await super().call(request)

    def forecast(self, model: str) -> CallForecast:  # "m": 2 s slower, past its stickiness
        return replace(FORECAST, first_token_ms=1.0 if model == "tiny" else 2_000.0)


def test_a_call_routed_to_a_model_too_small_for_it_goes_back_to_the_session_model(server):
    conversation = SmallContextConversation([calls(LOOKUP_K)])
    ran = run(server, conversation, candidate_models=("m", "tiny"))
    routes = [d for d in ran.end.trace.decisions if d["what"] in ("route", "route_refused")]
    assert routes[0]["what"] == "route" and routes[0]["model"] == "tiny"
    assert routes[1] == {**routes[1], "what": "route_refused", "model": "tiny"}
    assert {request.model for request in conversation.requests} == {"m"}
    assert (ran.end.status, conversation.log[-1]) == ("completed", "answer")
