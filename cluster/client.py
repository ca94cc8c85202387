"""Python client SDK for a Triserve server (sync and async, streaming).

    from cluster.client import TriserveClient
    with TriserveClient("localhost:50051") as client:
        for chunk in client.generate(prompt="Describe <image>", images=[png_bytes]):
            print(chunk.text, end="", flush=True)

The CLI, the tests and the benchmarks all talk to the server through this module.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto.triserve.v1 import triserve_pb2 as pb
from proto.triserve.v1 import triserve_pb2_grpc as pb_grpc

APPLICATION = "triserve"  # the Ray Serve application name, sent as gRPC metadata
FINISH_REASONS = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_CANCELLED: "cancelled",
}
# A rejection's details end with "retry after <N> ms". Ray Serve's gRPC proxy drops trailing
# metadata when a call fails, so the "retry-after-ms" trailer reaches only clients of a server
# that keeps it; the details always arrive.
RETRY_AFTER_IN_DETAILS = re.compile(r"retry after (\d+(?:\.\d+)?) ms")


class TriserveError(Exception):
    """A call failed; `code` is the gRPC status (e.g. grpc.StatusCode.INVALID_ARGUMENT)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, retry_after_ms: float | None = None
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.retry_after_ms = retry_after_ms  # RESOURCE_EXHAUSTED: when to try again

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> TriserveError:
        trailing = (
            dict(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else {}
        )
        details = error.details() or ""
        hint = trailing.get("retry-after-ms")
        if hint is None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            match = RETRY_AFTER_IN_DETAILS.search(details)
            hint = match.group(1) if match else None
        return cls(error.code(), details, float(hint) if hint else None)


@dataclass
class Chunk:
    """One streamed response: the tokens of one engine step for this request."""

    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: str | None = None
    usage: pb.Usage | None = None


@dataclass
class Completion:
    request_id: str = ""
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    usage: pb.Usage | None = None

    def add(self, chunk: Chunk) -> None:
        self.request_id = chunk.request_id
        self.token_ids += chunk.token_ids
        self.text += chunk.text
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.usage = chunk.usage or self.usage


def build_request(
    prompt: str | None = None,
    images: Sequence[bytes] = (),
    messages: Sequence[dict] | None = None,
    model: str = "",
    request_id: str = "",
    max_tokens: int | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    stop_token_ids: Sequence[int] = (),
    ignore_eos: bool = False,
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
    priority: str = "",
    admission: str = "",
) -> pb.GenerateRequest:
    """A GenerateRequest from either raw `prompt` text (each `<image>` takes the next of
    `images`) or chat `messages` ({"role", "content"}: a string or a list of
    {"type": "text", "text"} / {"type": "image", "image": bytes} parts)."""
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt and messages")
    request = pb.GenerateRequest(request_id=request_id, model=model)
    if prompt is not None:
        request.raw.text = prompt
        request.raw.images.extend(images)
    else:
        request.conversation.add_generation_prompt = True
        for message in messages:
            chat = request.conversation.messages.add(role=message["role"])
            content = message["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                if part["type"] == "image":
                    chat.content.add(image=part["image"])
                else:
                    chat.content.add(text=part["text"])
    sampling = request.sampling
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    if top_p is not None:
        sampling.top_p = top_p
    if seed is not None:
        sampling.seed = seed
    sampling.temperature, sampling.top_k, sampling.ignore_eos = temperature, top_k, ignore_eos
    sampling.stop.extend(stop)
    sampling.stop_token_ids.extend(stop_token_ids)
    if ttft_ms is not None:
        request.slo.ttft_ms = ttft_ms
    if tpot_ms is not None:
        request.slo.tpot_ms = tpot_ms
    if priority:
        request.priority = pb.Priority.Value(f"PRIORITY_{priority.upper()}")
    if admission:
        request.admission = pb.Admission.Value(f"ADMISSION_{admission.upper()}")
    return request


def _chunk(response: pb.GenerateResponse) -> Chunk:
    return Chunk(
        request_id=response.request_id,
        token_ids=list(response.token_ids),
        text=response.text,
        finish_reason=FINISH_REASONS.get(response.finish_reason),
        usage=response.usage if response.HasField("usage") else None,
    )


class _Auth:
    def __init__(self, api_token: str | None, admin_token: str | None) -> None:
        self.api_token, self.admin_token = api_token, admin_token

    def metadata(self, admin: bool = False) -> list[tuple[str, str]]:
        token = self.admin_token if admin else self.api_token
        pairs = [("application", APPLICATION)]
        if token:
            pairs.append(("authorization", f"Bearer {token}"))
        return pairs


class TriserveClient:
    """Blocking client. Every method raises TriserveError on a failed call."""

    def __init__(
        self,
        address: str,
        api_token: str | None = None,
        admin_token: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.TriserveStub(self.channel)
        self.auth = _Auth(api_token, admin_token)
        self.timeout_s = timeout_s

    def __enter__(self) -> TriserveClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def generate(self, **kwargs) -> Iterator[Chunk]:
        """Stream the answer; see `build_request` for the arguments. Closing the iterator early
        cancels the request on the server."""
        call = self.stub.Generate(
            build_request(**kwargs), metadata=self.auth.metadata(), timeout=self.timeout_s
        )
        try:
            for response in call:
                yield _chunk(response)
        except grpc.RpcError as e:
            raise TriserveError.from_rpc_error(e) from None
        finally:
            call.cancel()

    def complete(self, **kwargs) -> Completion:
        """Generate and collect the whole answer."""
        done = Completion()
        for chunk in self.generate(**kwargs):
            done.add(chunk)
        return done

    def cluster_state(self) -> pb.ClusterState:
        return self._unary(self.stub.GetClusterState, pb.GetClusterStateRequest())

    def scale(self, pool: str, workers: int) -> pb.PoolState:
        request = pb.ScalePoolRequest(pool=pool, workers=workers)
        return self._unary(self.stub.ScalePool, request, admin=True).pool

    def trace(self, request_id: str) -> pb.Trace:
        return self._unary(self.stub.GetTrace, pb.GetTraceRequest(request_id=request_id))

    def health(self) -> str:
        """ "SERVING" or "NOT_SERVING", from the standard grpc.health.v1 service."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        response = self._unary(stub.Check, health_pb2.HealthCheckRequest())
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def _unary(self, method, request, admin: bool = False):
        try:
            return method(request, metadata=self.auth.metadata(admin), timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise TriserveError.from_rpc_error(e) from None


class AsyncTriserveClient:
    """asyncio client with the same methods as TriserveClient."""

    def __init__(
        self,
        address: str,
        api_token: str | None = None,
        admin_token: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.TriserveStub(self.channel)
        self.auth = _Auth(api_token, admin_token)
        self.timeout_s = timeout_s

    async def __aenter__(self) -> AsyncTriserveClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def generate(self, **kwargs) -> AsyncIterator[Chunk]:
        call = self.stub.Generate(
            build_request(**kwargs), metadata=self.auth.metadata(), timeout=self.timeout_s
        )
        try:
            async for response in call:
                yield _chunk(response)
        except grpc.RpcError as e:
            raise TriserveError.from_rpc_error(e) from None
        finally:
            call.cancel()

    async def complete(self, **kwargs) -> Completion:
        done = Completion()
        async for chunk in self.generate(**kwargs):
            done.add(chunk)
        return done

    async def cluster_state(self) -> pb.ClusterState:
        return await self._unary(self.stub.GetClusterState, pb.GetClusterStateRequest())

    async def scale(self, pool: str, workers: int) -> pb.PoolState:
        request = pb.ScalePoolRequest(pool=pool, workers=workers)
        return (await self._unary(self.stub.ScalePool, request, admin=True)).pool

    async def trace(self, request_id: str) -> pb.Trace:
        return await self._unary(self.stub.GetTrace, pb.GetTraceRequest(request_id=request_id))

    async def _unary(self, method, request, admin: bool = False):
        try:
            return await method(request, metadata=self.auth.metadata(admin), timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise TriserveError.from_rpc_error(e) from None
