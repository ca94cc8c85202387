"""The gRPC ingress: a Ray Serve deployment answering `triserve.v1.Triserve` and the standard
`grpc.health.v1.Health` service. It authenticates, parses (the proxy forwards request bytes; see
serve_grpc.py), checks the limits, builds each request, then hands it to the scheduler actor and
streams the scheduler's outputs back, one message per step."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from grpc_health.v1 import health_pb2
from ray import serve

from cluster.detokenizer import IncrementalDetokenizer
from cluster.door import Door
from cluster.errors import (
    TraceNotFoundError,
    UnauthenticatedError,
    log_failure,
    retry_after_ms,
    status_for,
)
from cluster.limits import LimitsConfig
from cluster.request_builder import ModelFrontend, RequestBuilder, parse_message
from cluster.request_fields import has_images
from cluster.serve_grpc import install_client_error_filter, received_at
from cluster.state_messages import cluster_state_message, pool_state_message, trace_message
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.errors import DuplicateRequestError
from scheduler.request import Refusal
from workers.contract.errors import InvalidRequestError

logger = logging.getLogger("triserve.ingress")
FINISH_REASONS = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}
SCHEDULER_CALL_TIMEOUT_S = 30.0
SCALE_TIMEOUT_S = 900.0  # starting workers loads their models
MAX_WORKERS_PER_POOL = 1024


@dataclasses.dataclass(frozen=True)
class BuildLane:
    builder: RequestBuilder
    thread: ThreadPoolExecutor


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
class Ingress:
    def __init__(
        self,
        scheduler_name: str,
        namespace: str,
        model_dirs: dict[str, str],
        api_token: str | None = None,
        admin_token: str | None = None,
        limits: LimitsConfig | None = None,
    ) -> None:
        self.scheduler = ray.get_actor(scheduler_name, namespace=namespace)
        self.api_token, self.admin_token = api_token, admin_token
        self.limits = limits or LimitsConfig()
        self._door = Door(self.scheduler)
        install_client_error_filter(drop=True)  # _fail logs each failure, once
        # Two build lanes, so that a text request never waits behind the image decoding of a
        # rock. One thread each, with its own tokenizers: a Rust tokenizer must not be used
        # from two threads at once.
        self._lanes = {
            has_images: BuildLane(
                RequestBuilder(
                    {name: ModelFrontend.load(name, path) for name, path in model_dirs.items()},
                    self.limits,
                ),
                ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"build-{lane}"),
            )
            for has_images, lane in ((False, "text"), (True, "images"))
        }

    # ----------------------------------------------------------------- triserve.v1.Triserve
    async def Generate(self, request: bytes | pb.GenerateRequest, grpc_context):  # noqa: N802
        arrival_time = time.time()
        request_id = ""
        try:
            self._authenticate(grpc_context, self.api_token)
            request = parse_message(pb.GenerateRequest, request, self.limits.max_request_bytes)
            arrival_time = received_at(request, arrival_time)  # the SLO clock starts at the proxy
            request_id = request.request_id
            lane = self._lanes[has_images(request)]
            model = lane.builder.check(request)  # an oversized request never waits for a lane
            self._door.open_if_needed()
            waited_ms = (time.time() - arrival_time) * 1000.0
            self._door.check(request, model.name, waited_ms)  # nor one admission would refuse
            # Decoding images and tokenising are CPU work: keep them off the event loop that
            # streams every other request's tokens.
            loop = asyncio.get_running_loop()
            spec, model = await loop.run_in_executor(
                lane.thread, lane.builder.build, request, arrival_time
            )
        except Exception as e:
            self._fail(grpc_context, e, request_id)
        detokenizer = IncrementalDetokenizer(model.detokenizer, spec.sampling_params.stop)
        stream = self.scheduler.generate.options(num_returns="streaming").remote(spec)
        owns_request = True  # False when the scheduler refused it (e.g. a duplicate id)
        finished = False
        try:
            async for ref in stream:
                output = await ref
                if isinstance(output, Refusal):
                    owns_request = False
                    raise output.error
                is_last = output.finish_reason is not None
                response = pb.GenerateResponse(
                    request_id=spec.request_id,
                    token_ids=output.token_ids,
                    text=detokenizer.add(output.token_ids, is_last),
                )
                if is_last:
                    finished = True
                    response.finish_reason = FINISH_REASONS.get(
                        output.finish_reason, pb.FINISH_REASON_CANCELLED
                    )
                    response.usage.CopyFrom(pb.Usage(**dataclasses.asdict(output.usage)))
                yield response
        except Exception as e:
            owns_request = not isinstance(getattr(e, "cause", e), DuplicateRequestError)
            self._fail(grpc_context, e)
        finally:
            if not finished and owns_request:  # the client went away or the stream broke
                self.scheduler.cancel.remote(spec.request_id)

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
