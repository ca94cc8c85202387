"""What the agent controller knows of a tool, and what a call of one returns.

A tool is an MCP server's tool (agent/mcp_client.py lists them), known by its server's label and
its name. Its tier (seed 001 §8.2) is set in the cluster config or learned from its latency:

    tier 0  a cached result (agent/result_cache.py): used freely
    tier 1  a fast, deterministic call: used when the budget affords it
    tier 2  a slow call (search, a database): only with the budget's clear leave
    tier 3  a multi-step workflow: only with an explicit budget and stopping rule
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum


class Tier(IntEnum):
    CACHED = 0
    FAST = 1
    SLOW = 2
    WORKFLOW = 3


@dataclass(frozen=True)
class ToolSettings:
    """What the cluster config may say of one tool (all optional)."""

    tier: Tier | None = None  # None: learned from its observed latency
    cache_ttl_s: float = 0.0  # how long a result answers the same arguments; 0: never cached
    expected_ms: float | None = None  # the latency prior before any call is observed


@dataclass(frozen=True)
class ToolSpec:
    """One tool of one MCP server, as the model is shown it."""

    server_label: str
    name: str
    description: str = ""
    input_schema: dict = field(default_factory=lambda: {"type": "object", "properties": {}})
    settings: ToolSettings = ToolSettings()

    @property
    def key(self) -> str:
        """Unique across servers: what caches and latency statistics are kept under."""
        return f"{self.server_label}.{self.name}"


@dataclass(frozen=True)
class ToolResult:
    """What one call returned: its text (an MCP result's text content, joined), or an error."""

    text: str
    is_error: bool
    latency_ms: float
    is_cached: bool = False  # served by the result cache, not called
    is_timed_out: bool = False  # cut off at its timeout (an error result)


def canonical_arguments(arguments: str | dict) -> str:
    """Arguments as canonical JSON (sorted keys, no spaces): equal arguments, equal text. A
    text that is not JSON is returned as it is."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
