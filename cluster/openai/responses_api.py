"""The Responses API's handlers, behind routes.py's bearer token and body limit:

    POST   /v1/responses               a response, whole or streamed; stored unless store: false
    GET    /v1/responses/{id}          the stored response
    DELETE /v1/responses/{id}          forget it (and the KV the cluster may keep paused for it)
    POST   /v1/responses/{id}/cancel   stop one in progress; a finished one is returned as is

A call is one GenerateRequest (responses_conversion.py) whose request id is the response's id,
submitted with `Frontend.start` like any chat. Its session ties it to the conversation: the
session id is the conversation's first response id; `pause` (keep its KV for the next call) is
`store` (only a stored response can be continued); `resume_of` is previous_response_id.

A stored response is written when its first token is there (status in_progress, so that GET
and cancel find it), and again when it ends, with the conversation that continues it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.responses import JSONResponse, Response, StreamingResponse

from agent.controller import AgentController
from cluster.frontend import Frontend, Generation
from cluster.openai.agent_responses import AgentResponses
from cluster.openai.delivery import HEADERS, whole_answer
from cluster.openai.errors import (
    ResponseNotFoundError,
    error_body,
    error_response,
    logged_error_body,
)
from cluster.openai.response_object import (
    ResponseFields,
    error_of,
    new_id,
    output_items,
    status_of,
)
from cluster.openai.response_store import ResponseStore, StoredResponse
from cluster.openai.responses_conversion import Conversation, conversation_for, generate_request
from cluster.openai.responses_events import ResponseEvents
from cluster.openai.responses_protocol import ResponsesRequest
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.errors import RequestFailedError
from workers.contract.errors import InvalidRequestError

logger = logging.getLogger("triserve.openai")
SCHEDULER_CALL_TIMEOUT_S = 10.0


class ResponseInProgressError(InvalidRequestError):
    """previous_response_id names a response that has not finished (or failed)."""


@dataclass(frozen=True)
class ResponseCall:
    """One admitted call: what its stored rows hold besides the response object."""

    fields: ResponseFields
    session_id: str
    conversation: Conversation
    is_stored: bool
    generation: Generation

    def token_ids(self) -> list[int]:
        """Its prompt and its answer so far, as token ids (what the next call starts with)."""
        return [*self.generation.spec.prompt_token_ids, *self.generation.output_token_ids]


class ResponsesAPI:
    def __init__(
        self, frontend: Frontend, store: ResponseStore, controller: AgentController
    ) -> None:
        self.frontend = frontend
        self.store = store
        self.agent = AgentResponses(frontend, controller, store, self._keep_run)

    async def create(
        self, body: ResponsesRequest, arrival_time: float, default_max_tokens: int | None
    ) -> Response:
        response_id = new_id("resp")
        try:
            previous = await self._previous(body.previous_response_id)
            # Off the event loop: a long conversation's items are parsed, its images decoded.
            conversation = await asyncio.to_thread(_conversation, body, previous)
            session_id = previous.session_id if previous else response_id
            if conversation.mcp_tools:  # the agent controller runs it
                return await self.agent.create(
                    body, conversation, response_id, session_id, arrival_time
                )
            message = await asyncio.to_thread(
                _call_request, body, conversation, response_id, session_id, default_max_tokens
            )
            generation = await self.frontend.start(message, arrival_time)
            try:
                return await self._answer(body, conversation, session_id, generation)
            except BaseException:
                generation.close()
                raise
        except Exception as e:
            return error_response(e, response_id)

    async def get(self, response_id: str) -> Response:
        try:
            return JSONResponse((await self._stored(response_id)).response)
        except Exception as e:
            return error_response(e, response_id)

    async def delete(self, response_id: str) -> Response:
        try:
            if not await self._in_thread(self.store.delete, response_id):
                raise _not_found(response_id)
        except Exception as e:
            return error_response(e, response_id)
        try:  # the scheduler's side may not exist yet, or be restarting: the KV then expires
            forget = self.frontend.scheduler.forget_paused.remote(response_id)
            await asyncio.wait_for(forget, timeout=SCHEDULER_CALL_TIMEOUT_S)
        except Exception:
            pass
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    async def trace(self, response_id: str) -> Response:
        """An agent run's trace (agent/run_trace.py): 404 for a response that had none."""
        try:
            trace = await self.agent.trace(response_id)
            if trace is None:
                raise ResponseNotFoundError(
                    f"no trace for response {response_id!r} (not an agent run, not stored, "
                    "deleted, or still finishing)"
                )
            return JSONResponse(trace)
        except Exception as e:
            return error_response(e, response_id)

    async def cancel(self, response_id: str) -> Response:
        """The stream serving the response ends it, as cancelled, and stores it; this returns
        it as cancelled at once. An agent run is cancelled on the replica running it."""
        try:
            stored = await self._stored(response_id)
            if stored.response["status"] != "in_progress":
                return JSONResponse(stored.response)
            if not await self.agent.cancel(response_id):
                cancel = self.frontend.scheduler.cancel.remote(response_id)
                await asyncio.wait_for(cancel, timeout=SCHEDULER_CALL_TIMEOUT_S)
            return JSONResponse({**stored.response, "status": "cancelled"})
        except Exception as e:
            return error_response(e, response_id)

    # ------------------------------------------------------------------ answers
    async def _answer(
        self,
        body: ResponsesRequest,
        conversation: Conversation,
        session_id: str,
        generation: Generation,
    ) -> Response:
        instructions, tools = conversation.instructions, conversation.tools
        fields = ResponseFields.for_request(
            generation.request_id, generation.model.name, body, instructions, tools
        )
        call = ResponseCall(fields, session_id, conversation, body.store, generation)
        await self._keep(call, fields.body("in_progress", []), output=None)
        if body.stream:
            events = self._events(call, generation)
            return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)
        return JSONResponse(await self._whole(call, generation))

    async def _whole(self, call: ResponseCall, generation: Generation) -> dict:
        try:
            text, last = await whole_answer(generation)
        except BaseException as e:  # failed, or the client went away (a cancellation)
            error = error_of(error_body(e)[1]) if isinstance(e, Exception) else None
            status = "failed" if error else "cancelled"
            self._keep_later(call, call.fields.body(status, [], error=error), output=None)
            raise
        content, calls = text, []
        if last.parsed is not None:
            content, calls = last.parsed.content, last.parsed.tool_calls
        output = output_items(content, calls, last.finish_reason)
        response = call.fields.body(status_of(last.finish_reason), output, last.usage)
        await self._keep(call, response, output)
        return response

    async def _events(self, call: ResponseCall, generation: Generation) -> AsyncIterator[str]:
        tool_format, tools = generation.model.tool_format, generation.tools
        parser = tool_format.stream_parser(tools) if tools and tool_format else None
        events = ResponseEvents(call.fields, parser)
        is_done = False
        try:
            async for step in generation:
                for event in events.events(step):
                    yield event
            if events.usage is None:
                raise RequestFailedError("the request ended without finishing its answer; retry")
            await self._keep(call, events.response(), events.output)
            is_done = True
            yield events.closing()
        except Exception as e:  # not a cancellation: that ends the stream at once
            is_done = True
            failure = events.failure(logged_error_body(e, call.fields.id))
            self._keep_later(call, events.response(), output=None)
            for event in failure:
                yield event
        finally:
            generation.close()
            if not is_done:  # the client went away: the answer so far, cancelled
                events.abandon()
                self._keep_later(call, events.response(), events.output)

    # ------------------------------------------------------------------ the store
    def _keep_run(self, serving, response: dict, conversation, is_stored: bool) -> None:
        """Store an agent run's response (in progress, or ended with its conversation)."""
        if not is_stored:
            return
        stored = StoredResponse(
            id=serving.response_id,
            created_at=response["created_at"],
            model=response["model"],
            session_id=serving.session_id,
            response=response,
            conversation=None if conversation is None else conversation.to_json(),
        )
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self._put_stored_quietly, stored)

    def _put_stored_quietly(self, stored: StoredResponse) -> None:
        try:
            self.store.put(stored)
        except sqlite3.Error as e:
            logger.warning("response %s: not stored (%s)", stored.id, e)

    async def _keep(self, call: ResponseCall, response: dict, output: list[dict] | None) -> None:
        """Store the response (`output`: its items, which the conversation gains; None: it
        cannot be continued, being in progress or failed)."""
        if call.is_stored:
            await self._in_thread(self._put, call, response, output)

    def _keep_later(self, call: ResponseCall, response: dict, output: list[dict] | None) -> None:
        """Store a response that failed or was cut short, without waiting: nothing the client
        is told depends on it, and in a cancelled task an await would be cancelled too."""
        if call.is_stored:
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, self._put_quietly, call, response, output)

    def _put(self, call: ResponseCall, response: dict, output: list[dict] | None) -> None:
        conversation = None
        if output is not None:
            conversation = call.conversation.followed_by(output, call.token_ids())
        stored = StoredResponse(
            id=call.fields.id,
            created_at=call.fields.created_at,
            model=call.fields.model,
            session_id=call.session_id,
            response=response,
            conversation=None if conversation is None else conversation.to_json(),
        )
        self.store.put(stored)

    def _put_quietly(self, call: ResponseCall, response: dict, output: list[dict] | None) -> None:
        try:
            self._put(call, response, output)
        except sqlite3.Error as e:
            logger.warning("response %s: not stored (%s)", call.fields.id, e)

    async def _previous(self, response_id: str | None) -> StoredResponse | None:
        if response_id is None:
            return None
        previous = await self._stored(response_id)
        if previous.conversation is None:
            raise ResponseInProgressError(
                f"previous_response_id: response {response_id!r} is "
                f"{previous.response['status']}; only a finished response can be continued"
            )
        return previous

    async def _stored(self, response_id: str) -> StoredResponse:
        stored = await self._in_thread(self.store.get, response_id)
        if stored is None:
            raise _not_found(response_id)
        return stored

    @staticmethod
    async def _in_thread(operation, *args):
        try:
            return await asyncio.to_thread(operation, *args)
        except sqlite3.Error as e:  # a file locked past the busy timeout, a full disk
            raise RequestFailedError(f"the response store failed ({e}); retry") from None


def _conversation(body: ResponsesRequest, previous: StoredResponse | None) -> Conversation:
    earlier = None if previous is None else Conversation.from_json(previous.conversation)
    return conversation_for(body, earlier)


def _call_request(
    body: ResponsesRequest,
    conversation: Conversation,
    response_id: str,
    session_id: str,
    default_max_tokens: int | None,
) -> pb.GenerateRequest:
    """The request that generates the call's answer in its session."""
    session = pb.Session(
        session_id=session_id,
        pause=body.store,
        resume_of=conversation.resume_from or body.previous_response_id or "",
    )
    return generate_request(body, conversation, response_id, session, default_max_tokens)


def _not_found(response_id: str) -> ResponseNotFoundError:
    return ResponseNotFoundError(
        f"no stored response {response_id!r} (never stored, deleted, or expired)"
    )
