"""Smoke test of the engine benchmark: the tiny preset and --quick sizes, in a few seconds."""

from __future__ import annotations

import json
import math

from bench.engine.benchmark import main

SYSTEMS = ("triserve", "transformers")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_benchmark_writes_positive_numbers_for_both_systems(tmp_path, capsys):
    out = tmp_path / "engine.json"
    returned = main(["--preset", "tiny", "--quick", "--json", str(out)])
    results = json.loads(out.read_text())

    assert results == json.loads(json.dumps(returned))
    assert {"machine", "config", "bandwidth", "single", "batch", "image_ttft", "floor"} <= set(
        results
    )
    assert results["machine"]["cpu_model"] and results["machine"]["torch"]
    assert results["config"]["preset"] == "tiny"
    assert _positive(results["bandwidth"]["gb_per_s"])
    for name in SYSTEMS:
        single = results["single"][name]
        assert all(_positive(single[k]) for k in ("decode_tok_s", "ms_per_step", "ttft_ms"))
        assert _positive(results["batch"][name]["useful_tok_s"])
        assert _positive(results["image_ttft"][name]["median_ms"])
        floor = results["floor"][f"single_{name}"]
        assert _positive(floor["floor_ms_per_step"]) and _positive(floor["measured_ms_per_step"])
    assert _positive(results["batch"]["useful_tok_s_ratio"])
    assert results["single"]["greedy_tokens_match"] is True
    # transformers pads every row to the largest max_tokens; only the requested ones are useful.
    batch = results["batch"]
    assert batch["transformers"]["generated_tokens"] >= batch["useful_tokens"]
    assert batch["triserve"]["generated_tokens"] == batch["useful_tokens"]
    assert results["config"]["engine_stats"]["prefix_cache_hit_rate"] == 0.0
    assert "| Workload |" in capsys.readouterr().out


def test_quick_benchmark_runs_vllm_beside_the_native_engine_and_transformers(tmp_path, capsys):
    """--backend vllm: the same workloads on vLLM's engine, through Triserve's engine interface,
    with the same greedy tokens (the mini preset: the smallest vLLM's CPU attention runs)."""
    results = main(["--preset", "mini", "--quick", "--backend", "vllm"])
    assert results["config"]["systems"] == ["triserve", "vllm", "transformers"]
    assert results["single"]["greedy_tokens_match"] is True
    for section in ("single", "batch", "image_ttft"):
        assert set(SYSTEMS) | {"vllm"} <= set(results[section])
    assert _positive(results["single"]["vllm"]["decode_tok_s"])
    assert _positive(results["batch"]["vllm"]["useful_tok_s"])
    assert results["machine"]["vllm"]
    assert "vLLM speedup" in capsys.readouterr().out
