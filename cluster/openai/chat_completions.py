"""`POST /v1/chat/completions` once its request is admitted: the answer, streamed (SSE chunks,
chat_stream.py) or whole (one `chat.completion`)."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response

from cluster.frontend import Generation
from cluster.openai.chat_stream import ChatStream
from cluster.openai.delivery import event_stream, whole_answer
from cluster.openai.protocol import ChatCompletionRequest
from cluster.openai.responses import (
    ResponseHeader,
    chat_completion,
    finish_reason,
    tool_calls_body,
)


async def chat_answer(body: ChatCompletionRequest, generation: Generation) -> Response:
    header = ResponseHeader.for_request("chatcmpl", generation.request_id, generation.model.name)
    if body.stream:
        # Without tools all text is content; with them it is split by the model's format, as
        # the Frontend splits the whole answer (GenerationStep.parsed), with the same tools.
        tool_format, tools = generation.model.tool_format, generation.tools
        parser = tool_format.stream_parser(tools) if tools and tool_format else None
        return event_stream(generation, ChatStream(header, parser, body.include_usage).chunks)
    text, last = await whole_answer(generation)
    content, calls = text, []
    if last.parsed is not None:
        content, calls = last.parsed.content, tool_calls_body(last.parsed.tool_calls)
    reason = finish_reason(last.finish_reason, bool(calls))
    return JSONResponse(chat_completion(header, content, calls, reason, last.usage))
