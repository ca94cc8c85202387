"""What every layout's driver reaches the cluster and the tools through, and how it reads back
the server's side of a run: the scheduler's traces of chat calls (gRPC), the run trace of a
response (HTTP, `GET /v1/responses/{id}/trace`).

Every model call is sent with `QUEUE_ANYWAY`: the benchmark measures latency, so nothing is
refused by admission, and an answer runs to its max tokens (EOS ignored) on every layout.
A grammar still ends a tool call when its JSON closes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from cluster.state_messages import DONE_STATES, trace_events
from scheduler.trace_breakdown import trace_breakdown

QUEUE_ANYWAY = {"admission": "best_effort", "ignore_eos": True}
TRACE_TIMEOUT_S = 10.0  # the last token can reach the client just before the trace ends


@dataclass(frozen=True)
class Harness:
    openai: Any  # openai.AsyncOpenAI on the cluster's HTTP API
    http: Any  # httpx2.AsyncClient on the same address (the trace route is no SDK call)
    grpc: Any  # cluster.client.AsyncTriserveClient (the scheduler's traces)
    mcp: Any  # agent.mcp_client.McpConnections (layout 1 calls the tools itself)
    endpoint: Any  # agent.mcp_client.McpEndpoint of the demo server
    tool_specs: tuple  # the demo server's tools (agent.tools.ToolSpec)
    model: str  # where every call of layout 1, and each run's first call, goes
    candidate_models: tuple[str, ...]  # what the controller may route among
    tool_timeout_s: float = 30.0

    async def engine_seconds(self, request_ids: list[str]) -> float | None:
        """Engine compute of these requests, summed over stages, in seconds (None: a trace
        could not be read)."""
        total_ms = 0.0
        for request_id in request_ids:
            try:
                trace = await self._finished_trace(request_id)
            except Exception:  # noqa: BLE001 - the cost is then unknown, not the run failed
                return None
            total_ms += sum(trace_breakdown(trace_events(trace)).compute_ms.values())
        return round(total_ms / 1000.0, 4)

    async def run_trace(self, response_id: str) -> dict:
        """The controller's trace of one response (empty when it cannot be read). It is stored
        just after the answer, off its path: a 404 is asked again until TRACE_TIMEOUT_S."""
        deadline = time.monotonic() + TRACE_TIMEOUT_S
        while True:
            try:
                answer = await self.http.get(f"/v1/responses/{response_id}/trace")
                if answer.status_code != 404 or time.monotonic() > deadline:
                    answer.raise_for_status()
                    trace = answer.json()
                    return trace if isinstance(trace, dict) else {}
            except Exception:  # noqa: BLE001 - the run's client-side figures stand without it
                return {}
            await asyncio.sleep(0.05)

    async def _finished_trace(self, request_id: str):
        deadline = time.monotonic() + TRACE_TIMEOUT_S
        while True:
            trace = await self.grpc.trace(request_id)
            if trace.state in DONE_STATES or time.monotonic() > deadline:
                return trace
            await asyncio.sleep(0.01)


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1e3, 2)
