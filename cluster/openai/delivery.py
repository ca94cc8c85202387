"""How an admitted answer reaches the client: whole (`whole_answer`, then one JSON body), or
streamed as server-sent events (`event_stream`): `data: {chunk}` per chunk, then
`data: [DONE]`.

A stream's status line (200) goes out before its first event, so an error after that is one
`data: {"error": {...}}` event, then `data: [DONE]`. However an answer ends (finished, failed,
or the client went away, which cancels the task reading it), its Generation is closed, which
cancels the request in the scheduler if it is still running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from cluster.frontend import Generation, GenerationStep
from cluster.openai.errors import error_event
from cluster.openai.responses import DONE_EVENT, sse_event
from scheduler.errors import RequestFailedError

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


async def whole_answer(generation: Generation) -> tuple[str, GenerationStep]:
    """The answer's text and its last step (finish reason, usage, parsed tool calls)."""
    pieces, last = [], None
    try:
        async for step in generation:
            pieces.append(step.text)
            last = step
    finally:
        generation.close()
    if last is None or last.usage is None:
        raise RequestFailedError("the request ended without finishing its answer; retry")
    return "".join(pieces), last


def event_stream(
    generation: Generation, chunks_of: Callable[[GenerationStep], list[dict]]
) -> StreamingResponse:
    """`chunks_of`: the chunk bodies to send for one step of `generation`."""
    return StreamingResponse(
        _events(generation, chunks_of), media_type="text/event-stream", headers=HEADERS
    )


async def _events(
    generation: Generation, chunks_of: Callable[[GenerationStep], list[dict]]
) -> AsyncIterator[str]:
    try:
        async for step in generation:
            for chunk in chunks_of(step):
                yield sse_event(chunk)
    except Exception as e:  # not a cancellation: that ends the stream at once
        yield error_event(e, generation.request_id)
    finally:
        generation.close()
    yield DONE_EVENT
