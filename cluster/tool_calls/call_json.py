"""Reading the JSON object of one call, `{"name": "f", "arguments": {...}}`, whole or streamed.

Both formats write a call as that object (Llama 3 says "parameters"), name first, as every
model of theirs does and as the grammars force. It is read in two steps, which the whole and the
streamed parse share, so that the two agree on every boundary:

    {"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}
    |<------------------ head ------------------>|<----- arguments ----->|^ the call's close
                                                 ^ arguments_at

- the head, up to the arguments object's `{`: `match_head` says whether the text so far is a
  head, may still become one, or cannot be one (then the text is content, not a call);
- the arguments object: `ArgumentsScanner` finds its closing brace (minding strings and escapes)
  while text streams in, so each fragment is released as soon as it arrives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

JSON_WHITESPACE = " \t\n\r"


class HeadStatus(Enum):
    INCOMPLETE = "incomplete"  # a prefix of a head: wait for more text
    MISMATCH = "mismatch"  # cannot become a head (or names a function not offered)
    COMPLETE = "complete"


@dataclass(frozen=True)
class CallHead:
    status: HeadStatus
    name: str = ""
    arguments_at: int = -1  # index of the arguments object's "{" once COMPLETE


_INCOMPLETE = CallHead(HeadStatus.INCOMPLETE)
_MISMATCH = CallHead(HeadStatus.MISMATCH)


def skip_whitespace(text: str, at: int) -> int:
    while at < len(text) and text[at] in JSON_WHITESPACE:
        at += 1
    return at


def match_head(
    text: str, start: int, arguments_keys: Sequence[str], names: frozenset[str] | None
) -> CallHead:
    """Whether `text[start:]` begins with a call's head: `{ "name" : "<name>" , "<key>" : {`,
    with JSON whitespace anywhere between the pieces and any of `arguments_keys` as the key."""
    at = start
    for expected in ("{", ['"name"'], ":", None, ",", [f'"{k}"' for k in arguments_keys], ":"):
        at = skip_whitespace(text, at)
        if at == len(text):
            return _INCOMPLETE
        if expected is None:
            name, at = _read_string(text, at)
            if name is None:
                return _INCOMPLETE if at == len(text) else _MISMATCH
            continue
        options = [expected] if isinstance(expected, str) else expected
        piece = next((o for o in options if text.startswith(o, at)), None)
        if piece is None:
            rest = text[at:]
            is_prefix = any(o.startswith(rest) for o in options)
            return _INCOMPLETE if is_prefix else _MISMATCH
        at += len(piece)
    at = skip_whitespace(text, at)
    if at == len(text):
        return _INCOMPLETE
    if text[at] != "{" or (names is not None and name not in names):
        return _MISMATCH
    return CallHead(HeadStatus.COMPLETE, name=name, arguments_at=at)


def _read_string(text: str, at: int) -> tuple[str | None, int]:
    """A JSON string starting at `at`: (its value, the index after it); (None, len(text)) when
    it is not finished yet; (None, at) when it is not a valid string."""
    if text[at] != '"':
        return None, at
    end = at + 1
    while end < len(text):
        char = text[end]
        if char == "\\":
            end += 2
            continue
        if char == '"':
            try:
                return json.loads(text[at : end + 1]), end + 1
            except json.JSONDecodeError:
                return None, at
        if char < " ":
            return None, at
        end += 1
    return None, len(text)


class ArgumentsScanner:
    """Finds the end of a JSON object whose text arrives in pieces, starting at its `{`.

    Only braces and string quotes are tracked, not full JSON syntax: it finds where a valid
    object ends; whether the object is valid is `is_json_object`'s question, asked on the whole.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> tuple[str, str | None]:
        """(the part of `text` that belongs to the object, the text after the object's closing
        brace, or None while the object is still open)."""
        for i, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return text[: i + 1], text[i + 1 :]
        return text, None


def is_json_object(text: str) -> bool:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError):
        return False
    return isinstance(value, dict)


def _reject_constant(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


@dataclass(frozen=True)
class ArgumentsSpan:
    """A call read from whole text: its name, its arguments' text, and where that text ends."""

    name: str
    arguments: str
    end: int  # index just after the arguments object's closing brace


def read_call(
    text: str, start: int, arguments_keys: Sequence[str], names: frozenset[str] | None
) -> ArgumentsSpan | None:
    """The call whose head begins at `start`, up to the end of its arguments object (what
    follows, the call's own `}` and the format's markers, is the format's to check); None when
    there is no complete, valid one."""
    head = match_head(text, start, arguments_keys, names)
    if head.status is not HeadStatus.COMPLETE:
        return None
    arguments, rest = ArgumentsScanner().feed(text[head.arguments_at :])
    if rest is None or not is_json_object(arguments):
        return None
    return ArgumentsSpan(
        name=head.name, arguments=arguments, end=head.arguments_at + len(arguments)
    )
