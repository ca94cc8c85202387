"""The chat template of our random-weight checkpoints: LLaVA-1.5 for chats, Hermes for tools."""

from __future__ import annotations

import json

import pytest

from cluster.tool_calls.registry import FORMATS, detect_format
from workers.engine.tokenizer_trainer import CHAT_TEMPLATE, train_tokenizer

# The template before tools were added: plain chats must still render byte for byte like this.
TEMPLATE_WITHOUT_TOOLS = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% else %}ASSISTANT: {{ message['content'] }}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(512)


def render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


PLAIN_CHATS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ],
    [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A\nB"}],
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("messages", PLAIN_CHATS)
def test_plain_chat_renders_as_before_tools_existed(tokenizer, messages, add_generation_prompt):
    kwargs = {"add_generation_prompt": add_generation_prompt}
    before = render(tokenizer, messages, chat_template=TEMPLATE_WITHOUT_TOOLS, **kwargs)
    assert render(tokenizer, messages, **kwargs) == before
    assert render(tokenizer, messages, tools=[], **kwargs) == before


def test_tools_are_listed_in_the_system_block(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris?"}]
    text = render(tokenizer, messages, tools=[WEATHER], add_generation_prompt=True)
    assert text.startswith("Be brief.\n\n# Tools\n")
    assert f"<tools>\n{json.dumps(WEATHER)}\n</tools>" in text
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n' in text
    assert text.endswith("</tool_call>\nUSER: Paris? ASSISTANT:")
    assert text.count("Be brief.") == 1


def test_tools_without_a_system_message_open_the_prompt(tokenizer):
    text = render(tokenizer, [{"role": "user", "content": "Paris?"}], tools=[WEATHER])
    assert text.startswith("# Tools\n")
    assert text.endswith("</tool_call>\nUSER: Paris? ")


def test_assistant_tool_calls_render_as_blocks_that_parse_back(tokenizer):
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"y": "é"}}},
    ]
    for content, expected_content in [(None, None), ("Checking.", "Checking.")]:
        messages = [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "content": content, "tool_calls": calls},
        ]
        text = render(tokenizer, messages, tools=[WEATHER])
        answer = text.split("ASSISTANT: ", 1)[1].removesuffix("</s>")
        parsed = FORMATS["hermes"].parse(answer)
        assert parsed.content == expected_content
        assert [(c.name, c.arguments) for c in parsed.tool_calls] == [
            ("f", '{"x": 1}'),
            ("g", '{"y": "é"}'),
        ]


def test_tool_results_come_back_in_one_user_turn(tokenizer):
    messages = [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "f", "arguments": {}}]},
        {"role": "tool", "tool_call_id": "a", "content": "18 C"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "20 C"}]},
    ]
    text = render(tokenizer, messages, tools=[WEATHER], add_generation_prompt=True)
    assert text.endswith(
        '{"name": "f", "arguments": {}}\n</tool_call></s>'
        "USER: <tool_response>\n18 C\n</tool_response>\n"
        "<tool_response>\n20 C\n</tool_response> ASSISTANT:"
    )


def test_our_template_is_detected_as_hermes():
    assert detect_format(CHAT_TEMPLATE) is FORMATS["hermes"]
    assert detect_format(TEMPLATE_WITHOUT_TOOLS) is None
