"""`POST /v1/completions` once its request is admitted: raw text in, `text_completion` out,
streamed (SSE chunks, the first at the first token) or whole."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response

from cluster.frontend import Generation, GenerationStep
from cluster.openai.delivery import event_stream, whole_answer
from cluster.openai.protocol import CompletionRequest
from cluster.openai.responses import ResponseHeader, text_completion, usage_chunk


async def completion_answer(body: CompletionRequest, generation: Generation) -> Response:
    header = ResponseHeader.for_request("cmpl", generation.request_id, generation.model.name)
    if body.stream:
        return event_stream(generation, CompletionStream(header, body.include_usage).chunks)
    text, last = await whole_answer(generation)
    return JSONResponse(text_completion(header, text, last.finish_reason, last.usage))


class CompletionStream:
    """GenerationSteps -> `text_completion` chunks: as ChatStream (chat_stream.py), without
    roles or tools."""

    def __init__(self, header: ResponseHeader, include_usage: bool) -> None:
        self.header = header
        self._include_usage = include_usage
        self._is_first = True

    def chunks(self, step: GenerationStep) -> list[dict]:
        is_last = step.finish_reason is not None
        chunks = []
        if step.text or is_last or self._is_first:
            chunk = text_completion(self.header, step.text, step.finish_reason, None)
            if self._include_usage:  # every chunk has the field, null until the last
                chunk["usage"] = None
            chunks.append(chunk)
        self._is_first = False
        if is_last and self._include_usage and step.usage is not None:
            chunks.append(usage_chunk(self.header, "text_completion", step.usage))
        return chunks
