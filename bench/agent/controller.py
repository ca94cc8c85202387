"""Layouts 2 to 6: the server-side agent controller, one Responses call per run.

    POST /v1/responses  tools=[{type: mcp, server_url, allowed_tools}], tool_choice "required",
                        max_tool_calls K, max_output_tokens, stream
                        + latency_budget_ms, agent_options, candidate_models (extra_body)
    <- output_item.added / .done (mcp_call)   a server-side tool call begins / ends
    <- output_text.delta                      the final answer (its first one: FTR)
    <- response.completed / .incomplete       status, usage
    GET /v1/responses/{id}/trace              model calls (engine time, model), tool calls

Every layout sends the run's budget; "no-budget" tells the controller to ignore it, so that its
within-budget share is measured against the same number. The times are the client's clock; the
trace adds what only the server knows (cost, cached tool results, where calls were routed).
"""

from __future__ import annotations

import time

from bench.agent.harness import QUEUE_ANYWAY, Harness, ms_since
from bench.agent.record import RunRecord, busy_ms
from bench.agent.workload import AgentRun

MCP_CALL = "mcp_call"
FINAL_EVENTS = ("response.completed", "response.incomplete")
FAILED_EVENTS = ("response.failed", "error")


async def run_controller(harness: Harness, run: AgentRun, layout: str, options: dict) -> RunRecord:
    """`options`: the request's agent_options (every mechanism named, one of them off)."""
    started = time.perf_counter()
    content = [{"type": "input_image", "image_url": url} for url in run.image_urls]
    content.append({"type": "input_text", "text": run.text})
    tool = {
        "type": "mcp", "server_label": harness.endpoint.label, "server_url": harness.endpoint.url,
        "allowed_tools": list(run.tools), "require_approval": "never",
    }  # fmt: skip
    extra = {
        **QUEUE_ANYWAY,
        "latency_budget_ms": run.budget_ms,
        "agent_options": options,
        "candidate_models": list(harness.candidate_models),
    }
    first_text, final = None, None
    begun: dict[str, float] = {}
    intervals: list[tuple[float, float]] = []
    names: list[str] = []
    num_errors = 0
    try:
        stream = await harness.openai.responses.create(
            model=harness.model, instructions=run.instructions,
            input=[{"role": "user", "content": content}],
            tools=[tool], tool_choice="required", max_tool_calls=run.max_tool_calls,
            max_output_tokens=run.max_output_tokens, temperature=0, stream=True,
            extra_body=extra,
        )  # fmt: skip
        async for event in stream:
            kind = event.type
            if kind == "response.output_text.delta":
                first_text = first_text or ms_since(started)
            elif kind == "response.output_item.added" and event.item.type == MCP_CALL:
                begun[event.item.id] = ms_since(started)
                names.append(event.item.name)
            elif kind == "response.output_item.done" and event.item.type == MCP_CALL:
                ended = ms_since(started)
                intervals.append((begun.get(event.item.id, ended), ended))
                num_errors += bool(getattr(event.item, "error", None))
            elif kind in FINAL_EVENTS:
                final = event.response
            elif kind in FAILED_EVENTS:
                raise RuntimeError(f"{kind}: {str(event)[:200]}")
        e2e = ms_since(started)
        if final is None:
            raise RuntimeError("the stream ended without a final response")
    except Exception as e:  # recorded; the run has no answer
        return RunRecord(layout, run.index, run.kind, "failed", run.budget_ms,
                         num_tool_calls=len(names), error=repr(e)[:300])  # fmt: skip
    trace = await harness.run_trace(final.id)
    model_calls = [c for c in trace.get("model_calls") or () if isinstance(c, dict)]
    tool_calls = [c for c in trace.get("tool_calls") or () if isinstance(c, dict)]
    usage = final.usage
    details = getattr(usage, "input_tokens_details", None) if usage else None
    cached = (details.cached_tokens or 0) if details else _sum(model_calls, "cached_tokens")
    reason = getattr(final.incomplete_details, "reason", None) if final.incomplete_details else None
    return RunRecord(
        layout=layout, run=run.index, kind=run.kind, status="ok", budget_ms=run.budget_ms,
        response_status=final.status, incomplete_reason=reason, ftr_ms=first_text, e2e_ms=e2e,
        tool_ms_before_ftr=busy_ms(intervals, first_text), num_tool_calls=len(names),
        server_tool_ms_before_ftr=_number(trace.get("tool_ms_before_ftr")),
        num_tool_errors=num_errors,
        num_cached_tool_calls=sum(bool(c.get("cached") or c.get("is_cached")) for c in tool_calls),
        num_model_calls=len(model_calls),
        prompt_tokens=usage.input_tokens if usage else _sum(model_calls, "prompt_tokens"),
        cached_tokens=cached,
        output_tokens=usage.output_tokens if usage else _sum(model_calls, "output_tokens"),
        engine_s=_engine_seconds(trace, model_calls),
        models=tuple(str(c.get("model", "")) for c in model_calls), tool_names=tuple(names),
        stop_reason=trace.get("stop_reason"),
        tool_decisions=tuple(str(c.get("decision", "")) for c in tool_calls),
    )  # fmt: skip


def _engine_seconds(trace: dict, model_calls: list[dict]) -> float | None:
    """The trace's own total when it has one, else its model calls' compute (or engine) time."""
    if _number(trace.get("engine_s")) is not None:
        return round(float(trace["engine_s"]), 4)
    if not model_calls:
        return None
    total_ms = 0.0
    for call in model_calls:
        value = call.get("compute_ms", call.get("engine_ms"))
        total_ms += sum(value.values()) if isinstance(value, dict) else float(value or 0.0)
    return round(total_ms / 1000.0, 4)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _sum(calls: list[dict], key: str) -> int:
    return int(sum(c.get(key) or 0 for c in calls))
