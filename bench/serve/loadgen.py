"""Send one sweep point's requests to a running cluster at their arrival times, over one API
(gRPC through the public async client SDK, or HTTP through the `openai` SDK; api_streams.py), and
record what comes back: chunk times, usage, error statuses, then each request's trace.

Open loop: a request is sent at its arrival time whether or not earlier ones have finished. When
the last one has been sent, the point waits `drain_timeout_s` for the rest; those still open are
cancelled (the server aborts them) and recorded as `timeout`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from bench.serve.api_streams import StreamResult, stream_grpc, stream_http
from bench.serve.progress import Progress
from bench.serve.record import RequestRecord, trace_fields
from bench.serve.workload import BenchRequest
from cluster.client import AsyncTriserveClient, TriserveError
from cluster.state_messages import DONE_STATES, trace_events
from scheduler.trace_breakdown import trace_breakdown

TRACE_WAIT_S = 10.0  # the last chunk can reach the client just before the trace ends
TRACE_CONCURRENCY = 16


@dataclass(frozen=True)
class PointPlan:
    layout: str
    point: str  # "rate=2" or "overload=12"
    rate: float
    requests: list[BenchRequest]
    prompt_format: str = "raw"
    ttft_ms: float | None = None  # sent with every request when given
    tpot_ms: float | None = None
    request_timeout_s: float = 300.0
    drain_timeout_s: float = 60.0
    run_id: str = ""  # keeps request ids unique across runs against one server
    # Request i goes over apis[i % len(apis)]: with several, they share the point's load and
    # caches, side by side (api_streams.py).
    apis: tuple[str, ...] = ("grpc",)
    http_address: str | None = None  # host:port of the OpenAI-compatible API


async def _send(
    clients: dict,  # api -> an AsyncTriserveClient, or an openai.AsyncOpenAI for "http"
    plan: PointPlan,
    request: BenchRequest,
    start: float,
    progress: Progress,
) -> RequestRecord:
    await asyncio.sleep(max(0.0, start + request.arrival_s - time.perf_counter()))
    sent = time.perf_counter()
    progress.sent()
    api = plan.apis[request.index % len(plan.apis)]
    record = RequestRecord(
        request_id=f"{plan.layout}-{plan.point}-{request.index}-{plan.run_id}",
        layout=plan.layout,
        point=plan.point,
        rate=plan.rate,
        index=request.index,
        kind=request.kind,
        slo_class=request.slo_class,
        ttft_target_ms=request.targets.ttft_ms,
        tpot_target_ms=request.targets.tpot_ms,
        arrival_s=request.arrival_s,
        send_lag_ms=(sent - start - request.arrival_s) * 1e3,
        status="ok",
        num_images=len(request.images),
        max_image_pixels=request.max_image_pixels,
        max_tokens=request.max_tokens,
        reuse_of=request.reuse_of,
        extra=request.extra,
        api=api,
    )
    kwargs = request.generate_kwargs(plan.prompt_format, plan.ttft_ms, plan.tpot_ms)
    stream = stream_http if api == "http" else stream_grpc
    try:
        result = await stream(clients[api], record.request_id, kwargs, sent)
    except asyncio.CancelledError:
        result = StreamResult(error_details="cancelled at the drain deadline")
        record = replace(record, status="timeout")
    if result.error_code is not None:
        elapsed_ms = (time.perf_counter() - sent) * 1e3
        record = replace(
            record,
            status="rejected" if result.is_rejected else "failed",
            error_code=result.error_code,
            reject_ms=elapsed_ms if result.is_rejected else None,
            retry_after_ms=result.retry_after_ms if result.is_rejected else None,
        )
    if record.status == "ok" and result.finish_reason is None:
        result.error_details = "the stream ended unfinished"
        record = replace(record, status="failed")
    record = replace(
        record,
        error_details=result.error_details,
        chunk_ms=result.chunk_ms,
        chunk_tokens=result.chunk_tokens,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        cached_prompt_tokens=result.cached_prompt_tokens,
    )
    progress.done(record.status)
    return record


async def _with_trace(
    client: AsyncTriserveClient, record: RequestRecord, limit: asyncio.Semaphore
) -> RequestRecord:
    deadline = time.monotonic() + TRACE_WAIT_S
    async with limit:
        while True:
            try:
                trace = await client.trace(record.request_id)
            except TriserveError:  # NOT_FOUND: rejected before the scheduler kept a trace
                return record
            if trace.state in DONE_STATES or time.monotonic() > deadline:
                fields = trace_fields(trace.state, trace_breakdown(trace_events(trace)))
                return replace(record, trace=fields)
            await asyncio.sleep(0.02)


async def _as_is(record: RequestRecord) -> RequestRecord:
    return record


async def run_point(address: str, plan: PointPlan, progress: Progress) -> tuple[list, float]:
    """Every request of the point, sent on time and then traced; returns (records, wall_s),
    wall_s from the first send to the last response (or the drain deadline)."""
    async with AsyncTriserveClient(address, timeout_s=plan.request_timeout_s) as client:
        clients = {"grpc": client}
        if "http" in plan.apis:
            clients["http"] = _http_client(plan)
        start = time.perf_counter()
        tasks = [
            asyncio.create_task(_send(clients, plan, request, start, progress))
            for request in plan.requests
        ]
        last_arrival = max((r.arrival_s for r in plan.requests), default=0.0)
        deadline = start + last_arrival + plan.drain_timeout_s
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
        for task in pending:
            task.cancel()
        records = list(await asyncio.gather(*tasks))
        wall_s = time.perf_counter() - start
        if "http" in clients:
            await clients["http"].close()
        limit = asyncio.Semaphore(TRACE_CONCURRENCY)
        records = await asyncio.gather(
            *(_with_trace(client, r, limit) for r in records if r.status != "rejected"),
            *(_as_is(r) for r in records if r.status == "rejected"),  # no trace is kept
        )
    progress.close()
    return sorted(records, key=lambda r: r.index), wall_s


def _http_client(plan: PointPlan):
    import openai

    if plan.http_address is None:
        raise ValueError("the cluster serves no HTTP API (http_port is off)")
    return openai.AsyncOpenAI(
        base_url=f"http://{plan.http_address}/v1",
        api_key="none",  # the benchmark's clusters set no token
        timeout=plan.request_timeout_s,
        max_retries=0,  # a refusal is a result, not something to hide
    )


async def wait_until_idle(address: str, timeout_s: float = 30.0) -> bool:
    """Until the cluster reports no request in flight (cancelled ones take a moment)."""
    async with AsyncTriserveClient(address, timeout_s=10.0) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (await client.cluster_state()).requests_in_flight == 0:
                return True
            await asyncio.sleep(0.1)
    return False


async def warm_up(address: str, requests: list[BenchRequest], prompt_format: str) -> None:
    """One request after another, results discarded: loads every code path once."""
    async with AsyncTriserveClient(address, timeout_s=300.0) as client:
        for request in requests:
            kwargs = request.generate_kwargs(prompt_format)
            await client.complete(**{**kwargs, "max_tokens": min(4, request.max_tokens)})
