"""An agent run's conversation on the serving plane (agent/model_calls.py's RunConversation):
the Responses conversation, grown call by call, each model call one GenerateRequest through
the Frontend, as any Responses call is (responses_conversion.py renders it).

    call i      request id "<response id>-<i>", session = the response's, pause while tools
                run (expected pause: the tools' latency); resume_of the call before it
    its answer  appended as items (its text, its function calls), with its prompt and answer
                ids, so that call i + 1's prompt extends call i's tokens exactly
    results     appended as function_call_output items, in call order
    warm-up     a prefill-only call (one token, dropped): the conversation is unchanged, but
                the next call continues the warm-up's paused KV (the longest common prefix)

A call on another model than the last one starts its session's KV afresh (no token ids, no
resume): routing counts that as the whole prompt to prefill.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

from agent.model_calls import (
    CallDelta,
    CallForecast,
    ContextTooSmallError,
    FinishedCall,
    ModelCallEnd,
    ModelRequest,
    TextDelta,
    ToolOutput,
)
from cluster.frontend import Frontend, Generation
from cluster.openai.chat_stream import split_step
from cluster.openai.response_object import function_call_item, new_id, output_items
from cluster.openai.responses_conversion import Conversation, generate_request
from cluster.openai.responses_protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    InputImage,
    ResponsesRequest,
)
from cluster.tool_calls.base import ToolCall
from proto.triserve.v1 import triserve_pb2 as pb
from workers.contract.errors import PromptTooLongError

# To size appended text before it is tokenised: few enough that the room left in the context
# is never overstated (a small vocabulary's tokens are short).
CHARS_PER_TOKEN = 2


class ServingCall:
    """One model call: the Generation's steps as text and call fragments."""

    def __init__(self, owner: ServingConversation, request: ModelRequest, generation: Generation):
        self._owner = owner
        self._request = request
        self.generation = generation
        self.request_id = generation.request_id
        self.end: ModelCallEnd | None = None

    async def __aiter__(self) -> AsyncIterator[TextDelta | CallDelta]:
        generation = self.generation
        tool_format = generation.model.tool_format
        has_tools = generation.tools and tool_format is not None
        parser = tool_format.stream_parser(generation.tools) if has_tools else None
        last = None
        async for step in generation:
            content, calls = split_step(parser, step)
            if content:
                yield TextDelta(content)
            for call in calls:
                yield CallDelta(call.index, call.id, call.name, call.arguments)
            last = step
        if last is not None and last.usage is not None:
            self.end = self._owner.ended(self._request, self.generation, last)

    def close(self) -> None:
        self.generation.close()

    def stop(self, calls: tuple[FinishedCall, ...]) -> None:
        self.generation.close()
        self.end = self._owner.stopped(self._request, self.generation, calls)


class ServingConversation:
    def __init__(
        self,
        frontend: Frontend,
        body: ResponsesRequest,
        conversation: Conversation,
        response_id: str,
        session_id: str,
        agent_tools: tuple,
    ) -> None:
        self.frontend = frontend
        frontend.door.open_if_needed()  # its gate holds the forecasts that calls are priced by
        self.body = body  # sampling, SLO and admission fields of every call
        self.conversation = conversation  # with the client's functions and the MCP tools
        self.response_id = response_id
        self.session_id = session_id
        self._all_tools = agent_tools  # FunctionTool models the model is shown, sorted
        self.model = body.model or next(iter(frontend.models))
        self.last_request_id = conversation.resume_from or (body.previous_response_id or "")
        self._num_calls = 0
        self._num_call_tokens = len(conversation.token_ids)
        self._tools_tokens = sum(
            len(tool.model_dump_json()) // CHARS_PER_TOKEN for tool in agent_tools
        )
        self._set_pending(conversation)

    # ------------------------------------------------------------------ RunConversation
    @property
    def num_pending_tokens(self) -> int:
        return self._pending_text_tokens + self._pending_images * self._image_tokens()

    @property
    def num_tokens(self) -> int:
        return self._num_call_tokens + self.num_pending_tokens

    def num_tokens_left(self, model: str) -> int:
        return self.frontend.models[model].max_model_len - self.num_tokens

    def num_cached_tokens(self, model: str) -> int:
        return self._num_call_tokens if model == self.model and self.last_request_id else 0

    def forecast(self, model: str) -> CallForecast:
        gate = self.frontend.door.gate
        model_gate = None if gate is None else gate.models.get(model)
        if model_gate is None:
            return CallForecast(first_token_ms=0.0, per_output_token_ms=0.0)
        costs = model_gate.call_costs
        return CallForecast(
            first_token_ms=costs.first_token_ms,
            per_output_token_ms=costs.per_output_token_ms,
            per_prompt_token_ms=costs.per_prompt_token_ms,
        )

    async def call(self, request: ModelRequest) -> ServingCall:
        conversation = self.conversation
        is_same_model = request.model == self.model
        if not is_same_model:  # another model's tokens: render it all, resume nothing
            conversation = replace(conversation, token_ids=())
        self._num_calls += 1
        request_id = f"{self.response_id}-{self._num_calls}"
        session = pb.Session(
            session_id=self.session_id,
            pause=request.pause_s is not None or request.prefill_only,
            resume_of=self.last_request_id if is_same_model else "",
        )
        if request.pause_s is not None:
            session.expected_pause_s = request.pause_s
        seed = None if self.body.seed is None else self.body.seed + self._num_calls
        body = self.body.model_copy(
            update={
                "model": request.model,
                "tool_choice": _choice(request.tool_choice),
                "max_output_tokens": request.max_output_tokens,
                "max_tokens": None,
                "seed": seed,
                "text": None if request.tool_choice != "none" else self.body.text,
            }
        )
        conversation = replace(conversation, tools=self._all_tools)
        message = generate_request(body, conversation, request_id, session)
        try:
            generation = await self.frontend.start(message, time.time())
        except PromptTooLongError as e:
            raise ContextTooSmallError(str(e)) from e
        return ServingCall(self, request, generation)

    def add_tool_results(self, results: list[ToolOutput]) -> None:
        items = tuple(
            FunctionCallOutputItem(
                type="function_call_output", call_id=result.call.call_id, output=result.output
            )
            for result in results
        )
        self.conversation = replace(self.conversation, items=(*self.conversation.items, *items))
        self._pending_text_tokens += sum(len(r.output) for r in results) // CHARS_PER_TOKEN

    def _set_pending(self, conversation: Conversation) -> None:
        """What the next call adds to the prompt beyond the last call's tokens: text tokens
        (about) and images; all of it, tools included, when no call's tokens carry over."""
        pending = conversation.items[conversation.num_previous_items :]
        if not conversation.token_ids:
            pending = conversation.items
        self._pending_text_tokens, self._pending_images = _size(pending)
        if not conversation.token_ids:
            self._pending_text_tokens += self._tools_tokens

    def _image_tokens(self) -> int:
        """Prompt tokens one image takes (its embedding rows) on the session's model."""
        return self.frontend.models[self.model].prompt_builder.num_image_tokens

    # ------------------------------------------------------------------ bookkeeping
    def ended(self, request: ModelRequest, generation: Generation, last) -> ModelCallEnd:
        """A call's end: the conversation gains its answer (a warm-up's is dropped)."""
        parsed = last.parsed
        text = generation.text
        content, calls = (text, []) if parsed is None else (parsed.content, parsed.tool_calls)
        finish = last.finish_reason or "cancelled"
        usage = last.usage
        if finish != "cancelled":
            self.model = request.model
            self.last_request_id = generation.request_id
        if not request.prefill_only and finish != "cancelled":
            token_ids = [*generation.spec.prompt_token_ids, *generation.output_token_ids]
            items = output_items(content, calls, finish)
            self.conversation = self.conversation.followed_by(items, token_ids)
            self._num_call_tokens = len(token_ids)
            self._pending_text_tokens, self._pending_images = 0, 0
        return ModelCallEnd(
            request_id=generation.request_id,
            finish_reason=finish,
            content=content,
            calls=tuple(_finished(call) for call in calls),
            num_prompt_tokens=usage.prompt_tokens,
            num_cached_tokens=usage.cached_prompt_tokens,
            num_output_tokens=usage.completion_tokens,
        )

    def stopped(
        self, request: ModelRequest, generation: Generation, calls: tuple[FinishedCall, ...]
    ) -> ModelCallEnd:
        """A call ended early by the run after `calls`: the conversation gains them, rendered
        anew next time (the call was cancelled: it keeps no KV and no answer ids)."""
        items = [
            function_call_item(new_id("fc"), call.call_id, call.name, call.arguments, "completed")
            for call in calls
        ]
        self.model, self.last_request_id = request.model, ""
        self.conversation = self.conversation.followed_by(items, ())
        self._num_call_tokens = 0
        self._set_pending(self.conversation)
        num_prompt_tokens = len(generation.spec.prompt_token_ids)
        return ModelCallEnd(
            request_id=generation.request_id,
            finish_reason="stop",
            content=None,
            calls=calls,
            num_prompt_tokens=num_prompt_tokens,
            num_cached_tokens=0,  # unknown: a cancelled call reports no usage
            num_output_tokens=len(generation.output_token_ids),
        )

    def stored(self) -> Conversation:
        """What the response stores (its tools: the client's; the MCP ones are listed anew)."""
        conversation = self.conversation
        # Stored token ids must cover every stored item; results appended after the last
        # call (handed back with the client's calls) are rendered anew next time.
        is_covered = conversation.num_previous_items == len(conversation.items)
        return replace(
            conversation,
            token_ids=conversation.token_ids if is_covered else (),
            num_previous_items=len(conversation.items),
            resume_from=self.last_request_id,
        )


def _size(items) -> tuple[int, int]:
    """About how many text tokens `items` take, and their images (forecasts and context room
    only: an image's size is its embedding rows, which its data URL says nothing of)."""
    num_chars, num_images = 0, 0
    for item in items:
        parts = getattr(item, "content", None)
        if isinstance(parts, list):
            for part in parts:
                if isinstance(part, InputImage):
                    num_images += 1
                else:
                    num_chars += len(part.text)
        elif isinstance(item, FunctionCallOutputItem):
            num_chars += len(item.output_text)
        elif isinstance(item, FunctionCallItem):
            num_chars += len(item.name) + len(item.arguments)
        else:
            num_chars += len(parts or "")
    return num_chars // CHARS_PER_TOKEN, num_images


def _choice(tool_choice: str) -> str | FunctionChoice:
    """ "auto", "required", "none", or the name of the one function to call."""
    if tool_choice in ("auto", "required", "none"):
        return tool_choice
    return FunctionChoice(type="function", name=tool_choice)


def _finished(call: ToolCall) -> FinishedCall:
    return FinishedCall(call_id=call.id, name=call.name, arguments=call.arguments)
