"""The agent controller: what one ingress process keeps across runs (MCP connections, the tool
result cache, the latency distributions learned from every call), and a run for each request.

    controller = AgentController(config)
    tools = await controller.list_tools(endpoints)      # MCP tools, listed (cached a while)
    run = controller.run(run_request, conversation)     # agent/run.py
    async for event in run.events(): ...

Runs share what they learn: a tool's latency observed in one run prices it in the next, and a
tier-0 result cached by one is served to all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from agent.config import AgentConfig
from agent.decision import ToolPolicy
from agent.latency import ToolLatencies
from agent.mcp_client import McpConnections, McpEndpoint
from agent.model_calls import RunConversation
from agent.result_cache import ToolResultCache
from agent.routing import RoutingWeights
from agent.run import AgentRun
from agent.run_request import RunRequest
from agent.tool_runner import ToolServices
from agent.tools import Tier, ToolSpec


class AgentController:
    def __init__(self, config: AgentConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        settings = {
            f"{server.endpoint.label}.{name}": tool
            for server in config.mcp_servers
            for name, tool in server.tools.items()
        }
        self.connections = McpConnections(settings=settings)
        policy = ToolPolicy(
            min_probability_by_tier={Tier(t): p for t, p in config.min_probability.items()},
            timeout_quantile=config.timeout_quantile,
        )
        self.services = ToolServices(
            connections=self.connections,
            cache=ToolResultCache(),
            latencies=ToolLatencies(),
            policy=policy,
            tool_timeout_s=config.tool_timeout_s,
        )
        self.weights = RoutingWeights(**config.routing)

    def endpoint(self, label: str, url: str | None, headers: dict[str, str] | None,
                 allowed_tools: Iterable[str] | None) -> McpEndpoint:  # fmt: skip
        """A request's MCP tool as an endpoint: a declared server's (by label, when the request
        gives no URL), or the request's own."""
        declared = self.config.server(label)
        allowed = None if allowed_tools is None else tuple(allowed_tools)
        if url is None:
            if declared is None:
                raise ValueError(
                    f"MCP server {label!r} is not declared in the cluster config; "
                    "give its server_url"
                )
            if allowed is None:
                return declared.endpoint
            return replace(declared.endpoint, allowed_tools=allowed)
        return McpEndpoint(
            label=label,
            url=url,
            headers=tuple(sorted((headers or {}).items())),
            allowed_tools=allowed,
        )

    async def list_tools(self, endpoints: Iterable[McpEndpoint]) -> tuple[ToolSpec, ...]:
        """Every endpoint's tools, listed concurrently (McpUnavailableError names one that
        cannot be reached), sorted by server and name so that the prompt is prefix-stable."""
        listings = await asyncio.gather(
            *(self.connections.tools(endpoint) for endpoint in endpoints)
        )
        tools = [tool for listing in listings for tool in listing]
        return tuple(sorted(tools, key=lambda tool: (tool.server_label, tool.name)))

    def run(self, request: RunRequest, conversation: RunConversation) -> AgentRun:
        return AgentRun(
            request,
            conversation,
            self.services,
            self.config.model_quality,
            self.weights,
            self.clock,
        )

    def tool_stats(self) -> dict:
        """What cluster state shows of the tools: latency quantiles and tiers, the cache."""
        cache = self.services.cache
        return {
            "tools": self.services.latencies.snapshot(),
            "cache": {"hits": cache.num_hits, "misses": cache.num_misses, "size": len(cache)},
        }

    async def close(self) -> None:
        await self.connections.close()
