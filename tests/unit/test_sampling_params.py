"""SamplingParams: what a caller may send, and the error it gets for anything else."""

from __future__ import annotations

import pytest

from workers.contract.errors import InvalidRequestError, InvalidSamplingParamsError
from workers.contract.sampling_params import MAX_SEED, SamplingParams


def test_defaults_are_greedy_sixteen_tokens():
    params = SamplingParams()

    assert params.max_tokens == 16
    assert params.is_greedy
    assert (params.top_k, params.top_p, params.seed) == (0, 1.0, None)
    assert (params.stop_token_ids, params.stop, params.ignore_eos) == ((), (), False)


def test_lists_from_json_are_stored_as_tuples_so_params_stay_hashable():
    params = SamplingParams(stop_token_ids=[3, 4], stop=["END", "\n\n"])

    assert params.stop_token_ids == (3, 4)
    assert params.stop == ("END", "\n\n")
    assert hash(params) == hash(SamplingParams(stop_token_ids=(3, 4), stop=("END", "\n\n")))


def test_a_lone_stop_string_is_one_stop_string():
    assert SamplingParams(stop="END").stop == ("END",)


def test_boundary_values_are_accepted():
    params = SamplingParams(
        max_tokens=1, temperature=100, top_k=-1, top_p=1e-9, seed=MAX_SEED, stop_token_ids=[0]
    )

    assert not params.is_greedy
    assert params.seed == MAX_SEED


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", 0, "max_tokens must be >= 1, got 0"),
        ("max_tokens", -3, "max_tokens must be >= 1, got -3"),
        ("max_tokens", 2.0, "max_tokens must be >= 1, got 2.0"),
        ("max_tokens", None, "max_tokens must be >= 1, got None"),
        ("max_tokens", True, "max_tokens must be >= 1, got True"),
        ("temperature", -0.1, "temperature must be in [0, 100], got -0.1"),
        ("temperature", 100.5, "temperature must be in [0, 100], got 100.5"),
        ("temperature", float("nan"), "temperature must be in [0, 100], got nan"),
        ("temperature", float("inf"), "temperature must be in [0, 100], got inf"),
        ("temperature", "0.7", "temperature must be in [0, 100], got '0.7'"),
        ("top_k", 1.5, "top_k must be an integer, got 1.5"),
        ("top_k", "5", "top_k must be an integer, got '5'"),
        ("top_p", 0.0, "top_p must be in (0, 1], got 0.0"),
        ("top_p", 1.01, "top_p must be in (0, 1], got 1.01"),
        ("top_p", float("nan"), "top_p must be in (0, 1], got nan"),
        ("top_p", None, "top_p must be in (0, 1], got None"),
        ("seed", -1, "seed must be an integer in [0, 2^63), got -1"),
        ("seed", MAX_SEED + 1, f"seed must be an integer in [0, 2^63), got {MAX_SEED + 1}"),
        ("seed", 1.0, "seed must be an integer in [0, 2^63), got 1.0"),
        ("seed", True, "seed must be an integer in [0, 2^63), got True"),
        ("stop_token_ids", [1, -2], "stop_token_ids must be non-negative integers"),
        ("stop_token_ids", [1.0], "stop_token_ids must be non-negative integers"),
        ("stop_token_ids", [False], "stop_token_ids must be non-negative integers"),
        ("stop_token_ids", "7", "stop_token_ids must be non-negative integers"),
        ("stop_token_ids", 7, "stop_token_ids must be a list, got 7"),
        ("stop", ["END", ""], "stop strings must be non-empty strings"),
        ("stop", [3], "stop strings must be non-empty strings"),
        ("stop", "", "stop strings must be non-empty strings"),
        ("stop", None, "stop must be a list, got None"),
    ],
)
def test_invalid_value_is_refused_with_a_sampling_params_error(field, value, message):
    with pytest.raises(InvalidSamplingParamsError) as error:
        SamplingParams(**{field: value})

    assert str(error.value) == message
    assert isinstance(error.value, InvalidRequestError)


def test_with_seed_keeps_a_given_seed():
    params = SamplingParams(seed=7)

    assert params.with_seed() is params


def test_with_seed_draws_a_valid_seed_and_keeps_the_other_fields():
    params = SamplingParams(max_tokens=5, temperature=0.8, stop=["x"])
    seeded = params.with_seed()

    assert seeded.seed is not None
    assert 0 <= seeded.seed <= MAX_SEED
    assert (seeded.max_tokens, seeded.temperature, seeded.stop) == (5, 0.8, ("x",))
    assert params.seed is None
