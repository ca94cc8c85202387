"""The request bodies of the OpenAI API, as pydantic models: what a client may send, checked.

Unknown fields are ignored: OpenAI clients send many (`user`, `metadata`, `store`, ...). Fields
that would change the answer and that Triserve cannot honour (`n` > 1, log probabilities,
penalties, `echo`, `best_of`) are refused rather than ignored, so that no client silently gets
something other than what it asked for. Triserve's own fields (`TriserveFields`) travel in the
body too, which is where the OpenAI SDK puts `extra_body`. The Responses API's body, built on
`GenerationFields`, is in responses_protocol.py.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workers.contract.errors import InvalidRequestError
from workers.contract.sampling_params import MAX_SEED

MAX_UINT32 = 2**32 - 1


class InvalidFieldError(InvalidRequestError):
    """A field of the body is missing, of the wrong type or out of range; `param` names it
    (e.g. "messages.0.content"), as OpenAI's error object does."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ----------------------------------------------------------------------------- chat messages
class TextPart(Body):
    type: Literal["text"]
    text: str


class ImageURL(Body):
    url: str  # a data: URL (data:image/png;base64,...); the server fetches nothing
    detail: str | None = None  # accepted; every image is seen at the model's resolution


class ImagePart(Body):
    type: Literal["image_url"]
    image_url: ImageURL | str  # a bare string is accepted too (some clients send one)


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
# The tags of tagged unions (chat's parts; the Responses API's items and parts): left out of the
# path an error names (`messages.0.content.1.image_url`, not `...1.image_url.image_url`).
UNION_TAGS = (
    *("text", "image_url", "input_text", "input_image", "output_text"),
    *("message", "function_call", "function_call_output", "other_item"),
    *("function", "mcp"),  # the Responses API's tools
)


class FunctionCall(Body):
    name: str
    arguments: str | dict = "{}"  # JSON text of the arguments object (a dict is accepted too)


class ToolCall(Body):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None  # accepted, not shown to the model


# ----------------------------------------------------------------------------- tools, formats
class FunctionDefinition(Body):
    name: str
    description: str = ""
    parameters: dict | None = None  # a JSON schema of the arguments object
    strict: bool | None = None  # accepted; arguments always follow the schema (a grammar)


class ToolDefinition(Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(Body):
    name: str = "response"
    description: str | None = None
    schema_: dict | None = Field(default=None, alias="schema")
    strict: bool | None = None  # accepted; the answer always follows the schema (a grammar)


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        schema = self.json_schema.schema_ if self.json_schema else None
        if self.type == "json_schema" and not schema:
            raise ValueError('type "json_schema" needs json_schema.schema')
        return self


class StreamOptions(Body):
    include_usage: bool = False


# ----------------------------------------------------------------------------- requests
class TriserveFields(Body):
    """Triserve's fields (the SDK's `extra_body`), shared by both endpoints."""

    ttft_ms: float | None = None  # TTFT target; unset: the request class's default
    tpot_ms: float | None = None  # TPOT target
    priority: Literal["interactive", "batch"] | None = None
    admission: Literal["reject", "degrade", "best_effort"] | None = None  # if it would miss
    request_id: str = ""  # empty: the server assigns one
    top_k: int | None = Field(default=None, ge=-1)  # 0 or -1 (vLLM's spelling): off
    ignore_eos: bool = False  # what `vllm bench serve` sends
    stop_token_ids: list[Annotated[int, Field(ge=0, le=MAX_UINT32)]] | None = None


class GenerationFields(TriserveFields):
    """The fields both endpoints share."""

    model: str = ""  # may be left out when the cluster serves one model
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_UINT32)
    temperature: float | None = None  # unset: 1, as in OpenAI's API (0 is greedy)
    top_p: float | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None  # accepted, ignored

    @model_validator(mode="after")
    def _supported(self) -> GenerationFields:
        if self.n != 1:
            raise ValueError(f"n must be 1: one answer per request (got {self.n})")
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty and frequency_penalty are not supported")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_UINT32)  # wins
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # Triserve: a call of this session (the X-Session-ID header too), paused when it ends
    # unless `pause` is false: the scheduler may keep its KV for the session's next call.
    session_id: str | None = Field(default=None, min_length=1)
    pause: bool = True
    logprobs: bool = False
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _no_logprobs(self) -> ChatCompletionRequest:
        if self.logprobs or self.top_logprobs:
            raise ValueError("logprobs are not supported")
        return self


class CompletionRequest(GenerationFields):
    prompt: str | list[str]  # a list holds exactly one prompt (no batches)
    echo: bool = False
    best_of: int | None = None
    logprobs: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _supported_completion(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("prompt: one prompt per request (a list of exactly one string)")
        if self.echo or (self.best_of or 1) != 1 or self.logprobs or self.suffix:
            raise ValueError("echo, best_of, logprobs and suffix are not supported")
        return self

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def parse_body(model: type[Body], body: bytes) -> Body:
    """A request body -> `model`, or InvalidFieldError naming the first bad field."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidFieldError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise InvalidFieldError("the request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise _field_error(e) from None


def _field_error(error: ValidationError) -> InvalidFieldError:
    errors = error.errors(include_url=False)
    # Each member of a union reports its own error; the deepest is the one the client meant
    # (a list of parts with one bad part, rather than "not a string").
    first = max(errors, key=lambda e: len(e["loc"]))
    # Union members add their type names to the path ("messages.0.content.str"), and a part's
    # type its tag ("content.0.image_url.image_url"): drop them.
    path: list[str] = []
    for i, part in enumerate(first["loc"]):
        is_part_tag = part in UNION_TAGS and i > 0 and isinstance(first["loc"][i - 1], int)
        if not (_is_type_tag(part) or is_part_tag):
            path.append(str(part))
    param = ".".join(path) or None
    message = first["msg"].removeprefix("Value error, ")
    return InvalidFieldError(f"{param + ': ' if param else ''}{message}", param)


def _is_type_tag(part) -> bool:
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "dict", "list", "none"}
        or part.startswith(("list[", "dict[", "literal[", "tagged-union[", "function-"))
        or part[:1].isupper()
    )
