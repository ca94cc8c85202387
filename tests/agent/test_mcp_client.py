"""The agent's MCP client against real servers: the demo tools served in-process over streamable
HTTP, and as a stdio child process. No part of the SDK is mocked."""

from __future__ import annotations

import asyncio
import functools
import socket
import statistics
import sys
import time
from pathlib import Path

import pytest
from mcp import Client

from agent.demo_tools import DemoLatencies, demo_text, parse_latency, start_demo_server
from agent.mcp_client import McpConnection, McpConnections, McpEndpoint, McpUnavailableError
from agent.tools import Tier, ToolSettings

ROOT = Path(__file__).resolve().parents[2]
INSTANT = DemoLatencies(scale=0.0)  # every tool answers at once, except hang


@pytest.fixture(scope="module")
def demo_server():
    server = start_demo_server(INSTANT)
    yield server
    server.close()


def endpoint_of(server, **fields) -> McpEndpoint:
    return McpEndpoint(label="demo", url=server.url, **fields)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_listing_shows_only_allowed_tools_with_their_configured_settings(demo_server):
    lookup = ToolSettings(tier=Tier.FAST, cache_ttl_s=60.0)
    search = ToolSettings(tier=Tier.SLOW, expected_ms=250.0)
    endpoint = endpoint_of(demo_server, allowed_tools=("lookup", "search"))

    async def main():
        connection = McpConnection(endpoint, settings={"lookup": lookup, "demo.search": search})
        await connection.open()
        try:
            return await connection.list_tools()
        finally:
            await connection.close()

    tools = {spec.name: spec for spec in asyncio.run(main())}
    assert sorted(tools) == ["lookup", "search"]
    assert tools["lookup"].settings == lookup
    assert tools["search"].settings == search  # a `label.name` key names one server's tool
    assert tools["lookup"].key == "demo.lookup"
    assert tools["lookup"].input_schema["required"] == ["key"]
    assert tools["lookup"].input_schema["properties"]["key"]["type"] == "string"
    assert tools["search"].description


def test_a_tool_call_returns_its_deterministic_text(demo_server):
    before = demo_server.num_calls("lookup")

    async def main():
        connections = McpConnections()
        try:
            return [
                await connections.call(endpoint_of(demo_server), "lookup", {"key": "paris"}, 5.0)
                for _ in range(2)
            ]
        finally:
            await connections.close()

    first, second = asyncio.run(main())
    assert first.text == second.text == demo_text("lookup", "paris")
    assert first.text.startswith("paris: ")
    assert not first.is_error and first.latency_ms > 0
    assert demo_server.num_calls("lookup") == before + 2


def test_a_disallowed_or_unknown_tool_is_an_error_result_not_an_exception(demo_server):
    async def main():
        connections = McpConnections()
        try:
            endpoint = endpoint_of(demo_server, allowed_tools=("lookup",))
            return (
                await connections.call(endpoint, "search", {"query": "x"}, 5.0),
                await connections.call(endpoint_of(demo_server), "no_such_tool", {}, 5.0),
            )
        finally:
            await connections.close()

    disallowed, unknown = asyncio.run(main())
    assert disallowed.is_error and "not allowed" in disallowed.text
    assert unknown.is_error and "no_such_tool" in unknown.text


def test_a_hanging_tool_times_out_as_an_error_near_its_timeout(demo_server):
    async def main():
        connections = McpConnections()
        try:
            await connections.tools(endpoint_of(demo_server))  # the session is open before timing
            started = time.perf_counter()
            result = await connections.call(endpoint_of(demo_server), "hang", {"seconds": 1.5}, 0.3)
            return result, time.perf_counter() - started
        finally:
            await connections.close()

    result, elapsed_s = asyncio.run(main())
    assert result.is_error and result.is_timed_out
    assert "timed out" in result.text
    assert 0.3 <= elapsed_s < 1.0
    assert 300 <= result.latency_ms < 1000


def test_concurrent_calls_on_one_connection_run_in_parallel(demo_server):
    async def main():
        connection = McpConnection(endpoint_of(demo_server))
        await connection.open()
        try:
            started = time.perf_counter()
            calls = [connection.call("hang", {"seconds": 0.3}, 5.0) for _ in range(4)]
            results = await asyncio.gather(*calls)
            return results, time.perf_counter() - started
        finally:
            await connection.close()

    results, elapsed_s = asyncio.run(main())
    assert all(not result.is_error for result in results)
    assert elapsed_s < 0.9  # one after another: 1.2 s at least


def test_a_connection_opened_in_one_task_is_used_and_closed_from_others(demo_server):
    async def main():
        connection = McpConnection(endpoint_of(demo_server))
        await asyncio.create_task(connection.open())
        result = await asyncio.create_task(connection.call("lookup", {"key": "oslo"}, 5.0))
        await asyncio.create_task(connection.close())
        return result, connection.is_broken

    result, is_broken = asyncio.run(main())
    assert result.text == demo_text("lookup", "oslo")
    assert is_broken  # closed: no longer usable


def test_a_stdio_server_lists_and_calls(monkeypatch):
    monkeypatch.chdir(ROOT)  # the child finds `agent` from its working directory (no PYTHONPATH)
    command = (sys.executable, "-m", "agent.demo_tools", "--stdio", "--latency-scale", "0")
    endpoint = McpEndpoint(label="local", command=command)

    async def main():
        connections = McpConnections()
        try:
            tools = await connections.tools(endpoint)
            result = await connections.call(endpoint, "read_page", {"url": "a.example/p"}, 10)
            return tools, result
        finally:
            await connections.close()

    tools, result = asyncio.run(main())
    assert {spec.name for spec in tools} == {
        "lookup",
        "search",
        "quick_search",
        "read_page",
        "workflow",
        "hang",
    }
    assert {spec.server_label for spec in tools} == {"local"}
    assert not result.is_error
    assert result.text == demo_text("read_page", "a.example/p")


def test_an_unreachable_server_is_unavailable_naming_the_endpoint():
    endpoint = McpEndpoint(label="nowhere", url=f"http://127.0.0.1:{free_port()}/mcp")

    async def main():
        with pytest.raises(McpUnavailableError) as opening:
            await McpConnection(endpoint).open()
        connections = McpConnections()
        with pytest.raises(McpUnavailableError):
            await connections.tools(endpoint)
        called = await connections.call(endpoint, "lookup", {"key": "x"}, 5.0)
        await connections.close()
        return opening.value, called

    error, called = asyncio.run(main())
    assert error.label == "nowhere" and "'nowhere'" in str(error)
    assert "connect" in error.reason.lower()
    assert called.is_error and "nowhere" in called.text  # a call reports it, never raises


def test_a_server_that_never_answers_is_unavailable_after_the_open_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel does), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = McpEndpoint(label="silent", url=f"http://127.0.0.1:{silent.getsockname()[1]}")

        async def main():
            started = time.perf_counter()
            with pytest.raises(McpUnavailableError) as opening:
                await McpConnection(endpoint, open_timeout_s=0.5).open()
            return opening.value, time.perf_counter() - started

        error, elapsed_s = asyncio.run(main())
    assert "0.5 s" in error.reason
    assert elapsed_s < 2.0


def test_the_pool_reopens_a_connection_broken_by_a_server_restart():
    server = start_demo_server(INSTANT)
    port, endpoint = server.port, endpoint_of(server)

    async def main():
        nonlocal server
        connections = McpConnections()
        try:
            before = await connections.call(endpoint, "lookup", {"key": "a"}, 5.0)
            await asyncio.to_thread(server.close)
            while_down = await connections.call(endpoint, "lookup", {"key": "a"}, 5.0)
            server = await asyncio.to_thread(start_demo_server, INSTANT, port=port)
            after = await connections.call(endpoint, "lookup", {"key": "a"}, 5.0)
            return before, while_down, after
        finally:
            await connections.close()

    try:
        before, while_down, after = asyncio.run(main())
        assert not before.is_error
        assert while_down.is_error  # reported, not raised
        assert not after.is_error and after.text == before.text
        assert server.num_calls("lookup") == 1  # the restarted server answered
    finally:
        server.close()


def test_a_call_refused_by_a_restarted_session_server_is_resent_on_a_fresh_session(monkeypatch):
    # Servers of the handshake era keep sessions: once restarted, they refuse the old session's
    # calls before running any tool, so the pool may resend them. The SDK's client speaks that
    # era when asked to; the demo server speaks both.
    monkeypatch.setattr("agent.mcp_endpoint.Client", functools.partial(Client, mode="legacy"))
    server = start_demo_server(INSTANT)
    port, endpoint = server.port, endpoint_of(server)

    async def main():
        nonlocal server
        connections = McpConnections()
        try:
            before = await connections.call(endpoint, "lookup", {"key": "b"}, 5.0)
            await asyncio.to_thread(server.close)
            server = await asyncio.to_thread(start_demo_server, INSTANT, port=port)
            after = await connections.call(endpoint, "lookup", {"key": "b"}, 5.0)
            return before, after
        finally:
            await connections.close()

    try:
        before, after = asyncio.run(main())
        assert not before.is_error
        assert not after.is_error and after.text == before.text
        assert server.num_calls("lookup") == 1  # run once, by the restarted server
    finally:
        server.close()


def test_demo_latencies_are_reproducible_and_follow_their_median():
    latencies = DemoLatencies(tools={"search": (250.0, 1.0)}, seed=7)
    first_s = latencies.delay_s("search", '{"query":"q"}', 0)
    assert latencies.delay_s("search", '{"query":"q"}', 0) == first_s  # the same call, again
    assert latencies.delay_s("search", '{"query":"q"}', 1) != first_s  # a repeat: a new draw
    draws = [latencies.delay_s("search", f'{{"query":"{i}"}}', 0) for i in range(2000)]
    assert statistics.median(draws) == pytest.approx(0.25, rel=0.1)
    assert max(draws) > 4 * 0.25  # heavy tail: sigma 1.0
    assert latencies.tools["lookup"] == (20.0, 0.3)  # the tools not named keep their defaults
    half = DemoLatencies(tools={"search": (250.0, 1.0)}, seed=7, scale=0.5)
    full_s = latencies.delay_s("search", "{}", 0)
    assert half.delay_s("search", "{}", 0) == pytest.approx(full_s / 2)
    assert parse_latency("search=400:0.5") == ("search", (400.0, 0.5))
    with pytest.raises(ValueError):
        DemoLatencies(tools={"no_such_tool": (1.0, 0.0)})
