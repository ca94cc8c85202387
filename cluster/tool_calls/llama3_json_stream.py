"""Splitting a streamed Llama 3 JSON output (see llama3_json.py for the format) as it arrives.

    state      reading                                    leaves when
    START      whitespace, `<|python_tag|>`, a call head  the head completes (a call starts),
                                                          or cannot (all is content)
    ARGUMENTS  the arguments object, released as it comes its closing brace is seen
    TAIL       the call's own `}`                         it is seen
    SEPARATOR  `; ` and the next call's head              the head completes (a call starts),
                                                          or cannot (the rest is content)
    TEXT       content, released at once                  never

Until the first head is known nothing is released: the output may be all content.
"""

from __future__ import annotations

from enum import Enum

from cluster.tool_calls.base import (
    StreamDelta,
    ToolCallDelta,
    ToolCallStreamParser,
    new_call_id,
    released_delta,
)
from cluster.tool_calls.call_json import (
    ArgumentsScanner,
    HeadStatus,
    match_head,
    skip_whitespace,
)

PYTHON_TAG = "<|python_tag|>"
ARGUMENTS_KEYS = ("parameters", "arguments")  # Llama writes "parameters"; some tunes "arguments"


class _State(Enum):
    START = "start"
    ARGUMENTS = "arguments"
    TAIL = "tail"
    SEPARATOR = "separator"
    TEXT = "text"


class Llama3JsonStreamParser(ToolCallStreamParser):
    def __init__(self, names: frozenset[str] | None) -> None:
        self._names = names  # None: any function name
        self._state = _State.START
        self._buffer = ""  # input neither released nor consumed yet
        self._arguments = ArgumentsScanner()
        self._num_calls = 0
        self._content: list[str] = []  # released by the current feed
        self._deltas: list[ToolCallDelta] = []  # released by the current feed

    def feed(self, text: str) -> StreamDelta:
        self._buffer += text
        while self._step():
            pass
        return released_delta(self._content, self._deltas)

    def finish(self) -> StreamDelta:
        if self._state is _State.START and self._buffer.strip():
            self._content.append(self._buffer)
        elif self._state is _State.SEPARATOR:
            self._content.append(self._buffer.lstrip())
        self._buffer = ""
        return released_delta(self._content, self._deltas)

    def _step(self) -> bool:
        """Consume what the current state can; False when it needs more input."""
        if self._state in (_State.START, _State.SEPARATOR):
            return self._step_head()
        if self._state is _State.ARGUMENTS:
            part, rest = self._arguments.feed(self._buffer)
            if part:
                self._deltas.append(ToolCallDelta(index=self._num_calls - 1, arguments=part))
            self._buffer = rest or ""
            if rest is None:
                return False
            self._state = _State.TAIL
            return True
        if self._state is _State.TAIL:
            at = skip_whitespace(self._buffer, 0)
            if at == len(self._buffer):
                return False
            if self._buffer[at] == "}":
                self._buffer = self._buffer[at + 1 :]
                self._state = _State.SEPARATOR
            else:  # not a call after all, but it has been streamed as one
                self._buffer = self._buffer[at:]
                self._state = _State.TEXT
            return True
        self._content.append(self._buffer)
        self._buffer = ""
        return False

    def _step_head(self) -> bool:
        head_at = self._head_at()
        if head_at is None:
            return False
        head = match_head(self._buffer, head_at, ARGUMENTS_KEYS, self._names)
        if head.status is HeadStatus.INCOMPLETE:
            return False
        if head.status is HeadStatus.MISMATCH:
            if self._state is _State.SEPARATOR:
                self._buffer = self._buffer.lstrip()
            self._state = _State.TEXT
            return True
        self._deltas.append(ToolCallDelta(index=self._num_calls, id=new_call_id(), name=head.name))
        self._num_calls += 1
        self._arguments = ArgumentsScanner()
        self._buffer = self._buffer[head.arguments_at :]
        self._state = _State.ARGUMENTS
        return True

    def _head_at(self) -> int | None:
        """Where the next head begins, past what may precede it; None: more input needed."""
        at = skip_whitespace(self._buffer, 0)
        if self._state is _State.START:
            rest = self._buffer[at:]
            if len(rest) < len(PYTHON_TAG) and PYTHON_TAG.startswith(rest):
                return None
            if rest.startswith(PYTHON_TAG):
                at = skip_whitespace(self._buffer, at + len(PYTHON_TAG))
        elif self._buffer.startswith(";", at):
            at = skip_whitespace(self._buffer, at + 1)
        return None if at == len(self._buffer) else at
