"""A small MCP server of demo tools: what `make serve` shows a new user, and what the agent's
tests and benchmark call.

The agent controller's decisions (a tool's tier, whether a call is worth its wait) turn on tool
latency, so the demo tools have realistic latencies that are still reproducible. A call's delay
is drawn from its tool's lognormal(median, sigma) by hashing (seed, tool, canonical arguments,
and how many times these arguments were called before): two runs of one benchmark see the same
delays, and a repeated call is not always as fast as the first. Answers are texts derived from
the arguments by a hash, so a test can check the exact text (`demo_text`).

    tool             kind        median    sigma
    lookup(key)      fast         20 ms     0.3
    search(query)    slow        250 ms     1.0   (heavy tail: 1 call in 10 over ~900 ms)
    quick_search(query)  fast     40 ms     0.3   (one result: what a slow search hedges with)
    read_page(url)   medium      120 ms     0.5
    workflow(task)   very slow  1500 ms     0.3
    hang(seconds)    sleeps exactly `seconds` (timeout tests)

Run it: `python -m agent.demo_tools --port 8765` (streamable HTTP at /mcp), or `--stdio`.
In a test or benchmark: `start_demo_server(...)` serves it from a background thread.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from types import MappingProxyType
from typing import Annotated

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from pydantic import Field

from agent.tools import canonical_arguments

MCP_PATH = "/mcp"
DEFAULT_LATENCIES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {  # tool -> (median_ms, sigma)
        "lookup": (20.0, 0.3),
        "search": (250.0, 1.0),
        "quick_search": (40.0, 0.3),
        "read_page": (120.0, 0.5),
        "workflow": (1500.0, 0.3),
    }
)
_SUBJECTS = ("the archive", "the harbour", "the observatory", "the glacier", "the old mill")
_FACTS = (
    "was first recorded in 1887",
    "holds 42 catalogued items",
    "lies 310 m above sea level",
    "is maintained by a volunteer board",
    "was rebuilt after the 1953 flood",
    "reports a yearly growth of 3.4 %",
    "publishes its logs every Tuesday",
)


@dataclass(frozen=True)
class DemoLatencies:
    """How slow each demo tool is: tool -> (median_ms, sigma) of a lognormal, times `scale`."""

    tools: Mapping[str, tuple[float, float]] = field(default_factory=lambda: DEFAULT_LATENCIES)
    scale: float = 1.0  # 0: every tool answers at once (hang still sleeps)
    seed: int = 0  # another seed, another (still reproducible) draw of delays

    def __post_init__(self) -> None:
        unknown = set(self.tools) - set(DEFAULT_LATENCIES)
        if unknown:
            known = list(DEFAULT_LATENCIES)
            raise ValueError(f"no demo tool named {sorted(unknown)}; known: {known}")
        if self.scale < 0 or any(m < 0 or s < 0 for m, s in self.tools.values()):
            raise ValueError("latency medians, sigmas and the scale must not be negative")
        merged = {**DEFAULT_LATENCIES, **self.tools}
        object.__setattr__(self, "tools", MappingProxyType(merged))

    def delay_s(self, tool: str, arguments: str, num_previous: int) -> float:
        """The delay of one call, in seconds: a hash of its identity, read as a lognormal draw."""
        median_ms, sigma = self.tools[tool]
        digest = hashlib.sha256(f"{self.seed}\0{tool}\0{arguments}\0{num_previous}".encode())
        quantile = (int.from_bytes(digest.digest()[:8], "big") + 0.5) / 2**64  # in (0, 1)
        z = NormalDist().inv_cdf(quantile)
        return self.scale * median_ms * math.exp(sigma * z) / 1000.0


def parse_latency(flag: str) -> tuple[str, tuple[float, float]]:
    """`search=250:1.0` -> ("search", (250.0, 1.0)); the form of `--latency`."""
    try:
        tool, spec = flag.split("=", 1)
        median_ms, sigma = spec.split(":", 1)
        return tool.strip(), (float(median_ms), float(sigma))
    except ValueError:
        raise ValueError(f"--latency wants TOOL=MEDIAN_MS:SIGMA, got {flag!r}") from None


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def _fact(tool: str, argument: str, salt: str = "") -> str:
    h = _digest(tool, argument, salt)
    return f"{_SUBJECTS[h % len(_SUBJECTS)]} {_FACTS[(h // 7) % len(_FACTS)]}"


def demo_text(tool: str, argument: str) -> str:
    """What a demo tool answers for its one argument: the same text for the same argument."""
    if tool == "lookup":
        return f"{argument}: {_fact(tool, argument)} (record {_digest(tool, argument) % 10000:04d})"
    if tool == "search":
        hits = "; ".join(f"{i}. {_fact(tool, argument, str(i))}" for i in range(1, 4))
        return f"3 results for {argument!r}: {hits}"
    if tool == "quick_search":
        return f"top result for {argument!r}: {_fact('search', argument, '1')}"
    if tool == "read_page":
        return f"{argument} says that {_fact(tool, argument)}; also {_fact(tool, argument, 'b')}."
    if tool == "workflow":
        return f"workflow {argument!r} done: planned, found that {_fact(tool, argument)}, reported"
    if tool == "hang":
        return f"slept {float(argument):g} s"
    raise ValueError(f"no demo tool named {tool!r}")


class CallLog:
    """How many times each tool, and each (tool, arguments), was called. A server's tools run in
    its one event loop; readers in other threads see whole integers (the GIL)."""

    def __init__(self) -> None:
        self._per_tool: Counter[str] = Counter()
        self._per_arguments: Counter[tuple[str, str]] = Counter()

    def record(self, tool: str, arguments: str) -> int:
        """Counts one call; returns how many calls of these arguments came before it."""
        num_previous = self._per_arguments[(tool, arguments)]
        self._per_arguments[(tool, arguments)] += 1
        self._per_tool[tool] += 1
        return num_previous

    def num_calls(self, tool: str) -> int:
        return self._per_tool[tool]


# Arguments are short: a random-weight model writing them under the schema's grammar then
# always closes them within a few tokens (an unbounded string may run to max_tokens).
MAX_ARGUMENT_CHARS = 16


def build_demo_server(latencies: DemoLatencies, calls: CallLog) -> MCPServer:
    """The demo tools on one MCPServer (not yet serving)."""
    server = MCPServer("triserve-demo-tools", log_level="WARNING")

    async def answer(tool: str, argument: str, arguments: dict) -> str:
        canonical = canonical_arguments(arguments)
        await anyio.sleep(latencies.delay_s(tool, canonical, calls.record(tool, canonical)))
        return demo_text(tool, argument)

    async def lookup(
        key: Annotated[str, Field(description="the key to look up", max_length=MAX_ARGUMENT_CHARS)],
    ) -> str:
        return await answer("lookup", key, {"key": key})

    async def search(
        query: Annotated[
            str, Field(description="what to search for", max_length=MAX_ARGUMENT_CHARS)
        ],
    ) -> str:
        return await answer("search", query, {"query": query})

    async def quick_search(
        query: Annotated[
            str, Field(description="what to search for", max_length=MAX_ARGUMENT_CHARS)
        ],
    ) -> str:
        return await answer("quick_search", query, {"query": query})

    async def read_page(
        url: Annotated[str, Field(description="the page's address", max_length=MAX_ARGUMENT_CHARS)],
    ) -> str:
        return await answer("read_page", url, {"url": url})

    async def workflow(
        task: Annotated[
            str, Field(description="the task to carry out", max_length=MAX_ARGUMENT_CHARS)
        ],
    ) -> str:
        return await answer("workflow", task, {"task": task})

    async def hang(seconds: Annotated[float, Field(description="how long to sleep", ge=0)]) -> str:
        calls.record("hang", canonical_arguments({"seconds": seconds}))
        await anyio.sleep(seconds)
        return demo_text("hang", str(seconds))

    descriptions = {
        lookup: "Look up one key in the fact table. Fast.",
        search: "Search the web for a query; returns the top 3 results. Slow, sometimes very slow.",
        quick_search: "Search an index for a query; returns the top result. Fast.",
        read_page: "Read one web page and summarize it.",
        workflow: "Run a multi-step research workflow on a task. Very slow.",
        hang: "Sleep for the given number of seconds, then answer (for timeout tests).",
    }
    for tool, description in descriptions.items():
        server.add_tool(tool, description=description, structured_output=False)
    return server


class DemoServer:
    """The demo tools served over streamable HTTP by uvicorn, from a background thread."""

    def __init__(self, latencies: DemoLatencies, host: str, port: int) -> None:
        self._calls = CallLog()
        app = build_demo_server(latencies, self._calls).streamable_http_app(host=host)
        # Bound here, not by uvicorn, so that port 0 is resolved before the server starts.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}{MCP_PATH}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the demo MCP server at {self.url} did not start")
            time.sleep(0.01)

    def num_calls(self, tool: str) -> int:
        """How many calls of `tool` this server has begun."""
        return self._calls.num_calls(tool)

    def close(self) -> None:
        """Stops serving, as a restarting server would: calls still running after a second are
        cancelled, and sessions are forgotten."""
        self._uvicorn.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def start_demo_server(
    latencies: DemoLatencies | None = None, host: str = "127.0.0.1", port: int = 0
) -> DemoServer:
    """Serves the demo tools in this process until `.close()`; port 0 picks a free port."""
    server = DemoServer(latencies or DemoLatencies(), host, port)
    server.start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agent.demo_tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-scale", type=float, default=1.0, help="times every median")
    parser.add_argument(
        "--latency", action="append", default=[], metavar="TOOL=MEDIAN_MS:SIGMA", help="repeatable"
    )
    args = parser.parse_args(argv)
    try:
        tools = dict(parse_latency(flag) for flag in args.latency)
        latencies = DemoLatencies(tools=tools, scale=args.latency_scale, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    server = build_demo_server(latencies, CallLog())
    if args.stdio:
        server.run("stdio")
        return
    print(f"demo MCP tools at http://{args.host}:{args.port}{MCP_PATH}", file=sys.stderr)
    server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
