"""The Responses API's wire formats, without Ray: items -> a conversation -> one GenerateRequest
(prefix-stable, with the call's session), what is refused and how the refusal names the item,
and a stream of GenerationSteps -> the Responses API's events."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from cluster.frontend import GenerationStep
from cluster.openai.protocol import ChatCompletionRequest, InvalidFieldError, parse_body
from cluster.openai.request_conversion import chat_request
from cluster.openai.response_object import ResponseFields, output_items
from cluster.openai.responses_conversion import (
    Conversation,
    conversation_for,
    generate_request,
)
from cluster.openai.responses_events import ResponseEvents
from cluster.openai.responses_protocol import ResponsesRequest
from cluster.tool_calls.base import Tool, ToolCall
from cluster.tool_calls.registry import FORMATS
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.request import Usage

WEATHER = {
    "type": "object",
    "required": ["city"],
    "properties": {"city": {"type": "string", "enum": ["Oslo", "Lima"]}},
}
CLOCK = {"type": "object", "properties": {"zone": {"type": "string"}}}
SESSION = pb.Session(session_id="resp_first", pause=True)


def png_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 10)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def body(**fields) -> ResponsesRequest:
    return parse_body(ResponsesRequest, json.dumps({"model": "m", **fields}).encode())


def convert(
    previous: Conversation | None = None, session: pb.Session = SESSION, **fields
) -> tuple[pb.GenerateRequest, Conversation]:
    request_body = body(**fields)
    conversation = conversation_for(request_body, previous)
    return generate_request(request_body, conversation, "resp_1", session, 64), conversation


def messages_of(request: pb.GenerateRequest) -> list[tuple]:
    """(role, texts, tool calls, tool_call_id) per message."""
    return [
        (
            m.role,
            [p.text for p in m.content if p.WhichOneof("part") == "text"],
            [(c.id, c.name, c.arguments_json) for c in m.tool_calls],
            m.tool_call_id,
        )
        for m in request.conversation.messages
    ]


def refusal(**fields) -> InvalidFieldError:
    with pytest.raises(InvalidFieldError) as error:
        convert(**fields)
    return error.value


# ----------------------------------------------------------------------------- requests
def test_a_string_input_is_one_user_message_after_the_instructions_as_a_system_message():
    request, _ = convert(input="Hi there", instructions="Be brief.", max_output_tokens=5)
    assert messages_of(request) == [
        ("system", ["Be brief."], [], ""),
        ("user", ["Hi there"], [], ""),
    ]
    assert request.conversation.add_generation_prompt
    assert request.request_id == "resp_1" and request.model == "m"
    assert request.sampling.max_tokens == 5
    assert request.session == SESSION


def test_unset_max_output_tokens_is_the_largest_the_model_allows_and_temperature_is_1():
    request, _ = convert(input="Hi")
    assert request.sampling.max_tokens == 64 and request.sampling.temperature == 1.0


def test_message_parts_keep_their_order_and_images_arrive_as_bytes():
    content = [
        {"type": "input_text", "text": "Look:"},
        {"type": "input_image", "image_url": png_url()},
        {"type": "input_text", "text": "What is it?"},
    ]
    items = [
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": content},
    ]
    request, _ = convert(input=items)
    system, user = request.conversation.messages
    assert system.role == "system"  # "developer" is OpenAI's newer name for it
    assert [p.WhichOneof("part") for p in user.content] == ["text", "image", "text"]
    assert Image.open(io.BytesIO(user.content[1].image)).size == (4, 4)


def test_function_calls_join_the_assistant_turn_and_their_outputs_are_tool_messages():
    items = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Oslo"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "12:00"}]},
    ]  # fmt: skip
    request, _ = convert(input=items)
    assert messages_of(request) == [
        ("user", ["Weather in Oslo?"], [], ""),
        ("assistant", ["Checking."],
         [("call_1", "get_weather", '{"city":"Oslo"}'), ("call_2", "get_time", "{}")], ""),
        ("tool", ["Sunny"], [], "call_1"),
        ("tool", ["12:00"], [], "call_2"),
    ]  # fmt: skip


def test_a_call_with_no_text_before_it_is_an_assistant_turn_of_its_own():
    items = [
        {"role": "user", "content": "Time?"},
        {"type": "function_call", "call_id": "c", "name": "get_time", "arguments": "{}"},
    ]
    request, _ = convert(input=items)
    assert messages_of(request)[1] == ("assistant", [], [("c", "get_time", "{}")], "")


def test_tools_are_sorted_by_name_with_canonical_schemas_so_their_order_never_matters():
    tools = [
        {"type": "function", "name": "get_weather", "description": "Weather.",
         "parameters": WEATHER, "strict": True},
        {"type": "function", "name": "get_time", "parameters": CLOCK},
    ]  # fmt: skip
    reordered = [
        {**tools[1], "parameters": dict(reversed(CLOCK.items()))},
        {**tools[0], "parameters": dict(reversed(WEATHER.items()))},
    ]
    request, _ = convert(input="Hi", tools=tools, tool_choice="required")
    again, _ = convert(input="Hi", tools=reordered, tool_choice="required")
    assert request == again
    assert [tool.name for tool in request.tools] == ["get_time", "get_weather"]
    assert request.tools[1].parameters_json == (
        '{"properties":{"city":{"enum":["Oslo","Lima"],"type":"string"}},'
        '"required":["city"],"type":"object"}'
    )
    assert request.tools[1].description == "Weather."
    assert request.tool_choice.mode == pb.TOOL_CHOICE_MODE_REQUIRED


def test_a_named_tool_choice_parallel_calls_and_a_json_schema_text_format():
    tools = [{"type": "function", "name": "get_time", "parameters": CLOCK}]
    named, _ = convert(
        input="Hi", tools=tools, tool_choice={"type": "function", "name": "get_time"},
        parallel_tool_calls=False,
    )  # fmt: skip
    assert named.tool_choice.function == "get_time" and named.parallel_tool_calls is False
    fmt = {"type": "json_schema", "name": "answer", "schema": CLOCK, "strict": True}
    schema, _ = convert(input="Hi", text={"format": fmt})
    assert json.loads(schema.response_format.json_schema) == CLOCK
    as_object, _ = convert(input="Hi", text={"format": {"type": "json_object"}})
    assert as_object.response_format.json_object
    plain, _ = convert(input="Hi", text={"format": {"type": "text"}})
    assert not plain.HasField("response_format")


def finished(conversation: Conversation, text: str, calls=()) -> Conversation:
    """The conversation a stored response keeps: its own, with its output items, as JSON."""
    stored = conversation.followed_by(output_items(text, list(calls), "stop")).to_json()
    return Conversation.from_json(json.loads(json.dumps(stored)))


def test_a_continued_conversation_is_the_previous_one_its_answer_then_the_new_input():
    tools = [{"type": "function", "name": "get_time", "parameters": CLOCK}]
    first, conversation = convert(input="Hi", instructions="Be brief.", tools=tools)
    previous = finished(conversation, "Hello!")
    second, _ = convert(previous, input="And now?")
    # Append-only: every message of the first call comes back unchanged, in place.
    assert second.conversation.messages[:2] == first.conversation.messages
    assert messages_of(second)[2:] == [
        ("assistant", ["Hello!"], [], ""),
        ("user", ["And now?"], [], ""),
    ]
    assert second.tools == first.tools  # the previous call's tools and instructions, kept
    replaced, _ = convert(previous, input="Go", instructions="Be long.", tools=[])
    assert messages_of(replaced)[0] == ("system", ["Be long."], [], "")
    assert not replaced.tools


def test_a_response_that_called_a_function_is_continued_with_its_output():
    tools = [{"type": "function", "name": "get_time", "parameters": CLOCK}]
    _, conversation = convert(input="Time?", tools=tools, tool_choice="required")
    call = ToolCall(id="call_9", name="get_time", arguments='{"zone":"UTC"}')
    previous = finished(conversation, "", [call])
    output = {"type": "function_call_output", "call_id": "call_9", "output": "12:00"}
    request, _ = convert(previous, input=[output])
    assert messages_of(request) == [
        ("user", ["Time?"], [], ""),
        ("assistant", [], [("call_9", "get_time", '{"zone":"UTC"}')], ""),
        ("tool", ["12:00"], [], "call_9"),
    ]


def test_a_continued_call_resumes_the_previous_one_in_its_session():
    session = pb.Session(session_id="resp_first", pause=False, resume_of="resp_prev")
    request, _ = convert(input="Hi", session=session)
    assert request.session.session_id == "resp_first"
    assert request.session.resume_of == "resp_prev" and not request.session.pause


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"input": ["hi", {"type": "reasoning", "id": "r"}]}, "input.0", "valid dictionary"),
        ({"input": [{"role": "user", "content": "a"}, {"type": "reasoning", "summary": []}]},
         "input.1", "'reasoning' are not supported yet"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
         "input.0.call_id", "Field required"),
        ({"input": [{"role": "robot", "content": "a"}]}, "input.0.role", "'user'"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
         "input.0.content.0", "data: URL"),
        ({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "a"},
            {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]},
         "input.0.content.1.image_url", "no internet"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools.0", "not supported yet"),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools.0", "needs a name"),
        ({"input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format", "schema"),
        ({"input": "hi", "background": True}, None, "background"),
        ({"input": "hi", "request_id": "mine"}, None, "set by the server"),
    ],
)  # fmt: skip
def test_a_bad_item_or_field_is_refused_naming_it(fields, param, words):
    error = refusal(**fields)
    assert error.param == param and words in str(error)


# ----------------------------------------------------------------------------- chat sessions
def chat(headers_session: str | None = None, **fields) -> pb.GenerateRequest:
    raw = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return chat_request(parse_body(ChatCompletionRequest, json.dumps(raw).encode()), None,
                        headers_session)  # fmt: skip


def test_a_chat_with_a_session_id_is_a_paused_call_of_that_session():
    assert chat(session_id="s1").session == pb.Session(session_id="s1", pause=True)
    assert chat("from-header").session == pb.Session(session_id="from-header", pause=True)
    assert chat("from-header", session_id="s1").session.session_id == "s1"  # the body wins
    assert chat(session_id="s1", pause=False).session == pb.Session(session_id="s1")
    assert not chat().HasField("session")


# ----------------------------------------------------------------------------- events
FIELDS = ResponseFields(id="resp_1", model="m", request={"store": True}, created_at=7)
USAGE = Usage(prompt_tokens=5, completion_tokens=3, cached_prompt_tokens=0)


def step(text: str, finish_reason: str | None = None) -> GenerationStep:
    usage = USAGE if finish_reason else None
    return GenerationStep(token_ids=[1], text=text, finish_reason=finish_reason, usage=usage)


def run(events: ResponseEvents, steps: list[GenerationStep]) -> list[dict]:
    sent = [event for s in steps for event in events.events(s)] + [events.closing()]
    parsed = []
    for event in sent:
        kind_line, data_line, blank = event.split("\n", 2)
        data = json.loads(data_line.removeprefix("data: "))
        assert kind_line == f"event: {data['type']}" and blank == "\n"
        parsed.append(data)
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    return parsed


def test_streamed_text_deltas_add_up_to_the_final_output_text():
    events = ResponseEvents(FIELDS, parser=None)
    sent = run(events, [step("Hel"), step(""), step("lo", "length")])
    assert [e["type"] for e in sent] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.incomplete",
    ]  # fmt: skip
    final = sent[-1]["response"]
    deltas = "".join(e["delta"] for e in sent if e["type"] == "response.output_text.delta")
    assert deltas == final["output_text"] == "Hello"
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    assert final["usage"]["total_tokens"] == 8 and final == events.response()
    assert sent[0]["response"]["status"] == "in_progress" and sent[0]["response"]["output"] == []
    assert sent[2]["item"]["content"] == []  # the part comes with content_part.added


def test_a_streamed_call_is_a_function_call_item_whose_argument_deltas_add_up():
    tools = [Tool(name="get_time", parameters=CLOCK)]
    events = ResponseEvents(FIELDS, parser=FORMATS["hermes"].stream_parser(tools))
    pieces = [
        '<tool_call>\n{"name": "get_time", ',
        '"arguments": {"zone"',
        ': "UTC"}}\n</tool_call>',
    ]
    sent = run(events, [step(pieces[0]), step(pieces[1]), step(pieces[2], "stop")])
    final = sent[-1]["response"]
    (call,) = final["output"]
    assert sent[-1]["type"] == "response.completed" and final["status"] == "completed"
    assert (call["type"], call["name"]) == ("function_call", "get_time")
    assert call["status"] == "completed"
    assert call["call_id"].startswith("call_") and call["id"].startswith("fc_")
    deltas = [e for e in sent if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(e["delta"] for e in deltas) == call["arguments"] == '{"zone": "UTC"}'
    assert {e["item_id"] for e in deltas} == {call["id"]}
    (done,) = [e for e in sent if e["type"] == "response.function_call_arguments.done"]
    assert done["arguments"] == call["arguments"] and final["output_text"] == ""


def test_a_stream_that_fails_ends_with_an_error_event_then_response_failed():
    events = ResponseEvents(FIELDS, parser=None)
    events.events(step("Hel"))
    error = {"error": {"message": "the decode worker died", "type": "x", "param": None,
                       "code": None}}  # fmt: skip
    error_event, failed = (json.loads(e.split("data: ")[1]) for e in events.failure(error))
    assert error_event["type"] == "error" and error_event["message"] == "the decode worker died"
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error",
                                           "message": "the decode worker died"}  # fmt: skip
