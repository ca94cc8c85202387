"""Tool-call formats: whole and streamed parses agree, and the grammars force valid calls.

The grammar tests sample random tokens under each grammar's mask, with a real (small, trained on
the spot) tokenizer: what a random-weight model would write. Masks are unpacked by hand, as
`llguidance.torch.apply_token_bitmask_inplace` is torch.compile'd (seconds to compile on a CPU).
"""

from __future__ import annotations

import json
import random

import jsonschema
import llguidance
import llguidance.hf
import llguidance.torch
import pytest
import torch
from tokenizers import AddedToken

from cluster.tool_calls.base import Tool
from cluster.tool_calls.registry import FORMATS, detect_format, format_named
from workers.engine.tokenizer_trainer import train_tokenizer

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 8},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
)
SEARCH = Tool(
    name="search",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 10},
            "tags": {"type": "array", "items": {"enum": ["news", "web"]}, "maxItems": 3},
            "safe": {"type": "boolean"},
            "site": {
                "type": "object",
                "properties": {"host": {"type": "string", "maxLength": 6}},
                "additionalProperties": False,
            },
        },
        "required": ["query", "safe"],
        "additionalProperties": False,
    },
)
NO_ARGS = Tool(name="now", parameters={"type": "object", "additionalProperties": False})
TOOLS = [WEATHER, SEARCH, NO_ARGS]
SCHEMAS = {tool.name: tool.parameters for tool in TOOLS}
MAX_TOKENS = 400
WRAP_UP_AT = 150  # from here on, the sampler ends the output as soon as EOS is allowed


def write(format_name: str, calls: list[tuple[str, str]], preface: str = "") -> str:
    """Calls as the format writes them (preface text only for Hermes)."""
    if format_name == "hermes":
        blocks = [
            f'<tool_call>\n{{"name": "{n}", "arguments": {a}}}\n</tool_call>' for n, a in calls
        ]
        return preface + ("\n" if preface else "") + "\n".join(blocks)
    return "; ".join(f'{{"name": "{n}", "parameters": {a}}}' for n, a in calls)


WEATHER_ARGS = '{"city": "Paris", "unit": "celsius"}'
TRICKY_ARGS = '{"query": "}{ \\" </tool_call> <tool_call>", "safe": true, "tags": ["web"]}'


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_plain_text_answer_is_all_content(format_name):
    parsed = FORMATS[format_name].parse("  The answer is 42.\n")
    assert parsed.content == "  The answer is 42.\n"
    assert parsed.tool_calls == []
    assert FORMATS[format_name].parse(" \n ").content is None


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_one_call_keeps_the_arguments_text_the_model_wrote(format_name):
    parsed = FORMATS[format_name].parse(write(format_name, [("get_weather", WEATHER_ARGS)]))
    assert parsed.content is None
    [call] = parsed.tool_calls
    assert (call.name, call.arguments) == ("get_weather", WEATHER_ARGS)
    assert call.id.startswith("call_") and len(call.id) > len("call_")


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_parallel_calls_come_out_in_order_with_distinct_ids(format_name):
    calls = [("get_weather", WEATHER_ARGS), ("search", TRICKY_ARGS), ("now", "{}")]
    parsed = FORMATS[format_name].parse(write(format_name, calls))
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == calls
    assert len({c.id for c in parsed.tool_calls}) == 3


def test_hermes_text_around_calls_is_content_without_the_layout_newlines():
    text = write("hermes", [("now", "{}")], preface="Let me check.") + "\nDone."
    parsed = FORMATS["hermes"].parse(text)
    assert parsed.content == "Let me check.\nDone."
    assert [c.name for c in parsed.tool_calls] == ["now"]


def test_llama3_call_after_python_tag_is_a_call():
    parsed = FORMATS["llama3_json"].parse("<|python_tag|>" + write("llama3_json", [("now", "{}")]))
    assert (parsed.content, [c.name for c in parsed.tool_calls]) == (None, ["now"])


MALFORMED = {
    "hermes": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": }}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "x"}\n</tool_call>',
        "Sure <tool_call>\nnot json at all\n</tool_call> ok",
        '<tool_call>\n{"name": "get_weather", "arguments": [1]}\n</tool_call>',
        '<tool_call>\n{"name": "delete_all", "arguments": {}}\n</tool_call>',  # not offered
        '<tool_call>\n{"name": "get_weather", "argu',  # cut short
    ],
    "llama3_json": [
        '{"name": "get_weather", "parameters": {"city": }}',
        '{"name": "get_weather"}',
        '{"foo": 1}',
        '{"name": "delete_all", "parameters": {}}',  # not offered
        'Call {"name": "now", "parameters": {}} later',
    ],
}


@pytest.mark.parametrize(
    "format_name,text", [(name, text) for name, texts in MALFORMED.items() for text in texts]
)
def test_malformed_call_stays_in_content(format_name, text):
    parsed = FORMATS[format_name].parse(text, TOOLS)
    assert parsed == type(parsed)(content=text, tool_calls=[])


def stream(format_name: str, text: str, rng: random.Random, tools=TOOLS):
    """Feed `text` in random pieces (often single characters); the concatenated content, and
    per call: (id, name, the concatenated arguments)."""
    parser = FORMATS[format_name].stream_parser(tools)
    deltas, at = [], 0
    while at < len(text):
        size = 1 if rng.random() < 0.3 else rng.randint(1, 12)
        deltas.append(parser.feed(text[at : at + size]))
        at += size
    deltas.append(parser.finish())
    calls: dict[int, list] = {}
    for delta in deltas:
        for part in delta.tool_calls:
            if part.index not in calls:
                assert part.id and part.name, "a call's first fragment names it"
                calls[part.index] = [part.id, part.name, ""]
            else:
                assert part.id is None and part.name is None
            calls[part.index][2] += part.arguments
    assert sorted(calls) == list(range(len(calls)))
    return "".join(d.content for d in deltas), [tuple(calls[i]) for i in sorted(calls)]


def assert_stream_matches_parse(format_name: str, text: str, seeds=range(20)) -> None:
    parsed = FORMATS[format_name].parse(text, TOOLS)
    expected = [(c.name, c.arguments) for c in parsed.tool_calls]
    for seed in seeds:
        content, calls = stream(format_name, text, random.Random(seed))
        assert content == (parsed.content or ""), (text, seed)
        assert [(name, arguments) for _, name, arguments in calls] == expected, (text, seed)
        assert len({call_id for call_id, _, _ in calls}) == len(calls)


STREAM_TEXTS = {
    "hermes": [
        "Plain answer, with <b>tags</b> and a < sign and <tool_ and <tool_call",
        " \n\t ",
        write("hermes", [("get_weather", WEATHER_ARGS)]),
        write("hermes", [("get_weather", WEATHER_ARGS), ("search", TRICKY_ARGS)], "Checking.\n\n"),
        write("hermes", [("now", "{}")], "  Hi  ") + "\n\n  Bye  \n",
        write("hermes", [("now", "{}")]) + "\n<tool_call>\nbroken\n</tool_call>\n",
        *MALFORMED["hermes"][2:],
    ],
    "llama3_json": [
        "Plain answer {with braces} and <|python_tag|> inside",
        "  <|python_tag|> then text",
        "\n",
        write("llama3_json", [("get_weather", WEATHER_ARGS)]),
        " <|python_tag|>" + write("llama3_json", [("get_weather", WEATHER_ARGS), ("now", "{}")]),
        write("llama3_json", [("search", TRICKY_ARGS)]) + " ; and then some text",
        write("llama3_json", [("now", "{}")]) + '; {"name": "unknown", "parameters": {}}',
        *MALFORMED["llama3_json"][2:],
    ],
}


@pytest.mark.parametrize(
    "format_name,text", [(name, text) for name, texts in STREAM_TEXTS.items() for text in texts]
)
def test_streamed_pieces_add_up_to_the_whole_parse(format_name, text):
    assert_stream_matches_parse(format_name, text)


def test_hermes_stream_holds_back_what_may_start_a_call():
    parser = FORMATS["hermes"].stream_parser()
    assert parser.feed("Hello <tool").content == "Hello"
    assert parser.feed("box> there  ").content == " <toolbox> there"
    assert parser.finish().content == "  "


def test_llama3_stream_releases_nothing_until_it_knows_the_answer_is_not_a_call():
    parser = FORMATS["llama3_json"].stream_parser()
    assert parser.feed(' {"na').content == ""
    assert parser.feed('me": 3').content == ' {"name": 3'


@pytest.fixture(scope="module")
def tokenizers():
    hf_tokenizer = train_tokenizer(512)
    return hf_tokenizer, llguidance.hf.from_tokenizer(hf_tokenizer)


@pytest.fixture(scope="module")
def marker_tokenizers():
    """A tokenizer whose markers are single tokens, as Qwen's and Llama 3.1's are."""
    hf_tokenizer = train_tokenizer(512)
    hf_tokenizer.add_tokens(
        [AddedToken(m, normalized=False) for m in ("<tool_call>", "</tool_call>")]
    )
    hf_tokenizer.add_special_tokens({"additional_special_tokens": ["<|python_tag|>"]})
    return hf_tokenizer, llguidance.hf.from_tokenizer(hf_tokenizer)


def sample(grammar_text: str, tokenizers, seed: int, prefix: str = "") -> list[int]:
    """Random tokens under the grammar's mask until it stops or EOS is picked."""
    hf_tokenizer, lltokenizer = tokenizers
    grammar = llguidance.grammar_from("lark", grammar_text)
    assert llguidance.LLMatcher.validate_grammar(grammar, lltokenizer) == ""
    matcher = llguidance.LLMatcher(lltokenizer, grammar)
    tokens = hf_tokenizer.encode(prefix, add_special_tokens=False)
    assert matcher.consume_tokens(tokens), matcher.get_error()
    generator = torch.Generator().manual_seed(seed)
    bitmask = llguidance.torch.allocate_token_bitmask(1, lltokenizer.vocab_size)
    shifts = torch.arange(32, dtype=torch.int32)
    eos = lltokenizer.eos_token
    while not matcher.is_stopped():
        assert len(tokens) < MAX_TOKENS, "the grammar let the output run on"
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask)
        allowed = ((bitmask[0, :, None] >> shifts) & 1).flatten()[: lltokenizer.vocab_size] == 1
        if allowed[eos] and len(tokens) >= WRAP_UP_AT:
            break
        logits = torch.randn(lltokenizer.vocab_size, generator=generator)
        token = int(logits.masked_fill(~allowed, float("-inf")).argmax())
        if token == eos:
            break
        assert matcher.consume_token(token), matcher.get_error()
        tokens.append(token)
    return tokens


FORCED_OPENING = {"hermes": "Let me check.\n<tool_call>", "llama3_json": "{"}


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "single"])
@pytest.mark.parametrize("choice", ["required", "get_weather", "auto"])
@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_grammar_forces_valid_calls_of_the_offered_tools(tokenizers, format_name, choice, parallel):
    tool_format = FORMATS[format_name]
    grammar = tool_format.grammar(TOOLS, choice, parallel)
    num_calls = []
    for seed in range(20):
        forced_call = choice == "auto" and seed % 2 == 0
        prefix = FORCED_OPENING[format_name] if forced_call else ""
        text = tokenizers[0].decode(sample(grammar, tokenizers, seed, prefix))
        parsed = tool_format.parse(text, TOOLS)
        assert_stream_matches_parse(format_name, text, seeds=[seed])
        if choice == "auto" and not forced_call:
            assert parsed.tool_calls or parsed.content == (text if text.strip() else None)
        else:
            assert parsed.tool_calls, text
            expected_content = "Let me check." if forced_call and format_name == "hermes" else None
            assert parsed.content == expected_content, text
        for call in parsed.tool_calls:
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
        if choice == "get_weather":
            assert {call.name for call in parsed.tool_calls} == {"get_weather"}
        if not parallel or choice == "get_weather":
            assert len(parsed.tool_calls) <= 1
        num_calls.append(len(parsed.tool_calls))
    if parallel and choice == "required":
        assert max(num_calls) > 1, "parallel calls were never sampled"


MARKERS = {"hermes": ["<tool_call>", "</tool_call>"], "llama3_json": ["<|python_tag|>"]}
MARKER_OPENING = {"hermes": "Let me check.\n<tool_call>", "llama3_json": "<|python_tag|>"}


@pytest.mark.parametrize("choice", ["required", "auto"])
@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_grammar_writes_markers_that_are_tokens_as_those_tokens(
    marker_tokenizers, format_name, choice
):
    hf_tokenizer = marker_tokenizers[0]
    grammar = FORMATS[format_name].grammar(TOOLS, choice, True, hf_tokenizer.get_added_vocab())
    marker_ids = set(hf_tokenizer.convert_tokens_to_ids(MARKERS[format_name]))
    num_with_marker_tokens = 0
    for seed in range(10):
        # "auto": the opening marker, as its one token, must be allowed after text
        prefix = MARKER_OPENING[format_name] if choice == "auto" else ""
        tokens = sample(grammar, marker_tokenizers, seed, prefix)
        parsed = FORMATS[format_name].parse(hf_tokenizer.decode(tokens), TOOLS)
        assert parsed.tool_calls, hf_tokenizer.decode(tokens)
        for call in parsed.tool_calls:
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
        num_with_marker_tokens += bool(marker_ids & set(tokens))
    assert num_with_marker_tokens > 0


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_grammar_allows_no_free_whitespace_in_arguments(tokenizers, format_name):
    lltokenizer = tokenizers[1]
    grammar = llguidance.grammar_from("lark", FORMATS[format_name].grammar(TOOLS, "required", True))
    head = ("<tool_call>\n" if format_name == "hermes" else "") + '{"name": "get_weather", '
    key = "arguments" if format_name == "hermes" else "parameters"
    for text, is_allowed in [(f'"{key}": {{"city": "x"', True), (f'"{key}": {{ "city"', False)]:
        tokens = lltokenizer.tokenize_str(head + text)
        matcher = llguidance.LLMatcher(lltokenizer, grammar)
        assert (matcher.validate_tokens(tokens) == len(tokens)) is is_allowed, text


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_grammar_refuses_a_choice_that_names_no_offered_tool(format_name):
    with pytest.raises(ValueError, match="not among the tools"):
        FORMATS[format_name].grammar(TOOLS, "delete_all", True)
    with pytest.raises(ValueError, match="none"):
        FORMATS[format_name].grammar(TOOLS, "none", True)


def test_format_is_detected_from_the_chat_template():
    assert detect_format("{{ '<tool_call>\\n' }}").name == "hermes"
    assert detect_format("{{- '<|python_tag|>' + x }}").name == "llama3_json"
    llama32 = "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}"
    assert detect_format(llama32).name == "llama3_json"
    assert detect_format("USER: {{ message['content'] }}") is None
    assert detect_format(None) is None


def test_unknown_format_name_lists_the_known_ones():
    assert format_named("hermes") is FORMATS["hermes"]
    with pytest.raises(ValueError, match="hermes, llama3_json"):
        format_named("mistral")
