"""What a run is asked to do, and what it tells the layer above while it runs.

The API layer (cluster/openai/agent_responses.py) turns a Responses call into a `RunRequest`,
iterates `AgentRun.events()` and writes each `RunEvent` out as the API's items and SSE events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.mcp_client import McpEndpoint
from agent.model_calls import FinishedCall
from agent.run_trace import RunTrace
from agent.tools import ToolSpec

INCOMPLETE_LATENCY_BUDGET = "latency_budget"
INCOMPLETE_MAX_OUTPUT_TOKENS = "max_output_tokens"
# Output tokens of a call that may write tool calls, when the request's own limit is lower:
# a call's arguments are JSON that a few tokens cannot hold.
MIN_TOOL_TURN_TOKENS = 128


@dataclass(frozen=True)
class AgentOptions:
    """Each of the controller's mechanisms, on by default (the benchmark turns one off)."""

    parallel_dispatch: bool = True  # start each call as its arguments close; run them at once
    pause_kv: bool = True  # keep the KV paused over tool calls; prefill results as they arrive
    budget: bool = True  # the latency budget: skip, time out and degrade by it
    routing: bool = True  # choose among candidate models per call


@dataclass(frozen=True)
class RunRequest:
    run_id: str
    model: str  # the model the request names: the first call runs there
    candidate_models: tuple[str, ...]  # where calls may be routed (the model itself included)
    tools: tuple[ToolSpec, ...]  # the MCP tools the model is shown
    endpoints: dict[str, McpEndpoint]  # by server label
    client_tools: frozenset[str]  # function tools: their calls go back to the client
    tool_choice: str  # the request's: "auto", "required", "none" or a function's name
    max_tool_calls: int | None
    max_output_tokens: int  # the final answer's
    budget_ms: float | None
    started_s: float  # time.time() when the call reached the server
    request_class: str = "text"  # for metrics: text, image, images (seed 001 §9)
    cost_budget_s: float | None = None  # engine-seconds
    options: AgentOptions = field(default_factory=AgentOptions)

    def tool_named(self, name: str) -> ToolSpec | None:
        return next((tool for tool in self.tools if model_name(tool, self.tools) == name), None)


def model_name(tool: ToolSpec, tools: tuple[ToolSpec, ...]) -> str:
    """The function name the model is shown: the tool's own, or `label__name` where two
    servers offer the same name."""
    clashes = sum(1 for other in tools if other.name == tool.name) > 1
    return f"{tool.server_label}__{tool.name}" if clashes else tool.name


# ----------------------------------------------------------------------------- events
@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class McpCallStarted:
    call_id: str
    server_label: str
    name: str
    arguments: str


@dataclass(frozen=True)
class McpCallDone:
    call_id: str
    server_label: str
    name: str
    arguments: str
    output: str | None
    error: str | None


@dataclass(frozen=True)
class FunctionCalls:
    """Calls of the client's function tools: the run ends, and the client runs them."""

    calls: tuple[FinishedCall, ...]


@dataclass(frozen=True)
class RunUsage:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class RunEnd:
    status: str  # "completed" or "incomplete"
    incomplete_reason: str | None
    usage: RunUsage
    trace: RunTrace
    last_request_id: str  # the last model call that the conversation's KV continues from


RunEvent = AnswerDelta | McpCallStarted | McpCallDone | FunctionCalls | RunEnd
