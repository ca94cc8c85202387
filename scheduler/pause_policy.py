"""Pin or drop: whether a session's call keeps its KV on its worker when it ends, and for how
long. Pure: the numbers come from the caller (the worker's load, the cost model).

While the worker's KV memory is plentiful, pinning costs nothing anyone needs: the engine
releases paused KV before it preempts a running request (workers/contract/worker_client.py), so
the call is pinned. When memory is scarce, InferCept's min-waste rule decides, in block-seconds
of KV memory held without producing anything:

    pin:   own x E[pause]                    the call's blocks, idle until it comes back
    drop:  recompute x (own + others')       re-prefilling it holds its own blocks, and stalls
                                             the batch (the others' blocks) for as long

The TTL: while memory is plentiful, the longest allowed (`max_ttl_s`): a pinned call that
nobody needs the memory of costs nothing, and pressure evicts it first anyway; pauses are
heavy-tailed, and a TTL of a few median pauses let a tenth of continuations miss their KV on
bench.sessions. When memory is scarce, a few expected pauses (bounded): a tool that runs far
longer than usual lets the KV go. Whatever happens (TTL, eviction, a lost worker), the
continuation falls back to the prefix cache or a full prefill with the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.active_request import ActiveRequest
from scheduler.config import SchedulerConfig
from scheduler.forecast import Forecaster
from scheduler.sessions import SessionDirectory
from scheduler.stage import Stage
from scheduler.trace_events import EventName
from scheduler.worker_registry import WorkerSlot
from workers.contract.messages import PausePlan

MIN_TTL_S = 1.0


@dataclass(frozen=True)
class PauseCosts:
    """What the decision weighs, for one call on one worker."""

    own_blocks: int  # the KV blocks the call would keep
    recompute_ms: float  # re-prefilling its tokens on return (the cost model's prediction)
    expected_pause_s: float  # until the continuation arrives
    num_blocks: int  # the worker's KV blocks ...
    num_used_blocks: int  # ... held by running requests (the call's own included)
    num_pinned_blocks: int  # ... held by other paused calls


@dataclass(frozen=True)
class PauseSettings:
    scarce_fraction: float = 0.75  # KV used + pinned above this share of the blocks: scarce
    ttl_factor: float = 3.0  # TTL = this x the expected pause ...
    max_ttl_s: float = 300.0  # ... at most


def pause_plan(costs: PauseCosts, settings: PauseSettings) -> PausePlan | None:
    """The plan to pin the call's KV, or None to let it go when the call ends."""
    if costs.own_blocks <= 0 or costs.num_blocks <= 0:
        return None
    held = costs.num_used_blocks + costs.num_pinned_blocks
    if held <= costs.num_blocks * settings.scarce_fraction:
        return PausePlan(ttl_s=settings.max_ttl_s, expected_pause_s=costs.expected_pause_s)
    if not _pinning_wastes_less(costs):
        return None
    ttl_s = min(settings.max_ttl_s, max(MIN_TTL_S, settings.ttl_factor * costs.expected_pause_s))
    return PausePlan(ttl_s=ttl_s, expected_pause_s=costs.expected_pause_s)


def _pinning_wastes_less(costs: PauseCosts) -> bool:
    pin = costs.own_blocks * costs.expected_pause_s
    others = max(0, costs.num_used_blocks - costs.own_blocks)
    drop = costs.recompute_ms / 1000.0 * (costs.own_blocks + others)
    return pin < drop


class PausePlanner:
    """The pause plan of a session's call on the worker that will end it: its costs from the
    request, the worker's last load and the cost model."""

    def __init__(
        self, config: SchedulerConfig, forecaster: Forecaster, sessions: SessionDirectory
    ) -> None:
        self.config = config
        self.forecaster = forecaster
        self.sessions = sessions
        self.settings = PauseSettings(
            scarce_fraction=config.session_scarce_fraction,
            ttl_factor=config.session_ttl_factor,
            max_ttl_s=config.session_max_ttl_s,
        )

    def plan(self, req: ActiveRequest, slot: WorkerSlot) -> PausePlan | None:
        """The plan (recorded in the trace) for a session's call that asks to pause."""
        spec = req.spec
        if spec.session is None or not spec.session.pause or req.shape is None:
            return None
        plan = pause_plan(self._costs(req, slot), self.settings)
        if plan is None:
            req.trace.record(EventName.NOT_PAUSED, worker=slot.worker_id)
        else:
            req.trace.record(
                EventName.PAUSE_PLANNED,
                worker=slot.worker_id,
                ttl_s=plan.ttl_s,
                expected_pause_s=plan.expected_pause_s,
            )
        return plan

    def _costs(self, req: ActiveRequest, slot: WorkerSlot) -> PauseCosts:
        spec = req.spec
        num_tokens = len(spec.prompt_token_ids) + spec.sampling_params.max_tokens
        recompute = self.forecaster.stage(Stage.PREFILL, req.shape, slot.worker_id, None)
        load = slot.load
        return PauseCosts(
            own_blocks=-(-num_tokens // req.shape.block_size),
            recompute_ms=recompute.compute_ms,
            expected_pause_s=self.sessions.expected_pause_s(spec, self.config.session_pause_s),
            num_blocks=load.num_kv_blocks,
            num_used_blocks=load.num_kv_blocks_used,
            num_pinned_blocks=load.num_pinned_blocks,
        )
