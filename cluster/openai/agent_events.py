"""An agent run's events (agent/run_request.py) as the Responses API's output items and
server-sent events. The same object serves a streamed response (the events) and a whole one
(the items it accumulated).

    start              response.created, response.in_progress
    AnswerDelta        a message item (opened as needed), response.output_text.delta
    McpCallStarted     response.output_item.added (an mcp_call, in progress),
                       response.mcp_call_arguments.done, response.mcp_call.in_progress
    McpCallDone        response.mcp_call.completed | response.mcp_call.failed,
                       response.output_item.done (with its output or error)
    FunctionCalls      a function_call item each (added, arguments done, done): the client's
    RunEnd             the open message closed, then `closing`: response.completed or
                       response.incomplete (incomplete_details.reason: latency_budget, ...)

Several mcp_call items may be in progress at once (parallel dispatch); each is found by its
call id. Text after a call opens a new message, so the output keeps the order things happened.
"""

from __future__ import annotations

from agent.run_request import (
    AnswerDelta,
    FunctionCalls,
    McpCallDone,
    McpCallStarted,
    RunEnd,
    RunEvent,
)
from cluster.openai.event_sequence import EventSequence
from cluster.openai.response_object import (
    ResponseFields,
    error_of,
    function_call_item,
    mcp_call_item,
    message_item,
    new_id,
)
from scheduler.request import Usage


class AgentResponseEvents:
    def __init__(self, fields: ResponseFields) -> None:
        self.fields = fields
        self.output: list[dict] = []
        self.status = "in_progress"
        self.incomplete_reason = "max_output_tokens"
        self.usage: Usage | None = None
        self.error: dict | None = None
        self.failure_body: tuple[int, dict] | None = None  # a failed run's status and error
        self._message: int | None = None  # the open message's index in output
        self._calls: dict[str, int] = {}  # call id -> its mcp_call item's index
        self._sse = EventSequence()

    def start(self) -> list[str]:
        in_progress = self.fields.body("in_progress", [])
        return [
            self._sse.event("response.created", response=in_progress),
            self._sse.event("response.in_progress", response=in_progress),
        ]

    def events(self, event: RunEvent) -> list[str]:
        if isinstance(event, AnswerDelta):
            return self._text(event.text)
        if isinstance(event, McpCallStarted):
            return self._call_started(event)
        if isinstance(event, McpCallDone):
            return self._call_done(event)
        if isinstance(event, FunctionCalls):
            return self._function_calls(event)
        if isinstance(event, RunEnd):
            self.status = event.status
            self.incomplete_reason = event.incomplete_reason or self.incomplete_reason
            usage = event.usage
            self.usage = Usage(
                prompt_tokens=usage.input_tokens,
                completion_tokens=usage.output_tokens,
                cached_prompt_tokens=usage.cached_tokens,
            )
            return self._close_message()
        raise TypeError(f"not a run event: {event!r}")

    def response(self) -> dict:
        return self.fields.body(
            self.status, self.output, self.usage, self.error, self.incomplete_reason
        )

    def closing(self) -> str:
        kind = "response.completed" if self.status == "completed" else "response.incomplete"
        return self._sse.event(kind, response=self.response())

    def failure(self, status: int, error: dict) -> list[str]:
        """The events ending a run that failed: `error` is the OpenAI error object, `status`
        its HTTP status (what a whole response answers with)."""
        self.failure_body = (status, error)
        self.status, self.error = "failed", error_of(error)
        return self._sse.failure(error, self.response())

    def abandon(self) -> None:
        """The client went away: what the run had, cancelled."""
        self.status = "cancelled"
        self._close_message()

    # ------------------------------------------------------------------ items
    def _text(self, text: str) -> list[str]:
        events = []
        if self._message is None:
            item = message_item(new_id("msg"), "", "in_progress")
            part = item["content"].pop()
            events += self._add(item)
            item["content"].append(part)
            self._message = len(self.output) - 1
            events.append(self._sse.event("response.content_part.added", **self._part(), part=part))
        self.output[self._message]["content"][0]["text"] += text
        return events + [self._sse.event("response.output_text.delta", **self._part(), delta=text)]

    def _close_message(self) -> list[str]:
        if self._message is None:
            return []
        index, item = self._message, self.output[self._message]
        item["status"] = (
            "completed" if self.status in ("in_progress", "completed") else "incomplete"
        )
        part = item["content"][0]
        events = [
            self._sse.event("response.output_text.done", **self._part(), text=part["text"]),
            self._sse.event("response.content_part.done", **self._part(), part=part),
            self._sse.event("response.output_item.done", output_index=index, item=item),
        ]
        self._message = None
        return events

    def _call_started(self, call: McpCallStarted) -> list[str]:
        events = self._close_message()
        item = mcp_call_item(new_id("mcp"), call.server_label, call.name, call.arguments,
                             status="in_progress")  # fmt: skip
        events += self._add(item)
        index = self._calls[call.call_id] = len(self.output) - 1
        where = {"item_id": item["id"], "output_index": index}
        return events + [
            self._sse.event("response.mcp_call_arguments.done", **where, arguments=call.arguments),
            self._sse.event("response.mcp_call.in_progress", **where),
        ]

    def _call_done(self, call: McpCallDone) -> list[str]:
        index = self._calls.pop(call.call_id)
        item = self.output[index]
        done = mcp_call_item(item["id"], call.server_label, call.name, call.arguments,
                             call.output, call.error)  # fmt: skip
        item.update(done)
        kind = "response.mcp_call.failed" if call.error else "response.mcp_call.completed"
        return [
            self._sse.event(kind, item_id=item["id"], output_index=index),
            self._sse.event("response.output_item.done", output_index=index, item=item),
        ]

    def _function_calls(self, calls: FunctionCalls) -> list[str]:
        events = self._close_message()
        for call in calls.calls:
            item = function_call_item(
                new_id("fc"), call.call_id, call.name, call.arguments, "completed"
            )
            events += self._add(item)
            index = len(self.output) - 1
            events += [
                self._sse.event("response.function_call_arguments.done", item_id=item["id"],
                            output_index=index, name=call.name, arguments=call.arguments),
                self._sse.event("response.output_item.done", output_index=index, item=item),
            ]  # fmt: skip
        return events

    def _add(self, item: dict) -> list[str]:
        self.output.append(item)
        index = len(self.output) - 1
        return [self._sse.event("response.output_item.added", output_index=index, item=item)]

    def _part(self) -> dict:
        item_id = self.output[self._message]["id"]
        return {"item_id": item_id, "output_index": self._message, "content_index": 0}
