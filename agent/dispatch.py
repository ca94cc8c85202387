"""Streamed dispatch: a tool call starts the moment its arguments close, while the model is
still writing the calls after it (Sutradhara, Conveyor).

The model's calls arrive as fragments (model_calls.CallDelta). Call i is closed when its
arguments' text parses as one JSON object: an object is complete exactly when its closing brace
arrives, and the grammar guarantees the text is valid JSON by then. The stream's end closes any
call left open (its arguments as written). Each call is reported once, in index order, so that
results can be appended in call order and the prompt stays prefix-stable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from agent.model_calls import CallDelta, FinishedCall


@dataclass
class _OpenCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.arguments)


class CallAssembler:
    def __init__(self) -> None:
        self._calls: dict[int, _OpenCall] = {}
        self._num_reported = 0

    def add(self, delta: CallDelta) -> list[FinishedCall]:
        """The calls this fragment closes (at most the ones before and including its own)."""
        call = self._calls.setdefault(delta.index, _OpenCall())
        call.call_id = delta.call_id or call.call_id
        call.name = delta.name or call.name
        call.arguments.append(delta.arguments)
        closed = []
        # A fragment of a later call closes every call before it, whatever their text.
        while self._num_reported < delta.index:
            closed.append(self._report(self._num_reported))
        if self._num_reported == delta.index and _is_closed_object(call.text()):
            closed.append(self._report(delta.index))
        return closed

    def finish(self, calls: tuple[FinishedCall, ...] = ()) -> list[FinishedCall]:
        """The calls still open when the stream ends. `calls`: the parser's whole-output calls,
        which win where the fragments were incomplete (a call cut off by max_tokens is text)."""
        if calls:
            rest = list(calls[self._num_reported :])
            self._num_reported = len(calls)
            return rest
        closed = []
        while self._num_reported < len(self._calls):
            closed.append(self._report(self._num_reported))
        return closed

    @property
    def num_reported(self) -> int:
        return self._num_reported

    def _report(self, index: int) -> FinishedCall:
        call = self._calls.get(index, _OpenCall())
        self._num_reported = index + 1
        return FinishedCall(call_id=call.call_id, name=call.name, arguments=call.text())


def _is_closed_object(text: str) -> bool:
    stripped = text.strip()
    if not stripped.endswith("}"):
        return False
    try:
        return isinstance(json.loads(stripped), dict)
    except ValueError:
        return False
