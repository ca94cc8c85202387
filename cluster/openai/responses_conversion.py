"""A Responses API call -> one GenerateRequest: its conversation (the previous response's, then
the new input) rendered as chat messages, submitted like any chat (request_conversion.py).

The prompt is laid out so that each call's prompt extends the previous call's, token for token,
and the engine reuses its KV (a paused call's, or the prefix cache's) for all of it:

    [tools, sorted by name, each schema as canonical JSON]   the chat template puts them first
    [instructions]                                           a system message
    [items, oldest first: inputs, answers, call outputs]     append-only
    [the new input]

Nothing volatile (ids, times) goes into it. Items become chat messages as chat clients send
them: a `function_call` joins the assistant message before it as one of its `tool_calls` (an
answer's text and its calls are one assistant turn); a `function_call_output` is a "tool"
message with the call's id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from cluster.openai.protocol import (
    JSONSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
)
from cluster.openai.request_conversion import (
    ROLES,
    base_request,
    decode_data_url,
    set_response_format,
    set_tool_choice,
)
from cluster.openai.responses_protocol import (
    ITEMS,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    FunctionTool,
    InputImage,
    McpTool,
    MessageItem,
    ResponsesRequest,
    TextConfig,
)
from proto.triserve.v1 import triserve_pb2 as pb


@dataclass(frozen=True)
class Conversation:
    """What a call is generated from, and what a stored response keeps for the call that
    continues it (with the response's own output items appended)."""

    instructions: str | None
    tools: tuple[FunctionTool, ...]  # sorted by name
    items: tuple  # InputItem models (responses_protocol.py), oldest first
    num_previous_items: int = 0  # how many of `items` came from the previous response
    # The previous response's prompt and answer as the model's token ids (chat_prompt.py):
    # the next call's prompt starts with them, so it reuses that call's KV to the last token.
    token_ids: tuple[int, ...] = ()
    mcp_tools: tuple[McpTool, ...] = ()  # the agent controller's servers (agent_responses.py)
    # The request id whose KV the next call continues: an agent run's last model call ("":
    # the response's own id, which is its one call's).
    resume_from: str = ""

    def followed_by(self, output_items: list[dict], token_ids=()) -> Conversation:
        """This conversation with a response's output items appended (`token_ids`: its prompt
        and answer ids): what continues it."""
        items = (*self.items, *ITEMS.validate_python(output_items))
        return replace(self, items=items, num_previous_items=len(items), token_ids=tuple(token_ids))

    def to_json(self) -> dict:
        return {
            "instructions": self.instructions,
            "tools": [tool.model_dump(mode="json", exclude_none=True) for tool in self.tools],
            "items": [
                item.model_dump(mode="json", exclude_none=True, by_alias=True)
                for item in self.items
            ],
            "token_ids": list(self.token_ids),
            "mcp_tools": [
                tool.model_dump(mode="json", exclude_none=True) for tool in self.mcp_tools
            ],
            "resume_from": self.resume_from,
        }

    @classmethod
    def from_json(cls, stored: dict) -> Conversation:
        items = tuple(ITEMS.validate_python(stored["items"]))
        tools = tuple(FunctionTool.model_validate(tool) for tool in stored["tools"])
        token_ids = tuple(stored.get("token_ids", ()))
        mcp_tools = tuple(McpTool.model_validate(tool) for tool in stored.get("mcp_tools", ()))
        resume_from = stored.get("resume_from", "")
        return cls(
            stored["instructions"], tools, items, len(items), token_ids, mcp_tools, resume_from
        )


def conversation_for(body: ResponsesRequest, previous: Conversation | None) -> Conversation:
    """The call's conversation: the previous response's (its instructions and tools unless the
    body gives new ones), then the body's input."""
    instructions = body.instructions
    tools = tuple(sorted(body.function_tools, key=lambda tool: tool.name))
    mcp_tools = tuple(body.mcp_tools)
    earlier: tuple = ()
    token_ids: tuple[int, ...] = ()
    resume_from = ""
    if previous is not None:
        instructions = previous.instructions if instructions is None else instructions
        if body.tools is None:
            tools, mcp_tools = previous.tools, previous.mcp_tools
        earlier, token_ids = previous.items, previous.token_ids
        resume_from = previous.resume_from
    items = (*earlier, *body.input_items)
    return Conversation(instructions, tools, items, len(earlier), token_ids, mcp_tools, resume_from)


def generate_request(
    body: ResponsesRequest,
    conversation: Conversation,
    response_id: str,
    session: pb.Session,
    default_max_tokens: int | None = None,
) -> pb.GenerateRequest:
    """The call as a GenerateRequest whose request id is the response's id. InvalidFieldError
    names a bad item by its place in `input`."""
    request = base_request(body, body.output_limit, default_max_tokens)
    request.request_id = response_id
    request.session.CopyFrom(session)
    request.conversation.add_generation_prompt = True
    messages = request.conversation.messages
    if conversation.instructions:
        messages.add(role="system").content.add(text=conversation.instructions)
    messages.extend(_chat_messages(conversation))
    if conversation.token_ids and conversation.num_previous_items:
        earlier = replace(conversation, items=conversation.items[: conversation.num_previous_items])
        num_earlier = len(_chat_messages(earlier)) + bool(conversation.instructions)
        request.conversation.prefix_token_ids.extend(conversation.token_ids)
        request.conversation.num_prefix_messages = num_earlier
    for tool in conversation.tools:
        request.tools.add(
            name=tool.name,
            description=tool.description or "",
            parameters_json=canonical_json(tool.parameters) if tool.parameters else "",
        )
    set_tool_choice(request, _tool_choice(body.tool_choice))
    if body.parallel_tool_calls is not None:
        request.parallel_tool_calls = body.parallel_tool_calls
    set_response_format(request, response_format(body.text))
    return request


def canonical_json(value) -> str:
    """One text per value (sorted keys, no spaces), so the same tools give the same tokens."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def response_format(text: TextConfig | None) -> ResponseFormat | None:
    """`text.format` in chat's shape (`response_format`)."""
    if text is None or text.format is None:
        return None
    schema = JSONSchemaFormat(name=text.format.name, schema=text.format.schema_)
    return ResponseFormat(type=text.format.type, json_schema=schema)


def _tool_choice(choice: str | FunctionChoice | None) -> str | NamedToolChoice | None:
    if isinstance(choice, FunctionChoice):
        return NamedToolChoice(type="function", function=NamedFunction(name=choice.name))
    return choice


def _chat_messages(conversation: Conversation) -> list[pb.ChatMessage]:
    messages: list[pb.ChatMessage] = []
    for i, item in enumerate(conversation.items):
        param = _param(i, conversation.num_previous_items)
        if isinstance(item, MessageItem):
            messages.append(_message(item, param))
        elif isinstance(item, FunctionCallItem):
            if not messages or messages[-1].role != "assistant":
                messages.append(pb.ChatMessage(role="assistant"))
            messages[-1].tool_calls.add(
                id=item.call_id, name=item.name, arguments_json=item.arguments
            )
        elif isinstance(item, FunctionCallOutputItem):
            message = pb.ChatMessage(role="tool", tool_call_id=item.call_id)
            message.content.add(text=item.output_text)
            messages.append(message)
        else:  # OtherItem refuses itself when parsed; this is a bug of ours
            raise TypeError(f"{param}: unexpected item {item!r}")
    return messages


def _message(item: MessageItem, param: str) -> pb.ChatMessage:
    message = pb.ChatMessage(role=ROLES.get(item.role, item.role))
    if isinstance(item.content, str):
        message.content.add(text=item.content)
        return message
    for j, part in enumerate(item.content):
        if isinstance(part, InputImage):
            url_param = f"{param}.content.{j}.image_url"
            message.content.add(image=decode_data_url(part.image_url, url_param))
        else:
            message.content.add(text=part.text)
    return message


def _param(index: int, num_previous_items: int) -> str:
    """Where an item came from, as an error names it."""
    if index < num_previous_items:
        return f"previous_response_id (its conversation's item {index})"
    return f"input.{index - num_previous_items}"
