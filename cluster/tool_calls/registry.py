"""The known tool-call formats, by name, and which one a model's chat template implies."""

from __future__ import annotations

from cluster.tool_calls.base import ToolCallFormat
from cluster.tool_calls.hermes import HermesFormat
from cluster.tool_calls.llama3_json import Llama3JsonFormat

FORMATS: dict[str, ToolCallFormat] = {
    format.name: format for format in (HermesFormat(), Llama3JsonFormat())
}


def detect_format(chat_template: str | None) -> ToolCallFormat | None:
    """The format a chat template teaches: a template that shows `<tool_call>` blocks is
    Hermes; one with `<|python_tag|>` or Llama 3's ipython turns is Llama 3 JSON; else None
    (the model cannot be offered tools unless its format is configured by name)."""
    if not chat_template:
        return None
    if "<tool_call>" in chat_template:
        return FORMATS["hermes"]
    is_llama3_ipython = "<|start_header_id|>" in chat_template and "ipython" in chat_template
    if "<|python_tag|>" in chat_template or is_llama3_ipython:
        return FORMATS["llama3_json"]
    return None


def format_named(name: str) -> ToolCallFormat:
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise ValueError(f"unknown tool-call format {name!r}; known: {known}") from None
