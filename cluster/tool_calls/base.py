"""What a tool-call format is: the values it trades in, and the interface every format implements.

A format is one model family's way of writing tool calls as text (Hermes' `<tool_call>` blocks,
Llama 3's bare JSON objects). It answers three questions about that text:

- `grammar`: the llguidance Lark grammar that forces the model to write calls of the given tools
  (their names exact, their arguments valid under each tool's JSON schema);
- `parse`: the finished output split into content and calls;
- `stream_parser`: the same split made piece by piece while the output streams.

The streamed split equals the whole one: the `content` pieces concatenate to
`parse(text).content` (or "" for None), and the argument fragments of call `i` concatenate to
`parse(text).tool_calls[i].arguments`. Arguments are the exact JSON text the model wrote for the
arguments object, so neither side re-serialises. The one exception: a call whose head (its name)
was valid but whose arguments then break (invalid JSON, or cut off by max_tokens) has already
been streamed as a call, while `parse` returns its text as content. A grammar-constrained output
never breaks that way except by running out of tokens.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

ToolChoice = str  # "auto" | "required" | "none" | the name of the one function to call (forced)


def _empty_object_schema() -> dict:
    return {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    """One function the model may call."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=_empty_object_schema)  # JSON schema of the arguments


@dataclass(frozen=True)
class ToolCall:
    """One call the model made."""

    id: str  # "call_" + random hex, made by the parser
    name: str
    arguments: str  # JSON text of the arguments object, exactly as the model wrote it


@dataclass(frozen=True)
class ParsedOutput:
    """A finished output: the text outside tool calls, and the calls."""

    content: str | None  # None when there is none, or only whitespace
    tool_calls: list[ToolCall]


@dataclass(frozen=True)
class ToolCallDelta:
    """One streamed fragment of a call, in the shape of OpenAI's `tool_calls` delta."""

    index: int  # the call's position among this output's calls
    id: str | None = None  # set on the first fragment of a call only
    name: str | None = None  # set on the first fragment of a call only
    arguments: str = ""  # the next fragment of the arguments JSON text


@dataclass(frozen=True)
class StreamDelta:
    """What one piece of streamed output releases."""

    content: str = ""  # text to emit now as `content`
    tool_calls: tuple[ToolCallDelta, ...] = ()


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def released_delta(content: list[str], deltas: list[ToolCallDelta]) -> StreamDelta:
    """What a stream parser collected during one call, as one delta (fragments of the same call
    merged); empties both lists for the next call."""
    merged: list[ToolCallDelta] = []
    for delta in deltas:
        if merged and merged[-1].index == delta.index:
            merged[-1] = replace(merged[-1], arguments=merged[-1].arguments + delta.arguments)
        else:
            merged.append(delta)
    released = StreamDelta(content="".join(content), tool_calls=tuple(merged))
    content.clear()
    deltas.clear()
    return released


def tool_names(tools: Sequence[Tool] | None) -> frozenset[str] | None:
    """The names a parser accepts; None accepts any name."""
    return None if tools is None else frozenset(tool.name for tool in tools)


class ToolCallStreamParser(ABC):
    """Splits one output into content and calls while it streams. Holds back text that may
    still turn out to be part of a call (a marker's first characters, whitespace before one)."""

    @abstractmethod
    def feed(self, text: str) -> StreamDelta:
        """`text`: the next decoded piece of the output."""

    @abstractmethod
    def finish(self) -> StreamDelta:
        """At the end of the output: release whatever is held back."""


class ToolCallFormat(ABC):
    """One model family's way of writing tool calls (see the module docstring)."""

    name: str  # e.g. "hermes", "llama3_json"

    @abstractmethod
    def grammar(
        self,
        tools: Sequence[Tool],
        tool_choice: ToolChoice,
        parallel_tool_calls: bool,
        added_tokens: Collection[str] = (),
    ) -> str:
        """A llguidance Lark grammar text. "required": one call (or one or more when parallel)
        of any of `tools`; a function name: exactly one call of that tool; "auto": either plain
        text that holds no tool call, or tool calls (as in "required"). Never called with
        "none"; ValueError for a function name not among `tools`.

        `added_tokens`: the tokenizer's added tokens (`tokenizer.get_added_vocab()`), for
        models whose markers are single tokens (Qwen's `<tool_call>`). llguidance treats every
        added token as special, even one marked `special: false`: such a marker must be named
        as a token in the grammar, as spelling it out in characters would forbid the token."""

    @abstractmethod
    def parse(self, text: str, tools: Sequence[Tool] | None = None) -> ParsedOutput:
        """Split a finished output. A call that is malformed (broken JSON, or a name not in
        `tools` when they are given) stays in the content; this never raises."""

    @abstractmethod
    def stream_parser(self, tools: Sequence[Tool] | None = None) -> ToolCallStreamParser:
        """A parser for one streamed output; `tools` as in `parse`."""
