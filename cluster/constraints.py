"""A request's tools and response format -> the grammar its answer is decoded under.

The grammar is a llguidance grammar (JSON text); it travels in SamplingParams.grammar to the
workers, whose engines mask every step's logits with it (workers/engine/grammar.py). Why
llguidance: a Rust library with no Python dependencies (vLLM and SGLang use it too); a step's mask
costs tens of microseconds against a whole vocabulary; it takes JSON schemas and Lark grammars
that embed them, which is what "text or a tool call whose arguments follow this schema" needs; and
it builds its token tables from any Hugging Face tokenizer.

The grammar is checked here, on the ingress's build lane, against the model's own tokenizer, so
that a schema llguidance refuses, or one no token of the vocabulary can start, is a clear
InvalidRequestError (400 / INVALID_ARGUMENT) before any worker sees the request.

    tools, tool_choice           response_format        grammar
    none (or mode NONE)          unset                  None: free text
    none (or mode NONE)          json_object/schema     the JSON schema
    auto / required / function   unset                  the model's tool-call format's grammar
    required / function          json_object/schema     the tool calls' (calls are the answer)
    auto                         json_object/schema     refused: not supported
"""

from __future__ import annotations

import json
from collections.abc import Collection
from functools import cached_property

from cluster.tool_calls.base import Tool, ToolCallFormat
from cluster.tool_calls.registry import FORMATS
from proto.triserve.v1 import triserve_pb2 as pb
from workers.contract.errors import InvalidRequestError

# Compact JSON: a random-weight (or a confused) model cannot loop on whitespace.
JSON_OPTIONS = {"whitespace_flexible": False}
TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
}


def request_tools(request: pb.GenerateRequest) -> list[Tool]:
    """The request's tools, their parameter schemas parsed (InvalidRequestError if not JSON)."""
    tools, names = [], set()
    for i, tool in enumerate(request.tools):
        if not tool.name:
            raise InvalidRequestError(f"tools[{i}] has no name")
        if tool.name in names:
            raise InvalidRequestError(f"tools[{i}]: the name {tool.name!r} is used twice")
        names.add(tool.name)
        parameters = _json_object(tool.parameters_json, f"tools[{i}].parameters")
        tools.append(
            Tool(
                name=tool.name,
                description=tool.description,
                parameters=parameters or {"type": "object", "properties": {}},
            )
        )
    return tools


def tool_choice(request: pb.GenerateRequest) -> str:
    """ "auto", "none", "required" or the name of the one function to call."""
    choice = request.tool_choice
    if choice.WhichOneof("choice") == "function":
        if choice.function not in {tool.name for tool in request.tools}:
            raise InvalidRequestError(f"tool_choice names {choice.function!r}, not in tools")
        return choice.function
    mode = TOOL_CHOICE_MODES.get(choice.mode)
    if mode is None:
        raise InvalidRequestError(f"unknown tool_choice mode {choice.mode}")
    if mode != "none" and not request.tools:
        raise InvalidRequestError(f"tool_choice {mode!r} needs tools")
    return mode


def constraint_grammar(
    request: pb.GenerateRequest,
    tool_format: ToolCallFormat | None,
    model: str,
    added_tokens: Collection[str] = (),
) -> str | None:
    """The llguidance grammar (JSON text) for the request's answer; None: free text.
    `added_tokens`: the tokenizer's added tokens, so that a marker that is one token (Qwen's
    `<tool_call>`) is forced as that token."""
    choice = tool_choice(request) if request.tools or request.HasField("tool_choice") else "none"
    response_schema = _response_schema(request.response_format)
    if choice == "none":
        if response_schema is None:
            return None
        return _grammar_of_schema(response_schema)
    if tool_format is None:
        raise InvalidRequestError(
            f"model {model!r} cannot take tools: its chat template writes no tool-call format "
            f"Triserve knows ({', '.join(FORMATS)})"
        )
    if choice == "auto" and response_schema is not None:
        raise InvalidRequestError(
            "tool_choice 'auto' with a JSON response_format is not supported; use tool_choice "
            "'required' or a function, or no tools"
        )
    parallel = request.parallel_tool_calls if request.HasField("parallel_tool_calls") else True
    lark = tool_format.grammar(request_tools(request), choice, parallel, added_tokens)
    return _llguidance().grammar_from("lark", lark)


class GrammarChecker:
    """Checks grammars against one model's tokenizer (built on first use; build lane only)."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size

    @cached_property
    def _lltokenizer(self):
        import llguidance.hf

        return llguidance.hf.from_tokenizer(self._tokenizer, n_vocab=self._vocab_size)

    def check(self, grammar: str) -> None:
        """InvalidRequestError when llguidance refuses the grammar, or when no token of the
        vocabulary can start an answer it accepts."""
        llguidance = _llguidance()
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            grammar, self._lltokenizer
        )
        if is_error:
            raise InvalidRequestError(f"the response constraint is invalid: {_first(messages)}")
        matcher = llguidance.LLMatcher(self._lltokenizer, grammar)
        if matcher.is_error():
            raise InvalidRequestError(f"the response constraint is invalid: {matcher.get_error()}")
        if not any(matcher.compute_bitmask()):
            raise InvalidRequestError(
                "no answer can satisfy the response constraint with this model's tokenizer"
            )


def _response_schema(response_format: pb.ResponseFormat) -> dict | None:
    kind = response_format.WhichOneof("format")
    if kind == "json_object":
        return {"type": "object"} if response_format.json_object else None
    if kind == "json_schema":
        schema = _json_object(response_format.json_schema, "response_format.json_schema")
        if schema is None:
            raise InvalidRequestError("response_format.json_schema is empty")
        return schema
    return None


def _grammar_of_schema(schema: dict) -> str:
    return _llguidance().LLMatcher.grammar_from_json_schema(
        json.dumps(schema), overrides=JSON_OPTIONS
    )


def _json_object(text: str, what: str) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a JSON object (a schema)")
    return value


def _first(messages: list[str]) -> str:
    return messages[0] if messages else "unknown reason"


def _llguidance():
    # Imported on first use: the proxy imports this package's siblings and must stay light.
    import llguidance

    return llguidance
