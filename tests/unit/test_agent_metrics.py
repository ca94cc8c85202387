"""Finished agent runs -> the per-class figures of cluster state and the triserve_agent_* series
(cluster/agent_metrics.py), fed hand-built run summaries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from agent.run_summary import RunSummary
from cluster.agent_metrics import MAX_SAMPLES, AgentRunMetrics, AgentRunStats


def run(**fields) -> RunSummary:
    values = {
        "request_class": "text",
        "status": "completed",
        "ftr_ms": 500.0,
        "e2e_ms": 1000.0,
        "budget_ms": None,
        "num_tool_calls": 0,
        "num_tool_cache_hits": 0,
        "tool_ms_before_ftr": 0.0,
        "num_prompt_tokens": 0,
        "num_cached_tokens": 0,
        "num_model_calls": 1,
        "engine_s": 0.0,
    }
    return RunSummary(**{**values, **fields})


def stats_of(*runs: RunSummary) -> dict:
    stats = AgentRunStats()
    for summary in runs:
        stats.record(summary)
    return {row.request_class: row for row in stats.snapshot()}


def test_latency_percentiles_interpolate_between_runs_as_the_bench_reports_them():
    rows = stats_of(*(run(ftr_ms=float(ms), e2e_ms=float(10 * ms)) for ms in range(101)))

    text = rows["text"]
    assert (text.ftr_p50_ms, text.ftr_p90_ms, text.ftr_p99_ms) == (50.0, 90.0, 99.0)
    assert (text.e2e_p50_ms, text.e2e_p90_ms, text.e2e_p99_ms) == (500.0, 900.0, 990.0)
    two = stats_of(run(e2e_ms=100.0), run(e2e_ms=200.0))["text"]
    assert (two.e2e_p50_ms, two.e2e_p99_ms) == (150.0, 199.0)


def test_percentiles_follow_the_most_recent_runs_only():
    old = [run(e2e_ms=1e6) for _ in range(500)]
    recent = [run(e2e_ms=float(ms)) for ms in range(MAX_SAMPLES)]

    text = stats_of(*old, *recent)["text"]

    assert text.num_runs == 500 + MAX_SAMPLES
    assert (text.e2e_p50_ms, text.e2e_p99_ms) == (499.5, 989.01)


def test_failed_and_cancelled_runs_are_counted_but_not_in_latencies():
    text = stats_of(
        run(status="completed", e2e_ms=1000.0, ftr_ms=400.0),
        run(status="incomplete", e2e_ms=3000.0, ftr_ms=None),
        run(status="failed", e2e_ms=5.0, ftr_ms=1.0),
        run(status="cancelled", e2e_ms=7.0, ftr_ms=2.0),
    )["text"]

    counts = (text.num_completed, text.num_incomplete, text.num_failed, text.num_cancelled)
    assert (text.num_runs, *counts) == (4, 1, 1, 1, 1)
    assert (text.e2e_p50_ms, text.e2e_p99_ms) == (2000.0, 2980.0)
    assert (text.ftr_p50_ms, text.ftr_p99_ms) == (400.0, 400.0)


def test_tool_share_of_ftr_tool_cache_hits_and_cached_share_add_up_over_runs():
    text = stats_of(
        run(
            ftr_ms=1000.0, tool_ms_before_ftr=250.0, num_tool_calls=3, num_tool_cache_hits=1,
            num_prompt_tokens=100, num_cached_tokens=50,
        ),
        run(
            ftr_ms=3000.0, tool_ms_before_ftr=750.0, num_tool_calls=1,
            num_prompt_tokens=300, num_cached_tokens=50,
        ),
        # no FTR: its tool time is not FTR's share; its calls and tokens still count
        run(status="failed", ftr_ms=None, tool_ms_before_ftr=900.0, num_tool_calls=2),
    )["text"]  # fmt: skip

    assert text.tool_share_of_ftr == 0.25
    assert text.tool_calls_per_run == 2.0
    assert text.tool_cache_hit_rate == 1 / 6
    assert text.cached_share == 0.25
    assert text.num_reprefilled_tokens == 300


def test_cost_per_successful_run_is_engine_seconds_of_completed_runs_over_their_count():
    text = stats_of(
        run(engine_s=2.0),
        run(engine_s=4.0),
        run(status="failed", engine_s=10.0),
        run(status="incomplete", engine_s=8.0),
    )["text"]

    assert text.cost_per_successful_run_s == 3.0
    assert stats_of(run(status="failed", engine_s=1.0))["text"].cost_per_successful_run_s is None


def test_within_budget_counts_completed_runs_that_met_their_budget_or_had_none():
    text = stats_of(
        run(e2e_ms=900.0, budget_ms=1000.0),
        run(e2e_ms=1000.0, budget_ms=1000.0),
        run(e2e_ms=1100.0, budget_ms=1000.0),
        run(e2e_ms=50_000.0, budget_ms=None),
        run(status="incomplete", e2e_ms=500.0, budget_ms=1000.0),
        run(status="failed", e2e_ms=5.0, budget_ms=1000.0),
    )["text"]

    assert (text.num_runs, text.num_completed, text.num_within_budget) == (6, 4, 3)


def test_one_row_per_class_with_runs_in_class_order_then_all():
    stats = AgentRunStats()
    assert stats.snapshot() == []

    for request_class in ("images", "text", "images"):
        stats.record(run(request_class=request_class, engine_s=1.0))
    rows = stats.snapshot()

    assert [(row.request_class, row.num_runs) for row in rows] == [
        ("text", 1),
        ("images", 2),
        ("all", 3),
    ]
    assert rows[-1].cost_per_successful_run_s == 1.0
    assert rows[0].tool_share_of_ftr == 0.0
    assert rows[0].tool_cache_hit_rate is None  # no tool calls


def test_prometheus_series_after_two_runs():
    registry = CollectorRegistry()
    metrics = AgentRunMetrics(registry)
    metrics.record(
        run(
            request_class="image", ftr_ms=1500.0, e2e_ms=4000.0, budget_ms=5000.0,
            num_tool_calls=2, num_tool_cache_hits=1, tool_ms_before_ftr=500.0,
            num_prompt_tokens=400, num_cached_tokens=300, engine_s=1.25,
        )
    )  # fmt: skip
    metrics.record(
        run(
            request_class="image", status="failed", ftr_ms=None, e2e_ms=200.0,
            num_tool_calls=1, tool_ms_before_ftr=100.0, num_prompt_tokens=100, engine_s=0.5,
        )
    )  # fmt: skip

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"request_class": "image", **labels})

    assert sample("triserve_agent_runs_total", status="completed") == 1.0
    assert sample("triserve_agent_runs_total", status="failed") == 1.0
    assert sample("triserve_agent_runs_total", status="cancelled") == 0.0
    assert sample("triserve_agent_runs_within_budget_total") == 1.0
    assert sample("triserve_agent_tool_calls_total") == 3.0
    assert sample("triserve_agent_tool_cache_hits_total") == 1.0
    assert sample("triserve_agent_tool_seconds_before_ftr_total") == 0.5
    assert sample("triserve_agent_prompt_tokens_total") == 500.0
    assert sample("triserve_agent_cached_tokens_total") == 300.0
    assert sample("triserve_agent_reprefilled_tokens_total") == 200.0
    assert sample("triserve_agent_engine_seconds_total", status="completed") == 1.25
    assert sample("triserve_agent_engine_seconds_total", status="failed") == 0.5
    assert sample("triserve_agent_ftr_seconds_count") == 1.0
    assert sample("triserve_agent_ftr_seconds_sum") == 1.5
    assert sample("triserve_agent_ftr_seconds_bucket", le="2.0") == 1.0
    assert sample("triserve_agent_ftr_seconds_bucket", le="1.0") == 0.0
    assert sample("triserve_agent_e2e_seconds_count") == 1.0  # the failed run is left out
    assert sample("triserve_agent_e2e_seconds_sum") == 4.0
    text_runs = registry.get_sample_value(
        "triserve_agent_runs_total", {"request_class": "text", "status": "completed"}
    )
    assert text_runs == 0.0  # every class's series exists before its first run
    (image, overall) = metrics.stats.snapshot()
    assert (image.request_class, image.num_runs, overall.num_runs) == ("image", 2, 2)


def test_a_malformed_summary_is_logged_not_raised(caplog):
    metrics = AgentRunMetrics(CollectorRegistry())

    metrics.record(run(num_tool_calls=None))

    assert "not recorded" in caplog.text
