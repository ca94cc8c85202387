"""First-token forecasts: encode, then prefill, then one decode step, over the given workers."""

from __future__ import annotations

import pytest

from scheduler.cache_directory import CacheDirectory
from scheduler.cost_model import CostModel
from scheduler.forecast import (
    FirstTokenForecast,
    Forecaster,
    RequestShape,
    StageForecast,
    WorkerLoadView,
)
from scheduler.request_class import RequestCost
from scheduler.stage import Stage
from workers.contract.cost_profile import DecodeCost, LinearCost, StepBudgets, WorkerProfile

PROFILE = WorkerProfile(
    encode=LinearCost(base_ms=10.0, per_unit_ms=1.0),
    prefill=LinearCost(base_ms=4.0, per_unit_ms=0.5),
    decode=DecodeCost(base_ms=2.0, per_seq_ms=1.0, per_context_token_ms=0.25),
    budgets=StepBudgets(max_num_batched_tokens=1024, max_encode_images=4),
    tpot_target_ms=200.0,
    image_tokens_per_image=8,
    image_token_id=99,
    block_size=16,
)
# Two images of 8 embedding rows in a 40-token prompt: encode 10 + 16 = 26 ms, prefill
# 4 + 20 = 24 ms on an idle worker.
IMAGE_SHAPE = RequestShape(RequestCost(2, 16, 40, 0), ("cat", "dog"), (8, 8), (), 16)
TEXT_SHAPE = RequestShape(RequestCost(0, 0, 40, 0), (), (), (), 16)


def forecaster(loads):
    costs = CostModel(alpha=0.25)
    for load in loads:
        costs.add_worker(load.worker_id, PROFILE)
    by_id = {load.worker_id: load for load in loads}
    return Forecaster(costs, CacheDirectory(), lambda worker_id, _: by_id[worker_id])


def idle(worker_id, backlog_ms=0.0):
    return WorkerLoadView(worker_id, backlog_ms, num_decoding=0, decode_context_tokens=0)


def test_first_token_forecast_breaks_down_into_encode_prefill_and_decode():
    loads = [
        idle("e1"),
        idle("e2", backlog_ms=20.0),
        idle("p1"),
        idle("p2", backlog_ms=50.0),
        WorkerLoadView("d1", 0.0, num_decoding=3, decode_context_tokens=100),
    ]
    f = forecaster(loads)
    # embeddings: 100 bytes per row at 100 bytes per ms (1 ms per row); KV: 200 bytes per token
    f.costs.transfers.observe("embedding", nbytes=1_600, num_units=16, fetch_ms=16.0)
    f.costs.transfers.observe("kv", nbytes=2_000, num_units=10, fetch_ms=20.0)

    forecast = f.first_token(IMAGE_SHAPE, ["e1", "e2"], ["p1", "p2"], ["d1"], {})

    encode = StageForecast(Stage.ENCODE, "e1", 26.0, 26.0, 0.0, 0)
    # embeddings arrive at 26 + 16; p2 is free only at 50
    prefill = StageForecast(Stage.PREFILL, "p1", 26.0 + 16.0 + 24.0, 24.0, 16.0, 0)
    # KV of 40 tokens: 80 ms; the step joins a batch of 4 with 100 + 40 context tokens
    decode = StageForecast(Stage.DECODE, "d1", 80.0 + 41.0, 41.0, 80.0, 0)
    assert forecast == FirstTokenForecast(66.0, 121.0, (encode, prefill, decode))


def test_queued_work_ahead_is_spread_over_the_stages_workers():
    f = forecaster([idle("p1"), idle("p2"), idle("d1")])

    forecast = f.first_token(TEXT_SHAPE, [], ["p1", "p2"], ["d1"], {Stage.PREFILL: 60.0})

    assert forecast.stages[0] == StageForecast(Stage.PREFILL, "p1", 30.0 + 24.0, 24.0, 0.0, 0)
    assert forecast.ttft_ms == 54.0


def test_work_ahead_and_backlog_overlap_rather_than_add():
    f = forecaster([idle("p1", backlog_ms=40.0), idle("d1")])

    forecast = f.first_token(TEXT_SHAPE, [], ["p1"], ["d1"], {Stage.PREFILL: 30.0})

    assert forecast.ttft_ms == 40.0 + 24.0


def test_encode_work_ahead_delays_the_whole_first_token():
    f = forecaster([idle("e1"), idle("e2"), idle("p1"), idle("d1")])

    forecast = f.first_token(
        IMAGE_SHAPE, ["e1", "e2"], ["p1"], ["d1"], {Stage.ENCODE: 100.0, Stage.PREFILL: 0.0}
    )

    assert [s.completion_ms for s in forecast.stages[:2]] == [50.0 + 26.0, 76.0 + 24.0]
    assert forecast.ttft_ms == 100.0


def test_text_request_needs_no_encoder():
    f = forecaster([idle("p1"), idle("d1")])

    forecast = f.first_token(TEXT_SHAPE, [], ["p1"], ["d1"], {})

    assert [s.stage for s in forecast.stages] == [Stage.PREFILL, Stage.DECODE]
    assert forecast.ttft_ms == 24.0
    assert forecast.first_gap_ms == 2.0 + 1.0 + 0.25 * 40


@pytest.mark.parametrize(
    ("shape", "encoders", "prefillers", "decoders"),
    [
        (IMAGE_SHAPE, [], ["p1"], ["d1"]),
        (TEXT_SHAPE, ["e1"], [], ["d1"]),
        (TEXT_SHAPE, ["e1"], ["p1"], []),
    ],
)
def test_no_forecast_when_a_needed_stage_has_no_worker(shape, encoders, prefillers, decoders):
    f = forecaster([idle("e1"), idle("p1"), idle("d1")])

    assert f.first_token(shape, encoders, prefillers, decoders, {}) is None


def test_prefill_on_another_worker_waits_for_the_prefill_work_queued_ahead():
    f = forecaster([idle("e1"), idle("p1"), idle("d1")])

    forecast = f.first_token(IMAGE_SHAPE, ["e1"], ["p1"], ["d1"], {Stage.PREFILL: 1_000.0})

    assert forecast.ttft_ms == 1_000.0 + 24.0


def test_prefill_on_the_encode_worker_waits_for_the_prefill_work_queued_ahead():
    f = forecaster([idle("epd"), idle("d1")])

    forecast = f.first_token(IMAGE_SHAPE, ["epd"], ["epd"], ["d1"], {Stage.PREFILL: 1_000.0})

    assert forecast.ttft_ms >= 1_000.0 + 24.0
