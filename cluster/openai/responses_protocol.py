"""The Responses API's request body (`POST /v1/responses`), as pydantic models: input items,
function tools, the tool choice and the text format. As protocol.py's bodies: unknown fields
are ignored, and fields Triserve cannot honour are refused, naming them.

    input: "text"                                   one user message
    input: [item, ...]                              items, in conversation order:
      {"type": "message", "role", "content"}          role user, system, developer, assistant;
                                                      "type" may be left out; content a string
                                                      or parts: input_text, input_image (a data:
                                                      URL), output_text (an earlier answer)
      {"type": "function_call", "call_id", "name", "arguments"}   an earlier call of the model
      {"type": "function_call_output", "call_id", "output"}       its result

Items the server also writes (its answers' messages and calls, with their `id` and `status`)
are read back the same way: a stored conversation is a list of these items.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, model_validator

from cluster.openai.protocol import MAX_UINT32, Body, GenerationFields

ITEM_TYPES = ("message", "function_call", "function_call_output")


# ----------------------------------------------------------------------------- items
class InputText(Body):
    type: Literal["input_text"]
    text: str


class InputImage(Body):
    type: Literal["input_image"]
    image_url: str | None = None  # a data: URL (data:image/png;base64,...); nothing is fetched
    file_id: str | None = None  # refused: this server keeps no files
    detail: str | None = None  # accepted; every image is seen at the model's resolution

    @model_validator(mode="after")
    def _inline(self) -> InputImage:
        if self.file_id is not None or not self.image_url:
            raise ValueError("an input_image needs image_url, a data: URL (files are not kept)")
        return self


class OutputText(Body):
    type: Literal["output_text"]
    text: str
    annotations: list = Field(default_factory=list)  # accepted, not shown to the model


MessagePart = Annotated[InputText | InputImage | OutputText, Field(discriminator="type")]


class MessageItem(Body):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[MessagePart]
    id: str | None = None  # set on the server's own answers
    status: str | None = None


class FunctionCallItem(Body):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str  # JSON text of the arguments object, as the model wrote it
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Body):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputText]
    id: str | None = None
    status: str | None = None

    @property
    def output_text(self) -> str:
        return (
            self.output
            if isinstance(self.output, str)
            else "".join(part.text for part in self.output)
        )


class OtherItem(Body):
    """Any other item type (reasoning, item_reference, a built-in tool's call): refused."""

    type: str

    @model_validator(mode="after")
    def _refused(self) -> OtherItem:
        raise ValueError(
            f"items of type {self.type!r} are not supported yet; "
            f"the supported types are {', '.join(ITEM_TYPES)}"
        )


def _item_tag(item: Any) -> str:
    kind = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", None)
    return kind if kind in ITEM_TYPES else "other_item"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[OtherItem, Tag("other_item")],
    Discriminator(_item_tag),
]
ITEMS = TypeAdapter(list[InputItem])  # reads stored conversations back


# ----------------------------------------------------------------------------- tools, formats
class FunctionTool(Body):
    """A function tool, in the Responses API's flat shape (no `function` wrapper)."""

    type: str
    name: str = ""
    description: str | None = None
    parameters: dict | None = None  # a JSON schema of the arguments object
    strict: bool | None = None  # accepted; arguments always follow the schema (a grammar)

    @model_validator(mode="after")
    def _a_named_function(self) -> FunctionTool:
        if self.type != "function":
            raise ValueError(f"tools of type {self.type!r} are not supported yet; only functions")
        if not self.name:
            raise ValueError("a function tool needs a name")
        return self


class McpTool(Body):
    """A remote MCP server whose tools the agent controller calls itself (agent/): its calls
    appear in the output as `mcp_call` items, and never reach the client."""

    type: Literal["mcp"]
    server_label: str = Field(min_length=1, max_length=64)
    server_url: str | None = None  # None: the server the cluster config declares by that label
    allowed_tools: list[str] | None = None
    headers: dict[str, str] | None = None  # sent with each call (e.g. Authorization)
    require_approval: str | dict = "never"
    server_description: str | None = None

    @model_validator(mode="after")
    def _no_approval(self) -> McpTool:
        if self.require_approval != "never":
            raise ValueError(
                'require_approval: only "never" is supported (calls run under the budget)'
            )
        if self.server_url is not None and not self.server_url.startswith(("http://", "https://")):
            raise ValueError("server_url: an http:// or https:// URL (streamable HTTP)")
        return self


def _tool_tag(tool: Any) -> str:
    kind = tool.get("type") if isinstance(tool, dict) else getattr(tool, "type", None)
    return "mcp" if kind == "mcp" else "function"


RequestTool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[McpTool, Tag("mcp")],
    Discriminator(_tool_tag),
]


class AgentOptionsBody(Body):
    """`agent_options`, a Triserve extension: the controller's mechanisms, each on by default
    (benchmarks turn one off to measure what it is worth)."""

    parallel_dispatch: bool = True
    pause_kv: bool = True
    budget: bool = True
    routing: bool = True


class FunctionChoice(Body):
    type: Literal["function"]
    name: str


class TextFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    description: str | None = None
    schema_: dict | None = Field(default=None, alias="schema")
    strict: bool | None = None  # accepted; the answer always follows the schema (a grammar)

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and not self.schema_:
            raise ValueError('type "json_schema" needs a schema')
        return self


class TextConfig(Body):
    format: TextFormat | None = None


# ----------------------------------------------------------------------------- the request
class ResponsesRequest(GenerationFields):
    """`POST /v1/responses`. Triserve's fields (ttft_ms, priority, admission, ignore_eos, ...)
    as in chat; `max_tokens` is read as max_output_tokens when that is unset."""

    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None  # a system message ahead of the conversation
    tools: list[RequestTool] | None = None  # None: the previous response's, if continued
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_UINT32)
    previous_response_id: str | None = Field(default=None, min_length=1)
    store: bool = True  # keep the response, so that GET and previous_response_id find it
    metadata: dict[str, str] | None = None  # stored and returned, never shown to the model
    text: TextConfig | None = None
    background: bool = False
    # The agent controller's (requests with MCP tools): the standard cap on server-side calls,
    # and Triserve's extensions: the run's latency budget, its cost budget (engine-seconds),
    # the models it may route calls to, and its mechanisms.
    max_tool_calls: int | None = Field(default=None, ge=0, le=MAX_UINT32)
    latency_budget_ms: float | None = Field(default=None, gt=0)
    cost_budget_s: float | None = Field(default=None, gt=0)
    candidate_models: list[str] | None = None
    agent_options: AgentOptionsBody | None = None

    @model_validator(mode="after")
    def _supported_response(self) -> ResponsesRequest:
        if self.background:
            raise ValueError("background responses are not supported; stream instead")
        if self.request_id:
            raise ValueError("request_id: a response's id is its request id, set by the server")
        return self

    @property
    def function_tools(self) -> list[FunctionTool]:
        return [tool for tool in self.tools or () if isinstance(tool, FunctionTool)]

    @property
    def mcp_tools(self) -> list[McpTool]:
        return [tool for tool in self.tools or () if isinstance(tool, McpTool)]

    @property
    def input_items(self) -> list:
        """`input` as items: a string is one user message."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)

    @property
    def output_limit(self) -> int | None:
        return self.max_output_tokens or self.max_tokens
