"""The ingress: one Ray Serve deployment answering both APIs. Over gRPC (Serve's gRPC proxy):
`triserve.v1.Triserve` and the standard `grpc.health.v1.Health` service. Over HTTP (Serve's
HTTP proxy): the OpenAI-compatible API, a FastAPI app this class builds in each replica
(`__serve_build_asgi_app__`; cluster/openai/routes.py). One deployment, so one Serve
application: gRPC clients need not name one, and both APIs share the Frontend (frontend.py:
limits, the admission door, the build lanes and their tokenizers) and the scheduler.

gRPC calls are authenticated and parsed here (the proxy forwards request bytes; see
serve_grpc.py); the Frontend checks the limits, builds the request and submits it to the
scheduler actor; the scheduler's outputs stream back, one message per step."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time

import ray
from fastapi import FastAPI
from grpc_health.v1 import health_pb2
from ray import serve

from agent.config import AgentConfig
from agent.controller import AgentController
from cluster.errors import (
    TraceNotFoundError,
    UnauthenticatedError,
    log_failure,
    retry_after_ms,
    status_for,
)
from cluster.frontend import Frontend
from cluster.limits import LimitsConfig
from cluster.openai.response_store import ResponsesConfig, ResponseStore
from cluster.openai.routes import OpenAIRoutes
from cluster.request_builder import parse_message
from cluster.serve_grpc import install_client_error_filter, received_at
from cluster.state_messages import cluster_state_message, pool_state_message, trace_message
from proto.triserve.v1 import triserve_pb2 as pb
from workers.contract.errors import InvalidRequestError

logger = logging.getLogger("triserve.ingress")
FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
}
SCHEDULER_CALL_TIMEOUT_S = 30.0
SCALE_TIMEOUT_S = 900.0  # starting workers loads their models
MAX_WORKERS_PER_POOL = 1024


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
@serve.ingress()  # the HTTP app comes from __serve_build_asgi_app__, once the replica is built
class Ingress:
    def __init__(
        self,
        scheduler_name: str,
        namespace: str,
        model_dirs: dict[str, str],
        api_token: str | None = None,
        admin_token: str | None = None,
        limits: LimitsConfig | None = None,
        serve_http: bool = True,
        responses: ResponsesConfig | None = None,
        agent: AgentConfig | None = None,
    ) -> None:
        self.scheduler = ray.get_actor(scheduler_name, namespace=namespace)
        self.api_token, self.admin_token = api_token, admin_token
        self.limits = limits or LimitsConfig()
        self.frontend = Frontend(self.scheduler, model_dirs, self.limits)
        self.serve_http = serve_http  # False: HTTP answers 404 (Serve's proxy runs for gRPC)
        self.responses_config = responses or ResponsesConfig()  # where /v1/responses stores
        self.agent = AgentController(agent or AgentConfig())  # runs calls with MCP tools
        install_client_error_filter(drop=True)  # _fail logs each failure, once

    def __serve_build_asgi_app__(self) -> FastAPI:  # noqa: N807
        if not self.serve_http:
            return FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        store = ResponseStore.open(self.responses_config)
        routes = OpenAIRoutes(
            self.frontend, self.scheduler, self.api_token, self.limits, store, self.agent
        )
        return routes.app()

    # ----------------------------------------------------------------- triserve.v1.Triserve
    async def Generate(self, request: bytes | pb.GenerateRequest, grpc_context):  # noqa: N802
        arrival_time = time.time()
        request_id = ""
        try:
            self._authenticate(grpc_context, self.api_token)
            request = parse_message(pb.GenerateRequest, request, self.limits.max_request_bytes)
            arrival_time = received_at(request, arrival_time)  # the SLO clock starts at the proxy
            request_id = request.request_id
            generation = await self.frontend.start(request, arrival_time)
        except Exception as e:
            self._fail(grpc_context, e, request_id)
        try:
            async for step in generation:
                response = pb.GenerateResponse(
                    request_id=generation.request_id, token_ids=step.token_ids, text=step.text
                )
                if step.finish_reason is not None:
                    response.finish_reason = FINISH_REASONS[step.finish_reason]
                    response.usage.CopyFrom(pb.Usage(**dataclasses.asdict(step.usage)))
                    for call in step.parsed.tool_calls if step.parsed else ():
                        response.tool_calls.add(
                            id=call.id, name=call.name, arguments_json=call.arguments
                        )
                yield response
        except Exception as e:
            self._fail(grpc_context, e, request_id)
        finally:  # also when the client went away: a closed stream cancels the request
            generation.close()

    async def GetClusterState(self, request, grpc_context):  # noqa: N802
        try:
            self._authenticate(grpc_context, self.api_token)
            parse_message(pb.GetClusterStateRequest, request, self.limits.max_request_bytes)
            snapshot = await self._call(self.scheduler.cluster_state.remote())
        except Exception as e:
            self._fail(grpc_context, e)
        return cluster_state_message(snapshot)

    async def ScalePool(self, request: bytes | pb.ScalePoolRequest, grpc_context):  # noqa: N802
        try:
            self._authenticate(grpc_context, self.admin_token or self.api_token)
            request = parse_message(pb.ScalePoolRequest, request, self.limits.max_request_bytes)
            if request.workers > MAX_WORKERS_PER_POOL:
                raise InvalidRequestError(
                    f"a pool has at most {MAX_WORKERS_PER_POOL} workers, asked {request.workers}"
                )
            scale = self.scheduler.scale.remote(request.pool, request.workers)
            pool = await self._call(scale, timeout_s=SCALE_TIMEOUT_S)
        except Exception as e:
            self._fail(grpc_context, e)
        return pb.ScalePoolResponse(pool=pool_state_message(pool))

    async def GetTrace(self, request: bytes | pb.GetTraceRequest, grpc_context):  # noqa: N802
        try:
            self._authenticate(grpc_context, self.api_token)
            request = parse_message(pb.GetTraceRequest, request, self.limits.max_request_bytes)
            trace = await self._call(self.scheduler.trace.remote(request.request_id))
            if trace is None:
                raise TraceNotFoundError(f"no trace for request {request.request_id!r}")
        except Exception as e:
            self._fail(grpc_context, e)
        return trace_message(trace)

    # ----------------------------------------------------------------- grpc.health.v1.Health
    async def Check(self, request, grpc_context):  # noqa: N802
        try:
            await self._call(self.scheduler.ping.remote(), timeout_s=5.0)
            status = health_pb2.HealthCheckResponse.SERVING
        except Exception:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    # ----------------------------------------------------------------- helpers
    @staticmethod
    async def _call(ref, timeout_s: float = SCHEDULER_CALL_TIMEOUT_S):
        return await asyncio.wait_for(ref, timeout=timeout_s)

    @staticmethod
    def _authenticate(grpc_context, token: str | None) -> None:
        if not token:
            return
        metadata = dict(grpc_context.invocation_metadata())
        sent = metadata.get("authorization", "").encode()
        if not hmac.compare_digest(sent, f"Bearer {token}".encode()):
            raise UnauthenticatedError("missing or wrong bearer token")

    @staticmethod
    def _fail(grpc_context, error: BaseException, request_id: str = ""):
        """End the call with the error's status: one log line, a traceback only if INTERNAL."""
        code, message = status_for(error)
        log_failure(logger, error, code, message, request_id)
        retry_after = retry_after_ms(error)
        if retry_after is not None:
            grpc_context.set_trailing_metadata([("retry-after-ms", str(round(retry_after)))])
        grpc_context.set_code(code)
        grpc_context.set_details(message)
        raise RuntimeError(message) from None
