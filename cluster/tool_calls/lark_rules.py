"""The Lark rules both formats' grammars share: one rule per offered function, forcing its call
object, `{"name": "<name>", "<key>": <arguments>}`, with the name a constant and the arguments an
inline JSON schema (`%json`, which llguidance only accepts in a rule, not in a terminal).

JSON is written with fixed separators, `", "` and `": "`, and no other whitespace (the
`x-guidance` options below): the layout of Python's `json.dumps`, which is what these model
families were trained on and what chat templates render with `tojson`. Fixed, because a grammar
that allows free whitespace lets a random-weight (or a confused) model emit spaces until
max_tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cluster.tool_calls.base import Tool, ToolChoice

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def offered_tools(tools: Sequence[Tool], tool_choice: ToolChoice) -> list[Tool]:
    """The tools a call may name: all of them, or the one `tool_choice` forces."""
    if tool_choice == "none":
        raise ValueError('no grammar for tool_choice "none": the answer is free text')
    if not tools:
        raise ValueError(f"tool_choice {tool_choice!r} needs at least one tool")
    if tool_choice in ("auto", "required"):
        return list(tools)
    forced = [tool for tool in tools if tool.name == tool_choice]
    if not forced:
        raise ValueError(f"tool_choice names {tool_choice!r}, which is not among the tools")
    return forced


def lark_literal(text: str) -> str:
    """`text` as a Lark string literal (JSON string escapes are Lark's too)."""
    return json.dumps(text)


def arguments_schema(tool: Tool) -> dict:
    """The tool's parameter schema, as an object, laid out as JSON_LAYOUT says."""
    schema = dict(tool.parameters)
    schema.setdefault("type", "object")
    schema["x-guidance"] = {**schema.get("x-guidance", {}), **JSON_LAYOUT}
    return schema


def call_rules(tools: Sequence[Tool], arguments_key: str) -> str:
    """The rule `call_object`: a call of any of `tools`, and the rules it is made of."""
    alternatives = " | ".join(f"fn_{i}" for i in range(len(tools)))
    rules = [f"call_object: {alternatives}"]
    for i, tool in enumerate(tools):
        head = f'{{"name": {json.dumps(tool.name, ensure_ascii=False)}, "{arguments_key}": '
        rules.append(f'fn_{i}: {lark_literal(head)} args_{i} "}}"')
        rules.append(f"args_{i}: %json {json.dumps(arguments_schema(tool))}")
    return "\n".join(rules)
