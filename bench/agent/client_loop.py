"""Layout 1, what agent frameworks do today: a loop on the client over chat completions.

    messages = [system: instructions, user: text + images]
    while fewer than K calls were made:
        chat call (tool_choice "required")  -> tool calls (cut to the K left)
        each tool call, one after another, through the MCP client -> a tool message
    final chat call (tool_choice "none", the answer's max_tokens) -> the answer

Stateless: every call re-sends the whole conversation (its images too), no session id, no
budget. The tools are the MCP server's, shown as function tools (name, description, the input
schema as parameters, closed as the controller closes it: OpenAI's strict mode), and stay in
every call's prompt, as the controller keeps them. A call that may call tools gets the
controller's own token limit for such calls. FTR is the final
call's first text delta, from the run's start; tool time is the client's wall time per call.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from agent.run_request import MIN_TOOL_TURN_TOKENS
from bench.agent.harness import QUEUE_ANYWAY, Harness, ms_since
from bench.agent.record import RunRecord, busy_ms
from bench.agent.workload import AgentRun
from cluster.openai.agent_responses import closed_schema

CHAT_ID_PREFIX = "chatcmpl-"  # a chat completion's id is this + the scheduler's request id


@dataclass(frozen=True)
class ChatCall:
    """What one streamed chat call returned."""

    request_id: str
    first_text_ms: float | None  # from the run's start
    tool_calls: tuple[dict, ...]  # {"id", "name", "arguments"} in the model's order
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int


async def run_client_loop(harness: Harness, run: AgentRun, layout: str) -> RunRecord:
    started = time.perf_counter()
    tools = [_function_tool(spec) for spec in harness.tool_specs if spec.name in run.tools]
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in run.image_urls]
    messages: list[dict] = [
        {"role": "system", "content": run.instructions},
        {"role": "user", "content": [*parts, {"type": "text", "text": run.text}]},
    ]
    calls: list[ChatCall] = []
    intervals: list[tuple[float, float]] = []
    names: list[str] = []
    num_errors = 0
    try:
        while len(names) < run.max_tool_calls:
            call = await _chat(harness, messages, tools, "required", MIN_TOOL_TURN_TOKENS, started)
            calls.append(call)
            wanted = call.tool_calls[: run.max_tool_calls - len(names)]
            if not wanted:  # the model answered in text after all
                break
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"]}} for c in wanted
            ]})  # fmt: skip
            for tool_call in wanted:
                begun = ms_since(started)
                text, is_error = await _call_tool(harness, tool_call)
                intervals.append((begun, ms_since(started)))
                names.append(tool_call["name"])
                num_errors += is_error
                messages.append({"role": "tool", "tool_call_id": tool_call["id"], "content": text})
        final = await _chat(harness, messages, tools, "none", run.max_output_tokens, started)
        calls.append(final)
        e2e = ms_since(started)
    except Exception as e:  # recorded; the run cannot go on without this call
        return RunRecord(layout, run.index, run.kind, "failed", run.budget_ms,
                         num_tool_calls=len(names), error=repr(e)[:300])  # fmt: skip
    engine_s = await harness.engine_seconds([c.request_id for c in calls])
    return RunRecord(
        layout=layout, run=run.index, kind=run.kind, status="ok", budget_ms=run.budget_ms,
        ftr_ms=final.first_text_ms, e2e_ms=e2e,
        tool_ms_before_ftr=busy_ms(intervals, final.first_text_ms),
        num_tool_calls=len(names), num_tool_errors=num_errors, num_model_calls=len(calls),
        prompt_tokens=sum(c.prompt_tokens for c in calls),
        cached_tokens=sum(c.cached_tokens for c in calls),
        output_tokens=sum(c.output_tokens for c in calls), engine_s=engine_s,
        models=(harness.model,) * len(calls), tool_names=tuple(names),
    )  # fmt: skip


async def _chat(harness: Harness, messages, tools, tool_choice: str, max_tokens: int, started):
    stream = await harness.openai.chat.completions.create(
        model=harness.model, messages=messages, tools=tools, tool_choice=tool_choice,
        max_completion_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=QUEUE_ANYWAY,
    )  # fmt: skip
    first_text, usage, request_id = None, None, ""
    calls: dict[int, dict] = {}
    async for chunk in stream:
        request_id = request_id or chunk.id
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and delta.content:
            first_text = first_text or ms_since(started)
        for fragment in (delta.tool_calls or ()) if delta is not None else ():
            call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = call["id"] or fragment.id or ""
            if fragment.function is not None:
                call["name"] += fragment.function.name or ""
                call["arguments"] += fragment.function.arguments or ""
        usage = chunk.usage or usage
    details = usage.prompt_tokens_details if usage else None
    return ChatCall(
        request_id=request_id.removeprefix(CHAT_ID_PREFIX), first_text_ms=first_text,
        tool_calls=tuple(calls[i] for i in sorted(calls)),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        cached_tokens=(details.cached_tokens or 0) if details else 0,
        output_tokens=usage.completion_tokens if usage else 0,
    )  # fmt: skip


async def _call_tool(harness: Harness, tool_call: dict) -> tuple[str, bool]:
    """The tool's text and whether it is an error; arguments that are not a JSON object are an
    error the model reads, as a framework would report them."""
    try:
        arguments = json.loads(tool_call["arguments"] or "{}")
    except ValueError:
        return f"arguments are not JSON: {tool_call['arguments'][:80]!r}", True
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object", True
    try:
        result = await harness.mcp.call(
            harness.endpoint, tool_call["name"], arguments, timeout_s=harness.tool_timeout_s
        )
    except Exception as e:  # a timeout or a refused call: the model is told, the loop goes on
        return f"the tool failed: {e!r}"[:200], True
    return result.text, result.is_error


def _function_tool(spec) -> dict:
    return {
        "type": "function",
        "function": {
            "name": spec.name, "description": spec.description,
            "parameters": closed_schema(spec.input_schema),
        },
    }  # fmt: skip
