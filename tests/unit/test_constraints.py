"""A request's tools and response_format become the grammar its answer is decoded under; what
cannot be enforced is refused at the ingress with a clear message (400 / INVALID_ARGUMENT)."""

from __future__ import annotations

import json

import llguidance
import pytest

from cluster.constraints import GrammarChecker, constraint_grammar
from cluster.tool_calls.registry import format_named
from proto.triserve.v1 import triserve_pb2 as pb
from workers.contract.errors import InvalidRequestError
from workers.engine.prompt import load_tokenizer

WEATHER = pb.Tool(
    name="get_weather",
    description="Weather at a place",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
HERMES = format_named("hermes")


@pytest.fixture(scope="module")
def checker(tiny_model_dir) -> GrammarChecker:
    tokenizer = load_tokenizer(tiny_model_dir)
    return GrammarChecker(tokenizer, len(tokenizer))


def request(**fields) -> pb.GenerateRequest:
    return pb.GenerateRequest(raw=pb.RawPrompt(text="hi"), **fields)


def schema_format(schema: dict) -> pb.ResponseFormat:
    return pb.ResponseFormat(json_schema=json.dumps(schema))


def test_free_text_has_no_grammar():
    assert constraint_grammar(request(), HERMES, "m") is None
    none = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)
    assert constraint_grammar(request(tools=[WEATHER], tool_choice=none), HERMES, "m") is None


def test_a_json_schema_answer_gets_a_grammar_the_tokenizer_can_follow(checker):
    grammar = constraint_grammar(
        request(response_format=schema_format({"type": "object"})), None, "m"
    )
    checker.check(grammar)  # no error
    assert "json_schema" in grammar


@pytest.mark.parametrize(
    "choice",
    [
        pb.ToolChoice(),
        pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
        pb.ToolChoice(function="get_weather"),
    ],
    ids=["auto", "required", "named"],
)
def test_tool_choices_get_the_formats_grammar(checker, choice):
    grammar = constraint_grammar(request(tools=[WEATHER], tool_choice=choice), HERMES, "m")
    checker.check(grammar)
    assert "<tool_call>" in grammar


def test_an_unsatisfiable_schema_is_refused_with_the_reason(checker):
    impossible = schema_format({"type": "integer", "minimum": 5, "maximum": 3})
    grammar = constraint_grammar(request(response_format=impossible), None, "m")
    with pytest.raises(InvalidRequestError, match="minimum"):
        checker.check(grammar)


def test_a_grammar_llguidance_refuses_is_refused(checker):
    checker.check(llguidance.grammar_from("lark", 'start: /\\x00/ "}"'))  # any byte is spellable
    with pytest.raises(InvalidRequestError, match="invalid"):
        checker.check('{"grammars": [{"lark_grammar": "start: missing_rule"}]}')


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tools": [WEATHER], "tool_choice": pb.ToolChoice(function="nope")}, "not in tools"),
        ({"tool_choice": pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)}, "needs tools"),
        ({"tools": [pb.Tool(name="f", parameters_json="{not json")]}, "not valid JSON"),
        ({"tools": [pb.Tool(name="f", parameters_json="[1]")]}, "JSON object"),
        ({"tools": [pb.Tool(parameters_json="{}")]}, "no name"),
        ({"tools": [WEATHER, WEATHER]}, "used twice"),
        ({"response_format": pb.ResponseFormat(json_schema="{bad")}, "not valid JSON"),
        (
            {"tools": [WEATHER], "response_format": pb.ResponseFormat(json_object=True)},
            "not supported",
        ),
    ],
    ids=[
        "unknown-function",
        "required-no-tools",
        "bad-json",
        "not-object",
        "no-name",
        "duplicate",
        "bad-schema",
        "auto-and-json",
    ],  # fmt: skip
)
def test_requests_that_cannot_be_enforced_are_refused_clearly(fields, message):
    with pytest.raises(InvalidRequestError, match=message):
        constraint_grammar(request(**fields), HERMES, "m")


def test_tools_for_a_model_without_a_tool_call_format_are_refused():
    with pytest.raises(InvalidRequestError, match="cannot take tools"):
        constraint_grammar(request(tools=[WEATHER]), None, "m")
