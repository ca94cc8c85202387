"""The Responses API end to end, through the real OpenAI SDK: responses whole and streamed,
stored and continued with previous_response_id (a function-calling loop, a growing history
whose prompt the cluster finds cached), and what a stored response's lifecycle looks like."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.cluster.conftest import API_TOKEN

# Queued even when admission predicts a miss: these tests are about answers, not admission.
QUEUE_ANYWAY = {"admission": "best_effort"}
GREEDY = {
    "temperature": 0,
    "max_output_tokens": 8,
    "extra_body": {"ignore_eos": True, **QUEUE_ANYWAY},
}
# Schemas a random-weight model finishes: every string and number bounded.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Oslo", "Lima", "Pune"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
CLOCK = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
TOOLS = [
    {"type": "function", "name": name, "description": name, "parameters": schema, "strict": True}
    for name, schema in SCHEMAS.items()
]
SUMMARY = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 12}},
    "required": ["answer"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def api(cluster):
    with openai.OpenAI(
        base_url=f"http://{cluster.http_address}/v1", api_key=API_TOKEN, max_retries=0, timeout=120
    ) as client:
        yield client


def final_of(events: list) -> openai.types.responses.Response:
    assert events[-1].type in ("response.completed", "response.incomplete")
    return events[-1].response


def assert_sequenced(events: list) -> None:
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [event.type for event in events[:2]] == ["response.created", "response.in_progress"]


# ----------------------------------------------------------------------------- answers
def test_a_text_response_is_stored_until_deleted_and_traced_under_its_id(api, client):
    response = api.responses.create(
        model="disagg", input="Tell me about the sea.", instructions="Be brief.",
        metadata={"user": "test"}, **GREEDY,
    )  # fmt: skip
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "incomplete"  # ignore_eos: it ran to max_output_tokens
    assert response.incomplete_details.reason == "max_output_tokens"
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text == message.content[0].text
    assert response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + 8
    assert (response.instructions, response.metadata) == ("Be brief.", {"user": "test"})
    assert api.responses.retrieve(response.id) == response
    assert client.trace(response.id).request_id == response.id  # `triserve trace resp_...`
    api.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.delete(response.id)


def test_streamed_text_deltas_add_up_to_the_output_text_of_the_same_response_whole(api):
    request = {"model": "coloc", "input": "Sing me a song.", **GREEDY}
    events = list(api.responses.create(stream=True, **request))
    whole = api.responses.create(**request)
    assert_sequenced(events)
    final = final_of(events)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == whole.output_text
    assert api.responses.retrieve(final.id).output_text == deltas


# ----------------------------------------------------------------------------- continuing
def respond(api, stream: bool, **request):
    """The response, whole or streamed (through the SDK's stream helper, which rebuilds the
    response from the events and checks them against the final one)."""
    if not stream:
        return api.responses.create(**request)
    with api.responses.stream(**request) as events:
        assert_sequenced(list(events))
        return events.get_final_response()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_function_call_is_continued_with_its_output_to_a_finished_answer(api, stream):
    first = respond(
        api, stream, model="coloc", input="What is the weather in Oslo?", tools=TOOLS,
        tool_choice="required", parallel_tool_calls=False, max_output_tokens=300,
        extra_body={**QUEUE_ANYWAY, "seed": 3},
    )  # fmt: skip
    assert first.status == "completed"
    (call,) = first.output
    assert call.type == "function_call" and call.call_id and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    second = respond(
        api, stream, model="coloc", previous_response_id=first.id, input=[result],
        tool_choice="none", max_output_tokens=100, extra_body=QUEUE_ANYWAY,
        text={"format": {"type": "json_schema", "name": "summary", "schema": SUMMARY}},
    )  # fmt: skip
    assert second.status == "completed" and second.previous_response_id == first.id
    jsonschema.validate(json.loads(second.output_text), SUMMARY)
    assert [tool.name for tool in second.tools] == ["get_time", "get_weather"]  # kept, sorted


def test_each_turn_finds_the_previous_turns_prompt_cached(api):
    # ~300 tokens of instructions, unique to this test: many 16-token KV blocks.
    instructions = " ".join(f"Rule {i}: answer about ships and harbours." for i in range(30))
    turn = {"model": "coloc", "instructions": instructions, **GREEDY}
    ask = "Tell me one more thing about the harbour, the ships, the tides and the old lighthouse."
    usages, previous = [], None
    for _ in range(3):
        response = api.responses.create(input=ask, previous_response_id=previous, **turn)
        usages.append(response.usage)
        previous = response.id
    prompts = [usage.input_tokens for usage in usages]
    cached = [usage.input_tokens_details.cached_tokens for usage in usages]
    assert prompts[0] < prompts[1] and prompts[0] < prompts[2]
    # Every turn finds at least all of the first turn's prompt (a random-weight model's answer
    # may hold the image token, and its turn is then rendered afresh: cached, not continued).
    assert cached[1] >= prompts[0] - 16 and cached[2] >= prompts[0] - 16


def test_a_continued_response_is_the_same_disaggregated_or_colocated(api):
    """Turn 2 continues turn 1's tokens: on "disagg" from the KV paused on the decode worker
    (its prefill runs there), on "coloc" on the one worker; the engine tests check a resumed
    KV against a full prefill of the same tokens."""
    texts = {}
    for model in ("disagg", "coloc"):
        first = api.responses.create(model=model, input="Name a colour.", **GREEDY)
        second = api.responses.create(
            model=model, input="And another one?", previous_response_id=first.id, **GREEDY
        )
        assert second.usage.input_tokens_details.cached_tokens > first.usage.input_tokens
        texts[model] = (first.output_text, second.output_text)
    assert texts["disagg"] == texts["coloc"]


# ----------------------------------------------------------------------------- refusals
def test_continuing_an_unknown_or_unstored_response_is_404(api):
    with pytest.raises(openai.NotFoundError) as raised:
        api.responses.create(model="coloc", input="hi", previous_response_id="resp_nothing")
    assert "resp_nothing" in raised.value.body["message"]
    unstored = api.responses.create(model="coloc", input="hi", store=False, **GREEDY)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        api.responses.create(model="coloc", input="more", previous_response_id=unstored.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(unstored.id)


def test_a_tool_that_is_not_a_function_is_400_naming_it(api):
    with pytest.raises(openai.BadRequestError) as raised:
        api.responses.create(model="coloc", input="hi", tools=[{"type": "web_search"}])
    assert raised.value.body["param"] == "tools.0"
    assert "not supported yet" in raised.value.body["message"]


def test_cancelling_a_streaming_response_ends_its_stream_as_cancelled(api):
    stream = api.responses.create(
        model="disagg", input="Go on and on.", stream=True, max_output_tokens=900,
        extra_body={"ignore_eos": True, **QUEUE_ANYWAY},
    )  # fmt: skip
    with stream:
        created = next(iter(stream))
        assert created.type == "response.created"
        cancelled = api.responses.cancel(created.response.id)
        events = list(stream)
    assert cancelled.status == "cancelled"
    final = events[-1].response
    assert final.status == "cancelled" and final.usage.output_tokens < 900
    assert api.responses.retrieve(final.id).status == "cancelled"
