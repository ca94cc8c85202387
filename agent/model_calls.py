"""How the controller talks to the serving plane: one model call at a time, over a run's
conversation that the layer above owns (cluster/openai/agent_conversation.py renders it into
requests; the controller never sees a prompt).

    conversation.add_tool_results([...])          append results, in call order
    call = await conversation.call(ModelRequest(...))   admitted; its first output is there
    async for event in call: TextDelta | CallDelta
    call.end -> ModelCallEnd                       how it ended, its usage and its calls

A call that ends with tool calls leaves its KV paused on its worker when `pause_s` is set (the
sessions issue): the next call of the run continues it and computes only the new tokens. A
`prefill_only` call warms the KV of the conversation so far (a result that has arrived while
others still run) and is not part of it: its one output token is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


class ContextTooSmallError(Exception):
    """The call's prompt does not fit its model's context (a call routed to a model with a
    smaller one, whose tokens the conversation's size did not foresee)."""


@dataclass(frozen=True)
class ModelRequest:
    model: str  # a served model's name (routing picks it)
    # "auto", "required", "none", or the name of the one function to call (the tools stay in
    # the prompt whatever the choice, so that it is prefix-stable)
    tool_choice: str
    max_output_tokens: int | None  # None: the request's own limit
    pause_s: float | None = None  # keep the KV this long for the next call (None: don't pause)
    prefill_only: bool = False
    allow_new_images: bool = True  # False: images not already in the KV are left out


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class CallDelta:
    """A fragment of tool call `index` (OpenAI's tool_calls delta shape)."""

    index: int
    call_id: str | None  # on the call's first fragment
    name: str | None  # on the call's first fragment
    arguments: str  # the next piece of the arguments' JSON text


@dataclass(frozen=True)
class FinishedCall:
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True)
class ModelCallEnd:
    request_id: str
    finish_reason: str  # "stop", "length" or "cancelled"
    content: str | None  # the answer's text outside tool calls
    calls: tuple[FinishedCall, ...]
    num_prompt_tokens: int
    num_cached_tokens: int  # prompt tokens whose KV was reused (paused KV or prefix cache)
    num_output_tokens: int


@dataclass(frozen=True)
class CallForecast:
    """The scheduler's forecast of one call on one model, queue included (ms)."""

    first_token_ms: float
    per_output_token_ms: float
    per_prompt_token_ms: float = 0.0

    def total_ms(self, num_new_prompt_tokens: int, max_output_tokens: int) -> float:
        return (
            self.first_token_ms
            + self.per_prompt_token_ms * num_new_prompt_tokens
            + self.per_output_token_ms * max(0, max_output_tokens - 1)
        )


class ModelCall(Protocol):
    request_id: str
    end: ModelCallEnd | None  # set once the events are exhausted

    def __aiter__(self) -> AsyncIterator[TextDelta | CallDelta]: ...

    def close(self) -> None:
        """Cancel it unless it ended (the run stops, or its deadline passed)."""

    def stop(self, calls: tuple[FinishedCall, ...]) -> None:
        """End it now, as if the model had stopped after `calls` (the tool calls it wrote so
        far): the rest of its decode is not wanted. The conversation gains those calls; `end`
        is set (its KV is not kept: the next call re-reads the prompt, cached where it can)."""


class RunConversation(Protocol):
    """A run's conversation on the serving side."""

    model: str  # the model of the last call (the session's KV lives with it)
    num_tokens: int  # the conversation's tokens so far, about (the prompt of the next call)
    num_pending_tokens: int  # tokens appended since the last call (what a call must prefill)
    last_request_id: str  # the call that the conversation's next call continues ("": none)

    async def call(self, request: ModelRequest) -> ModelCall:
        """Admitted, its first output there. ContextTooSmallError: the prompt does not fit."""

    def add_tool_results(self, results: list[ToolOutput]) -> None: ...

    def forecast(self, model: str) -> CallForecast: ...

    def num_tokens_left(self, model: str) -> int:
        """Room left in `model`'s context after the conversation so far."""

    def num_cached_tokens(self, model: str) -> int:
        """Prompt tokens of the next call that `model`'s workers already hold (the paused KV
        of the last call when it is the same model; 0 for another)."""


@dataclass(frozen=True)
class ToolOutput:
    """One tool call and its result, as the conversation gains them."""

    call: FinishedCall
    output: str
    extra: dict = field(default_factory=dict)
