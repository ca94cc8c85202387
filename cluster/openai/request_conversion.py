"""An OpenAI request body -> one GenerateRequest, the message the gRPC API takes too.

This is the HTTP API's whole share of a request's meaning: from here on, the Frontend
(cluster/frontend.py) checks, builds and submits it exactly as it does a gRPC call. What differs
from the gRPC API is only a default or two, chosen to match OpenAI's:

- `temperature` unset is 1 (gRPC: 0, greedy); send 0 for greedy answers.
- `max_tokens` unset is `default_max_tokens`: the ingress passes the largest the request's model
  allows (limits.max_tokens, or its context), so that an answer runs until it stops, or until
  the context is full (finish reason "length"), as OpenAI's does. gRPC's default is 16.
- `max_completion_tokens` wins over `max_tokens` when both are set.
- Images come as data: URLs (PNG or JPEG, base64); the server fetches nothing.
- A chat's `session_id` (or its X-Session-ID header) makes it a call of that session, paused
  when it ends (unless `pause: false`), so that the session's next call can reuse its KV.

The Responses API (responses_conversion.py) builds on `base_request` and the setters here.
"""

from __future__ import annotations

import base64
import binascii
import json

from cluster import request_fields
from cluster.constraints import TOOL_CHOICE_MODES as TOOL_CHOICE_MODE_NAMES
from cluster.openai.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    GenerationFields,
    ImagePart,
    InvalidFieldError,
    NamedToolChoice,
    ResponseFormat,
)
from proto.triserve.v1 import triserve_pb2 as pb

IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg")
DEFAULT_TEMPERATURE = 1.0
# The names the gRPC side reads these enums as, read backwards: one table each.
PRIORITIES = {name: value for value, name in request_fields.PRIORITIES.items() if value}
ADMISSIONS = {name: value for value, name in request_fields.ADMISSIONS.items() if name}
TOOL_CHOICE_MODES = {name: value for value, name in TOOL_CHOICE_MODE_NAMES.items()}
# OpenAI's "developer" role is its newer name for "system", which chat templates know.
ROLES = {"developer": "system"}


def chat_request(
    body: ChatCompletionRequest,
    default_max_tokens: int | None = None,
    session_header: str | None = None,
) -> pb.GenerateRequest:
    """`default_max_tokens`: used when the body sets neither max_completion_tokens nor
    max_tokens (None: the builder's default). `session_header`: the X-Session-ID header, the
    session when the body names none."""
    request = base_request(body, body.max_completion_tokens or body.max_tokens, default_max_tokens)
    session_id = body.session_id or session_header
    if session_id:
        # No resume_of: the scheduler knows which call of the session it paused last.
        request.session.session_id = session_id
        request.session.pause = body.pause
    request.conversation.add_generation_prompt = True
    for i, message in enumerate(body.messages):
        request.conversation.messages.append(_message(message, f"messages.{i}"))
    for tool in body.tools or ():
        parameters = tool.function.parameters
        request.tools.add(
            name=tool.function.name,
            description=tool.function.description,
            parameters_json=json.dumps(parameters) if parameters else "",
        )
    set_tool_choice(request, body.tool_choice)
    if body.parallel_tool_calls is not None:
        request.parallel_tool_calls = body.parallel_tool_calls
    set_response_format(request, body.response_format)
    return request


def completion_request(
    body: CompletionRequest, default_max_tokens: int | None = None
) -> pb.GenerateRequest:
    """The prompt is raw text (no chat template), as OpenAI's completions take it."""
    request = base_request(body, body.max_tokens, default_max_tokens)
    request.raw.text = body.prompt_text
    return request


def decode_data_url(url: str, param: str) -> bytes:
    """The image bytes of a `data:image/png;base64,...` (or image/jpeg) URL."""
    if url.startswith(("http://", "https://")):
        raise InvalidFieldError(
            f"{param}: this server does not fetch images from URLs (it has no internet access); "
            "send the image inline as a data:image/png;base64,... or data:image/jpeg;base64,... "
            "URL",
            param,
        )
    header, comma, data = url.partition(",")
    media_type, _, encoding = header.removeprefix("data:").partition(";")
    if not url.startswith("data:") or not comma:
        raise InvalidFieldError(
            f"{param}: expected a data: URL (data:image/png;base64,...), got {url[:32]!r}", param
        )
    if media_type.lower() not in IMAGE_TYPES:
        raise InvalidFieldError(
            f"{param}: images must be PNG or JPEG (image/png, image/jpeg), got {media_type!r}",
            param,
        )
    if encoding.lower() != "base64":
        raise InvalidFieldError(f"{param}: the data URL must be base64-encoded (;base64,)", param)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidFieldError(f"{param}: the data URL's base64 is invalid", param) from None


def base_request(
    body: GenerationFields, max_tokens: int | None, default_max_tokens: int | None
) -> pb.GenerateRequest:
    """What every endpoint's request has: ids, sampling, SLO, priority, admission."""
    request = pb.GenerateRequest(
        request_id=body.request_id,
        model=body.model,
        priority=PRIORITIES.get(body.priority, pb.PRIORITY_UNSPECIFIED),
        admission=ADMISSIONS.get(body.admission, pb.ADMISSION_UNSPECIFIED),
    )
    sampling = request.sampling
    max_tokens = max_tokens or default_max_tokens
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    sampling.temperature = DEFAULT_TEMPERATURE if body.temperature is None else body.temperature
    if body.top_p is not None:
        sampling.top_p = body.top_p
    if body.top_k is not None:
        sampling.top_k = max(body.top_k, 0)
    if body.seed is not None:
        sampling.seed = body.seed
    sampling.stop.extend([body.stop] if isinstance(body.stop, str) else body.stop or ())
    sampling.stop_token_ids.extend(body.stop_token_ids or ())
    sampling.ignore_eos = body.ignore_eos
    if body.ttft_ms is not None:
        request.slo.ttft_ms = body.ttft_ms
    if body.tpot_ms is not None:
        request.slo.tpot_ms = body.tpot_ms
    return request


def _message(message: ChatMessage, param: str) -> pb.ChatMessage:
    converted = pb.ChatMessage(
        role=ROLES.get(message.role, message.role), tool_call_id=message.tool_call_id or ""
    )
    content = message.content
    if isinstance(content, str):
        converted.content.add(text=content)
    for j, part in enumerate(content if isinstance(content, list) else ()):
        if isinstance(part, ImagePart):
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            converted.content.add(image=decode_data_url(url, f"{param}.content.{j}.image_url"))
        else:
            converted.content.add(text=part.text)
    for call in message.tool_calls or ():
        arguments = call.function.arguments
        converted.tool_calls.add(
            id=call.id,
            name=call.function.name,
            arguments_json=arguments if isinstance(arguments, str) else json.dumps(arguments),
        )
    return converted


def set_tool_choice(request: pb.GenerateRequest, choice: str | NamedToolChoice | None) -> None:
    """`request.tools` set first."""
    if isinstance(choice, NamedToolChoice):
        request.tool_choice.function = choice.function.name
    elif choice is not None and (request.tools or choice == "required"):
        # "auto" or "none" without tools means free text, which is what no tool_choice means.
        request.tool_choice.mode = TOOL_CHOICE_MODES[choice]


def set_response_format(
    request: pb.GenerateRequest, response_format: ResponseFormat | None
) -> None:
    if response_format is None or response_format.type == "text":
        return
    if response_format.type == "json_object":
        request.response_format.json_object = True
    else:
        request.response_format.json_schema = json.dumps(response_format.json_schema.schema_)
