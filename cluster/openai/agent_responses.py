"""Responses calls that the agent controller runs (agent/): those with MCP tools, or that
continue a conversation that has them. responses_api.py hands them here after it has read the
previous response and built the conversation.

    endpoints   each MCP tool of the request, or a server the cluster config declares
    tools       listed on every endpoint (424 when one cannot be reached), shown to the model
                as functions next to the client's own, sorted by name (prefix-stable)
    the run     AgentRun.events() -> AgentResponseEvents -> SSE, or one whole response
    the end     the response stored (its conversation continues from the run's last call's
                KV), the run's trace stored for GET /v1/responses/{id}/trace, and its summary
                sent to the control plane's metrics (both after the answer, off its path)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, Response, StreamingResponse

from agent.config import AgentConfig
from agent.controller import AgentController
from agent.run import AgentRun
from agent.run_request import AgentOptions, RunEnd, RunRequest, model_name
from agent.run_trace import RunTrace
from cluster.frontend import Frontend
from cluster.openai.agent_conversation import ServingConversation
from cluster.openai.agent_events import AgentResponseEvents
from cluster.openai.agent_traces import TraceReader
from cluster.openai.delivery import HEADERS
from cluster.openai.errors import error_body, logged_error_body
from cluster.openai.response_object import ResponseFields
from cluster.openai.response_store import ResponseStore
from cluster.openai.responses_conversion import Conversation
from cluster.openai.responses_protocol import FunctionTool, ResponsesRequest
from workers.contract.errors import InvalidRequestError

logger = logging.getLogger("triserve.agent")
DEFAULT_ANSWER_TOKENS = 256


class AgentResponses:
    def __init__(
        self, frontend: Frontend, controller: AgentController, store: ResponseStore, keep
    ) -> None:
        self.frontend = frontend
        self.controller = controller
        self._keep = keep  # (response_id, session_id, response, conversation | None, is_stored)
        self._traces = TraceReader(frontend.scheduler, store)
        self._running: dict[str, asyncio.Task] = {}

    async def create(
        self,
        body: ResponsesRequest,
        conversation: Conversation,
        response_id: str,
        session_id: str,
        arrival_time: float,
    ) -> Response:
        """Raises what refuses the call before its answer starts (bad tools, a server down)."""
        endpoints = {}
        for tool in conversation.mcp_tools:
            try:
                endpoint = self.controller.endpoint(
                    tool.server_label, tool.server_url, tool.headers, tool.allowed_tools
                )
            except ValueError as e:
                raise InvalidRequestError(f"tools: {e}") from None
            endpoints[endpoint.label] = endpoint
        mcp_tools = await self.controller.list_tools(endpoints.values())
        model_tools = _model_tools(conversation.tools, mcp_tools)
        serving = ServingConversation(
            self.frontend, body, conversation, response_id, session_id, model_tools
        )
        run = self.controller.run(
            _run_request(body, conversation, response_id, mcp_tools, endpoints, arrival_time,
                         serving.model, self.controller.config),
            serving,
        )  # fmt: skip
        fields = ResponseFields.for_request(
            response_id, serving.model, body, conversation.instructions, body.tools or []
        )
        events = AgentResponseEvents(fields)
        self._keep(serving, events.response(), None, body.store)  # GET and cancel find it
        if body.stream:
            stream = self._stream(body, run, serving, events)
            return StreamingResponse(stream, media_type="text/event-stream", headers=HEADERS)
        async for _ in self._run(run, serving, events, body.store):
            pass
        if events.failure_body is not None:
            status, error = events.failure_body
            return JSONResponse(error, status_code=status)
        return JSONResponse(events.response())

    async def cancel(self, response_id: str) -> bool:
        """Cancel a run in progress on this replica; False when none is."""
        task = self._running.get(response_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def trace(self, response_id: str) -> dict | None:
        return await self._traces.stored(response_id)

    # ------------------------------------------------------------------ running
    async def _stream(self, body, run: AgentRun, serving, events) -> AsyncIterator[str]:
        for event in events.start():
            yield event
        async for chunk in self._run(run, serving, events, body.store):
            yield chunk
        if events.status != "failed":
            yield events.closing()

    async def _run(
        self, run: AgentRun, serving: ServingConversation, events, is_stored: bool
    ) -> AsyncIterator[str]:
        response_id = serving.response_id
        self._running[response_id] = asyncio.current_task()
        end: RunEnd | None = None
        try:
            async for event in run.events():
                for chunk in events.events(event):
                    yield chunk
                if isinstance(event, RunEnd):
                    end = event
        except Exception as e:
            for chunk in events.failure(error_body(e)[0], logged_error_body(e, response_id)):
                yield chunk
        finally:
            self._running.pop(response_id, None)
            if end is None and events.status != "failed":
                events.abandon()
            conversation = serving.stored() if end is not None else None
            self._keep(serving, events.response(), conversation, is_stored)
            self._finish_later(run.trace, run.request.request_class, events.status, is_stored)

    def _finish_later(
        self, trace: RunTrace, request_class: str, status: str, is_stored: bool
    ) -> None:
        """Read the model calls' traces, then store the run's and report its summary."""
        finish = self._traces.finish(trace, request_class, status, is_stored)
        task = asyncio.ensure_future(finish)
        task.add_done_callback(_log_failure)


def _model_tools(client_tools, mcp_tools) -> tuple[FunctionTool, ...]:
    tools = list(client_tools)
    names = {tool.name for tool in tools}
    for spec in mcp_tools:
        name = model_name(spec, mcp_tools)
        if name in names:
            raise InvalidRequestError(
                f"tools: the function {name!r} and an MCP tool of {spec.server_label!r} share "
                "a name; rename the function or leave the MCP tool out with allowed_tools"
            )
        names.add(name)
        tools.append(
            FunctionTool(
                type="function",
                name=name,
                description=spec.description or None,
                parameters=closed_schema(spec.input_schema),
            )
        )
    return tuple(sorted(tools, key=lambda tool: tool.name))


def closed_schema(schema: dict) -> dict:
    """An MCP tool's argument schema with no properties beyond those it names (OpenAI's strict
    mode): the grammar then ends the arguments object after them, where an open schema lets a
    model write extra keys until its tokens run out."""
    if schema.get("type") != "object" or "additionalProperties" in schema:
        return schema
    return {**schema, "additionalProperties": False}


def _run_request(
    body: ResponsesRequest,
    conversation: Conversation,
    response_id: str,
    mcp_tools,
    endpoints,
    arrival_time: float,
    model: str,
    config: AgentConfig,
) -> RunRequest:
    options = body.agent_options
    candidates = tuple(body.candidate_models or ()) or (model,)
    if model not in candidates:
        candidates = (model, *candidates)
    choice = body.tool_choice or "auto"
    if not isinstance(choice, str):  # a named function: the model calls it, then the client
        choice = choice.name
    return RunRequest(
        run_id=response_id,
        model=model,
        candidate_models=candidates,
        tools=mcp_tools,
        endpoints=endpoints,
        client_tools=frozenset(tool.name for tool in conversation.tools),
        tool_choice=choice,
        max_tool_calls=config.max_tool_calls
        if body.max_tool_calls is None
        else body.max_tool_calls,
        max_output_tokens=body.output_limit or DEFAULT_ANSWER_TOKENS,
        budget_ms=body.latency_budget_ms or config.default_budget_ms,
        started_s=arrival_time,
        request_class=_request_class(conversation),
        cost_budget_s=body.cost_budget_s,
        options=AgentOptions(**options.model_dump()) if options else AgentOptions(),
    )


def _request_class(conversation: Conversation) -> str:
    num_images = sum(
        1
        for item in conversation.items
        for part in (getattr(item, "content", None) or ())
        if getattr(part, "type", None) == "input_image"
    )
    return "text" if num_images == 0 else "image" if num_images == 1 else "images"


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("finishing an agent run's trace failed: %r", task.exception())
