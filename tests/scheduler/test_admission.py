"""Admission control: classify a request, forecast its TTFT and TPOT from the cost model and
the work queued ahead, and admit, degrade, deprioritise or reject it."""

from __future__ import annotations

import pytest

from scheduler.admission import Admission, AdmissionControl, AdmissionDecision
from scheduler.cache_directory import CacheDirectory
from scheduler.config import SchedulerConfig
from scheduler.cost_model import CostModel
from scheduler.errors import AdmissionRejectedError
from scheduler.forecast import Forecaster, WorkerLoadView
from scheduler.policy import WorkerView
from scheduler.request import RequestSpec
from scheduler.request_class import RequestClass, RequestCost
from scheduler.slo import SloTargets
from scheduler.stage import Stage
from workers.contract.cost_profile import DecodeCost, LinearCost, StepBudgets, WorkerProfile
from workers.contract.messages import ImageInput
from workers.contract.sampling_params import SamplingParams

IMG = 99
ARRIVAL_S = 10.0  # 10 000 ms on the scheduler clock
NOW_MS = 10_005.0  # the request has waited 5 ms
PD_PROFILE = WorkerProfile(
    encode=None,
    prefill=LinearCost(base_ms=4.0, per_unit_ms=0.5),  # 40 tokens: 24 ms
    decode=DecodeCost(base_ms=2.0, per_seq_ms=1.0, per_context_token_ms=0.0),  # alone: 3 ms
    budgets=StepBudgets(max_num_batched_tokens=512, max_encode_images=1),
    tpot_target_ms=200.0,
    image_tokens_per_image=8,
    image_token_id=IMG,
    block_size=16,
)
E_PROFILE = WorkerProfile(
    encode=LinearCost(base_ms=10.0, per_unit_ms=1.0),  # two images of 8 rows: 26 ms
    prefill=None,
    decode=None,
    budgets=StepBudgets(max_num_batched_tokens=512, max_encode_images=4),
    tpot_target_ms=200.0,
    image_tokens_per_image=8,
    image_token_id=IMG,
    block_size=16,
)
WORKERS = [
    WorkerView("e1", "tiny", "E", False, 0),
    WorkerView("p1", "tiny", "PD", False, 0),
    WorkerView("p2", "tiny", "PD", False, 0),
]


class Admitter:
    """AdmissionControl over idle workers with known fits, and a queue whose work ahead of any
    new request is `work_ahead` (per stage)."""

    def __init__(self, config=None, work_ahead=None, full=()):
        self.config = config or SchedulerConfig()
        self.work_ahead = work_ahead or {}
        self.full = set(full)
        self.calls: list[tuple[Stage, float, bool]] = []
        self.full_checks: list[Stage] = []
        costs = CostModel(alpha=0.25)
        costs.add_worker("e1", E_PROFILE)
        costs.add_worker("p1", PD_PROFILE)
        costs.add_worker("p2", PD_PROFILE)
        forecaster = Forecaster(costs, CacheDirectory(), lambda w, _: WorkerLoadView(w, 0.0, 0, 0))
        self.control = AdmissionControl(
            self.config, forecaster, self._work_ahead_ms, self._is_queue_full
        )
        self.control.learn_model("tiny", PD_PROFILE)

    def _work_ahead_ms(self, stage, latest_start_ms, is_low_priority):
        self.calls.append((stage, latest_start_ms, is_low_priority))
        return self.work_ahead.get(stage, 0.0)

    def _is_queue_full(self, stage):
        self.full_checks.append(stage)
        return stage in self.full

    def admit(self, spec):
        return self.control.admit(spec, WORKERS, NOW_MS)


def text(request_id="r1", max_tokens=64, num_tokens=40, **kwargs):
    params = SamplingParams(max_tokens=max_tokens, seed=7)
    prompt = list(range(1, num_tokens + 1))
    return RequestSpec(
        request_id, "tiny", prompt, sampling_params=params, arrival_time=ARRIVAL_S, **kwargs
    )


def with_images(num_images=2, num_pixels=640 * 480, text_tokens=24, **kwargs):
    prompt = [IMG] * (8 * num_images) + list(range(1, text_tokens + 1))
    images = [ImageInput(f"img{i}", b"png", num_pixels) for i in range(num_images)]
    return RequestSpec("r1", "tiny", prompt, images, arrival_time=ARRIVAL_S, **kwargs)


def test_text_request_is_admitted_with_the_ttft_predicted_from_the_fits():
    admitter = Admitter(work_ahead={Stage.PREFILL: 60.0})

    admitted = admitter.admit(text())

    # waited 5 + queued prefill work 60 / 2 workers + prefill 4 + 0.5 * 40
    assert admitted.decision == AdmissionDecision(Admission.ADMIT, 5.0 + 30.0 + 24.0, 3.0, "")
    assert admitted.request_class is RequestClass.SAND
    assert admitted.targets == SloTargets(1_000.0, 200.0)
    assert admitted.latest_start_ms == 10_000.0 + 1_000.0 - 24.0
    assert admitted.is_low_priority is False
    assert admitted.spec.sampling_params.max_tokens == 64
    assert admitted.shape.cost == RequestCost(0, 0, 40, 0)
    assert len(admitted.shape.block_hashes) == 2


def test_work_ahead_is_asked_for_each_stage_at_the_requests_latest_start():
    admitter = Admitter()

    admitter.admit(text())

    assert admitter.calls == [(Stage.PREFILL, 10_976.0, False), (Stage.DECODE, 10_976.0, False)]
    assert admitter.full_checks == [Stage.PREFILL]


def test_image_request_ttft_adds_encode_and_its_work_ahead():
    admitter = Admitter(work_ahead={Stage.ENCODE: 40.0, Stage.PREFILL: 20.0})

    admitted = admitter.admit(with_images())

    # waited 5 + encode (40 queued ahead on the one encoder + 26) + prefill 24
    assert admitted.decision.predicted_ttft_ms == 5.0 + 40.0 + 26.0 + 24.0
    assert admitted.request_class is RequestClass.PEBBLE
    assert admitted.shape.cost == RequestCost(2, 16, 40, 640 * 480)
    assert admitted.shape.image_tokens == (8, 8)
    assert admitted.latest_start_ms == 10_000.0 + 3_000.0 - 26.0 - 24.0
    assert [stage for stage, _, _ in admitter.calls] == [
        Stage.ENCODE, Stage.PREFILL, Stage.DECODE
    ]  # fmt: skip
    assert admitter.full_checks == [Stage.ENCODE]


@pytest.mark.parametrize(
    ("spec", "request_class", "ttft_ms"),
    [
        (text(num_tokens=2047), RequestClass.SAND, 1_000.0),
        (text(num_tokens=2048), RequestClass.ROCK, 15_000.0),
        (with_images(num_images=3), RequestClass.PEBBLE, 3_000.0),
        (with_images(num_images=4), RequestClass.ROCK, 15_000.0),
        (with_images(num_images=1, num_pixels=2_000_000), RequestClass.ROCK, 15_000.0),
    ],
)
def test_request_class_picks_the_default_ttft_target(spec, request_class, ttft_ms):
    admitted = Admitter(SchedulerConfig(admission="best_effort")).admit(spec)

    assert admitted.request_class is request_class
    assert admitted.targets.ttft_ms == ttft_ms


def test_request_predicted_to_miss_its_class_target_is_rejected_with_a_retry_hint():
    admitter = Admitter(SchedulerConfig(sand_ttft_ms=100.0), work_ahead={Stage.PREFILL: 600.0})

    with pytest.raises(AdmissionRejectedError) as rejected:
        admitter.admit(text())

    # predicted 5 + 300 + 24 = 329 ms against 100 ms: 229 ms too late
    assert rejected.value.retry_after_ms == 229.0
    assert str(rejected.value) == (
        "request 'r1' (sand) rejected: predicted TTFT 329 ms > target 100; retry after 229 ms"
    )


def test_requests_own_ttft_target_overrides_its_class_default():
    admitter = Admitter(SchedulerConfig(sand_ttft_ms=100.0), work_ahead={Stage.PREFILL: 600.0})

    admitted = admitter.admit(text(slo_ttft_ms=400.0))

    assert admitted.targets == SloTargets(400.0, 200.0)
    assert admitted.decision.action is Admission.ADMIT
    with pytest.raises(AdmissionRejectedError):
        Admitter(work_ahead={Stage.PREFILL: 600.0}).admit(text(slo_ttft_ms=300.0))


def test_request_predicted_to_miss_its_tpot_target_is_rejected():
    with pytest.raises(AdmissionRejectedError, match="predicted TPOT 3 ms > target 2") as rejected:
        Admitter().admit(text(slo_tpot_ms=2.0))

    assert rejected.value.retry_after_ms == 100.0


def test_degraded_request_is_admitted_with_max_tokens_capped():
    admitter = Admitter(SchedulerConfig(degrade_max_tokens=8), work_ahead={Stage.PREFILL: 600.0})

    admitted = admitter.admit(text(slo_ttft_ms=100.0, admission="degrade"))

    assert admitted.decision.action is Admission.DEGRADE
    assert admitted.spec.sampling_params == SamplingParams(max_tokens=8, seed=7)
    assert admitted.is_low_priority is False


def test_degrade_leaves_a_request_asking_for_fewer_tokens_as_it_is():
    admitter = Admitter(SchedulerConfig(admission="degrade"), work_ahead={Stage.PREFILL: 600.0})
    spec = text(max_tokens=4, slo_ttft_ms=100.0)

    admitted = admitter.admit(spec)

    assert admitted.decision.action is Admission.DEGRADE
    assert admitted.spec is spec


def test_best_effort_request_is_admitted_at_low_priority():
    admitter = Admitter(work_ahead={Stage.PREFILL: 600.0})

    admitted = admitter.admit(text(slo_ttft_ms=100.0, admission="best_effort"))

    assert admitted.decision.action is Admission.BEST_EFFORT
    assert admitted.decision.retry_after_ms is None
    assert admitted.is_low_priority is True
    assert admitted.spec.sampling_params.max_tokens == 64


def test_configured_policy_applies_to_a_request_that_sets_none():
    admitter = Admitter(SchedulerConfig(admission="best_effort"), {Stage.PREFILL: 600.0})

    admitted = admitter.admit(text(slo_ttft_ms=100.0))

    assert admitted.decision.action is Admission.BEST_EFFORT


def test_batch_priority_request_queues_at_low_priority_even_when_it_fits():
    admitter = Admitter()

    admitted = admitter.admit(text(priority="batch"))

    assert admitted.decision.action is Admission.ADMIT
    assert admitted.is_low_priority is True
    assert {is_low for _, _, is_low in admitter.calls} == {True}


def test_full_queue_rejects_a_best_effort_request_that_would_fit():
    admitter = Admitter(full={Stage.PREFILL})

    with pytest.raises(AdmissionRejectedError, match="queue for this request is full") as rejected:
        admitter.admit(text(admission="best_effort"))

    assert rejected.value.retry_after_ms == 100.0


def test_fcfs_policy_admits_whatever_the_forecast_and_the_queue():
    config = SchedulerConfig(policy="fcfs", sand_ttft_ms=100.0)
    admitter = Admitter(config, work_ahead={Stage.PREFILL: 600.0}, full={Stage.PREFILL})

    admitted = admitter.admit(text(slo_tpot_ms=1.0))

    assert admitted.decision == AdmissionDecision(Admission.ADMIT, 329.0, 3.0, "")
    assert admitted.is_low_priority is False


def test_latency_the_stages_do_not_explain_is_learned_per_class_and_added_with_a_margin():
    admitter = Admitter()
    residuals = admitter.control.forecaster.costs.residuals
    # Two finished sand requests took 100 ms and 60 ms longer to their first token than the
    # model predicted, and their tokens came 10 ms slower: EWMA with alpha 0.25.
    residuals.observe_ttft("sand", 59.0, 159.0)
    residuals.observe_ttft("sand", 59.0, 119.0)
    residuals.observe_tpot("sand", 3.0, 13.0)

    admitted = admitter.admit(text())

    assert residuals.ttft_ms["sand"] == 0.75 * 100.0 + 0.25 * 60.0  # 90
    # The deviation starts at half the first error, then folds in |60 - 100|.
    assert residuals.ttft_dev_ms["sand"] == 0.75 * 50.0 + 0.25 * 40.0  # 47.5
    assert admitted.model_ttft_ms == 5.0 + 24.0
    # The mean error plus admission_margin_deviations (1 by default) deviations.
    assert admitted.decision.predicted_ttft_ms == 5.0 + 24.0 + 90.0 + 47.5
    assert admitted.decision.predicted_tpot_ms == 3.0 + 10.0 + 5.0
    assert "pebble" not in residuals.ttft_ms  # other classes keep their own


def test_a_forecast_that_fits_only_without_the_margin_is_rejected():
    def admitter(num_deviations: float) -> Admitter:
        config = SchedulerConfig(sand_ttft_ms=150.0, admission_margin_deviations=num_deviations)
        admitter = Admitter(config)
        # One sand request came 100 ms late: mean error 100, deviation 50.
        admitter.control.forecaster.costs.residuals.observe_ttft("sand", 59.0, 159.0)
        return admitter

    assert admitter(0.0).admit(text()).decision.action is Admission.ADMIT  # 29 + 100 <= 150
    with pytest.raises(AdmissionRejectedError, match="predicted TTFT 229 ms > target 150"):
        admitter(2.0).admit(text())  # 29 + 100 + 2 * 50


def test_a_model_that_overestimates_never_predicts_below_its_own_stages():
    admitter = Admitter()
    residuals = admitter.control.forecaster.costs.residuals
    residuals.observe_ttft("sand", 500.0, 100.0)
    residuals.observe_tpot("sand", 50.0, 5.0)

    admitted = admitter.admit(text())

    assert admitted.decision.predicted_ttft_ms == admitted.model_ttft_ms == 5.0 + 24.0
