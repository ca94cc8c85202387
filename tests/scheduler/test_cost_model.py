"""The cost model: profiled fits times online corrections, and learned transfer costs."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.cost_model import CostModel, TransferCosts, WorkerCosts, WorkerCostSnapshot
from scheduler.stage import Stage
from workers.contract.cost_profile import DecodeCost, LinearCost, StepBudgets, WorkerProfile

# Powers of two for alpha keep every EWMA step exact in floating point.
ALPHA = 0.25


def profile(max_num_batched_tokens=64, max_encode_images=2):
    return WorkerProfile(
        encode=LinearCost(base_ms=10.0, per_unit_ms=1.0),
        prefill=LinearCost(base_ms=5.0, per_unit_ms=0.5),
        decode=DecodeCost(base_ms=3.0, per_seq_ms=2.0, per_context_token_ms=0.25),
        budgets=StepBudgets(max_num_batched_tokens, max_encode_images),
        tpot_target_ms=200.0,
        image_tokens_per_image=8,
        image_token_id=99,
        block_size=16,
    )


def test_profiled_worker_predicts_its_fits():
    costs = WorkerCosts(profile(), ALPHA)

    assert costs.encode_ms(16) == 26.0
    assert costs.prefill_ms(40) == 25.0
    assert costs.decode_step_ms(batch=4, context_tokens=100) == 36.0


def test_nothing_to_compute_costs_nothing():
    costs = WorkerCosts(profile(), ALPHA)

    assert costs.encode_ms(0) == 0.0
    assert costs.prefill_ms(0) == 0.0
    assert costs.decode_step_ms(batch=0, context_tokens=0) == 0.0


def test_prefill_longer_than_the_token_budget_pays_the_step_base_once_per_chunk():
    costs = WorkerCosts(profile(max_num_batched_tokens=64), ALPHA)

    assert costs.prefill_ms(64) == 5.0 + 32.0
    assert costs.prefill_ms(65) == 2 * 5.0 + 32.5
    assert costs.prefill_ms(150) == 3 * 5.0 + 75.0


def test_worker_without_a_profile_starts_from_the_priors_in_one_chunk():
    costs = WorkerCosts(None, ALPHA)

    assert costs.encode_ms(10) == 2.0 + 0.2 * 10
    assert costs.prefill_ms(5_000) == 2.0 + 0.1 * 5_000
    assert costs.decode_step_ms(batch=3, context_tokens=500) == 3.5


def test_prediction_is_the_fit_times_the_stage_correction():
    costs = WorkerCosts(profile(), ALPHA)
    costs.corrections[Stage.PREFILL] = 1.5

    assert costs.prefill_ms(40) == 25.0 * 1.5
    assert costs.encode_ms(16) == 26.0


def test_slower_than_predicted_job_raises_the_correction_by_the_ewma():
    costs = WorkerCosts(profile(), ALPHA)

    costs.observe(Stage.PREFILL, predicted_ms=25.0, observed_ms=50.0)

    assert costs.corrections[Stage.PREFILL] == 0.75 * 1.0 + 0.25 * 2.0
    assert costs.prefill_ms(40) == 25.0 * 1.25
    assert costs.num_observations[Stage.PREFILL] == 1
    assert costs.corrections[Stage.ENCODE] == 1.0


def test_correction_converges_on_a_steady_slowdown():
    costs = WorkerCosts(profile(), ALPHA)

    costs.observe(Stage.ENCODE, predicted_ms=26.0, observed_ms=52.0)
    assert costs.corrections[Stage.ENCODE] == 1.25
    costs.observe(Stage.ENCODE, predicted_ms=costs.encode_ms(16), observed_ms=52.0)
    # the new sample is 1.25 * 52 / 32.5 = 2.0: correction <- 0.75 * 1.25 + 0.25 * 2.0
    assert costs.corrections[Stage.ENCODE] == 1.4375
    assert costs.num_observations[Stage.ENCODE] == 2


def test_one_wild_observation_moves_the_correction_by_at_most_the_max_step():
    slow = WorkerCosts(profile(), ALPHA)
    fast = WorkerCosts(profile(), ALPHA)

    slow.observe(Stage.DECODE, predicted_ms=10.0, observed_ms=10_000.0)
    fast.observe(Stage.DECODE, predicted_ms=10.0, observed_ms=0.001)

    assert slow.corrections[Stage.DECODE] == 0.75 + 0.25 * 4.0
    assert fast.corrections[Stage.DECODE] == 0.75 + 0.25 * 0.25


def test_observation_without_a_positive_prediction_or_time_is_ignored():
    costs = WorkerCosts(profile(), ALPHA)

    costs.observe(Stage.PREFILL, predicted_ms=0.0, observed_ms=40.0)
    costs.observe(Stage.PREFILL, predicted_ms=40.0, observed_ms=0.0)

    assert costs.corrections[Stage.PREFILL] == 1.0
    assert costs.num_observations[Stage.PREFILL] == 0


def test_worker_without_a_profile_is_corrected_by_the_same_rule():
    costs = WorkerCosts(None, ALPHA)

    costs.observe(Stage.PREFILL, predicted_ms=costs.prefill_ms(100), observed_ms=36.0)

    assert costs.corrections[Stage.PREFILL] == 0.75 + 0.25 * 3.0
    assert costs.prefill_ms(100) == 12.0 * 1.5


def test_snapshot_shows_fits_corrections_and_budgets():
    model = CostModel(ALPHA)
    model.add_worker("profiled", profile(max_num_batched_tokens=256, max_encode_images=3))
    model.add_worker("bare", None)
    model["profiled"].observe(Stage.ENCODE, predicted_ms=10.0, observed_ms=20.0)

    snapshot = model.snapshot()

    assert snapshot["profiled"] == WorkerCostSnapshot(
        LinearCost(10.0, 1.0), LinearCost(5.0, 0.5), DecodeCost(3.0, 2.0, 0.25),
        {"encode": 1.25, "prefill": 1.0, "decode": 1.0},
        {"encode": 1, "prefill": 0, "decode": 0},
        256, 3,
    )  # fmt: skip
    assert snapshot["bare"].max_num_batched_tokens is None
    assert snapshot["bare"].max_encode_images is None
    assert snapshot["bare"].prefill == LinearCost(2.0, 0.1)


def test_removed_worker_is_forgotten():
    model = CostModel(ALPHA)
    model.add_worker("w", profile())

    model.remove_worker("w")
    model.remove_worker("w")

    assert model.get("w") is None
    assert model.snapshot() == {}


def test_transfers_cost_nothing_until_observed():
    transfers = TransferCosts(ALPHA)

    assert transfers.embedding_ms(1_000) == 0.0
    assert transfers.kv_ms(1_000) == 0.0


def test_embedding_transfer_learns_bytes_per_row_and_bandwidth():
    transfers = TransferCosts(ALPHA)

    transfers.observe("embedding", nbytes=4_096, num_units=16, fetch_ms=2.0)

    assert transfers.bytes_per_embedding_row == 256.0
    assert transfers.bytes_per_ms == 2_048.0
    assert transfers.embedding_ms(32) == 4.0
    assert transfers.kv_ms(32) == 0.0


def test_kv_transfer_uses_the_bandwidth_learned_from_any_transfer():
    transfers = TransferCosts(ALPHA)
    transfers.observe("embedding", nbytes=4_096, num_units=16, fetch_ms=2.0)

    transfers.observe("kv", nbytes=10_240, num_units=10, fetch_ms=0.0)

    assert transfers.bytes_per_kv_token == 1_024.0
    assert transfers.bytes_per_ms == 2_048.0
    assert transfers.kv_ms(8) == 4.0


def test_later_transfers_are_folded_in_by_the_ewma():
    transfers = TransferCosts(ALPHA)
    transfers.observe("embedding", nbytes=4_096, num_units=16, fetch_ms=2.0)

    transfers.observe("embedding", nbytes=8_192, num_units=16, fetch_ms=2.0)

    assert transfers.bytes_per_embedding_row == 0.75 * 256 + 0.25 * 512
    assert transfers.bytes_per_ms == 0.75 * 2_048 + 0.25 * 4_096
    assert transfers.embedding_ms(10) == 320.0 * 10 / 2_560.0


def test_empty_transfer_teaches_nothing():
    transfers = TransferCosts(ALPHA)

    transfers.observe("kv", nbytes=0, num_units=10, fetch_ms=5.0)
    transfers.observe("kv", nbytes=1_000, num_units=0, fetch_ms=0.0)

    assert transfers.bytes_per_kv_token is None
    assert transfers.bytes_per_ms is None
    assert transfers.kv_ms(10) == 0.0


def test_encode_costs_the_pixels_of_the_images_as_sent_beyond_their_tokens():
    costs = WorkerCosts(dataclasses.replace(profile(), encode_ms_per_megapixel=150.0), ALPHA)
    photo = costs.encode_ms(16, num_pixels=320 * 240)
    page = costs.encode_ms(16, num_pixels=2400 * 1200)
    assert page - photo == pytest.approx(150.0 * (2400 * 1200 - 320 * 240) / 1e6)
    assert costs.encode_ms(0, num_pixels=10**6) == 0.0
