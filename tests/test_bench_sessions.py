"""The session benchmark's arithmetic, and a quick run of it (its full run is bench.sessions;
results in bench/results/sessions_small_cpu.*)."""

from __future__ import annotations

import json

from bench.common.cluster import wait_control_plane_gone
from bench.sessions.benchmark import main
from bench.sessions.drivers import MODES
from bench.sessions.report import summarize


def record(mode, session, turn, prompt, cached, output=10, ttft=100.0, **extra) -> dict:
    return {
        "mode": mode, "session": session, "turn": turn, "status": "ok", "has_image": False,
        "ttft_ms": ttft, "e2e_ms": ttft + 50, "prompt_tokens": prompt, "cached_tokens": cached,
        "output_tokens": output, "error": "", **extra,
    }  # fmt: skip


def test_re_prefilled_history_is_what_the_cache_did_not_serve_of_the_last_turn():
    # history of turn 2 = 100 + 10; 40 of it cached: 70 recomputed. Turn 3: history 130 + 10,
    # all of it cached.
    turns = [
        record("stateless", 0, 1, prompt=100, cached=0),
        record("stateless", 0, 2, prompt=130, cached=40),
        record("stateless", 0, 3, prompt=160, cached=140),
    ]
    summary = summarize({"stateless": turns}, {})["modes"]["stateless"]
    assert [summary["per_turn"][t]["reprefilled_history"] for t in (1, 2, 3)] == [0, 70, 0]
    assert summary["cached_share_later_turns"] == (40 + 140) / (130 + 160)
    assert summary["cached_share_all_turns"] == 180 / 390


def test_targets_compare_responses_with_stateless_from_turn_four():
    def session(mode, ttft, cached_late):
        return [record(mode, 0, t, prompt=100 * t, cached=0 if t < 4 else cached_late, ttft=ttft)
                for t in range(1, 6)]  # fmt: skip

    summary = summarize(
        {"stateless": session("stateless", 900.0, 0), "responses": session("responses", 90.0, 395)},
        {"responses": [(0.0, 3), (0.5, 5)]},
    )
    targets = summary["targets"]
    assert targets["measured"]["ttft_p50_speedup"] == 10.0
    assert targets["met"]["ttft_p50_speedup"] and not targets["met"]["cached_share"]
    assert summary["modes"]["responses"]["pinned_blocks_max"] == 5


def test_quick_benchmark_runs_every_mode_and_stops_its_cluster(ray_cluster, tmp_path, capsys):
    assert wait_control_plane_gone()
    out = tmp_path / "sessions.json"
    returned = main(["--preset", "tiny", "--quick", "--json", str(out)])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))

    for mode in MODES:
        records = results["records"][mode]
        assert records and all(r["status"] == "ok" for r in records), records
        assert {r["turn"] for r in records} == {1, 2, 3, 4}
    responses = results["summary"]["modes"]["responses"]
    assert responses["per_turn"]["2"]["cached_tokens"] > 0  # the history came from the server
    assert "| Mode |" in capsys.readouterr().out
    assert wait_control_plane_gone()
