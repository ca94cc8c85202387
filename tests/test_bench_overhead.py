"""Smoke test of the overhead benchmark: the tiny preset, 2 requests per class, small arrays.

It joins the session's Ray cluster (start_cluster does when Ray is up) and must leave it as it
found it: Ray still running, no Triserve control plane, no Serve application."""

from __future__ import annotations

import json
import math

from bench.common.cluster import wait_control_plane_gone
from bench.overhead.benchmark import main
from bench.overhead.breakdown import Breakdown, RequestTiming
from cluster.launcher import APP_NAME
from scheduler.trace import TraceEvent
from scheduler.trace_breakdown import trace_breakdown

TOP_LEVEL_KEYS = {
    "overhead_p50_fraction", "overhead_p90_fraction", "kv_handoff_gbps", "memcpy_gbps",
    "per_class", "machine", "handoff", "targets", "config", "requests", "runtime_s",
}  # fmt: skip
PARTS = ("compute", "queue", "transfer", "other")


def _event(name: str, time_ms: float, **attrs: float) -> TraceEvent:
    return TraceEvent(name=name, time_ms=time_ms, attrs=attrs)


def _timing(request_class: str, e2e_ms: float, ttft_ms: float, num_prompt_tokens: int):
    return RequestTiming(
        request_id="r",
        request_class=request_class,
        e2e_ms=e2e_ms,
        ttft_ms=ttft_ms,
        num_chunks=64,
        num_output_tokens=64,
        num_prompt_tokens=num_prompt_tokens,
        num_cached_prompt_tokens=0,
    )


def test_breakdown_splits_client_time_and_names_missing_trace_attributes():
    timing = _timing("one_image", e2e_ms=1000.0, ttft_ms=300.0, num_prompt_tokens=320)
    events = [
        _event("queued", 0.0),
        _event("encode_done", 100.0, compute_ms=80.0, queue_ms=5.0),
        _event("embedding_transfer", 110.0, ms=2.0, bytes=1000),
        _event("first_token", 250.0, compute_ms=120.0),  # no queue_ms
        _event("kv_transfer", 260.0, ms=4.0, bytes=8_000_000),
        _event("decode_steps", 980.0, count=63, compute_ms=600.0, queue_ms=3.0),
        _event("finished", 980.0),
    ]
    split = Breakdown(timing=timing, trace=trace_breakdown(events))

    assert split.total_compute_ms == 800.0
    assert split.total_queue_ms == 8.0
    assert split.total_transfer_ms == 6.0
    assert split.other_ms == 1000.0 - 800.0 - 8.0 - 6.0
    assert split.overhead_fraction == 0.2
    assert split.outside_scheduler_ms == 20.0
    assert split.kv_gbps() == 2.0  # 8e6 bytes in 4 ms
    assert split.missing == ["first_token.queue_ms"]


def test_text_request_without_stage_timings_counts_them_as_zero():
    timing = _timing("text", e2e_ms=500.0, ttft_ms=50.0, num_prompt_tokens=64)
    events = [_event("queued", 0.0), _event("first_token", 40.0), _event("finished", 490.0)]
    split = Breakdown(timing=timing, trace=trace_breakdown(events))

    assert split.total_compute_ms == 0.0 and split.overhead_fraction == 1.0
    assert "encode_done.compute_ms" not in split.missing  # a text request has no encode
    assert split.missing == ["first_token.compute_ms", "first_token.queue_ms", "decode_steps"]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_benchmark_splits_every_request_and_stops_its_cluster(ray_cluster, tmp_path, capsys):
    from ray import serve

    # A cluster another test stopped may still hold the control plane's name for a moment.
    assert wait_control_plane_gone()
    out = tmp_path / "overhead.json"
    returned = main(["--preset", "tiny", "--requests", "2", "--quick", "--json", str(out)])
    results = json.loads(out.read_text())

    assert results == json.loads(json.dumps(returned))
    assert TOP_LEVEL_KEYS <= set(results)
    assert results["machine"]["cpu_model"] and results["machine"]["ray"]
    assert set(results["per_class"]) == {"text", "one_image"}
    for name, summary in results["per_class"].items():
        assert summary["num_requests"] == 2, name
        assert 0 < summary["overhead_fraction"]["p50"] <= 1, name
        assert _positive(summary["e2e_ms"]["p50"]) and _positive(summary["ttft_ms"]["p50"])
        assert set(summary["breakdown_ms"]) == set(PARTS)
        assert summary["cached_prompt_tokens"] == 0, "every request must be fresh"
        assert summary["output_tokens"]["p50"] == 64
    for request in results["requests"]:
        split = ("compute_ms", "queue_ms", "transfer_ms")
        parts = request["other_ms"] + sum(sum(request[key].values()) for key in split)
        assert math.isclose(parts, request["e2e_ms"], rel_tol=1e-9)
        assert request["transfer_bytes"]["kv"] > 0
    assert results["per_class"]["one_image"]["transfer_ms_by_kind"]["embedding"]["p50"] > 0
    assert (
        results["overhead_p50_fraction"]
        == results["per_class"]["one_image"]["overhead_fraction"]["p50"]
    )
    assert _positive(results["kv_handoff_gbps"]) and _positive(results["memcpy_gbps"])
    assert _positive(results["handoff"]["object_store"]["put_fetch_gbps"])
    assert {"overhead_p50", "kv_handoff_over_memcpy"} == set(results["targets"])
    assert "| Class |" in capsys.readouterr().out

    # The session's Ray is still up; the benchmark's control plane and Serve app are gone.
    assert ray_cluster.is_initialized()
    assert APP_NAME not in serve.status().applications
    assert wait_control_plane_gone()
