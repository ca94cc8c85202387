"""The Hermes (and Qwen 2.5) tool-call format: each call a block, after optional text.

    Let me look that up.
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
    <tool_call>
    {"name": "get_time", "arguments": {"zone": "CET"}}
    </tool_call>

Content is the text outside valid blocks, without the whitespace that touches a block (the
newlines that separate blocks from text and from each other are layout, not content); text
before and after calls is joined by one newline. A block
whose JSON is broken, or that names a function not offered, is content, up to its
`</tool_call>` (or the end).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from cluster.tool_calls.base import (
    ParsedOutput,
    Tool,
    ToolCall,
    ToolCallFormat,
    ToolCallStreamParser,
    ToolChoice,
    new_call_id,
    tool_names,
)
from cluster.tool_calls.call_json import read_call
from cluster.tool_calls.hermes_stream import (
    ARGUMENTS_KEYS,
    CLOSE,
    OPEN,
    HermesStreamParser,
)
from cluster.tool_calls.lark_rules import call_rules, lark_literal, offered_tools

# What follows a call's arguments object: the call's own "}", then the block's close.
_CALL_TAIL = re.compile(r"[ \t\n\r]*\}[ \t\n\r]*")
# Text that holds no block; a preface is such text up to the first block's opening.
_GRAMMAR_TEXT = r"TEXT: /(?s:.*)/ & ~/(?s:.*)<tool_call>(?s:.*)/"
_GRAMMAR_PREFACE = 'PREFACE: TEXT "<tool_call>"'


class HermesFormat(ToolCallFormat):
    name = "hermes"

    def grammar(
        self,
        tools: Sequence[Tool],
        tool_choice: ToolChoice,
        parallel_tool_calls: bool,
        added_tokens: Collection[str] = (),
    ) -> str:
        """Blocks of the offered tools' calls, after text only when the choice is "auto":

            start: TEXT | PREFACE block_body more_blocks     (auto)
            start: "<tool_call>" block_body more_blocks      (required, or a function)
            more_blocks: ("\\n" "<tool_call>" block_body)*   (only when parallel)
            block_body: "\\n" call_object "\\n" "</tool_call>"

        PREFACE is one terminal, text then the opening marker: as two lexemes the lexer would
        have to end the text before it saw that a marker follows. A marker that is a token of
        the model's tokenizer is named as one (`<tool_call>`, not `"<tool_call>"`); then text
        and marker are two lexemes again, `TEXT <tool_call>`, as no text contains a token.
        """
        forced = offered_tools(tools, tool_choice)
        open_marker, close_marker = (
            marker if marker in added_tokens else lark_literal(marker) for marker in (OPEN, CLOSE)
        )
        blocks = "block_body"
        rules = [f'block_body: "\\n" call_object "\\n" {close_marker}']
        if parallel_tool_calls and tool_choice in ("auto", "required"):
            blocks += " more_blocks"
            rules.append(f'more_blocks: ("\\n" {open_marker} block_body)*')
        if tool_choice != "auto":
            start = f"start: {open_marker} {blocks}"
        elif OPEN in added_tokens:
            start = f"start: TEXT | TEXT {open_marker} {blocks}\n{_GRAMMAR_TEXT}"
        else:
            start = f"start: TEXT | PREFACE {blocks}\n{_GRAMMAR_TEXT}\n{_GRAMMAR_PREFACE}"
        return "\n".join([start, *rules, call_rules(forced, ARGUMENTS_KEYS[0])])

    def parse(self, text: str, tools: Sequence[Tool] | None = None) -> ParsedOutput:
        names = tool_names(tools)
        pieces: list[str | ToolCall] = []  # text, call, text, ..., call, text
        text_start = search_at = 0
        while (open_at := text.find(OPEN, search_at)) >= 0:
            body_at = open_at + len(OPEN)
            block = _read_block(text, body_at, names)
            if block is None:  # malformed: content up to its close
                close_at = text.find(CLOSE, body_at)
                search_at = len(text) if close_at < 0 else close_at + len(CLOSE)
                continue
            call, block_end = block
            pieces += [text[text_start:open_at], call]
            text_start = search_at = block_end
        pieces.append(text[text_start:])
        return ParsedOutput(
            content=join_content(pieces),
            tool_calls=[piece for piece in pieces if isinstance(piece, ToolCall)],
        )

    def stream_parser(self, tools: Sequence[Tool] | None = None) -> ToolCallStreamParser:
        return HermesStreamParser(tool_names(tools))


def _read_block(
    text: str, body_at: int, names: frozenset[str] | None
) -> tuple[ToolCall, int] | None:
    """The call in the block whose body starts at `body_at`, and where the block ends."""
    span = read_call(text, body_at, ARGUMENTS_KEYS, names)
    if span is None:
        return None
    call = ToolCall(id=new_call_id(), name=span.name, arguments=span.arguments)
    tail = _CALL_TAIL.match(text, span.end)
    if tail is None:  # the output may have been cut short right after the arguments
        return (call, len(text)) if not text[span.end :].strip() else None
    if text.startswith(CLOSE, tail.end()):
        return call, tail.end() + len(CLOSE)
    if CLOSE.startswith(text[tail.end() :]):  # cut short inside the close
        return call, len(text)
    return None


def join_content(pieces: Sequence[str | ToolCall]) -> str | None:
    """The text pieces, each trimmed where it touches a call, one line apart; None when
    nothing is left."""
    parts = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, ToolCall):
            continue
        if i > 0:
            piece = piece.lstrip()
        if i < len(pieces) - 1:
            piece = piece.rstrip()
        parts.append(piece)
    content = "\n".join(part for part in parts if part)
    return content if content.strip() else None
