"""The OpenAI-compatible HTTP API's routes, as a FastAPI app that the ingress deployment serves
next to its gRPC methods (cluster/ingress.py, `__serve_build_asgi_app__`): the same replica,
Frontend, build lanes and scheduler as gRPC.

    POST /v1/chat/completions   chat (text, images, tools, JSON answers), streamed or whole
    POST /v1/completions        raw text
    POST /v1/responses          the Responses API (responses_api.py), streamed or whole
    GET  /v1/responses/{id}     a stored response; DELETE forgets it, POST .../cancel stops it
    GET  /v1/responses/{id}/trace   an agent run's trace (Triserve's; agent/run_trace.py)
    GET  /v1/models             the served models
    GET  /health                200 when the scheduler answers a ping, else 503 (no token)

A generation request goes: bearer token -> body (at most limits.max_request_bytes, read before
parsing) -> pydantic (protocol.py) -> one GenerateRequest (request_conversion.py) ->
`Frontend.start`, exactly as a gRPC call -> the answer (chat_completions.py, completions.py).
Any refusal on the way is OpenAI's error object with its HTTP status (errors.py).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agent.controller import AgentController
from cluster.errors import RequestTooLargeError, UnauthenticatedError
from cluster.frontend import Frontend, Generation
from cluster.limits import LimitsConfig
from cluster.openai.chat_completions import chat_answer
from cluster.openai.completions import completion_answer
from cluster.openai.errors import error_response
from cluster.openai.protocol import (
    Body,
    ChatCompletionRequest,
    CompletionRequest,
    GenerationFields,
    parse_body,
)
from cluster.openai.request_conversion import chat_request, completion_request
from cluster.openai.response_store import ResponseStore
from cluster.openai.responses_api import ResponsesAPI
from cluster.openai.responses_protocol import ResponsesRequest
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.request import UnknownModelError

HEALTH_TIMEOUT_S = 5.0
Convert = Callable[[GenerationFields, int | None], pb.GenerateRequest]
Answer = Callable[[GenerationFields, Generation], Awaitable[Response]]


class OpenAIRoutes:
    def __init__(
        self,
        frontend: Frontend,
        scheduler,  # the control plane's actor handle
        api_token: str | None,
        limits: LimitsConfig,
        store: ResponseStore,  # the Responses API's stored responses
        controller: AgentController,  # runs Responses calls with MCP tools
    ) -> None:
        self.frontend = frontend
        self.scheduler = scheduler
        self.api_token = api_token
        self.limits = limits
        self.created = int(time.time())  # the models' `created`: when this replica started
        self.responses = ResponsesAPI(frontend, store, controller)

    def app(self) -> FastAPI:
        app = FastAPI(title="Triserve", docs_url=None, redoc_url=None, openapi_url=None)
        app.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        app.add_api_route("/v1/completions", self.completions, methods=["POST"])
        app.add_api_route("/v1/responses", self.create_response, methods=["POST"])
        by_id = "/v1/responses/{response_id}"
        app.add_api_route(by_id, self.get_response, methods=["GET"])
        app.add_api_route(by_id, self.delete_response, methods=["DELETE"])
        app.add_api_route(by_id + "/cancel", self.cancel_response, methods=["POST"])
        app.add_api_route(by_id + "/trace", self.response_trace, methods=["GET"])
        app.add_api_route("/v1/models", self.models, methods=["GET"])
        app.add_api_route("/health", self.health, methods=["GET"])
        return app

    async def chat_completions(self, request: Request) -> Response:
        session_header = request.headers.get("x-session-id") or None

        def convert(body: ChatCompletionRequest, max_tokens: int | None) -> pb.GenerateRequest:
            return chat_request(body, max_tokens, session_header)

        return await self._generate(request, ChatCompletionRequest, convert, chat_answer)

    async def completions(self, request: Request) -> Response:
        return await self._generate(
            request, CompletionRequest, completion_request, completion_answer
        )

    async def create_response(self, request: Request) -> Response:
        arrival_time = time.time()
        try:
            self._authenticate(request)
            body = parse_body(ResponsesRequest, await self._read_body(request))
        except Exception as e:
            return error_response(e)
        max_tokens = self._default_max_tokens(body.model)
        return await self.responses.create(body, arrival_time, max_tokens)

    async def get_response(self, request: Request, response_id: str) -> Response:
        return await self._by_id(request, self.responses.get, response_id)

    async def delete_response(self, request: Request, response_id: str) -> Response:
        return await self._by_id(request, self.responses.delete, response_id)

    async def cancel_response(self, request: Request, response_id: str) -> Response:
        return await self._by_id(request, self.responses.cancel, response_id)

    async def response_trace(self, request: Request, response_id: str) -> Response:
        return await self._by_id(request, self.responses.trace, response_id)

    async def models(self, request: Request) -> Response:
        try:
            self._authenticate(request)
        except UnauthenticatedError as e:
            return error_response(e)
        data = [
            {
                "id": model.name,
                "object": "model",
                "created": self.created,
                "owned_by": "triserve",
                "max_model_len": model.max_model_len,
            }
            for model in self.frontend.models.values()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self) -> Response:
        try:
            await asyncio.wait_for(self.scheduler.ping.remote(), timeout=HEALTH_TIMEOUT_S)
        except Exception:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def _generate(
        self, request: Request, body_type: type[Body], convert: Convert, answer: Answer
    ) -> Response:
        arrival_time = time.time()  # the SLO clock starts here
        request_id = ""
        try:
            self._authenticate(request)
            body = parse_body(body_type, await self._read_body(request))
            request_id = body.request_id
            message = convert(body, self._default_max_tokens(body.model))
            generation = await self.frontend.start(message, arrival_time)
            try:
                return await answer(body, generation)
            except BaseException:
                generation.close()
                raise
        except Exception as e:
            return error_response(e, request_id)

    async def _by_id(
        self, request: Request, handle: Callable[[str], Awaitable[Response]], response_id: str
    ) -> Response:
        try:
            self._authenticate(request)
        except UnauthenticatedError as e:
            return error_response(e)
        return await handle(response_id)

    def _authenticate(self, request: Request) -> None:
        if not self.api_token:
            return
        sent = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(sent, f"Bearer {self.api_token}".encode()):
            raise UnauthenticatedError("missing or wrong bearer token (Authorization: Bearer ...)")

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused as soon as it is known to pass limits.max_request_bytes."""
        limit = self.limits.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestTooLargeError(
                f"request body has {int(declared):,} bytes; "
                f"the limit is limits.max_request_bytes = {limit:,}"
            )
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise RequestTooLargeError(
                    f"request body has more than {limit:,} bytes; "
                    f"the limit is limits.max_request_bytes = {limit:,}"
                )
        return bytes(body)

    def _default_max_tokens(self, name: str) -> int | None:
        """The largest max_tokens the model allows (see request_conversion.py); None for a
        model this cluster does not serve (the Frontend refuses it)."""
        try:
            model = self.frontend.model_for(name)
        except UnknownModelError:
            return None
        return self.limits.max_tokens_limit(model.max_model_len)[0]
