"""Admission recovers by itself after a burst: what the cost model learned fades when nothing
refreshes it, and an idle cluster admits whatever the forecast says.

The lock-out these guard against: a 3x overload taught the per-class residuals and the stage
corrections errors so large that every forecast passed its target; since both learn only from
admitted requests, nothing was admitted again and nothing corrected them.
"""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.admission import AdmissionControl
from scheduler.cache_directory import CacheDirectory
from scheduler.config import SchedulerConfig
from scheduler.cost_model import CostModel, LatencyResiduals, WorkerCosts, fade
from scheduler.errors import AdmissionRejectedError
from scheduler.forecast import Forecaster
from scheduler.request import RequestSpec
from scheduler.request_class import RequestClass
from scheduler.stage import Stage
from scheduler.trace_events import EventName
from tests.scheduler.harness import cluster, run, spec, wait_until
from workers.contract.errors import InvalidRequestError

HALF_LIFE_MS = 10_000.0


class Clock:
    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def ms(self) -> float:
        return self.now_s * 1000.0


def at(request: RequestSpec, clock: Clock) -> RequestSpec:
    return dataclasses.replace(request, arrival_time=clock.now_s)


def test_fade_halves_the_distance_to_neutral_each_half_life():
    assert fade(9.0, 1.0, 0.0, 10.0) == 9.0
    assert fade(9.0, 1.0, 10.0, 10.0) == 5.0
    assert fade(9.0, 1.0, 20.0, 10.0) == 3.0
    assert fade(-40.0, 0.0, 10.0, 10.0) == -20.0


def test_a_residual_fades_toward_zero_and_learning_starts_from_the_faded_value():
    clock = Clock()
    residuals = LatencyResiduals(alpha=0.5, clock_ms=clock.ms, half_life_ms=HALF_LIFE_MS)
    residuals.observe_ttft("sand", predicted_ms=100.0, measured_ms=2_100.0)  # +2000, dev 1000
    assert residuals.ttft_margin_ms("sand", 1.0) == 3_000.0

    clock.now_s += 10.0  # one half-life with no admitted sand request
    assert residuals.ttft_margin_ms("sand", 1.0) == 1_500.0
    clock.now_s += 20.0
    assert residuals.ttft_margin_ms("sand", 1.0) == 375.0

    # The next observation folds into the faded error (250 / 125), not the stale 2000 / 1000.
    residuals.observe_ttft("sand", predicted_ms=100.0, measured_ms=150.0)  # +50
    assert residuals.ttft_ms["sand"] == 0.5 * 250.0 + 0.5 * 50.0
    assert residuals.ttft_dev_ms["sand"] == 0.5 * 125.0 + 0.5 * 200.0
    assert residuals.ttft_margin_ms("pebble", 1.0) == 0.0  # never seen


def test_a_stage_correction_fades_back_to_the_profile():
    clock = Clock()
    costs = WorkerCosts(None, alpha=1.0, clock_ms=clock.ms, half_life_ms=HALF_LIFE_MS)
    unit = costs.prefill_ms(100)
    costs.observe(Stage.PREFILL, predicted_ms=10.0, observed_ms=40.0)  # x4 (the clamp)
    assert costs.prefill_ms(100) == pytest.approx(4.0 * unit)

    clock.now_s += 10.0
    assert costs.correction(Stage.PREFILL) == pytest.approx(2.5)
    assert costs.snapshot().corrections["prefill"] == pytest.approx(2.5)
    assert costs.correction(Stage.DECODE) == 1.0


def test_an_idle_cluster_admits_a_request_whose_forecast_misses_its_target():
    async def body():
        async with cluster(epd="EPD") as c:
            residuals = c.scheduler.costs.residuals
            # A burst left the sand residual far past the 1000 ms target.
            residuals.observe_ttft("sand", predicted_ms=50.0, measured_ms=5_000.0)

            outputs = await c.scheduler.generate(spec("r1"))
            trace = c.scheduler.trace("r1")
            classified = trace.event(EventName.CLASSIFIED)
            assert classified.attrs["admission"] == "admit"
            assert classified.attrs["predicted_ttft_ms"] > 1_000.0
            async for _ in outputs:
                pass
            assert trace.state == "finished"

    run(body)


def test_a_busy_cluster_still_refuses_what_would_miss():
    async def body():
        async with cluster(epd="EPD") as c:
            c.scheduler.costs.residuals.observe_ttft("sand", predicted_ms=50.0, measured_ms=5e3)
            c["epd"].is_paused = True  # r1 holds the worker: not idle
            await c.scheduler.generate(spec("r1"))
            with pytest.raises(AdmissionRejectedError, match=r"\(sand\) rejected: predicted TTFT"):
                await c.scheduler.generate(spec("r2"))

    run(body)


def test_a_class_locked_out_by_a_burst_is_admitted_again_under_load_once_its_error_fades():
    async def body():
        clock = Clock()
        config = SchedulerConfig(residual_half_life_s=10.0)
        async with cluster(config=config, clock=clock, epd="EPD") as c:
            c.scheduler.costs.residuals.observe_ttft("sand", predicted_ms=50.0, measured_ms=5e3)
            c["epd"].is_paused = True
            await c.scheduler.generate(at(spec("busy"), clock))
            with pytest.raises(AdmissionRejectedError):
                await c.scheduler.generate(at(spec("r1"), clock))

            clock.now_s += 60.0  # six half-lives: 7425 ms of margin is now 116
            await c.scheduler.generate(at(spec("r2"), clock))
            classified = c.scheduler.trace("r2").event(EventName.CLASSIFIED)
            assert classified.attrs["admission"] == "admit"
            assert classified.attrs["predicted_ttft_ms"] < 1_000.0
            c["epd"].is_paused = False
            await wait_until(lambda: c.scheduler.trace("r2").state == "finished", "r2 finishes")

    run(body)


@pytest.mark.parametrize("value", [-5.0, 0.0, float("nan"), float("inf")])
def test_an_slo_target_no_request_can_have_is_invalid_not_a_rejection(value):
    with pytest.raises(InvalidRequestError, match="slo_ttft_ms must be a finite number > 0"):
        dataclasses.replace(spec("r1"), slo_ttft_ms=value)


def test_an_idle_cluster_still_refuses_a_target_no_profile_can_meet():
    async def body():
        async with cluster(epd="EPD") as c:
            impossible = dataclasses.replace(spec("r1"), slo_ttft_ms=0.001)
            with pytest.raises(AdmissionRejectedError, match="predicted TTFT"):
                await c.scheduler.generate(impossible)

    run(body)


def test_the_margin_widens_while_a_class_misses_its_ttft_goal_and_narrows_as_that_fades():
    clock = Clock()
    config = SchedulerConfig(admission_attainment_goal=0.9, residual_half_life_s=10.0)
    costs = CostModel(0.5, clock.ms, residual_half_life_ms=10_000.0)
    control = AdmissionControl(config, Forecaster(costs, CacheDirectory(), None), None, None)
    assert control.margin_deviations(RequestClass.SAND) == 1.0  # nothing seen: attains
    costs.attainment.observe("sand", attained=False)  # EWMA 0.5: 0.4 short of the goal
    assert control.margin_deviations(RequestClass.SAND) == pytest.approx(1.0 + 0.4 / 0.1)
    assert control.margin_deviations(RequestClass.PEBBLE) == 1.0  # each class its own
    clock.now_s += 10.0  # one half-life: 0.75
    assert control.margin_deviations(RequestClass.SAND) == pytest.approx(1.0 + 0.15 / 0.1)
    costs.attainment.observe("sand", attained=True)
    costs.attainment.observe("sand", attained=True)  # 0.9375: above the goal
    assert control.margin_deviations(RequestClass.SAND) == 1.0
