"""The OpenAI API's wire formats, without Ray: a body -> one GenerateRequest (what is accepted,
what is refused and how the refusal reads), errors -> statuses and error objects, and a stream
of GenerationSteps -> chunks."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image

from cluster.errors import UnauthenticatedError, http_status_for
from cluster.frontend import GenerationStep
from cluster.openai.chat_stream import ChatStream
from cluster.openai.delivery import event_stream
from cluster.openai.errors import error_body, error_response
from cluster.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    InvalidFieldError,
    parse_body,
)
from cluster.openai.request_conversion import chat_request, completion_request
from cluster.openai.responses import ResponseHeader
from cluster.tool_calls.base import StreamDelta, ToolCallDelta
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.errors import (
    AdmissionRejectedError,
    NoWorkerAvailableError,
    RequestFailedError,
    UnknownModelError,
)
from scheduler.request import Usage
from workers.contract.errors import InvalidRequestError

USER = {"role": "user", "content": "hi"}


def png_bytes(fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def chat(default_max_tokens: int | None = None, **fields) -> pb.GenerateRequest:
    body = {"model": "m", "messages": [USER], **fields}
    return chat_request(
        parse_body(ChatCompletionRequest, json.dumps(body).encode()), default_max_tokens
    )


def refusal(**fields) -> InvalidFieldError:
    with pytest.raises(InvalidFieldError) as error:
        chat(**fields)
    assert http_status_for(error.value)[0] == 400
    return error.value


# ----------------------------------------------------------------------------- messages
def test_a_text_message_becomes_a_conversation_that_asks_for_the_assistant_turn():
    request = chat(messages=[{"role": "system", "content": "be brief"}, USER])
    assert request.model == "m"
    assert request.conversation.add_generation_prompt
    assert [(m.role, m.content[0].text) for m in request.conversation.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
    ]


def test_the_developer_role_is_shown_to_the_model_as_system():
    request = chat(messages=[{"role": "developer", "content": "rules"}, USER])
    assert request.conversation.messages[0].role == "system"


def test_text_and_image_parts_keep_their_order_and_images_their_bytes():
    png, jpeg = png_bytes("PNG"), png_bytes("JPEG")
    content = [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": data_url(png), "detail": "high"}},
        {"type": "image_url", "image_url": {"url": data_url(jpeg, "image/jpeg")}},
        {"type": "text", "text": "please"},
    ]
    (message,) = chat(messages=[{"role": "user", "content": content}]).conversation.messages
    parts = [(p.WhichOneof("part"), p.text or p.image) for p in message.content]
    assert parts == [("text", "compare"), ("image", png), ("image", jpeg), ("text", "please")]


def test_an_http_image_url_is_refused_saying_the_server_has_no_internet():
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    error = refusal(messages=[{"role": "user", "content": content}])
    assert "no internet" in str(error) and "data:image/png;base64" in str(error)
    assert error.param == "messages.0.content.0.image_url"


@pytest.mark.parametrize(
    "url, says",
    [
        (data_url(b"GIF89a", "image/gif"), "PNG or JPEG"),
        ("data:image/png;base64,not base64!", "base64 is invalid"),
        ("data:image/png,rawbytes", "base64-encoded"),
        ("ftp://example.com/cat.png", "expected a data: URL"),
    ],
)
def test_an_image_that_is_not_an_inline_png_or_jpeg_is_refused(url, says):
    content = [{"type": "image_url", "image_url": url}]  # a bare string is accepted too
    assert says in str(refusal(messages=[{"role": "user", "content": content}]))


def test_an_assistant_tool_call_and_the_tool_answer_reach_the_template():
    messages = [
        USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },  # fmt: skip
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    _, assistant, tool = chat(messages=messages).conversation.messages
    assert not assistant.content
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in assistant.tool_calls] == [
        ("call_1", "weather", {"city": "Oslo"})
    ]
    assert (tool.role, tool.tool_call_id, tool.content[0].text) == ("tool", "call_1", "sunny")


# ----------------------------------------------------------------------------- sampling, SLO
def test_unset_temperature_and_max_tokens_follow_openai_defaults():
    sampling = chat(default_max_tokens=1024).sampling
    assert sampling.temperature == 1.0 and sampling.max_tokens == 1024
    assert not sampling.HasField("top_p") and not sampling.HasField("seed")


def test_max_completion_tokens_wins_over_max_tokens():
    assert (
        chat(max_tokens=5, max_completion_tokens=7, default_max_tokens=99).sampling.max_tokens == 7
    )


def test_sampling_fields_and_triserve_extensions_reach_the_request():
    request = chat(
        temperature=0, top_p=0.5, seed=3, stop="END", top_k=-1, ignore_eos=True,
        stop_token_ids=[2], ttft_ms=250, tpot_ms=40, priority="batch", admission="degrade",
        request_id="r-1", user="someone", metadata={"unknown": "fields are ignored"},
    )  # fmt: skip
    s = request.sampling
    assert (s.temperature, s.top_p, s.seed, list(s.stop), s.top_k) == (0, 0.5, 3, ["END"], 0)
    assert s.ignore_eos and list(s.stop_token_ids) == [2]
    assert (request.slo.ttft_ms, request.slo.tpot_ms) == (250, 40)
    assert request.priority == pb.PRIORITY_BATCH and request.admission == pb.ADMISSION_DEGRADE
    assert request.request_id == "r-1"
    assert list(chat(stop=["a", "b"]).sampling.stop) == ["a", "b"]


@pytest.mark.parametrize(
    "fields, param, says",
    [
        ({"n": 2}, None, "n must be 1"),
        ({"temperature": "hot"}, "temperature", "valid number"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"priority": "urgent"}, "priority", "'interactive' or 'batch'"),
        ({"logprobs": True}, None, "logprobs are not supported"),
        ({"frequency_penalty": 0.5}, None, "not supported"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role", "'system'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages.0.content.0",
            "does not match any of the expected tags",
        ),
    ],
)
def test_a_bad_field_is_refused_naming_it(fields, param, says):
    error = refusal(**fields)
    assert error.param == param
    assert says in str(error)
    if param:
        assert str(error).startswith(f"{param}: ")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_refused(body):
    with pytest.raises(InvalidFieldError, match="JSON"):
        parse_body(ChatCompletionRequest, body)


# ----------------------------------------------------------------------------- tools, formats
TOOLS = [
    {"type": "function", "function": {"name": "weather", "description": "today's weather",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "clock"}},
]  # fmt: skip


@pytest.mark.parametrize(
    "choice, oneof, value",
    [
        ("auto", "mode", pb.TOOL_CHOICE_MODE_AUTO),
        ("none", "mode", pb.TOOL_CHOICE_MODE_NONE),
        ("required", "mode", pb.TOOL_CHOICE_MODE_REQUIRED),
        ({"type": "function", "function": {"name": "clock"}}, "function", "clock"),
        (None, None, None),
    ],
)
def test_tool_choice_variants(choice, oneof, value):
    fields = {"tools": TOOLS, "parallel_tool_calls": False}
    request = chat(**fields, **({} if choice is None else {"tool_choice": choice}))
    assert [(t.name, t.description) for t in request.tools] == [
        ("weather", "today's weather"),
        ("clock", ""),
    ]
    assert json.loads(request.tools[0].parameters_json)["properties"] == {
        "city": {"type": "string"}
    }
    assert request.tools[1].parameters_json == ""
    assert request.tool_choice.WhichOneof("choice") == oneof
    if oneof:
        assert getattr(request.tool_choice, oneof) == value
    assert request.HasField("parallel_tool_calls") and not request.parallel_tool_calls


@pytest.mark.parametrize("choice", ["auto", "none"])
def test_auto_or_none_without_tools_is_free_text(choice):
    assert not chat(tool_choice=choice).HasField("tool_choice")


def test_response_format_variants():
    assert not chat(response_format={"type": "text"}).HasField("response_format")
    assert chat(response_format={"type": "json_object"}).response_format.json_object
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    request = chat(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        }
    )
    assert json.loads(request.response_format.json_schema) == schema
    error = refusal(response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    assert "json_schema.schema" in str(error)


# ----------------------------------------------------------------------------- completions
def test_a_completion_prompt_is_raw_text():
    for prompt in ("once upon", ["once upon"]):
        body = parse_body(CompletionRequest, json.dumps({"prompt": prompt}).encode())
        request = completion_request(body, 64)
        assert request.raw.text == "once upon" and request.sampling.max_tokens == 64


def test_a_batch_of_completion_prompts_is_refused():
    with pytest.raises(InvalidFieldError, match="one prompt per request"):
        parse_body(CompletionRequest, json.dumps({"prompt": ["a", "b"]}).encode())


# ----------------------------------------------------------------------------- errors
class RayTaskErrorLike(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__("wrapped")
        self.cause = cause


@pytest.mark.parametrize(
    "error, status",
    [
        (InvalidRequestError("bad"), 400),
        (UnauthenticatedError("who"), 401),
        (UnknownModelError("no such model"), 404),
        (RayTaskErrorLike(AdmissionRejectedError("busy", 1500.0)), 429),
        (NoWorkerAvailableError("none"), 503),
        (RayTaskErrorLike(RequestFailedError("died")), 503),
        (TimeoutError(), 504),
        (KeyError("a bug"), 500),
    ],
)
def test_each_error_class_has_its_http_status(error, status):
    got, body = error_body(error)
    assert got == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if status == 500:
        assert body["error"]["message"] == "internal error; the server log has the details"


def test_a_rejection_says_when_to_retry_in_whole_seconds_rounded_up():
    response = error_response(RayTaskErrorLike(AdmissionRejectedError("busy", 1200.0)))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1200"
    assert json.loads(response.body)["error"]["message"] == "busy"


# ----------------------------------------------------------------------------- chat stream
def step(text: str, finish: str | None = None) -> GenerationStep:
    usage = Usage(prompt_tokens=5, completion_tokens=3, cached_prompt_tokens=0) if finish else None
    return GenerationStep(token_ids=[1], text=text, finish_reason=finish, usage=usage)


class ScriptedParser:
    """A stream parser that releases what it is told to, one feed at a time."""

    def __init__(self, deltas: list[StreamDelta], last: StreamDelta) -> None:
        self._deltas, self._last = list(deltas), last

    def feed(self, text: str) -> StreamDelta:
        return self._deltas.pop(0)

    def finish(self) -> StreamDelta:
        return self._last


HEADER = ResponseHeader(id="chatcmpl-r", model="m", created=1)


def test_the_first_chunk_carries_the_role_and_the_first_token_and_usage_comes_last():
    stream = ChatStream(HEADER, parser=None, include_usage=True)
    chunks = [c for s in (step("Hel"), step(""), step("lo", "length")) for c in stream.chunks(s)]
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        None,
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:2]] == [None, "length"]
    assert [c["usage"] for c in chunks[:2]] == [None, None]
    assert chunks[2]["usage"]["total_tokens"] == 8
    assert {c["id"] for c in chunks} == {"chatcmpl-r"}


def test_tool_call_fragments_stream_as_openai_deltas_and_end_with_tool_calls():
    parser = ScriptedParser(
        [
            StreamDelta(),  # held back: may be the start of a call
            StreamDelta(tool_calls=(ToolCallDelta(0, "call_a", "clock", '{"tz"'),)),
            StreamDelta(),
        ],
        StreamDelta(tool_calls=(ToolCallDelta(0, arguments=': "UTC"}'),)),
    )
    stream = ChatStream(HEADER, parser=parser, include_usage=False)
    chunks = [c for s in (step("<to"), step("ol"), step("", "stop")) for c in stream.chunks(s)]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "clock", "arguments": '{"tz"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ': "UTC"}'}}]},
    ]  # fmt: skip
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in c for c in chunks)


class GenerationThatFails:
    """A Generation whose worker dies after its first step."""

    request_id = "r"
    is_closed = False

    async def __aiter__(self):
        yield step("Hel")
        raise RequestFailedError("the decode worker died")

    def close(self) -> None:
        self.is_closed = True


def test_an_error_after_the_stream_began_is_one_error_event_then_done():
    generation = GenerationThatFails()
    stream = ChatStream(HEADER, parser=None, include_usage=False)
    response = event_stream(generation, stream.chunks)

    async def events() -> list[str]:
        return [event async for event in response.body_iterator]

    first, error, done = asyncio.run(events())
    assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "Hel"
    assert json.loads(error.removeprefix("data: "))["error"]["message"] == "the decode worker died"
    assert done == "data: [DONE]\n\n"
    assert generation.is_closed
