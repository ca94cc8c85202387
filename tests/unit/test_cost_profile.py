"""The cost model's fits and the step budgets derived from them. Values are chosen so that the
arithmetic is exact in binary floating point."""

from __future__ import annotations

import pytest

from workers.contract.cost_profile import DecodeCost, LinearCost, StepBudgets, derive_budgets


def test_linear_fit_recovers_collinear_points_exactly():
    assert LinearCost.fit([(0, 1.5), (4, 3.5), (8, 5.5)]) == LinearCost(
        base_ms=1.5, per_unit_ms=0.5
    )


def test_decode_fit_recovers_a_plane_of_batch_and_context_exactly():
    truth = DecodeCost(base_ms=2.0, per_seq_ms=1.0, per_context_token_ms=0.25)
    points = [(b, c, truth.predict(b, c)) for b, c in [(1, 4), (2, 8), (4, 4), (1, 16)]]
    assert DecodeCost.fit(points) == truth


def test_a_negative_slope_is_clamped_to_zero_and_the_base_refit():
    # Faster with more units (noise): a flat cost at the mean.
    assert LinearCost.fit([(0, 5.0), (10, 3.0)]) == LinearCost(base_ms=4.0, per_unit_ms=0.0)


def test_a_negative_base_is_clamped_to_zero_and_the_slope_refit_through_the_origin():
    # Unclamped: -1 + 0.2 * units. Through the origin: (10*1 + 20*3) / (10^2 + 20^2).
    assert LinearCost.fit([(10, 1.0), (20, 3.0)]) == LinearCost(base_ms=0.0, per_unit_ms=0.14)


def test_fitting_no_points_is_an_error():
    with pytest.raises(ValueError, match="no points"):
        LinearCost.fit([])


PREFILL = LinearCost(base_ms=2.0, per_unit_ms=0.25)
ENCODE = LinearCost(base_ms=10.0, per_unit_ms=0.125)
DECODE = DecodeCost(base_ms=10.0, per_seq_ms=1.0, per_context_token_ms=1 / 256)


def budgets(tpot_target_ms: float) -> StepBudgets:
    return derive_budgets(
        PREFILL, DECODE, ENCODE, tpot_target_ms, image_tokens_per_image=16, reference_batch=8,
        reference_context=256, token_ceiling=512, token_floor=16, image_ceiling=64,
    )  # fmt: skip


def test_a_tpot_the_decode_step_alone_misses_leaves_the_floor_and_one_image():
    assert budgets(1.0) == StepBudgets(max_num_batched_tokens=16, max_encode_images=1)


def test_a_loose_tpot_gives_the_ceilings():
    assert budgets(1e6) == StepBudgets(max_num_batched_tokens=512, max_encode_images=64)


def test_an_encoder_fitted_as_free_gets_the_image_ceiling():
    free = LinearCost(base_ms=0.0, per_unit_ms=0.0)
    # The reference decode step (26 ms) leaves 74 of 100 ms: any number of free images fits.
    assert derive_budgets(None, DECODE, free, 100.0, 16, 8, 256, 512, 16, 64) == StepBudgets(
        max_num_batched_tokens=512, max_encode_images=64
    )


def test_budgets_fill_what_the_reference_decode_step_leaves_of_the_tpot():
    # decode: 10 + 1 * 8 + (8 * 256) / 256 = 26 ms, so 100 ms leaves 74 ms:
    # prefill (74 - 2) / 0.25 = 288 tokens; encode (74 - 10) / 0.125 = 512 image tokens = 32
    # images of 16 tokens.
    assert budgets(100.0) == StepBudgets(max_num_batched_tokens=288, max_encode_images=32)


def test_a_worker_that_does_not_decode_has_no_tpot_to_protect_and_keeps_the_ceilings():
    only_encode = derive_budgets(None, None, ENCODE, 42.0, 16, 8, 256, 512, 16, 64)
    encode_and_prefill = derive_budgets(PREFILL, None, ENCODE, 42.0, 16, 8, 256, 512, 16, 64)

    assert (
        only_encode
        == encode_and_prefill
        == StepBudgets(max_num_batched_tokens=512, max_encode_images=64)
    )
