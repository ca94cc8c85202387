"""The server-sent events of one streamed response, numbered: `event: <type>` and
`data: {json}` with its `sequence_number` (responses_events.py and agent_events.py write a
response's events through one of these)."""

from __future__ import annotations

import json

TEXT_EVENTS = ("response.output_text.delta", "response.output_text.done")


class EventSequence:
    def __init__(self) -> None:
        self._sequence_number = 0

    def event(self, kind: str, **fields) -> str:
        if kind in TEXT_EVENTS:
            fields["logprobs"] = []
        body = {"type": kind, "sequence_number": self._sequence_number, **fields}
        self._sequence_number += 1
        return f"event: {kind}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"

    def failure(self, error: dict, response: dict) -> list[str]:
        """`error` (the OpenAI error object), then `response.failed` with the response."""
        details = error["error"]
        return [
            self.event(
                "error", code=details["code"], message=details["message"], param=details["param"]
            ),
            self.event("response.failed", response=response),
        ]
