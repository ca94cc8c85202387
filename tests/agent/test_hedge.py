"""A high-variance call is hedged with a faster tool that takes the same arguments: both start,
the first to succeed answers, and the trace says which (against the real demo MCP server)."""

from __future__ import annotations

import asyncio
import time

from agent.budget import LatencyBudget
from agent.decision import ToolPolicy
from agent.demo_tools import DemoLatencies, demo_text, start_demo_server
from agent.latency import ToolLatencies
from agent.mcp_client import McpConnections, McpEndpoint
from agent.model_calls import FinishedCall
from agent.result_cache import ToolResultCache
from agent.run_trace import RunTrace
from agent.tool_runner import ToolRunner, ToolServices
from agent.tools import Tier, ToolSettings

ARGUMENTS = '{"query": "tides"}'


def _runner(server, heavy_tail: bool, budget_ms: float = 2_000.0):
    """A run's tool runner, its latencies learned: search is slow (tier 2 by config) and
    steady or heavy-tailed; quick_search is fast."""

    async def build():
        connections = McpConnections(settings={"demo.search": ToolSettings(tier=Tier.SLOW)})
        endpoint = McpEndpoint(label="demo", url=server.url)
        tools = tuple(await connections.tools(endpoint))
        latencies = _learned({tool.name: tool for tool in tools}, heavy_tail)
        services = ToolServices(
            connections=connections,
            cache=ToolResultCache(),
            latencies=latencies,
            policy=ToolPolicy(),
            tool_timeout_s=10.0,
        )
        trace = RunTrace("run", budget_ms)
        budget = LatencyBudget(budget_ms, started_s=time.time())
        runner = ToolRunner(services, tools, {"demo": endpoint}, budget, trace, True)
        return runner, {tool.name: tool for tool in tools}, trace, connections

    return build()


def _learned(tools: dict, heavy_tail: bool) -> ToolLatencies:
    latencies = ToolLatencies()  # 200 calls each: the cold-start prior no longer counts
    for _ in range(170 if heavy_tail else 200):
        latencies.observe(tools["search"], 50.0)
    for _ in range(30 if heavy_tail else 0):
        latencies.observe(tools["search"], 5_000.0)
    for _ in range(200):
        latencies.observe(tools["quick_search"], 20.0)
    return latencies


def test_a_heavy_tailed_call_is_hedged_and_the_faster_tool_answers():
    server = start_demo_server(
        DemoLatencies(tools={"search": (3_000.0, 0.0), "quick_search": (20.0, 0.0)})
    )

    async def scenario():
        runner, tools, trace, connections = await _runner(server, heavy_tail=True)
        try:
            decision = runner.decide(tools["search"], ARGUMENTS, 100.0, Tier.WORKFLOW)
            assert decision.call and decision.hedge_with == "demo.quick_search"
            started = time.monotonic()
            call = FinishedCall(call_id="call_1", name="search", arguments=ARGUMENTS)
            outcome = await runner.start(call, tools["search"], decision, 0)
            assert time.monotonic() - started < 1.0  # not the 3 s search
            assert outcome.text == demo_text("quick_search", "tides")
            assert trace.tool_calls[0].hedged_with == "demo.quick_search"
            assert trace.tool_calls[0].hedge_won
        finally:
            await connections.close()

    try:
        asyncio.run(scenario())
    finally:
        server.close()


def test_a_steady_call_is_not_hedged():
    server = start_demo_server(DemoLatencies(scale=0.0))

    async def scenario():
        runner, tools, _, connections = await _runner(server, heavy_tail=False)
        try:
            decision = runner.decide(tools["search"], ARGUMENTS, 100.0, Tier.WORKFLOW)
            assert decision.call and decision.hedge_with is None
        finally:
            await connections.close()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
