"""The agent benchmark's arithmetic and workload, and a quick run of it on every layout (its full
run is bench.agent; results in bench/results/agent_small_cpu.*)."""

from __future__ import annotations

import json

import pytest

from bench.agent.layouts import LAYOUTS, agent_options, parse_layouts
from bench.agent.record import busy_ms
from bench.agent.report import summarize
from bench.agent.workload import AgentShape, agent_runs
from bench.common.cluster import wait_control_plane_gone


def record(layout, run, ftr, e2e, budget=1000.0, tool_ms=0.0, **extra) -> dict:
    return {
        "layout": layout, "run": run, "kind": "text", "status": "ok", "budget_ms": budget,
        "response_status": None, "incomplete_reason": None, "ftr_ms": ftr, "e2e_ms": e2e,
        "tool_ms_before_ftr": tool_ms, "num_tool_calls": 2, "num_tool_errors": 0,
        "num_cached_tool_calls": 0, "num_model_calls": 3, "prompt_tokens": 100,
        "cached_tokens": 0, "output_tokens": 10, "engine_s": 1.0, "models": ["small"] * 3,
        "tool_names": ["lookup", "search"], "stop_reason": None, "tool_decisions": [],
        "error": "", **extra,
    }  # fmt: skip


def test_overlapping_tool_calls_count_once_and_only_before_the_answer():
    # 0-100 and 50-150 overlap: 150; 200-300 is cut at the first answer token, 250.
    assert busy_ms([(200.0, 300.0), (0.0, 100.0), (50.0, 150.0)], end=250.0) == 200.0
    assert busy_ms([(0.0, 100.0), (20.0, 40.0)], end=None) == 100.0
    assert busy_ms([], end=10.0) == 0.0


def test_layouts_parse_in_order_and_each_ablation_turns_off_one_mechanism():
    assert parse_layouts("no-budget, client") == ["client", "no-budget"]
    with pytest.raises(ValueError, match="unknown"):
        parse_layouts("client,warp-drive")
    assert agent_options("controller") == {
        "parallel_dispatch": True, "pause_kv": True, "budget": True, "routing": True,
    }  # fmt: skip
    off = {layout: [k for k, v in agent_options(layout).items() if not v] for layout in LAYOUTS}
    assert off == {
        "client": [], "controller": [], "no-parallel": ["parallel_dispatch"],
        "no-pause": ["pause_kv"], "no-budget": ["budget"], "no-routing": ["routing"],
    }  # fmt: skip


def test_every_layout_gets_runs_of_the_same_shape_in_other_words_and_pixels():
    shape = AgentShape(num_runs=6)
    first, second = agent_runs(shape, seed=1, words_seed=11), agent_runs(shape, 1, 12)
    assert [r.kind for r in first] == list(shape.kinds)
    for a, b in zip(first, second, strict=True):
        assert (a.kind, a.tools, a.max_tool_calls, a.budget_ms) == (
            b.kind, b.tools, b.max_tool_calls, b.budget_ms
        )  # fmt: skip
        assert len(a.images) == len(b.images) and len(a.text.split()) == len(b.text.split())
        assert a.text != b.text and (not a.images or a.images[0] != b.images[0])
    assert first[0].instructions != second[0].instructions
    assert agent_runs(shape, 1, 11)[3].images == first[3].images  # seeded: the same bytes
    by_kind = {r.kind: r for r in first}
    assert len(by_kind["video"].images) == 6 and by_kind["retrieval"].max_tool_calls == 6
    assert all(r.budget_ms == 5000.0 for r in agent_runs(shape.with_budget(5000.0), 1, 11))


def test_summary_reads_speed_ups_against_the_client_and_ablations_against_the_controller():
    routed = {
        "cached_tokens": 50, "models": ["small", "tiny-colocated"], "tool_ms": 100.0,
        "stop_reason": "max_tool_calls", "tool_decisions": ["affordable", "cached"],
    }  # fmt: skip
    records = {
        "client": [record("client", i, ftr=1000.0, e2e=1500.0, tool_ms=500.0) for i in range(4)],
        "controller": [record("controller", i, 400.0, 900.0 + 100 * i, **routed) for i in range(4)],
        "no-parallel": [record("no-parallel", i, ftr=800.0, e2e=1200.0) for i in range(4)],
    }
    records["no-parallel"][0]["status"] = "failed"
    summary = summarize(records, model="small")
    client, ours = summary["layouts"]["client"], summary["layouts"]["controller"]
    assert client["tool_share_of_ftr"] == 0.5 and ours["tool_share_of_ftr"] == 0.25
    assert ours["cached_share"] == 0.5 and ours["routed_away_share"] == 0.5
    assert ours["stop_reasons"] == {"max_tool_calls": 4} and client["stop_reasons"] == {}
    assert ours["tool_decisions"] == {"affordable": 4, "cached": 4}
    assert client["within_budget_share"] == 0.0 and ours["within_budget_share"] == 0.5
    assert ours["engine_s_per_run_within_budget"] == 4.0 / 2
    assert summary["vs_client"]["controller"]["ftr_p50"] == 2.5
    assert summary["vs_controller"]["no-parallel"]["ftr_p50"] == 2.0
    assert summary["layouts"]["no-parallel"]["num_failed"] == 1
    targets = summary["targets"]
    assert targets["met"]["ftr_p50_speedup"] and not targets["met"]["ftr_p50_speedup_moonshot"]
    assert not targets["met"]["e2e_p99_over_budget"]  # 1200 ms against a 1000 ms budget


def test_quick_benchmark_runs_every_layout_and_stops_its_cluster(ray_cluster, tmp_path, capsys):
    from bench.agent.benchmark import main

    assert wait_control_plane_gone()
    prefix = tmp_path / "agent_tiny"
    returned = main(["--preset", "tiny", "--quick", "--latency-scale", "0.1", "--out", str(prefix)])
    results = json.loads(prefix.with_name("agent_tiny.json").read_text())
    assert results == json.loads(json.dumps(returned))

    assert list(results["records"]) == list(LAYOUTS)
    for layout, records in results["records"].items():
        assert [r["run"] for r in records] == [0, 1, 2], layout
        failed = [r["error"] for r in records if r["status"] != "ok"]
        assert not failed, (layout, failed)
        assert all(r["ftr_ms"] is not None and r["e2e_ms"] >= r["ftr_ms"] for r in records)
        assert all(r["num_model_calls"] >= 1 for r in records), layout
    summary = results["summary"]
    assert set(summary["layouts"]) == set(LAYOUTS) and summary["targets"]["measured"]
    assert summary["layouts"]["client"]["tool_calls_per_run"] > 0
    assert set(summary["vs_controller"]) == {"no-parallel", "no-pause", "no-budget", "no-routing"}
    assert {"text", "image", "retrieval"} == set(summary["per_class"]["controller"])
    markdown = prefix.with_name("agent_tiny.md").read_text()
    assert "| Layout |" in markdown and "| no-routing |" in markdown
    for plot in ("agent_tiny_ftr_cdf.png", "agent_tiny_ablation.png"):
        assert prefix.with_name(plot).read_bytes().startswith(b"\x89PNG")
    assert "| Layout |" in capsys.readouterr().out
    assert wait_control_plane_gone()
