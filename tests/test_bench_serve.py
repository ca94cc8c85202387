"""The serving benchmark: its pure parts with exact numbers, and one end-to-end smoke run.

The smoke run joins the session's Ray cluster (start_cluster does when Ray is up), like the
overhead benchmark's test. The cluster tests' package-scoped cluster (same actor and Serve app
names) is torn down before this module runs: pytest collects tests/cluster/ before the files of
tests/ that sort after it, and the run waits for the named control plane to be gone first.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bench.common.cluster import wait_control_plane_gone
from bench.serve.arrivals import (
    gamma_arrivals,
    mean_rate,
    poisson_arrivals,
    rescaled_trace_arrivals,
    scaled_trace_arrivals,
)
from bench.serve.comparison import overload_check, text_ttft
from bench.serve.metrics import (
    admitted_attainment,
    attainment,
    distribution,
    embedding_cache_hit_rate,
    goodput,
    prefix_cache_hit_rate,
    summarize,
)
from bench.serve.mix import MixError, parse_mix
from bench.serve.record import RequestRecord, trace_fields
from bench.serve.settings import from_values
from bench.serve.trace_files import TraceFormatError, load_trace, parse_azure, parse_mooncake
from cluster.state_messages import trace_events
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.config import SchedulerConfig
from scheduler.request_class import RequestCost, classify
from scheduler.trace_breakdown import trace_breakdown


# ------------------------------------------------------------------ arrivals
def test_same_seed_gives_the_same_arrivals_and_another_seed_does_not():
    def draw(seed):
        return gamma_arrivals(4.0, 50, 2.0, np.random.default_rng(seed))

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert poisson_arrivals(2.0, 3, np.random.default_rng(1))[0] == 0.0


def test_the_same_seed_at_twice_the_rate_gives_the_same_pattern_twice_as_dense():
    slow = gamma_arrivals(1.0, 20, 2.0, np.random.default_rng(5))
    fast = gamma_arrivals(2.0, 40, 2.0, np.random.default_rng(5))
    assert fast[:20] == pytest.approx([t / 2 for t in slow])


@pytest.mark.parametrize("cv", [1.0, 3.0])
def test_arrivals_keep_the_mean_rate_and_gamma_has_the_asked_burstiness(cv):
    rng = np.random.default_rng(0)
    arrivals = (
        gamma_arrivals(5.0, 40_000, cv, rng) if cv != 1 else poisson_arrivals(5.0, 40_000, rng)
    )
    gaps = np.diff(arrivals)

    assert all(g >= 0 for g in gaps)
    assert mean_rate(arrivals) == pytest.approx(5.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_trace_times_are_scaled_or_rescaled_to_a_rate():
    times = [100.0, 101.0, 103.0, 107.0]
    assert scaled_trace_arrivals(times, 0.5) == [0.0, 0.5, 1.5, 3.5]
    rescaled = rescaled_trace_arrivals(times, 3.0)
    assert rescaled == pytest.approx([0.0, 1 / 7, 3 / 7, 1.0])
    assert mean_rate(rescaled) == pytest.approx(3.0)


# ------------------------------------------------------------------ trace files
MOONCAKE = """{"timestamp": 2000, "input_length": 700, "output_length": 12, "hash_ids": [1, 2]}
{"timestamp": 0, "input_length": 300, "output_length": 40, "hash_ids": [1], "num_images": 2}

{"timestamp": 500, "input_length": 5, "output_length": 1}
"""
AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens,NumImages
2023-11-16 18:15:46.6805900,374,44,1
2023-11-16 18:15:47.0000000,1200,7,
"""


def test_mooncake_trace_rows_keep_lengths_prefix_blocks_and_image_counts():
    rows = parse_mooncake(MOONCAKE)
    assert [(r.time_s, r.input_tokens, r.output_tokens) for r in rows] == [
        (2.0, 700, 12), (0.0, 300, 40), (0.5, 5, 1)
    ]  # fmt: skip
    assert [r.hash_ids for r in rows] == [(1, 2), (1,), ()]
    assert [r.num_images for r in rows] == [0, 2, 0]


def test_azure_trace_rows_parse_datetimes_with_seven_fraction_digits(tmp_path):
    rows = parse_azure(AZURE)
    assert rows[1].time_s - rows[0].time_s == pytest.approx(0.31941, abs=1e-6)
    assert [(r.input_tokens, r.output_tokens, r.num_images) for r in rows] == [
        (374, 44, 1), (1200, 7, 0)
    ]  # fmt: skip
    path = tmp_path / "azure.csv"
    path.write_text(AZURE)
    assert [r.input_tokens for r in load_trace(path, max_requests=1)] == [374]


def test_trace_files_are_sorted_by_time_and_truncated(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text(MOONCAKE)
    assert [r.input_tokens for r in load_trace(path, max_requests=2)] == [300, 5]


@pytest.mark.parametrize(
    ("text", "parser", "message"),
    [
        ('{"timestamp": 1, "input_length": 3}', parse_mooncake, "line 1: missing output_length"),
        ("not json", parse_mooncake, "line 1: not JSON"),
        ('{"timestamp": 1, "input_length": -3, "output_length": 1}', parse_mooncake, "line 1"),
        ("TIMESTAMP,ContextTokens\n1,2\n", parse_azure, "missing column(s) ['GeneratedTokens']"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", parse_azure, "line 2"),
    ],
)
def test_bad_trace_lines_are_named(text, parser, message):
    with pytest.raises(TraceFormatError, match=re.escape(message)):
        parser(text)


# ------------------------------------------------------------------ mix and classes
def test_mix_shares_are_normalised_in_kind_order():
    assert parse_mix("image=1,text=3") == {"text": 0.75, "image": 0.25}
    assert parse_mix({"video": 2, "ocr": 0}) == {"video": 1.0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("text=0.5,audio=0.5", "unknown workload kind 'audio'"),
        ("text", "is not KIND=SHARE"),
        ("text=-1,image=2", "must be >= 0"),
        ("text=abc", "must be a number"),
        ("text=0,image=0", "no positive share"),
        ("text=1,text=2", "names 'text' twice"),
    ],
)
def test_bad_mixes_say_what_is_wrong(spec, message):
    with pytest.raises(MixError, match=message):
        parse_mix(spec)


def test_workload_kinds_fall_in_the_schedulers_classes():
    config = SchedulerConfig()

    def request_class(num_images, max_image_pixels, num_prompt_tokens, config):
        cost = RequestCost(
            num_images=num_images,
            num_image_tokens=0,
            num_prompt_tokens=num_prompt_tokens,
            max_image_pixels=max_image_pixels,
        )
        return classify(cost, config).value

    assert request_class(0, 0, 200, config) == "sand"
    assert request_class(1, 384 * 384, 200, config) == "pebble"
    assert request_class(1, 2400 * 1200, 200, config) == "rock"  # ocr
    assert request_class(4, 160 * 160, 200, config) == "rock"  # multi_image, video
    assert request_class(0, 0, 2048, config) == "rock"


# ------------------------------------------------------------------ records and metrics
def _record(status="ok", chunk_ms=(100.0, 150.0, 200.0), tokens=(1, 1, 1), **fields):
    values = dict(
        request_id="r", layout="l", point="rate=1", rate=1.0, index=0, kind="text",
        slo_class="sand", ttft_target_ms=500.0, tpot_target_ms=60.0, arrival_s=0.0,
        send_lag_ms=0.0, status=status, chunk_ms=list(chunk_ms), chunk_tokens=list(tokens),
    )  # fmt: skip
    values.update(fields)
    return RequestRecord(**values)


def test_latency_metrics_of_one_request():
    record = _record(chunk_ms=(100.0, 130.0, 190.0), tokens=(1, 2, 3))
    assert (record.ttft_ms, record.e2e_ms, record.num_output_tokens) == (100.0, 190.0, 6)
    assert record.tpot_ms == 18.0  # (190 - 100) / 5
    assert record.itl_ms == [15.0, 15.0, 20.0, 20.0, 20.0]


def test_percentiles_interpolate_between_samples():
    stats = distribution(range(1, 101))
    assert stats == pytest.approx({"n": 100, "mean": 50.5, "p50": 50.5, "p90": 90.1, "p99": 99.01})
    assert distribution([])["p90"] is None


def test_rejected_and_failed_requests_never_attain():
    records = [
        _record(),  # attains
        _record(chunk_ms=(600.0, 610.0)),  # TTFT misses
        _record(chunk_ms=(100.0, 300.0), tokens=(1, 1)),  # TPOT 200 misses
        _record(chunk_ms=(100.0,), tokens=(1,)),  # one token: no TPOT to miss
        _record("rejected", (), (), reject_ms=3.0, error_code="RESOURCE_EXHAUSTED"),
        _record("failed", (100.0,), (1,), error_code="UNAVAILABLE"),
        _record("timeout", (100.0, 150.0), (1, 1)),
    ]
    assert [r.attained for r in records] == [True, False, False, True, False, False, False]
    assert attainment(records) == 2 / 7
    assert admitted_attainment(records) == 2 / 6
    summary = summarize(records)
    assert (summary["num_ok"], summary["num_rejected"], summary["num_failed"]) == (4, 1, 1)
    assert summary["num_timeout"] == 1
    assert summary["reject_ms"]["max"] == 3.0


def test_goodput_is_the_highest_rate_that_attains_90_percent():
    assert goodput({1.0: 1.0, 2.0: 0.95, 4.0: 0.5, 8.0: 0.92}) == 8.0
    assert goodput({1.0: 0.9, 2.0: 0.89}) == 1.0
    assert goodput({1.0: 0.2, 2.0: None}) is None


def test_cache_hit_rates_from_usage_and_traces():
    trace = {"num_encode_skipped_images": 3}
    records = [
        _record(prompt_tokens=100, cached_prompt_tokens=64, num_images=4, trace=trace),
        _record(prompt_tokens=300, cached_prompt_tokens=0, num_images=2, trace=None),
        _record(prompt_tokens=100, cached_prompt_tokens=16, num_images=2, trace={
            "num_encode_skipped_images": 0}),
    ]  # fmt: skip
    assert prefix_cache_hit_rate(records) == 80 / 500
    assert embedding_cache_hit_rate(records) == 3 / 6  # the untraced request is left out


def test_trace_stats_add_repeated_events_and_read_the_class():
    def event(name, time_ms=0.0, detail="", **values):
        return pb.TraceEvent(event=name, time_ms=time_ms, values=values, detail=detail)

    events = [
        event("queued", 2.0),
        event("classified", detail="admission=admit, request_class=rock", predicted_ttft_ms=80.0),
        event("encode_start", 4.0),
        event("encode_skipped", num_images=2.0),
        event("encode_done", 10.0, queue_ms=1.0, compute_ms=5.0),
        event("embedding_transfer", 12.0, ms=2.0, bytes=4096.0),
        event("redrive", 20.0),
        event("encode_done", 30.0, queue_ms=2.0, compute_ms=6.0),
        event("first_token", 40.0, queue_ms=0.5, compute_ms=3.0),
        event("decode_steps", 90.0, count=7.0, compute_ms=50.0, queue_ms=0.25),
        event("finished", 91.0),
    ]
    trace = pb.Trace(request_id="r", state="finished", events=events)
    stats = trace_fields(trace.state, trace_breakdown(trace_events(trace)))
    assert stats["state"] == "finished"
    assert stats["queue_ms"] == {"encode": 3.0, "prefill": 0.5, "decode": 0.25}
    assert stats["compute_ms"] == {"encode": 11.0, "prefill": 3.0, "decode": 50.0}
    assert (stats["transfer_ms"], stats["transfer_bytes"]) == (
        {"embedding": 2.0},
        {"embedding": 4096},
    )
    assert (stats["num_decode_steps"], stats["num_encode_skipped_images"]) == (7, 2)
    assert (stats["num_redrives"], stats["server_class"], stats["server_e2e_ms"]) == (
        1,
        "rock",
        91.0,
    )
    assert (stats["admission"], stats["predicted_ttft_ms"]) == ("admit", 80.0)
    milestones = ("scheduler_arrival_ms", "first_dispatch_ms", "server_ttft_ms")
    assert tuple(stats[name] for name in milestones) == (2.0, 4.0, 40.0)


# ------------------------------------------------------------------ comparisons
def _point(rate, attained, text_p90=None, admitted=None, reject_max=None, rejected=0):
    summary = {
        "attainment": attained, "admitted_attainment": admitted or attained,
        "num_requests": 100, "num_rejected": rejected,
        "reject_ms": {"p99": reject_max, "max": reject_max},
    }  # fmt: skip
    by_kind = {"text": {"ttft_ms": {"p90": text_p90}}} if text_p90 else {}
    return {"rate": rate, "summary": summary, "by_kind": by_kind}


def test_text_ttft_is_compared_at_the_highest_rate_the_baseline_attains():
    layouts = {
        "colocated-fcfs": {"sweep": [_point(1.0, 0.99, 200.0), _point(2.0, 0.91, 400.0),
                                     _point(4.0, 0.5, 900.0)]},
        "disagg-slo": {"sweep": [_point(1.0, 1.0, 150.0), _point(2.0, 0.97, 100.0),
                                 _point(4.0, 0.95, 120.0)]},
    }  # fmt: skip
    result = text_ttft(layouts)
    assert (result["rate"], result["baseline_p90_ms"], result["candidate_p90_ms"]) == (
        2.0, 400.0, 100.0
    )  # fmt: skip
    assert result["candidate_over_baseline"] == 0.25


def test_overload_check_needs_admitted_attainment_and_fast_rejections():
    slow = {"disagg-slo": {"overload": _point(12.0, 0.6, admitted=0.95, reject_max=80.0,
                                              rejected=40)}}  # fmt: skip
    fast = {"disagg-slo": {"overload": _point(12.0, 0.6, admitted=0.95, reject_max=9.0,
                                              rejected=40)}}  # fmt: skip
    assert overload_check(slow)["passed"] is False
    assert overload_check(slow)["admitted_attains"] is True
    assert overload_check(fast)["passed"] is True


# ------------------------------------------------------------------ settings
def test_settings_take_lists_or_strings_and_reject_unequal_layouts():
    settings = from_values({"rates": "0.5,1", "output-tokens": "8-16", "mix": {"text": 1}})
    assert (settings.rates, settings.output_tokens, settings.mix) == ((0.5, 1.0), (8, 16),
                                                                      {"text": 1.0})  # fmt: skip
    with pytest.raises(ValueError, match="unknown setting"):
        from_values({"rate": 1})
    with pytest.raises(ValueError, match="scheduler: unknown key"):
        from_values({"scheduler": {"sand_ttft": 5}})

    from bench.serve.layouts import DeploymentSpec

    with pytest.raises(ValueError, match="same number of workers"):
        DeploymentSpec(
            preset="tiny", num_workers=3, disagg_pools="encode=1,prefill=1,decode=2"
        ).check()


def test_command_line_flags_override_the_config_file(tmp_path):
    from bench.serve.cli import parse_args

    path = tmp_path / "serve.yaml"
    path.write_text("rates: [1, 2]\nseed: 5\nscheduler: {sand_ttft_ms: 250}\n")
    settings = parse_args(["--config", str(path), "--seed", "9"])
    assert (settings.rates, settings.seed) == ((1.0, 2.0), 9)
    assert settings.scheduler == {"sand_ttft_ms": 250}


# ------------------------------------------------------------------ workload
def test_workload_is_deterministic_and_its_rocks_are_rocks(tiny_model_dir):
    from bench.serve.workload import ModelLimits, TextSource, WorkloadBuilder, WorkloadSpec
    from workers.engine.prompt import load_tokenizer

    mix = {"text": 0.3, "image": 0.2, "ocr": 0.2, "multi_image": 0.1, "video": 0.2}
    spec = WorkloadSpec(mix=mix, reuse_fraction=0.3, ocr_size=(2000, 1001))
    builder = WorkloadBuilder(
        spec=spec,
        limits=ModelLimits(num_image_tokens=16, max_model_len=1024),
        scheduler=SchedulerConfig(),
        text=TextSource(load_tokenizer(tiny_model_dir)),
    )

    def build(count: int, content_seed: int):
        arrivals = [0.1 * i for i in range(count)]
        return builder.synthetic(
            arrivals, np.random.default_rng(3), np.random.default_rng(content_seed)
        )

    first = build(30, 4)
    assert first == build(30, 4)
    longer, other_content = build(40, 5), build(30, 5)
    shape = [(r.kind, r.max_tokens, len(r.images), r.reuse_of) for r in first]
    assert [(r.kind, r.max_tokens, len(r.images), r.reuse_of) for r in longer[:30]] == shape
    assert not {r.images for r in first if r.images} & {r.images for r in other_content}
    assert {r.kind for r in first} == set(mix)
    expected = {"text": "sand", "image": "pebble", "ocr": "rock", "multi_image": "rock",
                "video": "rock"}  # fmt: skip
    assert all(r.slo_class == expected[r.kind] for r in first)
    assert all(len(r.images) >= 16 for r in first if r.kind == "video")
    reused = [r for r in first if r.reuse_of is not None]
    assert reused, "a reuse fraction of 0.3 over 30 requests reuses some"
    for r in reused:
        assert (r.context, r.images) == (first[r.reuse_of].context, first[r.reuse_of].images)


# ------------------------------------------------------------------ end to end
def test_smoke_run_writes_the_report_plots_and_records(ray_cluster, tmp_path):
    from ray import serve

    from bench.serve.cli import main
    from cluster.launcher import APP_NAME

    assert wait_control_plane_gone(), "another test's cluster is still up"
    out = tmp_path / "serve"
    main([
        "--preset", "tiny", "--layouts", "disagg-fcfs", "--rates", "4", "--num-requests", "6",
        "--overload-factor", "2", "--mix", "text=0.5,image=0.3,multi_image=0.2",
        "--output-tokens", "4-8", "--no-warmup", "--drain-timeout-s", "30", "--out", str(out),
    ])  # fmt: skip

    assert {p.name for p in out.iterdir()} >= {
        "summary.md", "results.json", "attainment_vs_rate.png", "ttft_cdf.png"
    }  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    assert len(records) == 6 + 12
    assert all(r["status"] == "ok" and r["ttft_ms"] > 0 for r in records)
    assert all(r["trace"] is not None and r["prompt_tokens"] > 0 for r in records)
    assert all(4 <= r["num_output_tokens"] <= 8 for r in records)
    layout = results["layouts"]["disagg-fcfs"]
    assert layout["error"] is None and layout["overload"]["num_requests"] == 12
    assert "### disagg-fcfs" in (out / "summary.md").read_text()
    assert ray_cluster.is_initialized()
    assert APP_NAME not in serve.status().applications
    assert wait_control_plane_gone()
