"""Pin or drop a session call's KV (scheduler/pause_policy.py), decided from given costs."""

from __future__ import annotations

from dataclasses import replace

from scheduler.pause_policy import PauseCosts, PauseSettings, pause_plan
from workers.contract.messages import PausePlan

SETTINGS = PauseSettings(scarce_fraction=0.75, ttl_factor=3.0, max_ttl_s=300.0)
# 10 blocks, 2 s to re-prefill, back in 5 s, on a worker of 100 blocks.
PLENTY = PauseCosts(
    own_blocks=10, recompute_ms=2000.0, expected_pause_s=5.0,
    num_blocks=100, num_used_blocks=20, num_pinned_blocks=0,
)  # fmt: skip


def test_plentiful_memory_pins_for_the_longest_ttl():
    assert pause_plan(PLENTY, SETTINGS) == PausePlan(ttl_s=300.0, expected_pause_s=5.0)


def test_scarce_memory_pins_when_recompute_would_waste_more_for_three_expected_pauses():
    # held 80 > 75: pin = 10 x 5 = 50 block-s; drop = 2 s x (10 + 60 others) = 140 block-s
    scarce = replace(PLENTY, num_used_blocks=70, num_pinned_blocks=10)
    assert pause_plan(scarce, SETTINGS) == PausePlan(ttl_s=15.0, expected_pause_s=5.0)


def test_a_scarce_memory_ttl_is_bounded_both_ways():
    scarce = replace(PLENTY, num_used_blocks=70, num_pinned_blocks=10, recompute_ms=10**6)
    assert pause_plan(replace(scarce, expected_pause_s=1000.0), SETTINGS).ttl_s == 300.0
    assert pause_plan(replace(scarce, expected_pause_s=0.0), SETTINGS).ttl_s == 1.0


def test_scarce_memory_drops_when_the_pause_is_long_and_recompute_cheap():
    # pin = 10 x 60 = 600 block-s; drop = 0.5 s x 70 = 35 block-s
    scarce = replace(
        PLENTY, num_used_blocks=70, num_pinned_blocks=10, expected_pause_s=60.0,
        recompute_ms=500.0,
    )  # fmt: skip
    assert pause_plan(scarce, SETTINGS) is None


def test_nothing_to_keep_is_never_pinned():
    assert pause_plan(replace(PLENTY, own_blocks=0), SETTINGS) is None
    assert pause_plan(replace(PLENTY, num_blocks=0), SETTINGS) is None
