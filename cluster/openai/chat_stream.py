"""One streamed chat answer: the Frontend's GenerationSteps in, `chat.completion.chunk` bodies
out.

    step 1 (the first token)  {"delta": {"role": "assistant", "content": "..."}}
    step k                    {"delta": {"content": "..."}} or {"delta": {"tool_calls": [...]}}
    last step                 {"delta": {...}, "finish_reason": "stop" | "length" | "tool_calls"}
    with include_usage        {"choices": [], "usage": {...}}

No chunk comes before the first token (the Frontend returns a Generation only once it is
there): benchmark clients take TTFT at the first chunk with `choices`, so a role-only chunk
sent at admission would make TTFT read low. Later steps whose text is held back (an incomplete
character, or text the tool-call parser cannot place yet) send nothing.

With tools, the text goes through the model's tool-call stream parser (cluster/tool_calls/):
content and call fragments come out separately; a call's first fragment carries its index, id,
type and name, later ones argument text only, in the shape of OpenAI's `tool_calls` deltas.
"""

from __future__ import annotations

from cluster.frontend import GenerationStep
from cluster.openai.responses import (
    ResponseHeader,
    chat_chunk,
    finish_reason,
    usage_chunk,
)
from cluster.tool_calls.base import ToolCallDelta, ToolCallStreamParser


class ChatStream:
    def __init__(
        self, header: ResponseHeader, parser: ToolCallStreamParser | None, include_usage: bool
    ) -> None:
        self.header = header
        self._parser = parser  # None: the request has no tools; all text is content
        self._include_usage = include_usage
        self._is_first = True
        self._has_tool_calls = False

    def chunks(self, step: GenerationStep) -> list[dict]:
        """The chunks to send for one step (none while its text is held back)."""
        content, calls = split_step(self._parser, step)
        is_last = step.finish_reason is not None
        self._has_tool_calls = self._has_tool_calls or bool(calls)
        delta: dict = {}
        if self._is_first:
            delta["role"] = "assistant"
        if content or (self._is_first and not calls):
            delta["content"] = content
        if calls:
            delta["tool_calls"] = [_tool_call_delta(call) for call in calls]
        self._is_first = False
        chunks = []
        if delta or is_last:
            reason = finish_reason(step.finish_reason, self._has_tool_calls)
            chunks.append(chat_chunk(self.header, delta, reason, self._include_usage))
        if is_last and self._include_usage and step.usage is not None:
            chunks.append(usage_chunk(self.header, "chat.completion.chunk", step.usage))
        return chunks


def split_step(
    parser: ToolCallStreamParser | None, step: GenerationStep
) -> tuple[str, tuple[ToolCallDelta, ...]]:
    """A step's text as content and call fragments (all content without a parser); the last
    step also flushes what the parser held back."""
    if parser is None:
        return step.text, ()
    released = parser.feed(step.text)
    if step.finish_reason is None:
        return released.content, released.tool_calls
    rest = parser.finish()
    return released.content + rest.content, released.tool_calls + rest.tool_calls


def _tool_call_delta(call: ToolCallDelta) -> dict:
    delta: dict = {"index": call.index}
    if call.id is not None:
        delta["id"] = call.id
        delta["type"] = "function"
    function: dict = {"arguments": call.arguments}
    if call.name is not None:
        function = {"name": call.name, **function}
    delta["function"] = function
    return delta
