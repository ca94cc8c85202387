"""End to end through the OpenAI SDK, Ray Serve's HTTP proxy and the same ingress, scheduler and
pools as gRPC: what a client of the OpenAI-compatible API sees."""

from __future__ import annotations

import base64
import http.client
import io
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from cluster.client import TriserveError
from tests.cluster.conftest import API_TOKEN
from tests.support import make_image

# Queued even when admission predicts a miss (after the concurrent tests, on a loaded machine):
# the tests that are not about admission are about answers.
GREEDY = {
    "temperature": 0,
    "max_tokens": 12,
    "extra_body": {"ignore_eos": True, "admission": "best_effort"},
}
QUEUE_ANYWAY = {"extra_body": {"admission": "best_effort"}}
IMAGE_PROMPT = "What is in this picture?"


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    make_image(seed).save(buffer, format="PNG")
    return buffer.getvalue()


def image_part(data: bytes) -> dict:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def api(cluster):
    # No retries: a test of a refusal must see the refusal, not the SDK's second try.
    with openai.OpenAI(
        base_url=f"http://{cluster.http_address}/v1", api_key=API_TOKEN, max_retries=0, timeout=120
    ) as client:
        yield client


def call(cluster, method: str, path: str, body: dict | None = None, token: str | None = None):
    """(status, headers, body bytes) of one plain HTTP call."""
    request = urllib.request.Request(
        f"http://{cluster.http_address}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def streamed(api, **kwargs) -> tuple[list, str]:
    """A streamed chat's chunks and its text."""
    chunks = list(api.chat.completions.create(stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


# ----------------------------------------------------------------------------- answers
@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_chat_over_http_gives_the_same_answer_as_over_grpc_whole_or_streamed(
    api, client, with_image
):
    images = [png(1)] if with_image else []
    http_content = [{"type": "text", "text": IMAGE_PROMPT}, *map(image_part, images)]
    grpc_content = [{"type": "text", "text": IMAGE_PROMPT}]
    grpc_content += [{"type": "image", "image": data} for data in images]
    whole = api.chat.completions.create(
        model="disagg", messages=[{"role": "user", "content": http_content}], **GREEDY
    )
    chunks, streamed_text = streamed(
        api, model="disagg", messages=[{"role": "user", "content": http_content}],
        stream_options={"include_usage": True}, **GREEDY,
    )  # fmt: skip
    over_grpc = client.complete(
        messages=[{"role": "user", "content": grpc_content}], model="disagg", max_tokens=12,
        ignore_eos=True,
    )  # fmt: skip
    (choice,) = whole.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert choice.message.content == streamed_text == over_grpc.text
    assert whole.usage.completion_tokens == 12 == len(over_grpc.token_ids)
    assert whole.usage.prompt_tokens == over_grpc.usage.prompt_tokens
    assert whole.id.startswith("chatcmpl-") and whole.model == "disagg"
    # The first chunk with choices comes with the first token, not before; usage comes last.
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert {chunk.id for chunk in chunks} == {chunks[0].id}


def test_completions_answer_raw_text_whole_and_streamed_as_grpc_does(api, client):
    prompt = "The sea and the ships that sail on it"
    whole = api.completions.create(model="coloc", prompt=prompt, **GREEDY)
    chunks = list(api.completions.create(model="coloc", prompt=prompt, stream=True, **GREEDY))
    grpc_chunks = list(
        client.generate(prompt=prompt, model="coloc", max_tokens=12, ignore_eos=True)
    )
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.choices[0].text == "".join(c.choices[0].text for c in chunks)
    assert whole.choices[0].text == "".join(c.text for c in grpc_chunks)
    # The first chunk is the first token's (its text may be empty: a character's first byte).
    assert chunks[0].choices[0].text == grpc_chunks[0].text


def test_models_lists_what_the_cluster_serves_and_health_needs_no_token(api, cluster):
    assert {model.id for model in api.models.list()} == {"disagg", "coloc"}
    status, _, body = call(cluster, "GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_repeated_long_prompt_reports_cached_prompt_tokens(api):
    # ~300 tokens: many 16-token KV blocks, of which the second request finds all but the last.
    prompt = " ".join(f"line {i} of a long and repetitive system prompt." for i in range(40))
    messages = [{"role": "system", "content": prompt}, {"role": "user", "content": "hi"}]
    request = {"model": "coloc", "messages": messages, "max_tokens": 1, **QUEUE_ANYWAY}
    usages = [api.chat.completions.create(**request).usage for _ in range(2)]
    assert usages[0].prompt_tokens == usages[1].prompt_tokens > 200
    assert usages[1].prompt_tokens_details.cached_tokens >= 160


def trace_state(client, request_id: str) -> str | None:
    try:
        return client.trace(request_id).state
    except TriserveError:  # not traced yet
        return None


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_client_that_goes_away_cancels_its_request(cluster, client, stream):
    request_id = f"http-gone-{stream}"
    body = {
        "model": "disagg", "messages": [{"role": "user", "content": "go on"}], "stream": stream,
        "max_tokens": 900, "ignore_eos": True, "request_id": request_id,
    }  # fmt: skip
    request = urllib.request.Request(
        f"http://{cluster.http_address}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
    )
    if stream:
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.readline().startswith(b"data: {")  # then the client hangs up
    else:
        with pytest.raises(TimeoutError):  # the client gives up waiting, and hangs up
            urllib.request.urlopen(request, timeout=1.0)
    deadline = time.monotonic() + 60
    while (state := trace_state(client, request_id)) != "cancelled":
        assert time.monotonic() < deadline, f"request {request_id}: {state}, not cancelled"
        time.sleep(0.2)


# ----------------------------------------------------------------------------- refusals
def error_of(raised: pytest.ExceptionInfo) -> dict:
    error = raised.value.body
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    return error


def test_bad_input_is_400_naming_the_field(api):
    with pytest.raises(openai.BadRequestError) as raised:
        api.chat.completions.create(
            model="coloc", messages=[{"role": "user", "content": "hi"}], temperature="hot"
        )
    assert error_of(raised)["param"] == "temperature"


def test_an_image_url_on_the_internet_is_400_saying_the_server_has_no_internet(api):
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as raised:
        api.chat.completions.create(model="coloc", messages=[{"role": "user", "content": content}])
    assert "no internet" in error_of(raised)["message"]


def test_a_missing_or_wrong_token_is_401(cluster):
    body = {"model": "coloc", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for token in (None, "wrong"):
        status, _, raw = call(cluster, "POST", "/v1/chat/completions", body, token)
        assert status == 401
        assert json.loads(raw)["error"]["type"] == "authentication_error"
    assert call(cluster, "GET", "/v1/models", token="wrong")[0] == 401


def test_an_unknown_model_is_404(api):
    with pytest.raises(openai.NotFoundError) as raised:
        api.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-9" in error_of(raised)["message"]


def test_a_request_that_cannot_make_its_slo_is_429_with_retry_after(api):
    with pytest.raises(openai.RateLimitError) as raised:
        api.chat.completions.create(
            model="coloc", messages=[{"role": "user", "content": "hurry"}], max_tokens=2,
            extra_body={"ttft_ms": 0.001, "admission": "reject"},
        )  # fmt: skip
    assert "predicted TTFT" in error_of(raised)["message"]
    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert int(raised.value.response.headers["retry-after-ms"]) >= 100


def test_a_body_over_the_size_limit_is_413_before_it_is_sent(cluster):
    # Only the headers go out: the server answers from Content-Length, reading nothing more.
    host, port = cluster.http_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest("POST", "/v1/completions")
        connection.putheader("Authorization", f"Bearer {API_TOKEN}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(16 * 2**20 + 1))
        connection.endheaders()
        response = connection.getresponse()
        error = json.loads(response.read())["error"]
    finally:
        connection.close()
    assert response.status == 413 and "limits.max_request_bytes" in error["message"]


# ----------------------------------------------------------------------------- tools, JSON
# Schemas a random-weight model finishes: every string bounded, every number bounded.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Oslo", "Lima", "Pune"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "note": {"type": "string", "maxLength": 8},
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
MODELS = ("disagg", "coloc")
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
TOOLS = [
    {"type": "function", "function": {"name": name, "description": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]
ASK = [{"role": "user", "content": "What is the weather in Oslo, and the time?"}]
TOOL_REQUEST = {
    "model": "coloc",
    "messages": ASK,
    "tools": TOOLS,
    "max_tokens": 300,
    **QUEUE_ANYWAY,
}


def assert_valid_calls(calls) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def answers_by_model_and_seed(api, seeds, **request) -> dict:
    """The same request on the disaggregated and the colocated model, for each seed, sent
    concurrently."""

    def ask(model: str, seed: int):
        return api.chat.completions.create(
            **{**request, **QUEUE_ANYWAY, "model": model, "seed": seed}
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {(m, s): pool.submit(ask, m, s) for m in ("disagg", "coloc") for s in seeds}
        return {key: future.result(timeout=300) for key, future in futures.items()}


def test_required_tool_choice_gets_valid_calls_over_many_seeds_disaggregated_or_not(api):
    seeds = range(8)
    answers = answers_by_model_and_seed(
        api, seeds, **TOOL_REQUEST, tool_choice="required", parallel_tool_calls=False
    )
    for (model, seed), answer in answers.items():
        (choice,) = answer.choices
        assert choice.finish_reason == "tool_calls", (model, seed)
        assert len(choice.message.tool_calls) == 1
        assert_valid_calls(choice.message.tool_calls)
    for seed in seeds:  # the prefill worker's first token under the mask, decoded elsewhere
        disagg, coloc = (answers[m, seed].choices[0].message.tool_calls[0] for m in MODELS)
        assert (disagg.function.name, disagg.function.arguments) == (
            coloc.function.name, coloc.function.arguments
        )  # fmt: skip


def test_a_named_function_is_the_one_called(api):
    named = {"type": "function", "function": {"name": "get_time"}}
    answer = api.chat.completions.create(**TOOL_REQUEST, tool_choice=named, seed=3)
    calls = answer.choices[0].message.tool_calls
    assert [call.function.name for call in calls] == ["get_time"]
    assert_valid_calls(calls)


def test_parallel_tool_calls_parse_into_valid_calls(api):
    answer = api.chat.completions.create(
        **TOOL_REQUEST, tool_choice="required", parallel_tool_calls=True, seed=4
    )
    assert_valid_calls(answer.choices[0].message.tool_calls)


def test_auto_tool_choice_answers_text_or_valid_calls(api):
    request = {**TOOL_REQUEST, "max_tokens": 40}
    answer = api.chat.completions.create(**request, tool_choice="auto", seed=5)
    message = answer.choices[0].message
    if message.tool_calls:
        assert_valid_calls(message.tool_calls)
    else:
        assert message.content is not None


def test_streamed_tool_call_deltas_reassemble_into_the_whole_answers_calls(api):
    request = {**TOOL_REQUEST, "tool_choice": "required", "seed": 6}
    whole = api.chat.completions.create(**request).choices[0].message.tool_calls
    chunks, _ = streamed(api, **request)
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(delta.index, {"name": "", "arguments": "", "ids": []})
            call["ids"] += [delta.id] if delta.id else []
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (call.function.name, call.function.arguments) for call in whole
    ]
    assert all(len(call["ids"]) == 1 for call in calls.values())  # on the first fragment only
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_json_schema_answer_validates_over_many_seeds_disaggregated_or_not(api):
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "confidence": {"type": "integer", "minimum": 0, "maximum": 9},
            "why": {"type": "string", "maxLength": 12},
        },
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    answers = answers_by_model_and_seed(
        api, range(6), messages=ASK, max_tokens=100, response_format=response_format
    )
    for (model, seed), answer in answers.items():
        assert answer.choices[0].finish_reason == "stop", (model, seed)
        jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
        coloc = answers["coloc", seed].choices[0].message.content
        assert answer.choices[0].message.content == coloc


def test_a_schema_no_answer_can_satisfy_is_400(api):
    impossible = {"type": "integer", "minimum": 5, "maximum": 3}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": impossible}}
    with pytest.raises(openai.BadRequestError) as raised:
        api.chat.completions.create(
            model="coloc", messages=ASK, max_tokens=10, response_format=response_format
        )
    assert "constraint" in error_of(raised)["message"]
