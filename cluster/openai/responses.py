"""The response bodies of the OpenAI API (`chat.completion`, `chat.completion.chunk`,
`text_completion`) and what they share: the id, the usage and the finish reason.

Plain dicts, written by hand: they are only ever serialized, and their shape is OpenAI's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from scheduler.request import Usage

DONE_EVENT = "data: [DONE]\n\n"


@dataclass(frozen=True)
class ResponseHeader:
    """What every body and chunk of one answer repeats."""

    id: str  # "chatcmpl-<request id>" or "cmpl-<request id>"
    model: str
    created: int = field(default_factory=lambda: int(time.time()))  # unix seconds

    @classmethod
    def for_request(cls, prefix: str, request_id: str, model: str) -> ResponseHeader:
        return cls(id=f"{prefix}-{request_id}", model=model)

    def fields(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def usage_body(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }


def finish_reason(reason: str | None, has_tool_calls: bool) -> str | None:
    """OpenAI's finish reason: "tool_calls" when an answer that stopped by itself holds calls;
    else ours ("stop", "length", or "cancelled" when the server cancelled the request)."""
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


def tool_calls_body(calls) -> list[dict]:
    """Parsed calls (cluster.tool_calls.ToolCall: id, name, arguments as JSON text)."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls
    ]


def chat_completion(
    header: ResponseHeader,
    content: str | None,
    tool_calls: list[dict],
    reason: str | None,
    usage: Usage,
) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        **header.fields("chat.completion"),
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
        "usage": usage_body(usage),
    }


def chat_chunk(
    header: ResponseHeader, delta: dict, reason: str | None, with_usage_field: bool
) -> dict:
    chunk = {
        **header.fields("chat.completion.chunk"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}],
    }
    if with_usage_field:  # include_usage: every chunk has the field, null until the last
        chunk["usage"] = None
    return chunk


def usage_chunk(header: ResponseHeader, kind: str, usage: Usage) -> dict:
    """The last chunk of a stream with include_usage: no choices, the usage."""
    return {**header.fields(kind), "choices": [], "usage": usage_body(usage)}


def text_completion(
    header: ResponseHeader, text: str, reason: str | None, usage: Usage | None
) -> dict:
    """A whole `text_completion`, or (usage None) one chunk of a stream."""
    body = {
        **header.fields("text_completion"),
        "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return body


def sse_event(body: dict) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
