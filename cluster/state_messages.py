"""Cluster snapshots and traces -> their protobuf messages (and a trace's events back)."""

from __future__ import annotations

from cluster.agent_metrics import AgentStatsSnapshot
from cluster.cluster_state import ClusterSnapshot, PoolSnapshot
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.cost_model import WorkerCostSnapshot
from scheduler.lifecycle import RequestState
from scheduler.slo_ledger import SloLedger
from scheduler.snapshot import WorkerSnapshot
from scheduler.trace import Trace, TraceEvent

ACTIVE_STATES = tuple(state.value for state in RequestState if not state.is_done)
DONE_STATES = tuple(state.value for state in RequestState if state.is_done)  # a trace's last


def worker_state_message(
    worker: WorkerSnapshot, cost: WorkerCostSnapshot | None = None
) -> pb.WorkerState:
    message = pb.WorkerState(
        worker_id=worker.worker_id,
        stages=worker.stages,
        draining=worker.is_draining,
        epoch=worker.epoch,
        suspected=worker.is_suspected,
    )
    if cost is not None:
        message.cost_model.CopyFrom(cost_model_message(cost))
    load = worker.load
    if load is not None:
        message.encode_queued = load.num_encode_queued
        message.waiting = load.num_waiting
        message.running = load.num_running
        message.kv_blocks_total = load.num_kv_blocks
        message.kv_blocks_used = load.num_kv_blocks_used
        message.kv_blocks_cached = load.num_kv_blocks_cached
        message.embedding_cache_entries = load.num_embedding_cache_entries
        message.prefix_cache_blocks = load.num_prefix_cache_blocks
        message.pinned_blocks = load.num_pinned_blocks
        message.paused_requests = load.num_paused
    return message


def cost_model_message(cost: WorkerCostSnapshot) -> pb.WorkerCostModel:
    message = pb.WorkerCostModel(
        corrections=cost.corrections,
        num_observations=cost.num_observations,
        max_num_batched_tokens=cost.max_num_batched_tokens,
        max_encode_images=cost.max_encode_images,
    )
    if cost.encode is not None:
        message.encode_base_ms = cost.encode.base_ms
        message.encode_ms_per_image_token = cost.encode.per_unit_ms
    if cost.prefill is not None:
        message.prefill_base_ms = cost.prefill.base_ms
        message.prefill_ms_per_token = cost.prefill.per_unit_ms
    if cost.decode is not None:
        message.decode_base_ms = cost.decode.base_ms
        message.decode_ms_per_seq = cost.decode.per_seq_ms
        message.decode_ms_per_context_token = cost.decode.per_context_token_ms
    return message


def pool_state_message(pool: PoolSnapshot) -> pb.PoolState:
    return pb.PoolState(
        name=pool.name,
        stages=pool.stages,
        model=pool.model,
        target_workers=pool.target_workers,
        live_workers=pool.num_live,
        starting_workers=pool.num_starting,
        suspected_workers=pool.num_suspected,
        workers=[worker_state_message(w, pool.costs.get(w.worker_id)) for w in pool.workers],
    )


def class_state_messages(ledger: SloLedger) -> list[pb.RequestClassState]:
    return [
        pb.RequestClassState(
            request_class=name,
            finished=counts.num_finished,
            attained=counts.num_attained,
            rejected=counts.num_rejected,
            degraded=counts.num_degraded,
            best_effort=counts.num_best_effort,
            failed=counts.num_failed,
            cancelled=counts.num_cancelled,
        )
        for name, counts in ledger.classes.items()
    ]


def agent_state_message(stats: AgentStatsSnapshot) -> pb.AgentClassState:
    """Figures that are None (nothing measured yet) stay unset."""
    measured = {
        "ftr_p50_ms": stats.ftr_p50_ms,
        "ftr_p90_ms": stats.ftr_p90_ms,
        "ftr_p99_ms": stats.ftr_p99_ms,
        "e2e_p50_ms": stats.e2e_p50_ms,
        "e2e_p90_ms": stats.e2e_p90_ms,
        "e2e_p99_ms": stats.e2e_p99_ms,
        "tool_share_of_ftr": stats.tool_share_of_ftr,
        "tool_cache_hit_rate": stats.tool_cache_hit_rate,
        "cached_share": stats.cached_share,
        "cost_per_successful_run_s": stats.cost_per_successful_run_s,
    }
    return pb.AgentClassState(
        request_class=stats.request_class,
        runs=stats.num_runs,
        completed=stats.num_completed,
        incomplete=stats.num_incomplete,
        failed=stats.num_failed,
        cancelled=stats.num_cancelled,
        within_budget=stats.num_within_budget,
        tool_calls_per_run=stats.tool_calls_per_run,
        reprefilled_tokens=stats.num_reprefilled_tokens,
        **{name: value for name, value in measured.items() if value is not None},
    )


def cluster_state_message(snapshot: ClusterSnapshot) -> pb.ClusterState:
    counts = snapshot.num_requests_by_state
    message = pb.ClusterState(
        pools=[pool_state_message(pool) for pool in snapshot.pools],
        requests_in_flight=sum(counts.get(state, 0) for state in ACTIVE_STATES),
        requests_by_state=counts,
        queued_by_stage=snapshot.num_queued_by_stage,
        agent=[agent_state_message(stats) for stats in snapshot.agent],
    )
    ledger = snapshot.ledger
    if ledger is not None:
        message.classes.extend(class_state_messages(ledger))
        message.prefix_hit_rate = ledger.prefix_hit_rate
        message.embedding_hit_rate = ledger.embedding_hit_rate
    return message


def trace_message(trace: Trace) -> pb.Trace:
    message = pb.Trace(
        request_id=trace.request_id,
        state=trace.state,
        model=trace.model,
        arrival_unix_ms=trace.arrival_time * 1000.0,
    )
    for event in trace.events:
        attrs = dict(event.attrs)
        numbers = {
            key: float(value)
            for key, value in attrs.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        message.events.add(
            event=event.name,
            time_ms=event.time_ms,
            worker_id=str(attrs.pop("worker", "")),
            duration_ms=float(attrs.get("ms", 0.0) or attrs.get("compute_ms", 0.0)),
            bytes=int(attrs.get("bytes", 0)),
            detail=", ".join(f"{k}={v}" for k, v in sorted(attrs.items())),
            values=numbers,
        )
    return message


def trace_events(message: pb.Trace) -> list[TraceEvent]:
    """The events of a GetTrace response, as the scheduler recorded them, for
    `scheduler.trace_breakdown`: numeric attributes as numbers, None ones as None, the others
    as their text in `detail`, the worker as `worker`."""
    events = []
    for event in message.events:
        attrs: dict = detail_fields(event.detail)
        attrs.update(event.values)
        if event.worker_id:
            attrs["worker"] = event.worker_id
        events.append(TraceEvent(name=event.event, time_ms=event.time_ms, attrs=attrs))
    return events


def detail_fields(detail: str) -> dict[str, str | None]:
    """'a=1, b=None, request_class=sand' -> {'a': '1', 'b': None, 'request_class': 'sand'}."""
    fields: dict[str, str | None] = {}
    for item in detail.split(", "):
        key, sep, value = item.partition("=")
        if sep:
            fields[key.strip()] = None if value.strip() == "None" else value.strip()
    return fields
