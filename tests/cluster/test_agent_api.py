"""The agent controller end to end, through the real OpenAI SDK and a real MCP server (the demo
tools, started by the tests with the latencies each test sets): budgeted runs with parallel
calls, a hanging tool timed out and the answer marked partial, tier-0 cache hits, a run kept
within its budget, client functions handed back, and the run's trace."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from agent.demo_tools import DemoLatencies, demo_text, start_demo_server
from tests.cluster.conftest import API_TOKEN

QUEUE_ANYWAY = {"admission": "best_effort"}
# The tiny model's context is 1,024 tokens: few tools, few calls, short answers.
DEMO = {"type": "mcp", "server_label": "demo", "allowed_tools": ["lookup", "search"]}
FIELDS = {"max_output_tokens": 6, "temperature": 1.0, "tool_choice": "required"}
ARGUMENT = {"lookup": "key", "search": "query"}


@pytest.fixture(scope="module")
def api(cluster):
    with openai.OpenAI(
        base_url=f"http://{cluster.http_address}/v1", api_key=API_TOKEN, max_retries=0, timeout=120
    ) as client:
        yield client


@pytest.fixture(scope="module")
def slow_tools():
    """search hangs (a minute); lookup takes 300 ms."""
    server = start_demo_server(
        DemoLatencies(tools={"search": (60_000.0, 0.0), "lookup": (300.0, 0.0)})
    )
    yield server
    server.close()


def run(api, seed: int, **fields):
    body = {**FIELDS, **fields}
    extra = {"seed": seed, **QUEUE_ANYWAY, **body.pop("extra_body", {})}
    return api.responses.create(model="disagg", input="Find facts.", extra_body=extra, **body)


def trace_of(cluster, response_id: str, timeout_s: float = 30.0) -> dict:
    """The run's trace (stored a moment after the answer)."""
    url = f"http://{cluster.http_address}/v1/responses/{response_id}/trace"
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as e:
            if e.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def mcp_calls(response) -> list:
    return [item for item in response.output if item.type == "mcp_call"]


def test_a_budgeted_run_calls_mcp_tools_and_answers_from_their_results(api, cluster):
    for seed in range(3):
        response = run(
            api, seed, tools=[DEMO], max_tool_calls=3, extra_body={"latency_budget_ms": 60_000}
        )
        calls = mcp_calls(response)
        assert 1 <= len(calls) <= 3
        for call in calls:  # every server-side call with the tool's own answer
            argument = json.loads(call.arguments)[ARGUMENT[call.name]]
            assert call.server_label == "demo" and call.error is None
            assert call.output == demo_text(call.name, argument)
        assert response.output[-1].type == "message"  # the answer comes after the calls
        assert response.status in ("completed", "incomplete")
        if response.status == "incomplete":
            assert response.incomplete_details.reason == "max_output_tokens"
        trace = trace_of(cluster, response.id)
        assert trace["status"] == response.status
        assert [span["call_id"] for span in trace["tool_calls"]] != []
        kinds = [span["kind"] for span in trace["model_calls"]]
        assert kinds[0] == "tools" and kinds[-1] == "answer"
        for span in trace["model_calls"]:
            assert span["compute_ms"] is not None and span["compute_ms"] > 0
        assert 0 < trace["ftr_ms"] <= trace["e2e_ms"]


def test_calls_of_one_turn_start_as_written_not_one_after_another(api, cluster, slow_tools):
    """lookup takes 300 ms. Each call of a turn starts when the model has written it (by the
    end of the model call at the latest), whether or not the calls before it have returned:
    one after another, the second would start only when the first ended."""
    tool = {**DEMO, "server_url": slow_tools.url, "allowed_tools": ["lookup"]}
    for seed in range(12):
        response = run(api, seed, tools=[tool], max_tool_calls=3, parallel_tool_calls=True)
        trace = trace_of(cluster, response.id)
        turn_ends = [s["end_ms"] for s in trace["model_calls"] if s["kind"] == "tools"]
        turns: dict[int, list] = {}
        for span in trace["tool_calls"]:
            if not span["is_cached"]:
                turns.setdefault(span["turn"], []).append(span)
        together = [spans for spans in turns.values() if len(spans) >= 2]
        for spans in together:
            written_by_ms = turn_ends[spans[0]["turn"]] + 50.0
            assert all(span["start_ms"] <= written_by_ms for span in spans)
        if together:
            return
    pytest.fail("no seed made the model write two calls in one turn")


def test_a_hanging_tool_is_timed_out_and_the_answer_is_marked_partial(api, slow_tools):
    tool = {**DEMO, "server_url": slow_tools.url, "allowed_tools": ["search"]}
    started = time.monotonic()
    response = run(api, 0, tools=[tool], max_tool_calls=2, extra_body={"latency_budget_ms": 5_000})
    elapsed_s = time.monotonic() - started
    calls = mcp_calls(response)
    assert calls and all(call.error is not None for call in calls)
    assert "timed out" in json.dumps(calls[0].error.model_dump()).lower()
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "latency_budget"
    assert response.output[-1].type == "message"  # an answer, partial
    assert elapsed_s < 5.0 * 1.1


def test_a_run_that_would_exceed_its_budget_returns_within_it(api, slow_tools):
    tool = {**DEMO, "server_url": slow_tools.url, "allowed_tools": ["lookup", "search"]}
    for seed in range(3):
        started = time.monotonic()
        response = run(
            api, seed, tools=[tool], max_tool_calls=6, extra_body={"latency_budget_ms": 1_500}
        )
        assert time.monotonic() - started < 1.5 * 1.1
        assert response.status in ("completed", "incomplete")


def test_a_repeated_call_is_served_by_the_tier_0_cache(api, cluster, demo_tools):
    """The cluster config gives lookup a 300 s result cache."""
    tool = {**DEMO, "allowed_tools": ["lookup"]}
    first = run(api, 7, tools=[tool], max_tool_calls=2)
    num_called = demo_tools.num_calls("lookup")
    again = run(api, 7, tools=[tool], max_tool_calls=2)
    assert [c.arguments for c in mcp_calls(again)] == [c.arguments for c in mcp_calls(first)]
    assert demo_tools.num_calls("lookup") == num_called  # nothing called the second time
    spans = trace_of(cluster, again.id)["tool_calls"]
    assert spans and all(span["is_cached"] for span in spans)


def test_client_functions_go_back_to_the_client_and_the_run_continues(api):
    clock = {
        "type": "function",
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    }
    forced = {"type": "function", "name": "get_time"}
    response = run(api, 3, tools=[DEMO, clock], tool_choice=forced, max_tool_calls=2)
    calls = [item for item in response.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["get_time"] and response.status == "completed"
    follow = api.responses.create(
        model="disagg",
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "noon"}],
        max_output_tokens=4,
        tool_choice="none",
        extra_body={"seed": 3, **QUEUE_ANYWAY},
    )
    assert follow.output[-1].type == "message"
    assert follow.usage.input_tokens_details.cached_tokens > 0  # its KV was kept


def test_streamed_run_sends_mcp_call_events_then_the_answer(api):
    with api.responses.create(
        model="disagg",
        input="Find facts.",
        tools=[DEMO],
        stream=True,
        max_tool_calls=2,
        extra_body={"seed": 1, **QUEUE_ANYWAY},
        **{k: v for k, v in FIELDS.items()},
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.mcp_call.in_progress" in kinds and "response.mcp_call.completed" in kinds
    first_delta = kinds.index("response.output_text.delta")
    assert kinds.index("response.mcp_call.completed") < first_delta
    final = events[-1].response
    assert final.status in ("completed", "incomplete")
    assert final.output_text == "".join(
        event.delta for event in events if event.type == "response.output_text.delta"
    )


def test_an_unreachable_mcp_server_is_a_424_and_an_approval_a_400(api):
    nowhere = {**DEMO, "server_label": "nowhere", "server_url": "http://127.0.0.1:9/mcp"}
    with pytest.raises(openai.APIStatusError) as error:
        run(api, 0, tools=[nowhere])
    assert error.value.status_code == 424 and "nowhere" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        run(api, 0, tools=[{**DEMO, "require_approval": "always"}])
    assert "require_approval" in error.value.message


def test_calls_are_routed_across_candidate_models_by_score(api, cluster):
    response = run(
        api,
        5,
        tools=[DEMO],
        max_tool_calls=2,
        extra_body={"candidate_models": ["disagg", "coloc"], "latency_budget_ms": 60_000},
    )
    routes = [d for d in trace_of(cluster, response.id)["decisions"] if d["what"] == "route"]
    assert routes, "a run with two candidates decides where each call goes"
    for route in routes:
        assert set(route["scores"]) == {"disagg", "coloc"}
        assert route["model"] == max(route["scores"], key=route["scores"].get)
    assert response.output[-1].type == "message"


def test_cluster_state_and_metrics_count_the_runs(api, client):
    run(api, 11, tools=[DEMO], max_tool_calls=1)
    deadline = time.monotonic() + 30
    while True:  # the summary reaches the control plane just after the answer
        rows = {row.request_class: row for row in client.cluster_state().agent}
        if "all" in rows and rows["all"].runs > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    everything = rows["all"]
    assert everything.runs >= 1 and everything.tool_calls_per_run > 0
    assert everything.HasField("ftr_p50_ms") and everything.ftr_p50_ms > 0
    assert 0 < everything.cached_share <= 1
