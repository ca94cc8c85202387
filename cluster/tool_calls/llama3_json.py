"""The Llama 3.1 / 3.2 JSON tool-call format: the whole answer is the calls, as bare objects.

    <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": ...}

`<|python_tag|>` is optional (3.1 writes it, 3.2 does not; a server that skips special tokens
never sees it), and parallel calls are separated by "; " (3.2). Calls are only recognised at
the start of the answer, as Meta's prompt format puts them: an answer that does not begin with
a valid call is all content. Text after the last call is content.
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
from cluster.tool_calls.call_json import read_call, skip_whitespace
from cluster.tool_calls.lark_rules import call_rules, lark_literal, offered_tools
from cluster.tool_calls.llama3_json_stream import (
    ARGUMENTS_KEYS,
    PYTHON_TAG,
    Llama3JsonStreamParser,
)

SEPARATOR = "; "
_CALL_CLOSE = re.compile(r"[ \t\n\r]*\}")  # after the arguments object
_SEPARATOR = re.compile(r"[ \t\n\r]*(?:;[ \t\n\r]*)?")  # between calls, as parsed
# Text that cannot be taken for a call: it does not begin with "{" (or the tag, then "{").
_GRAMMAR_TEXT = r"""
TEXT: /(?s:.*)/ & ~/[ \t\n\r]*(<\|python_tag\|>[ \t\n\r]*)?\{(?s:.*)/
"""


class Llama3JsonFormat(ToolCallFormat):
    name = "llama3_json"

    def grammar(
        self,
        tools: Sequence[Tool],
        tool_choice: ToolChoice,
        parallel_tool_calls: bool,
        added_tokens: Collection[str] = (),
    ) -> str:
        """The offered tools' calls as the whole answer, or text that is not one ("auto"):

            start: TEXT | calls                                     (auto)
            start: calls                                            (required, or a function)
            calls: <|python_tag|>? call_object ("; " call_object)*  (the rest when parallel)

        `<|python_tag|>` only where the tokenizer has it as a token (Llama 3.1's); the calls
        parse the same without it.
        """
        forced = offered_tools(tools, tool_choice)
        calls = "call_object"
        if PYTHON_TAG in added_tokens:
            calls = f"{PYTHON_TAG}? {calls}"
        if parallel_tool_calls and tool_choice in ("auto", "required"):
            calls += f" ({lark_literal(SEPARATOR)} call_object)*"
        start = "start: TEXT | calls" + _GRAMMAR_TEXT if tool_choice == "auto" else "start: calls"
        return "\n".join([start, f"calls: {calls}", call_rules(forced, ARGUMENTS_KEYS[0])])

    def parse(self, text: str, tools: Sequence[Tool] | None = None) -> ParsedOutput:
        names = tool_names(tools)
        at = skip_whitespace(text, 0)
        if text.startswith(PYTHON_TAG, at):
            at = skip_whitespace(text, at + len(PYTHON_TAG))
        calls: list[ToolCall] = []
        end = 0
        while (span := read_call(text, at, ARGUMENTS_KEYS, names)) is not None:
            close = _CALL_CLOSE.match(text, span.end)
            if close is not None:
                end = close.end()
            elif not text[span.end :].strip(" \t\n\r"):  # cut short right after the arguments
                end = len(text)
            else:
                break
            calls.append(ToolCall(id=new_call_id(), name=span.name, arguments=span.arguments))
            at = _SEPARATOR.match(text, end).end()
        if not calls:
            return ParsedOutput(content=text if text.strip() else None, tool_calls=[])
        return ParsedOutput(content=text[end:].lstrip() or None, tool_calls=calls)

    def stream_parser(self, tools: Sequence[Tool] | None = None) -> ToolCallStreamParser:
        return Llama3JsonStreamParser(tool_names(tools))
