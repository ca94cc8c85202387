"""Where an MCP server is, and how a session to it is opened (agent/mcp_client.py keeps it).

Two transports, as the cluster config declares them: streamable HTTP (a URL, with headers for
auth or tenancy) or stdio (the argv of a local server, started as a child process; the SDK
passes it only a safe subset of the environment: PATH, HOME and the like, not PYTHONPATH).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

# The SDK's own HTTP defaults: a response stream may stay open for long.
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class McpUnavailableError(Exception):
    """An MCP endpoint could not be opened or listed (the HTTP layer answers 424)."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(f"MCP server {label!r} is unavailable: {reason}")
        self.label = label
        self.reason = reason


@dataclass(frozen=True)
class McpEndpoint:
    """Where one MCP server is: a streamable HTTP URL, or the argv of a local stdio server."""

    label: str  # the server's name in tool keys (`label.tool`) and in errors
    url: str | None = None  # streamable HTTP, e.g. http://host:8765/mcp
    command: tuple[str, ...] = ()  # stdio: the argv of a server to start as a child process
    headers: tuple[tuple[str, str], ...] = ()  # sent with every HTTP request (auth, tenancy)
    allowed_tools: tuple[str, ...] | None = None  # the tools the model may see; None: all

    def __post_init__(self) -> None:
        if (self.url is None) == (not self.command):
            raise ValueError(f"MCP endpoint {self.label!r} needs exactly one of url and command")
        if self.headers and self.url is None:
            raise ValueError(f"MCP endpoint {self.label!r}: headers need a url")

    def allows(self, tool: str) -> bool:
        return self.allowed_tools is None or tool in self.allowed_tools


async def enter_session(endpoint: McpEndpoint, stack: AsyncExitStack) -> Client:
    """Opens a session to `endpoint`, entered on `stack`: leave it by closing `stack`, in the
    task that called this (the SDK's anyio task groups must be left where they were entered)."""
    if endpoint.url is not None:
        http = httpx2.AsyncClient(headers=dict(endpoint.headers), timeout=_HTTP_TIMEOUT)
        await stack.enter_async_context(http)
        server = streamable_http_client(endpoint.url, http_client=http)
    else:
        program, *args = endpoint.command
        server = StdioServerParameters(command=program, args=args)
    # cache=None: the connection caches listings itself, for as long as it chooses.
    return await stack.enter_async_context(Client(server, cache=None))


def describe_error(error: BaseException) -> str:
    """An error's innermost reasons: anyio wraps transport failures in exception groups."""
    inner = getattr(error, "exceptions", None)
    if inner:
        return "; ".join(dict.fromkeys(describe_error(e) for e in inner))
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
