"""A session's continuation keeps its earlier turns as the model's own token ids and renders
only what follows the answer (cluster/chat_prompt.py); anything else renders the whole chat."""

from __future__ import annotations

import pytest

from cluster.chat_prompt import prompt_text
from proto.triserve.v1 import triserve_pb2 as pb
from workers.contract.errors import InvalidRequestError
from workers.engine.prompt import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def chat(*turns: tuple[str, str], prefix=(), num_prefix: int = 0) -> pb.GenerateRequest:
    conversation = pb.Conversation(add_generation_prompt=True, num_prefix_messages=num_prefix)
    for role, text in turns:
        conversation.messages.add(role=role).content.add(text=text)
    conversation.prefix_token_ids.extend(prefix)
    return pb.GenerateRequest(conversation=conversation)


def earlier_ids(tokenizer, answer_ids: list[int]) -> list[int]:
    first = prompt_text(chat(("user", "Tell me about lighthouses.")), tokenizer, [])
    return tokenizer(first.text)["input_ids"] + answer_ids


def test_a_continuation_starts_with_the_earlier_ids_and_renders_only_the_rest(tokenizer):
    answer_ids = [300, 17, 999, 42, 5]  # sampled ids a re-tokenisation would not give back
    answer = tokenizer.decode(answer_ids, skip_special_tokens=True)
    prefix = earlier_ids(tokenizer, answer_ids)
    request = chat(
        ("user", "Tell me about lighthouses."), ("assistant", answer), ("user", "And boats?"),
        prefix=prefix, num_prefix=2,
    )  # fmt: skip
    prompt = prompt_text(request, tokenizer, [])
    assert prompt.prefix_token_ids == prefix
    full = prompt_text(chat(*[(m.role, m.content[0].text) for m in request.conversation.messages]),
                       tokenizer, [])  # fmt: skip
    assert full.text.endswith(prompt.text) and "And boats?" in prompt.text
    assert answer not in prompt.text  # the answer comes as its ids only


def test_a_final_eos_is_not_written_twice(tokenizer):
    answer_ids = [300, 17, tokenizer.eos_token_id]
    answer = tokenizer.decode(answer_ids, skip_special_tokens=True)
    prefix = earlier_ids(tokenizer, answer_ids)
    request = chat(
        ("user", "Tell me about lighthouses."), ("assistant", answer), ("user", "More."),
        prefix=prefix, num_prefix=2,
    )  # fmt: skip
    prompt = prompt_text(request, tokenizer, [])
    assert prompt.text.startswith(tokenizer.eos_token)
    assert prompt.prefix_token_ids == prefix[:-1]


def test_an_answer_the_template_does_not_write_as_given_renders_the_whole_chat(tokenizer):
    request = chat(
        ("user", "Tell me."), ("assistant", "Sure."), ("user", "More."),
        prefix=[1, 2, 3], num_prefix=1,  # the first message is no answer
    )  # fmt: skip
    prompt = prompt_text(request, tokenizer, [])
    assert prompt.prefix_token_ids == [] and "Tell me." in prompt.text


def test_prefix_ids_outside_the_vocabulary_are_refused(tokenizer):
    answer = tokenizer.decode([300], skip_special_tokens=True)
    request = chat(
        ("user", "Hi."), ("assistant", answer), ("user", "More."),
        prefix=[1, 10**6], num_prefix=2,
    )  # fmt: skip
    with pytest.raises(InvalidRequestError, match="prefix_token_ids"):
        prompt_text(request, tokenizer, [])
