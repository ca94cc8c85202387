"""Splitting a streamed Hermes output (see hermes.py for the format) as it arrives.

    state      reading                               leaves when
    TEXT       content, looking for "<tool_call>"    the marker is seen
    HEAD       `{"name": "f", "arguments": `         the head completes (a call starts) or
                                                     cannot (the block is content to its close)
    ARGUMENTS  the arguments object, released as it  its closing brace is seen
               comes
    TAIL       `}` and "</tool_call>"                "</tool_call>" is seen

Text is held back, not released, while it may still be trimmed away or turn out to be a call:
the first characters of "<tool_call>" at the end of what arrived, the whitespace before them
(dropped if a block follows), and a block's text until its head is known.
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
from cluster.tool_calls.call_json import ArgumentsScanner, HeadStatus, match_head

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
ARGUMENTS_KEYS = ("arguments",)


class _State(Enum):
    TEXT = "text"
    HEAD = "head"
    ARGUMENTS = "arguments"
    TAIL = "tail"


def held_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a proper start of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class HermesStreamParser(ToolCallStreamParser):
    def __init__(self, names: frozenset[str] | None) -> None:
        self._names = names  # None: any function name
        self._state = _State.TEXT
        self._buffer = ""  # input neither released nor consumed yet
        self._is_in_malformed_block = False  # TEXT: markers are content up to the next CLOSE
        self._is_after_call = False  # the next text's leading whitespace touches a call
        self._has_content = False  # non-blank content was released
        self._held_whitespace = ""  # before an OPEN: dropped if the block holds a call
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
        if self._state is _State.TEXT:
            rest = self._buffer.lstrip() if self._is_after_call else self._buffer
            if self._has_content or rest.strip():
                self._emit(rest)
        elif self._state is _State.HEAD:  # a block cut short before its head: content
            self._emit(self._held_whitespace + OPEN + self._buffer)
        self._buffer = self._held_whitespace = ""
        return released_delta(self._content, self._deltas)

    def _step(self) -> bool:
        """Consume what the current state can; False when it needs more input."""
        if self._state is _State.TEXT:
            return self._step_malformed() if self._is_in_malformed_block else self._step_text()
        if self._state is _State.HEAD:
            return self._step_head()
        if self._state is _State.ARGUMENTS:
            part, rest = self._arguments.feed(self._buffer)
            self._add_arguments(part)
            self._buffer = rest or ""
            if rest is None:
                return False
            self._state = _State.TAIL
            return True
        close_at = self._buffer.find(CLOSE)
        if close_at < 0:
            self._buffer = self._buffer[len(self._buffer) - held_suffix(self._buffer, CLOSE) :]
            return False
        self._buffer = self._buffer[close_at + len(CLOSE) :]
        self._is_after_call = True
        self._state = _State.TEXT
        return True

    def _step_text(self) -> bool:
        open_at = self._buffer.find(OPEN)
        if open_at < 0:
            unsure_at = len(self._buffer) - held_suffix(self._buffer, OPEN)
            sure = self._buffer[:unsure_at].rstrip()
            self._emit(sure)
            self._buffer = self._buffer[len(sure) :]
            return False
        before = self._buffer[:open_at]
        sure = before.rstrip()
        self._emit(sure)
        self._held_whitespace = before[len(sure) :]
        self._buffer = self._buffer[open_at + len(OPEN) :]
        self._state = _State.HEAD
        return True

    def _step_malformed(self) -> bool:
        close_at = self._buffer.find(CLOSE)
        if close_at < 0:
            unsure_at = len(self._buffer) - held_suffix(self._buffer, CLOSE)
            self._emit(self._buffer[:unsure_at])
            self._buffer = self._buffer[unsure_at:]
            return False
        end = close_at + len(CLOSE)
        self._emit(self._buffer[:end])
        self._buffer = self._buffer[end:]
        self._is_in_malformed_block = False
        return True

    def _step_head(self) -> bool:
        head = match_head(self._buffer, 0, ARGUMENTS_KEYS, self._names)
        if head.status is HeadStatus.INCOMPLETE:
            return False
        if head.status is HeadStatus.MISMATCH:
            self._emit(self._held_whitespace + OPEN)
            self._is_in_malformed_block = True
        else:
            self._deltas.append(
                ToolCallDelta(index=self._num_calls, id=new_call_id(), name=head.name)
            )
            self._num_calls += 1
            self._arguments = ArgumentsScanner()
            self._buffer = self._buffer[head.arguments_at :]
        self._held_whitespace = ""
        self._state = _State.ARGUMENTS if head.status is HeadStatus.COMPLETE else _State.TEXT
        return True

    def _emit(self, text: str) -> None:
        if self._is_after_call:
            text = text.lstrip()
            if not text:
                return
            self._is_after_call = False
            if self._has_content:  # parse joins the text on both sides of calls by a newline
                text = "\n" + text
        if text:
            self._content.append(text)
            self._has_content = True

    def _add_arguments(self, part: str) -> None:
        if part:
            self._deltas.append(ToolCallDelta(index=self._num_calls - 1, arguments=part))
