"""The Responses API's response object, and what goes in it: output items (an assistant message,
function calls), usage, status. Plain dicts, as responses.py writes chat's bodies.

    {"id": "resp_...", "object": "response", "created_at", "status", "model",
     "output": [{"type": "message", "id": "msg_...", "role": "assistant", "status",
                 "content": [{"type": "output_text", "text", "annotations": []}]},
                {"type": "function_call", "id": "fc_...", "call_id": "call_...", "name",
                 "arguments", "status"}, ...],
     "output_text", "usage", "incomplete_details", "error", and the request's fields echoed:
     "previous_response_id", "instructions", "tools", "tool_choice", "parallel_tool_calls",
     "temperature", "top_p", "max_output_tokens", "text", "metadata", "store"}

A finish reason gives the status: "stop" -> "completed"; "length" -> "incomplete" (reason
"max_output_tokens"); "cancelled" -> "cancelled".
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from cluster.openai.responses_protocol import ResponsesRequest
from cluster.tool_calls.base import ToolCall
from scheduler.request import Usage

STATUSES = {"stop": "completed", "length": "incomplete", "cancelled": "cancelled"}


def new_id(prefix: str) -> str:
    """`resp_`, `msg_`, `fc_` or `mcp_`, then random hex."""
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(frozen=True)
class ResponseFields:
    """What a response object says of its request: the same in each event of its stream."""

    id: str
    model: str
    request: dict  # the request's fields, echoed (see `for_request`)
    created_at: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def for_request(
        cls, response_id: str, model: str, body: ResponsesRequest, instructions, tools
    ) -> ResponseFields:
        """`instructions`, `tools`: the call's own (the previous response's when it names
        none), as they reach the model."""
        choice = body.tool_choice or "auto"
        request = {
            "previous_response_id": body.previous_response_id,
            "instructions": instructions,
            "tools": [tool.model_dump(mode="json", exclude_none=True) for tool in tools],
            "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "temperature": 1.0 if body.temperature is None else body.temperature,
            "top_p": 1.0 if body.top_p is None else body.top_p,
            "max_output_tokens": body.output_limit,
            "text": {
                "format": body.text.format.model_dump(mode="json", by_alias=True, exclude_none=True)
                if body.text and body.text.format
                else {"type": "text"}
            },
            "truncation": "disabled",
            "metadata": body.metadata or {},
            "store": body.store,
        }
        return cls(id=response_id, model=model, request=request)

    def body(
        self,
        status: str,
        output: list[dict],
        usage: Usage | None = None,
        error: dict | None = None,
        incomplete_reason: str = "max_output_tokens",
    ) -> dict:
        """The response object. `status` "incomplete" says why: max_output_tokens, or (an agent
        run) latency_budget."""
        incomplete = {"reason": incomplete_reason} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "output_text": output_text(output),
            "usage": None if usage is None else usage_body(usage),
            "incomplete_details": incomplete,
            "error": error,
            **self.request,
        }


def message_item(item_id: str, text: str, status: str) -> dict:
    """The assistant's text as an output item; `status` "in_progress" while it streams."""
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status) -> dict:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def mcp_call_item(
    item_id: str, label: str, name: str, arguments: str, output=None, error=None, status=""
) -> dict:
    """A call the agent controller made on an MCP server (agent/); an error in the shape of
    OpenAI's `mcp_tool_execution_error`."""
    if error is not None:
        error = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": error}]}
    return {
        "type": "mcp_call",
        "id": item_id,
        "server_label": label,
        "name": name,
        "arguments": arguments,
        "output": output,
        "error": error,
        "status": status or ("failed" if error else "completed"),
    }


def output_items(content: str | None, calls: list[ToolCall], finish_reason: str) -> list[dict]:
    """A whole answer's items: its text (when it has some, or no calls), then its calls."""
    status = "incomplete" if finish_reason != "stop" else "completed"
    items = []
    if content or not calls:
        items.append(message_item(new_id("msg"), content or "", status))
    for call in calls:
        items.append(
            function_call_item(new_id("fc"), call.id, call.name, call.arguments, "completed")
        )
    return items


def output_text(output: list[dict]) -> str:
    """The text of all output messages (what the SDK's `response.output_text` joins too)."""
    return "".join(
        part["text"]
        for item in output
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def usage_body(usage: Usage) -> dict:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def status_of(finish_reason: str | None) -> str:
    return STATUSES.get(finish_reason, "incomplete")


def error_of(error_body: dict) -> dict:
    """A failed response's `error`, from the OpenAI error object (errors.py)."""
    error = error_body["error"]
    return {"code": error["code"] or "server_error", "message": error["message"]}
