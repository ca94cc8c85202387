"""The agent controller's MCP client: long-lived sessions to tool servers, over the official SDK.

The controller lives in a long-running server process and many asyncio tasks (one per agent
request) call tools at once, so a session is opened once per endpoint and shared:

    McpConnections (pool, keyed by endpoint)
      └─ McpConnection ── owner task: async with Client(transport): wait for close()
                          callers' tasks: client.call_tool(...)   (concurrent, not serialized)

The SDK keeps its transports in anyio task groups, which must be entered and left in the same
task. So each connection's session is entered by one background owner task, which holds it
until `close()` (or until the transport dies); `open()` and `close()` only start and stop that
task, and may be called from any task.

Failures: an endpoint that cannot be reached when it is opened or listed raises
`McpUnavailableError`. A tool call never raises for a timeout or a transport failure: it returns
an error `ToolResult`, which the model reads like any other tool error. A call's failure marks
the connection broken when it shows the session is gone; the pool opens a fresh one on next use.
The pool resends a call only when the server refused it before any tool ran (a restarted server
that forgot the session); any other failed call may have run, and tools may have side effects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack

import anyio
import httpx2
from mcp import Client, MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, TextContent

from agent.mcp_endpoint import McpEndpoint, McpUnavailableError, describe_error, enter_session
from agent.tools import ToolResult, ToolSettings, ToolSpec

__all__ = ["McpConnection", "McpConnections", "McpEndpoint", "McpUnavailableError"]

LISTING_TTL_S = 60.0  # tools rarely change; a fresh listing per agent turn would cost a round trip
OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
SEND_GRACE_S = 1.0  # past a call's timeout, how long its request may still be in the sending
# How a server that restarted since the session began answers it (the SDK's server says the
# first; its client says the second for a 404 with no JSON-RPC body).
_SESSION_UNKNOWN = ("session not found", "session terminated")
_TRANSPORT_ERRORS = (
    httpx2.TransportError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def _is_session_unknown(error: MCPError) -> bool:
    return any(words in error.message.lower() for words in _SESSION_UNKNOWN)


class McpConnection:
    """One open session to one MCP server, shared by concurrent callers until `close()`."""

    def __init__(
        self,
        endpoint: McpEndpoint,
        settings: Mapping[str, ToolSettings] | None = None,
        listing_ttl_s: float = LISTING_TTL_S,
        open_timeout_s: float = OPEN_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self._settings = dict(settings or {})  # tool name (or `label.name`) -> settings
        self._listing_ttl_s = listing_ttl_s
        self._open_timeout_s = open_timeout_s
        self._client: Client | None = None
        self._owner: asyncio.Task | None = None
        self._ready: asyncio.Future[None] | None = None  # done once the session is open (or not)
        self._stop = asyncio.Event()
        self._failure = ""  # why the session ended, when it ended by itself
        self._listing: list[ToolSpec] | None = None
        self._listed_at = 0.0
        self._listing_lock = asyncio.Lock()  # one tools/list at a time: no stampede on expiry

    @property
    def is_broken(self) -> bool:
        """The session is gone (or never opened): calls fail until a new connection is opened."""
        return self._client is None

    async def open(self) -> None:
        """Opens the session; raises McpUnavailableError when the server cannot be reached."""
        if self._owner is not None:
            raise RuntimeError(f"MCP connection {self.endpoint.label!r} is already opened")
        self._stop, self._failure = asyncio.Event(), ""
        self._ready = ready = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._own_session(ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self._open_timeout_s)
        except asyncio.TimeoutError:
            await self.close()
            raise McpUnavailableError(
                self.endpoint.label, f"no session within {self._open_timeout_s:g} s"
            ) from None
        except McpUnavailableError:
            await self.close()
            raise

    async def _own_session(self, ready: asyncio.Future[None]) -> None:
        """Enters the SDK's client, holds it until close(), and leaves it, all in this task."""
        try:
            async with AsyncExitStack() as stack:
                self._client = await enter_session(self.endpoint, stack)
                ready.set_result(None)
                await self._stop.wait()
        except Exception as error:
            self._failure = describe_error(error)
            self._fail_opening(ready, self._failure)
        finally:
            self._client = None
            self._fail_opening(ready, "opening was cancelled")

    def _fail_opening(self, ready: asyncio.Future[None], reason: str) -> None:
        if not ready.done():
            ready.set_exception(McpUnavailableError(self.endpoint.label, reason))
            ready.exception()  # marked as seen: an open() that timed out no longer waits for it

    async def list_tools(self) -> list[ToolSpec]:
        """The server's tools (those the endpoint allows), listed at most every `listing_ttl_s`."""
        async with self._listing_lock:
            now = time.monotonic()
            if self._listing is not None and now - self._listed_at < self._listing_ttl_s:
                return list(self._listing)
            client = self._client
            if client is None:
                raise McpUnavailableError(self.endpoint.label, self._failure or "not open")
            try:
                with anyio.fail_after(self._open_timeout_s):  # a server that never answers
                    page = await client.list_tools()
                    tools = list(page.tools)
                    while page.next_cursor is not None:
                        page = await client.list_tools(cursor=page.next_cursor)
                        tools.extend(page.tools)
            except TimeoutError:
                reason = f"no tool listing within {self._open_timeout_s:g} s"
                raise McpUnavailableError(self.endpoint.label, reason) from None
            except Exception as error:
                if not isinstance(error, MCPError) or _is_session_unknown(error):
                    self._mark_broken(error)
                raise McpUnavailableError(self.endpoint.label, describe_error(error)) from error
            self._listing = [
                ToolSpec(
                    server_label=self.endpoint.label,
                    name=tool.name,
                    description=tool.description or "",
                    input_schema=dict(tool.input_schema),
                    settings=self._settings_of(tool.name),
                )
                for tool in tools
                if self.endpoint.allows(tool.name)
            ]
            self._listed_at = now
            return list(self._listing)

    def _settings_of(self, name: str) -> ToolSettings:
        key = f"{self.endpoint.label}.{name}"
        return self._settings.get(key) or self._settings.get(name) or ToolSettings()

    async def call(self, name: str, arguments: dict, timeout_s: float | None = None) -> ToolResult:
        """Calls one tool. Timeouts and transport failures come back as error results, never
        raised: the caller's agent turn goes on, and the model reads what went wrong."""
        result, _ = await self.attempt(name, arguments, timeout_s)
        return result

    async def attempt(
        self, name: str, arguments: dict, timeout_s: float | None = None
    ) -> tuple[ToolResult, bool]:
        """`call`, and whether the call was refused before any tool ran (this session was gone
        before the call was sent, or the server no longer knew it): only then may a caller
        resend it on a fresh session without running a tool twice."""
        started = time.perf_counter()

        def failed(text: str, is_refused=False, is_timed_out=False) -> tuple[ToolResult, bool]:
            latency_ms = (time.perf_counter() - started) * 1000.0
            result = ToolResult(
                text, is_error=True, latency_ms=latency_ms, is_timed_out=is_timed_out
            )
            return result, is_refused

        where = f"{self.endpoint.label}.{name}"
        if not self.endpoint.allows(name):
            return failed(f"tool {where} is not allowed")
        client = self._client
        if client is None:
            return failed(f"{where}: MCP server not connected ({self._failure})", is_refused=True)
        # The SDK's timeout (its clock starts once the request is sent) tells the server to
        # stop; the scope, a little later, bounds a send that never completes.
        backstop_s = None if timeout_s is None else timeout_s + SEND_GRACE_S
        try:
            with anyio.fail_after(backstop_s):
                result = await client.call_tool(name, arguments, read_timeout_seconds=timeout_s)
        except TimeoutError:
            return failed(f"{where} timed out after {timeout_s:g} s", is_timed_out=True)
        except MCPError as error:
            if error.code == REQUEST_TIMEOUT:
                return failed(f"{where} timed out after {timeout_s:g} s", is_timed_out=True)
            is_refused = _is_session_unknown(error)
            if is_refused or error.code == CONNECTION_CLOSED:
                self._mark_broken(error)
            return failed(f"{where} failed: {error.message}", is_refused)
        except Exception as error:
            if isinstance(error, _TRANSPORT_ERRORS):
                self._mark_broken(error)
            return failed(f"{where} failed: {describe_error(error)}")
        text = "\n".join(part.text for part in result.content if isinstance(part, TextContent))
        latency_ms = (time.perf_counter() - started) * 1000.0
        return ToolResult(text=text, is_error=bool(result.is_error), latency_ms=latency_ms), False

    def _mark_broken(self, error: Exception) -> None:
        """This session will not come back: stop using it (its owner task leaves it), so that
        the pool opens a fresh one."""
        if self._client is not None:
            self._failure = describe_error(error)
            self._client = None
            self._stop.set()

    async def close(self) -> None:
        """Leaves the session (in its owner task) and waits for that, at most CLOSE_TIMEOUT_S.
        A session still opening is cancelled: a server that does not answer is not waited for."""
        self._stop.set()
        owner, self._owner = self._owner, None
        self._client = None
        if owner is None:
            return
        if self._ready is not None and not self._ready.done():
            owner.cancel()
        _, pending = await asyncio.wait({owner}, timeout=CLOSE_TIMEOUT_S)
        for stuck in pending:
            stuck.cancel()


class McpConnections:
    """Connections to many MCP servers, opened on first use and reopened once broken."""

    def __init__(
        self,
        settings: Mapping[str, ToolSettings] | None = None,
        listing_ttl_s: float = LISTING_TTL_S,
        open_timeout_s: float = OPEN_TIMEOUT_S,
    ) -> None:
        self._settings = dict(settings or {})  # tool name (or `label.name`) -> settings
        self._listing_ttl_s = listing_ttl_s
        self._open_timeout_s = open_timeout_s
        self._connections: dict[McpEndpoint, McpConnection] = {}
        self._opening: dict[McpEndpoint, asyncio.Lock] = {}

    async def _connection(self, endpoint: McpEndpoint) -> McpConnection:
        """The endpoint's open connection; opened (once, however many tasks ask) when absent or
        broken. Raises McpUnavailableError when it cannot be opened."""
        connection = self._connections.get(endpoint)
        if connection is not None and not connection.is_broken:
            return connection
        async with self._opening.setdefault(endpoint, asyncio.Lock()):
            connection = self._connections.get(endpoint)
            if connection is not None and not connection.is_broken:
                return connection
            if connection is not None:
                del self._connections[endpoint]
                await connection.close()
            connection = McpConnection(
                endpoint, self._settings, self._listing_ttl_s, self._open_timeout_s
            )
            await connection.open()
            self._connections[endpoint] = connection
            return connection

    async def tools(self, endpoint: McpEndpoint) -> list[ToolSpec]:
        """The endpoint's allowed tools; raises McpUnavailableError when it cannot be reached."""
        return await (await self._connection(endpoint)).list_tools()

    async def call(
        self, endpoint: McpEndpoint, name: str, arguments: dict, timeout_s: float | None = None
    ) -> ToolResult:
        """Calls one tool; an endpoint that cannot be opened is an error result, not raised. A
        call refused because the server forgot the session (it restarted) is resent once, on a
        fresh session; other failures are not, as the tool may have run."""
        started = time.perf_counter()
        for _ in range(2):
            try:
                connection = await self._connection(endpoint)
            except McpUnavailableError as error:
                latency_ms = (time.perf_counter() - started) * 1000.0
                return ToolResult(text=str(error), is_error=True, latency_ms=latency_ms)
            result, is_refused = await connection.attempt(name, arguments, timeout_s)
            if not is_refused:
                break
        return result

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(connection.close() for connection in connections))
