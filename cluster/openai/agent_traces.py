"""An agent run's trace, finished after its answer: each model call's queue, compute and
transfer times read from the scheduler's trace of its request (the one parser,
scheduler/trace_breakdown.py), then the run's trace stored for `GET /v1/responses/{id}/trace`
and its summary sent to the control plane's metrics. Off the answer's path: a client reading
the trace right after the answer may find it a moment later."""

from __future__ import annotations

import asyncio

from agent.run_summary import RunSummary
from agent.run_trace import ModelSpan, RunTrace
from cluster.openai.response_store import ResponseStore
from scheduler.trace_breakdown import trace_breakdown

SCHEDULER_CALL_TIMEOUT_S = 10.0


class TraceReader:
    def __init__(self, scheduler, store: ResponseStore) -> None:
        self._scheduler = scheduler  # the control plane's actor handle
        self._store = store

    async def finish(
        self, trace: RunTrace, request_class: str, status: str, is_stored: bool
    ) -> None:
        await asyncio.gather(*(self._read(span) for span in trace.model_calls))
        if is_stored:
            await asyncio.to_thread(self._store.put_trace, trace.run_id, trace.to_json())
        summary = RunSummary.of(trace, request_class, status)
        self._scheduler.record_agent_run.remote(summary)

    async def stored(self, response_id: str) -> dict | None:
        return await asyncio.to_thread(self._store.get_trace, response_id)

    async def _read(self, span: ModelSpan) -> None:
        if not span.request_id:
            return
        try:
            call = self._scheduler.trace.remote(span.request_id)
            request_trace = await asyncio.wait_for(call, timeout=SCHEDULER_CALL_TIMEOUT_S)
        except Exception:  # the control plane restarted, or the trace aged out: left unknown
            return
        if request_trace is None:
            return
        breakdown = trace_breakdown(request_trace.events)
        span.queue_ms = sum(breakdown.scheduler_queue_ms.values()) + sum(
            breakdown.queue_ms.values()
        )
        span.compute_ms = sum(breakdown.compute_ms.values())
        span.transfer_ms = sum(breakdown.transfer_ms.values())
