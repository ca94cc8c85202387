import math

import pytest

from agent.latency import DEFAULT_PRIOR_MS, LatencyDistribution, ToolLatencies
from agent.tools import Tier, ToolSettings, ToolSpec


def _spec(name: str = "lookup", **settings) -> ToolSpec:
    return ToolSpec(server_label="demo", name=name, settings=ToolSettings(**settings))


def test_with_no_samples_the_quantile_is_the_exponential_prior():
    distribution = LatencyDistribution(prior_ms=100.0)
    for q in (0.0, 0.1, 0.5, 0.9, 0.95, 0.99):
        assert distribution.quantile(q) == pytest.approx(-100.0 * math.log(1.0 - q), rel=1e-12)
    assert distribution.quantile(1.0) == math.inf


def test_with_no_samples_the_cdf_is_the_exponential_prior():
    distribution = LatencyDistribution(prior_ms=100.0)
    assert distribution.probability_within(-1.0) == 0.0
    assert distribution.probability_within(0.0) == 0.0
    assert distribution.probability_within(100.0) == pytest.approx(1.0 - math.exp(-1.0))
    assert distribution.probability_within(math.inf) == 1.0
    assert distribution.mean_ms == 100.0
    assert distribution.cov == 1.0
    assert distribution.num_samples == 0


def test_samples_count_as_observations_next_to_the_prior_weight():
    distribution = LatencyDistribution(prior_ms=100.0, prior_weight=4.0)
    for ms in (10.0, 20.0, 30.0, 40.0):
        distribution.observe(ms)
    assert distribution.num_samples == 4
    # 4 pseudo-observations of the prior, 2 real samples within 25 ms, out of 8.
    expected = (4.0 * (1.0 - math.exp(-0.25)) + 2.0) / 8.0
    assert distribution.probability_within(25.0) == pytest.approx(expected, rel=1e-12)
    # At a sample the step includes it.
    expected_at_sample = (4.0 * (1.0 - math.exp(-0.4)) + 4.0) / 8.0
    assert distribution.probability_within(40.0) == pytest.approx(expected_at_sample, rel=1e-12)


def test_quantile_inverts_the_blended_cdf_across_a_step():
    distribution = LatencyDistribution(prior_ms=100.0, prior_weight=1.0)
    for _ in range(3):
        distribution.observe(50.0)
    # Below the step only the prior counts: F(x) = (1 - exp(-x/100)) / 4.
    assert distribution.quantile(0.05) == pytest.approx(-100.0 * math.log(0.8), rel=1e-12)
    # The step at 50 ms carries F from 0.098 to 0.848: any q in between lands on it.
    assert distribution.quantile(0.5) == 50.0
    assert distribution.quantile(0.8) == 50.0
    # Above it the prior must supply 0.6 of its one observation.
    assert distribution.quantile(0.9) == pytest.approx(-100.0 * math.log(0.4), rel=1e-12)
    assert distribution.probability_within(distribution.quantile(0.9)) == pytest.approx(0.9)


def test_many_samples_outweigh_the_prior():
    distribution = LatencyDistribution(prior_ms=1000.0, prior_weight=4.0)
    for _ in range(200):
        distribution.observe(10.0)
    assert distribution.quantile(0.5) == 10.0
    assert distribution.quantile(0.98) == 10.0
    assert distribution.probability_within(10.0) == pytest.approx(
        (4.0 * (1.0 - math.exp(-0.01)) + 200.0) / 204.0
    )


def test_only_the_last_max_samples_are_kept():
    distribution = LatencyDistribution(prior_ms=100.0, prior_weight=1.0, max_samples=2)
    for ms in (10.0, 20.0, 30.0):
        distribution.observe(ms)
    assert distribution.num_samples == 2
    # 10 ms was forgotten: no sample is within 15 ms.
    assert distribution.probability_within(15.0) == pytest.approx(
        (1.0 - math.exp(-0.15)) / 3.0, rel=1e-12
    )
    assert distribution.mean_ms == pytest.approx((100.0 + 20.0 + 30.0) / 3.0)


def test_mean_and_cov_blend_prior_and_samples():
    distribution = LatencyDistribution(prior_ms=100.0, prior_weight=4.0)
    distribution.observe(50.0)
    distribution.observe(150.0)
    assert distribution.mean_ms == pytest.approx(100.0)
    # Second moment (4 * 2 * 100^2 + 50^2 + 150^2) / 6 = 17500, variance 7500.
    assert distribution.cov == pytest.approx(math.sqrt(7500.0) / 100.0)


def test_steady_latencies_have_a_low_cov():
    distribution = LatencyDistribution(prior_ms=300.0)
    for _ in range(100):
        distribution.observe(300.0)
    assert distribution.cov == pytest.approx(math.sqrt(4.0 / 104.0))


def test_negative_or_infinite_latencies_are_refused():
    distribution = LatencyDistribution(prior_ms=100.0)
    with pytest.raises(ValueError):
        distribution.observe(-1.0)
    with pytest.raises(ValueError):
        distribution.observe(math.inf)
    with pytest.raises(ValueError):
        LatencyDistribution(prior_ms=0.0)
    with pytest.raises(ValueError):
        distribution.quantile(1.5)


def test_prior_comes_from_expected_ms_then_tier_default_then_global_default():
    latencies = ToolLatencies(default_prior_ms_by_tier={Tier.SLOW: 2000.0})
    assert latencies.for_tool(_spec("a", expected_ms=30.0, tier=Tier.SLOW)).prior_ms == 30.0
    assert latencies.for_tool(_spec("b", tier=Tier.SLOW)).prior_ms == 2000.0
    assert latencies.for_tool(_spec("c", tier=Tier.FAST)).prior_ms == DEFAULT_PRIOR_MS
    assert latencies.for_tool(_spec("d")).prior_ms == 200.0


def test_distribution_is_kept_per_tool_key():
    latencies = ToolLatencies()
    spec = _spec("a")
    latencies.observe(spec, 10.0)
    latencies.observe(spec, 20.0)
    assert latencies.for_tool(spec) is latencies.for_tool(_spec("a"))
    assert latencies.for_tool(spec).num_samples == 2
    assert latencies.for_tool(_spec("b")).num_samples == 0


def test_configured_tier_wins_over_learned_one():
    latencies = ToolLatencies()
    workflow = _spec("plan", tier=Tier.WORKFLOW)
    for _ in range(50):
        latencies.observe(workflow, 1.0)
    assert latencies.tier_of(workflow) == Tier.WORKFLOW


def test_tier_is_learned_from_the_median_latency():
    latencies = ToolLatencies(fast_tier_max_ms=100.0)
    # Median of the 200 ms default prior is 200 ln 2 = 138.6 ms: an untimed tool is slow.
    unknown = _spec("unknown")
    assert latencies.tier_of(unknown) == Tier.SLOW
    for _ in range(20):
        latencies.observe(unknown, 5.0)
    assert latencies.tier_of(unknown) == Tier.FAST
    # A 50 ms expectation has a 34.7 ms median.
    assert latencies.tier_of(_spec("quick", expected_ms=50.0)) == Tier.FAST


def test_snapshot_reports_each_tool_under_its_key():
    latencies = ToolLatencies()
    latencies.for_tool(_spec("lookup", expected_ms=100.0, tier=Tier.FAST))
    snapshot = latencies.snapshot()
    assert list(snapshot) == ["demo.lookup"]
    row = snapshot["demo.lookup"]
    assert row["num_samples"] == 0
    assert row["p50_ms"] == pytest.approx(100.0 * math.log(2.0))
    assert row["p90_ms"] == pytest.approx(100.0 * math.log(10.0))
    assert row["p99_ms"] == pytest.approx(100.0 * math.log(100.0))
    assert row["mean_ms"] == 100.0
    assert row["tier"] == "FAST"
