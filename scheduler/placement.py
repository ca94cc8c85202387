"""Placement: every decision of where a request's stage runs, in one place.

The policy (policy.py) ranks workers for one stage; `Placement` asks it, and adds the rules
that follow from cached state and from the stages that come next:

    stage queued      encode or prefill      -> `allowed_workers`: embeddings kept in one
                                                worker's cache only are prefilled there alone
                      encode, policy "slo"   -> `embedding_holder`: a prefill worker that holds
                                                every image's embeddings; encode never runs
    job leaves queue  encode or prefill      -> `place` among the workers with room
                                                (dispatcher.py decides when)
    encode starts                            -> `exports_embeddings`: False when prefill would
                                                follow onto the encode worker (asked ahead)
    prefill starts                           -> `decode_worker` asked ahead: the prefill worker
                                                itself means decode_here (no KV transfer)
    first token                              -> `decode_worker`: where the KV goes
    a continuation (sessions.py)             -> its prefill runs on the worker holding the
                                                paused KV it continues (any stages that can
                                                decode), and decodes there

Everything here is side-effect free: the driver acts on the answers.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.active_request import ActiveRequest
from scheduler.cache_directory import CacheDirectory
from scheduler.forecast import Forecaster
from scheduler.mode import SchedulingMode
from scheduler.policy import (
    EarliestCompletionPolicy,
    LeastLoadedPolicy,
    PlacementPolicy,
    PlacementRequest,
    WorkerView,
    capable_workers,
)
from scheduler.stage import Stage
from scheduler.worker_registry import WorkerRegistry


def default_policy(mode: SchedulingMode, forecaster: Forecaster) -> PlacementPolicy:
    """The policy a mode places with when none is given."""
    if mode.is_slo_aware:
        return EarliestCompletionPolicy(forecaster)
    return LeastLoadedPolicy()


class Placement:
    def __init__(
        self,
        policy: PlacementPolicy,
        mode: SchedulingMode,
        workers: WorkerRegistry,
        forecaster: Forecaster,
        caches: CacheDirectory,
        clock_ms: Callable[[], float],
    ) -> None:
        self.policy = policy
        self.mode = mode
        self.workers = workers
        self.forecaster = forecaster
        self.caches = caches
        self.clock_ms = clock_ms

    def request(
        self, req: ActiveRequest, stage: Stage, allowed: frozenset[str] | None = None
    ) -> PlacementRequest:
        """What the policy is asked for a queued encode or prefill job."""
        is_prefill = stage is Stage.PREFILL
        continuation = req.continuation if is_prefill else None
        return PlacementRequest(
            spec=req.spec,
            stage=stage,
            previous_worker_id=req.encode_worker if is_prefill else None,
            shape=req.shape,
            allowed=allowed,
            priority=self.mode.prefill_priority(req.latest_start_ms) if is_prefill else None,
            continues_on=continuation.worker_id if continuation else None,
        )

    def place(self, request: PlacementRequest, workers: list[WorkerView]) -> str | None:
        """The worker among `workers` to run the job (None: none of them can)."""
        return self.policy.place(request, workers)

    def allowed_workers(self, req: ActiveRequest, stage: Stage) -> frozenset[str] | None:
        """The only workers that may run `stage` (None: any capable one)."""
        if stage is Stage.PREFILL and req.encode_worker and not req.has_embedding_refs():
            return frozenset([req.encode_worker])  # its embeddings are in that cache only
        return None

    def embedding_holder(self, req: ActiveRequest) -> str | None:
        """Embedding affinity (policy "slo", first attempt): the least busy prefill worker that
        already holds every image's embeddings, which prefills from its own cache so that
        encode never runs; None when there is none."""
        if not self.mode.is_slo_aware or req.attempt or req.shape is None:
            return None
        if req.continuation is not None:  # its prefill runs where its paused KV is
            return None
        hashes = req.shape.image_hashes
        views = capable_workers(self.workers.views(), req.spec.model, Stage.PREFILL)
        holders = [v.worker_id for v in views if self.caches.holds_embeddings(v.worker_id, hashes)]
        if not holders:
            return None
        return min(holders, key=lambda w: (self.workers[w].backlog_ms(0), w))

    def exports_embeddings(self, req: ActiveRequest, encode_worker: str) -> bool:
        """Whether an encode must hand its embeddings out: prefill is placed elsewhere."""
        return self._next_stage_worker(req, Stage.PREFILL, encode_worker) != encode_worker

    def decode_worker(self, req: ActiveRequest, prefill_worker: str) -> str | None:
        """Where the request decodes after a prefill on `prefill_worker` (that worker itself:
        decode_here); None when no worker can decode it. A continuation prefilled where its
        paused KV was decodes there too."""
        if req.continuation is not None and req.continuation.worker_id == prefill_worker:
            return prefill_worker
        return self._next_stage_worker(req, Stage.DECODE, prefill_worker)

    def fastest_compute_ms(self, req: ActiveRequest, stage: Stage) -> float:
        """The stage's compute on the fastest capable worker, for the work ahead of others."""
        if req.shape is None:
            return 0.0
        views = capable_workers(self.workers.views(), req.spec.model, stage)
        forecasts = [self.forecaster.stage(stage, req.shape, v.worker_id, None) for v in views]
        return min((f.compute_ms for f in forecasts), default=0.0)

    def _next_stage_worker(self, req: ActiveRequest, stage: Stage, previous: str) -> str | None:
        request = PlacementRequest(
            spec=req.spec, stage=stage, previous_worker_id=previous, shape=req.shape
        )
        worker_id = self.policy.place(request, self.workers.views(self.clock_ms()))
        return worker_id if worker_id in self.workers else None
