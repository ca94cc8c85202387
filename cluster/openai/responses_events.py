"""One streamed response: the Frontend's GenerationSteps in, the Responses API's server-sent
events out (`event: <type>` and `data: {json}`, each with its `sequence_number`).

    first step         response.created, response.in_progress   (with the first token, no sooner)
    text               response.output_item.added (a message), response.content_part.added,
                       then response.output_text.delta per piece
    a call begins      (the open item is closed) response.output_item.added (a function_call),
                       then response.function_call_arguments.delta per fragment
    an item ends       response.output_text.done, response.content_part.done,
                       response.output_item.done; or response.function_call_arguments.done,
                       response.output_item.done
    the last step      the open item closed, then (`closing`) response.completed, or
                       response.incomplete (max_output_tokens; or status "cancelled")
    a failure          error, then response.failed (`failure`)

With tools, text goes through the model's tool-call stream parser, as in chat_stream.py. The
final response's output is built from the same pieces the events carried, so a client that
joins the deltas holds exactly the stored response.
"""

from __future__ import annotations

from cluster.frontend import GenerationStep
from cluster.openai.chat_stream import split_step
from cluster.openai.event_sequence import EventSequence
from cluster.openai.response_object import (
    ResponseFields,
    error_of,
    function_call_item,
    message_item,
    new_id,
    status_of,
)
from cluster.tool_calls.base import ToolCallDelta, ToolCallStreamParser


class ResponseEvents:
    def __init__(self, fields: ResponseFields, parser: ToolCallStreamParser | None) -> None:
        self.fields = fields
        self._parser = parser  # None: the request has no tools; all text is content
        self.output: list[dict] = []  # items, as they stand (the last may be open)
        self._open: str | None = None  # "message" or "function_call": the last item, open
        self._sse = EventSequence()
        self._is_first = True
        self.status = "in_progress"
        self.usage = None
        self.error: dict | None = None  # a failed response's {code, message}

    def events(self, step: GenerationStep) -> list[str]:
        """The events of one step (none while its text is held back)."""
        events = []
        if self._is_first:
            self._is_first = False
            in_progress = self.fields.body("in_progress", [])
            events += [
                self._sse.event("response.created", response=in_progress),
                self._sse.event("response.in_progress", response=in_progress),
            ]
        content, calls = split_step(self._parser, step)
        if content:
            events += self._text(content)
        for call in calls:
            events += self._call_fragment(call)
        if step.finish_reason is not None:
            self.status, self.usage = status_of(step.finish_reason), step.usage
            if not self.output:  # an answer with no text at all still has its message
                events += self._open_message()
            events += self._close()
        return events

    def response(self) -> dict:
        """The response object as it stands (final once the last step is in)."""
        return self.fields.body(self.status, self.output, self.usage, self.error)

    def closing(self) -> str:
        """The last event: the whole response, once the last step is in (and it is stored)."""
        kind = "response.completed" if self.status == "completed" else "response.incomplete"
        return self._sse.event(kind, response=self.response())

    def failure(self, error: dict) -> list[str]:
        """The events ending a stream that failed: `error` is the OpenAI error object."""
        self.status, self.error = "failed", error_of(error)
        return self._sse.failure(error, self.response())

    def abandon(self) -> None:
        """The client went away: the answer so far, cancelled."""
        self.status = "cancelled"
        self._close()

    # ------------------------------------------------------------------ items
    def _text(self, text: str) -> list[str]:
        events = [] if self._open == "message" else self._close() + self._open_message()
        self.output[-1]["content"][0]["text"] += text
        return events + [self._sse.event("response.output_text.delta", **self._part(), delta=text)]

    def _call_fragment(self, call: ToolCallDelta) -> list[str]:
        events = []
        if call.id is not None:  # a call's first fragment
            events += self._close()
            item = function_call_item(new_id("fc"), call.id, call.name, "", "in_progress")
            events += self._add(item, "function_call")
        item = self.output[-1]
        item["arguments"] += call.arguments
        if call.arguments:
            events.append(
                self._sse.event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=len(self.output) - 1,
                    delta=call.arguments,
                )
            )
        return events

    def _open_message(self) -> list[str]:
        # Added with no parts: clients (the SDK's stream accumulator) append the part that
        # content_part.added announces.
        item = message_item(new_id("msg"), "", "in_progress")
        part = item["content"].pop()
        events = self._add(item, "message")
        item["content"].append(part)
        return events + [self._sse.event("response.content_part.added", **self._part(), part=part)]

    def _add(self, item: dict, kind: str) -> list[str]:
        self.output.append(item)
        self._open = kind
        return [self._sse.event("response.output_item.added", output_index=len(self.output) - 1,
                            item=item)]  # fmt: skip

    def _close(self) -> list[str]:
        """Close the open item, if any."""
        if self._open is None:
            return []
        item, index = self.output[-1], len(self.output) - 1
        is_cut = self.status in ("incomplete", "cancelled")  # closed by the last step, cut off
        item["status"] = "incomplete" if is_cut else "completed"
        events = []
        if self._open == "message":
            part = item["content"][0]
            events += [
                self._sse.event("response.output_text.done", **self._part(), text=part["text"]),
                self._sse.event("response.content_part.done", **self._part(), part=part),
            ]
        else:
            events.append(
                self._sse.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        self._open = None
        return events + [
            self._sse.event("response.output_item.done", output_index=index, item=item)
        ]

    def _part(self) -> dict:
        """Where the open message's text is: its item, and its one part."""
        item_id = self.output[-1]["id"]
        return {"item_id": item_id, "output_index": len(self.output) - 1, "content_index": 0}
