"""Admission: take a request only when it can make its deadline, or as its policy says.

The forecast (forecast.py) budgets the TTFT target across every stage before the first token
(which prefill samples), and the TPOT target across what comes before the second one:

    TTFT      ~ wait(E) + encode + embedding transfer + wait(P) + prefill
    first gap ~ KV transfer + the first decode step of the batch it joins When either is predicted
to be missed, the request's admission policy decides:

    reject       RESOURCE_EXHAUSTED at once, with a retry-after hint (when the backlog ahead of
                 it should have drained enough)
    degrade      admitted with max_tokens capped (when it asked for more), so it holds its
                 decode slot and KV for less time; placement already takes the fastest pool
    best_effort  admitted at low priority: it yields to every other job for a bounded time

A stage queue that is full rejects whatever the policy: no queue grows without bound. An idle
cluster (nothing queued, no worker holding a job) judges by its workers' start-up profiles
alone, without what the cost model learned since (corrections and residuals, cost_model.py):
those were measured on idle workers, which is what the request will find. A burst can teach
errors that put every forecast past its target; refusing on them would leave them nothing to
learn from, and the class locked out. A target no profile can meet is still refused.

The margin added to a forecast is the class's mean error plus `admission_margin_deviations`
deviations of it, plus more while the class's admitted requests miss their TTFT more often than
`admission_attainment_goal` (`margin_deviations`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from scheduler.cache_directory import prompt_block_hashes
from scheduler.config import SchedulerConfig
from scheduler.errors import AdmissionRejectedError
from scheduler.forecast import FirstTokenForecast, Forecaster, RequestShape
from scheduler.policy import WorkerView, capable_workers
from scheduler.request import RequestSpec
from scheduler.request_class import RequestClass, classify, estimate_cost, slo_targets
from scheduler.slo import SloTargets
from scheduler.stage import Stage, stages_for
from workers.contract.cost_profile import WorkerProfile

IDLE_REASON = "the cluster is idle and the profiles make the targets"


class Admission(Enum):
    ADMIT = "admit"
    REJECT = "reject"
    DEGRADE = "degrade"
    BEST_EFFORT = "best_effort"


@dataclass(frozen=True)
class AdmissionDecision:
    action: Admission
    predicted_ttft_ms: float
    predicted_tpot_ms: float
    reason: str  # empty when the request is predicted to attain (IDLE_REASON: admitted anyway)
    retry_after_ms: float | None = None  # REJECT only


def decide(
    policy: str,
    targets: SloTargets,
    predicted_ttft_ms: float,
    predicted_tpot_ms: float,
    is_queue_full: bool,
    min_retry_after_ms: float = 100.0,
) -> AdmissionDecision:
    """`policy`: "reject", "degrade" or "best_effort" (config.ADMISSION_POLICIES)."""
    ttft_excess = predicted_ttft_ms - targets.ttft_ms
    misses = []
    if ttft_excess > 0:
        misses.append(f"predicted TTFT {predicted_ttft_ms:.0f} ms > target {targets.ttft_ms:.0f}")
    if predicted_tpot_ms > targets.tpot_ms:
        misses.append(f"predicted TPOT {predicted_tpot_ms:.0f} ms > target {targets.tpot_ms:.0f}")
    retry_after = max(min_retry_after_ms, ttft_excess)
    if is_queue_full:
        reason = "the scheduler's queue for this request is full"
        return AdmissionDecision(
            Admission.REJECT, predicted_ttft_ms, predicted_tpot_ms, reason, retry_after
        )
    if not misses:
        return AdmissionDecision(Admission.ADMIT, predicted_ttft_ms, predicted_tpot_ms, "")
    reason = "; ".join(misses)
    action = Admission(policy)
    return AdmissionDecision(
        action=action,
        predicted_ttft_ms=predicted_ttft_ms,
        predicted_tpot_ms=predicted_tpot_ms,
        reason=reason,
        retry_after_ms=retry_after if action is Admission.REJECT else None,
    )


@dataclass(frozen=True)
class ModelInfo:
    """What hashing and costing a model's prompts needs (from its workers' profiles)."""

    image_token_id: int | None
    image_tokens_per_image: int
    block_size: int


@dataclass(frozen=True)
class Admitted:
    """A request the scheduler takes, with everything admission worked out about it."""

    spec: RequestSpec  # max_tokens capped when degraded
    shape: RequestShape
    request_class: RequestClass
    targets: SloTargets
    decision: AdmissionDecision
    latest_start_ms: float  # scheduler clock ms (stage_queue.py)
    is_low_priority: bool
    # The cost model's own predictions, before the learned residuals (cost_model.py) are
    # added: what the residuals are measured against.
    model_ttft_ms: float = 0.0
    model_tpot_ms: float = 0.0


@dataclass(frozen=True)
class Prediction:
    """What admission forecasts for a request (AdmissionControl.predict)."""

    shape: RequestShape
    request_class: RequestClass
    targets: SloTargets
    latest_start_ms: float
    forecast: FirstTokenForecast | None  # None: a needed stage has no worker
    waited_ms: float  # since its arrival, before it reached admission
    model_ttft_ms: float  # the cost model's, waited_ms included
    model_tpot_ms: float  # its first inter-token gap
    ttft_ms: float  # the model's plus the learned margin (never below the model's)
    first_gap_ms: float


class AdmissionControl:
    """Classifies, forecasts and admits (or rejects) each new request."""

    def __init__(
        self,
        config: SchedulerConfig,
        forecaster: Forecaster,
        work_ahead_ms: Callable[[Stage, float, bool], float],  # (stage, latest start, low)
        is_queue_full: Callable[[Stage], bool],
        is_idle: Callable[[], bool] = lambda: False,  # nothing queued, no worker holds a job
    ) -> None:
        self.config = config
        self.forecaster = forecaster
        self._work_ahead_ms = work_ahead_ms
        self._is_queue_full = is_queue_full
        self._is_idle = is_idle
        self._models: dict[str, ModelInfo] = {}

    def learn_model(self, model: str, profile: WorkerProfile | None) -> None:
        if profile is not None and model not in self._models:
            self._models[model] = ModelInfo(
                profile.image_token_id, profile.image_tokens_per_image, profile.block_size
            )

    def margin_deviations(self, request_class: RequestClass) -> float:
        """`admission_margin_deviations`, plus one more for each (1 - goal) by which the
        class's TTFT attainment falls short of `admission_attainment_goal`."""
        config = self.config
        rate = self.forecaster.costs.attainment.rate(request_class.value)
        shortfall = max(0.0, config.admission_attainment_goal - rate)
        return config.admission_margin_deviations + shortfall / (
            1 - config.admission_attainment_goal
        )

    def model_info(self, model: str) -> ModelInfo:
        return self._models.get(model, ModelInfo(None, 0, 16))

    def admits_at_once(self) -> bool:
        """Whether any request would be admitted now whatever its forecast: FCFS, or an idle
        cluster (judged by its profiles, which the smallest request makes)."""
        return not self.config.mode.is_slo_aware or self._is_idle()

    def shape(self, spec: RequestSpec) -> RequestShape:
        info = self.model_info(spec.model)
        cost = estimate_cost(spec, info.image_token_id)
        per_image = cost.num_image_tokens // cost.num_images if cost.num_images else 0
        hashes = tuple(image.image_hash for image in spec.images)
        blocks = prompt_block_hashes(
            spec.prompt_token_ids, hashes, info.image_token_id, per_image, info.block_size
        )
        return RequestShape(
            cost=cost,
            image_hashes=hashes,
            image_tokens=(per_image,) * len(hashes),
            block_hashes=tuple(blocks),
            block_size=info.block_size,
            image_pixels=tuple(image.num_pixels for image in spec.images),
        )

    def predict(
        self, spec: RequestSpec, workers: Sequence[WorkerView], now_ms: float
    ) -> Prediction:
        """The request's class, targets, queue key and TTFT / first-gap forecast, margin
        included, as admission would judge it now (nothing is decided or recorded)."""
        shape = self.shape(spec)
        request_class = classify(shape.cost, self.config)
        targets = slo_targets(spec, request_class, self.config)
        is_low = spec.priority == "batch"
        ids = {
            stage: [w.worker_id for w in capable_workers(workers, spec.model, stage)]
            for stage in Stage
        }
        deadline_ms = spec.arrival_time * 1000.0 + targets.ttft_ms
        work = self.forecaster.first_token(
            shape, ids[Stage.ENCODE], ids[Stage.PREFILL], ids[Stage.DECODE], work_ahead_ms={}
        )
        remaining = sum(f.compute_ms + f.transfer_ms for f in work.stages[:-1]) if work else 0.0
        latest_start = deadline_ms - remaining
        stages = stages_for(spec.has_images)
        ahead = {stage: self._work_ahead_ms(stage, latest_start, is_low) for stage in stages}
        priority = latest_start if self.config.mode.is_slo_aware else None
        forecast = self.forecaster.first_token(
            shape, ids[Stage.ENCODE], ids[Stage.PREFILL], ids[Stage.DECODE], ahead, priority
        )
        waited_ms = max(0.0, now_ms - spec.arrival_time * 1000.0)
        model_ttft = waited_ms + (forecast.ttft_ms if forecast else 0.0)
        model_gap = forecast.first_gap_ms if forecast else 0.0
        residuals, k = self.forecaster.costs.residuals, self.margin_deviations(request_class)
        return Prediction(
            shape=shape,
            request_class=request_class,
            targets=targets,
            latest_start_ms=latest_start,
            forecast=forecast,
            waited_ms=waited_ms,
            model_ttft_ms=model_ttft,
            model_tpot_ms=model_gap,
            ttft_ms=max(model_ttft, model_ttft + residuals.ttft_margin_ms(request_class.value, k)),
            first_gap_ms=max(
                model_gap, model_gap + residuals.tpot_margin_ms(request_class.value, k)
            ),
        )

    def admit(self, spec: RequestSpec, workers: Sequence[WorkerView], now_ms: float) -> Admitted:
        """Raises AdmissionRejectedError when the request is refused."""
        p = self.predict(spec, workers, now_ms)
        request_class, targets, ttft, first_gap = (
            p.request_class,
            p.targets,
            p.ttft_ms,
            p.first_gap_ms,
        )
        if not self.config.mode.is_slo_aware:
            decision = AdmissionDecision(Admission.ADMIT, ttft, first_gap, "", None)
        elif self._is_idle() and self._profiles_attain(p.forecast, p.waited_ms, targets):
            decision = AdmissionDecision(Admission.ADMIT, ttft, first_gap, IDLE_REASON, None)
        else:
            policy = spec.admission or self.config.admission
            first_stage = stages_for(spec.has_images)[0]
            decision = decide(policy, targets, ttft, first_gap, self._is_queue_full(first_stage))
        if decision.action is Admission.REJECT:
            raise AdmissionRejectedError(
                f"request {spec.request_id!r} ({request_class.value}) rejected: "
                f"{decision.reason}; retry after {decision.retry_after_ms:.0f} ms",
                decision.retry_after_ms or 0.0,
            )
        if decision.action is Admission.DEGRADE:
            spec = degraded(spec, self.config.degrade_max_tokens)
        is_low = spec.priority == "batch" or decision.action is Admission.BEST_EFFORT
        return Admitted(
            spec=spec,
            shape=p.shape,
            request_class=request_class,
            targets=targets,
            decision=decision,
            latest_start_ms=p.latest_start_ms,
            is_low_priority=is_low,
            model_ttft_ms=p.model_ttft_ms,
            model_tpot_ms=p.model_tpot_ms,
        )

    def _profiles_attain(
        self, forecast: FirstTokenForecast | None, waited_ms: float, targets: SloTargets
    ) -> bool:
        """Whether the forecast's stages, at their profiled costs (the learned corrections
        divided out; nothing is queued), make both targets."""
        if forecast is None:
            return False
        costs = self.forecaster.costs
        profiled = [
            f.transfer_ms + f.compute_ms / costs[f.worker_id].correction(f.stage)
            for f in forecast.stages
        ]
        ttft_ms = waited_ms + sum(profiled[:-1])
        return ttft_ms <= targets.ttft_ms and profiled[-1] <= targets.tpot_ms


def degraded(spec: RequestSpec, max_tokens: int) -> RequestSpec:
    params = spec.sampling_params
    if params.max_tokens <= max_tokens:
        return spec
    return replace(spec, sampling_params=replace(params, max_tokens=max_tokens))
