import math

import pytest

from agent.budget import KIND_MODEL, KIND_TOOL, Charge, LatencyBudget


def test_remaining_is_the_total_less_wall_clock_time():
    budget = LatencyBudget(total_ms=2000.0, started_s=100.0)
    assert budget.is_bounded
    assert budget.elapsed_ms(100.5) == 500.0
    assert budget.remaining_ms(100.5) == 1500.0
    assert budget.remaining_ms(103.0) == 0.0  # never below zero
    assert budget.elapsed_ms(103.0) == 3000.0


def test_unbounded_budget_never_runs_out():
    budget = LatencyBudget(total_ms=None, started_s=0.0)
    assert not budget.is_bounded
    assert budget.remaining_ms(1e9) == math.inf


def test_charges_are_recorded_then_settled_in_the_ledger():
    budget = LatencyBudget(total_ms=5000.0, started_s=0.0)
    step = budget.charge(KIND_MODEL, "qwen-7b", forecast_ms=300.0, now_s=0.0)
    call = budget.charge(KIND_TOOL, "demo.search", forecast_ms=800.0, now_s=0.3)
    settled = budget.settle(call, actual_ms=1000.0)
    assert settled.forecast_error_ms == 200.0
    assert budget.charges == [
        step,
        Charge(
            index=1,
            kind="tool",
            name="demo.search",
            forecast_ms=800.0,
            started_s=0.3,
            actual_ms=1000.0,
        ),
    ]
    assert not budget.charges[0].is_settled
    assert (budget.num_model_steps, budget.num_tool_calls) == (1, 1)


def test_a_charge_cannot_be_settled_twice():
    budget = LatencyBudget(total_ms=5000.0, started_s=0.0)
    call = budget.charge(KIND_TOOL, "demo.search", forecast_ms=800.0, now_s=0.0)
    budget.settle(call, actual_ms=700.0)
    with pytest.raises(ValueError):
        budget.settle(call, actual_ms=700.0)


def test_a_charge_of_another_budget_or_an_unknown_kind_is_refused():
    budget = LatencyBudget(total_ms=5000.0, started_s=0.0)
    other = LatencyBudget(total_ms=5000.0, started_s=0.0)
    foreign = other.charge(KIND_TOOL, "demo.search", forecast_ms=800.0, now_s=0.0)
    with pytest.raises(ValueError):
        budget.settle(foreign, actual_ms=700.0)
    with pytest.raises(ValueError):
        budget.charge("sleep", "x", forecast_ms=1.0, now_s=0.0)


def test_cost_budget_is_exhausted_once_spent():
    budget = LatencyBudget(total_ms=None, started_s=0.0, cost_budget_s=2.0)
    budget.spend_cost(1.5)
    assert not budget.is_cost_exhausted
    budget.spend_cost(0.5)
    assert budget.is_cost_exhausted
    assert budget.cost_spent_s == 2.0


def test_without_a_cost_budget_cost_is_only_counted():
    budget = LatencyBudget(total_ms=1000.0, started_s=0.0)
    budget.spend_cost(100.0)
    assert not budget.is_cost_exhausted
    assert budget.cost_spent_s == 100.0
