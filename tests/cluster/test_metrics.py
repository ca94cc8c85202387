"""The Prometheus metrics, fed ended requests with hand-built traces (no Ray, no HTTP scrape
except the server's own test)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import urllib.request
from pathlib import Path

import pytest

from cluster.config import ConfigError
from cluster.metrics import ClusterReadings, MetricsServer, ServingMetrics, on_loop
from scheduler.cost_model import WorkerCostSnapshot
from scheduler.slo_ledger import EndedRequest, RequestOutcome, SloLedger
from scheduler.snapshot import SchedulerSnapshot, WorkerSnapshot
from scheduler.trace import Trace
from workers.contract.cost_profile import DecodeCost, LinearCost

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def image_request_trace(request_id: str = "r1") -> Trace:
    """One image request through encode, prefill and decode on three workers."""
    trace = Trace(request_id, 1000.0, Clock())
    trace.record("queued")
    trace.record("dispatched", stage="encode", worker="e0", waited_ms=5.0)
    trace.record("encode_done", worker="e0", compute_ms=10.0, queue_ms=2.0)
    trace.record("dispatched", stage="prefill", worker="p0", waited_ms=1.0)
    trace.record("embedding_transfer", bytes=1000, ms=3.0, producer="e0", consumer="p0")
    trace.record("first_token", worker="p0", compute_ms=20.0, queue_ms=4.0)
    trace.record("dispatched", stage="decode", worker="d0", waited_ms=0.5)
    trace.record("kv_transfer", bytes=4096, ms=6.0, producer="p0", consumer="d0")
    trace.record("decode_steps", count=5, compute_ms=50.0, queue_ms=1.0)
    return trace


def finished(trace: Trace, request_class: str = "pebble", attained: bool = True, **times):
    outcome = RequestOutcome(
        trace.request_id, request_class, times.get("ttft_ms", 100.0), times.get("tpot_ms", 25.0),
        times.get("e2e_ms", 200.0), 5, attained,
    )  # fmt: skip
    return EndedRequest(trace.request_id, request_class, "finished", outcome, trace)


def sample(metrics: ServingMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_finished_request_lands_in_its_class_latency_histograms():
    metrics = ServingMetrics()
    metrics.observe(finished(image_request_trace(), "sand"))

    assert sample(metrics, "triserve_ttft_seconds_count", request_class="sand") == 1
    assert sample(metrics, "triserve_ttft_seconds_sum", request_class="sand") == 0.1
    assert sample(metrics, "triserve_ttft_seconds_bucket", request_class="sand", le="0.1") == 1
    assert sample(metrics, "triserve_ttft_seconds_bucket", request_class="sand", le="0.05") == 0
    assert sample(metrics, "triserve_tpot_seconds_sum", request_class="sand") == 0.025
    assert sample(metrics, "triserve_e2e_latency_seconds_sum", request_class="sand") == 0.2
    assert sample(metrics, "triserve_ttft_seconds_count", request_class="rock") is None
    assert sample(metrics, "triserve_requests_total", request_class="sand", outcome="attained") == 1
    assert sample(metrics, "triserve_requests_total", request_class="sand", outcome="missed") == 0


def test_stage_queue_compute_and_transfer_times_come_from_the_trace():
    metrics = ServingMetrics()
    metrics.observe(finished(image_request_trace()))

    expected_ms = {
        ("encode", "scheduler_queue"): 5.0, ("encode", "queue"): 2.0,
        ("encode", "compute"): 10.0, ("prefill", "scheduler_queue"): 1.0,
        ("prefill", "transfer"): 3.0, ("prefill", "queue"): 4.0, ("prefill", "compute"): 20.0,
        ("decode", "scheduler_queue"): 0.5, ("decode", "transfer"): 6.0,
        ("decode", "queue"): 1.0, ("decode", "compute"): 50.0,
    }  # fmt: skip
    for (stage, kind), ms in expected_ms.items():
        labels = {"stage": stage, "kind": kind}
        assert sample(metrics, "triserve_stage_seconds_count", **labels) == 1, labels
        assert sample(metrics, "triserve_stage_seconds_sum", **labels) == pytest.approx(ms / 1e3)
    assert sample(metrics, "triserve_stage_seconds_count", stage="encode", kind="transfer") is None
    assert sample(metrics, "triserve_transfer_bytes_total", kind="embedding") == 1000
    assert sample(metrics, "triserve_transfer_bytes_total", kind="kv") == 4096


def test_a_redriven_request_adds_its_attempts_into_one_observation():
    trace = Trace("r2", 1000.0, Clock())
    trace.record("dispatched", stage="prefill", worker="p0", waited_ms=2.0)
    trace.record("first_token", worker="p0", compute_ms=20.0, queue_ms=4.0)
    trace.record("redrive", stage="decode")
    trace.record("dispatched", stage="prefill", worker="p1", waited_ms=3.0)
    trace.record("first_token", worker="p1", compute_ms=30.0, queue_ms=1.0)
    metrics = ServingMetrics()
    metrics.observe(finished(trace, "sand"))

    labels = {"stage": "prefill", "kind": "compute"}
    assert sample(metrics, "triserve_stage_seconds_count", **labels) == 1
    assert sample(metrics, "triserve_stage_seconds_sum", **labels) == pytest.approx(0.05)
    queued = {"stage": "prefill", "kind": "scheduler_queue"}
    assert sample(metrics, "triserve_stage_seconds_sum", **queued) == pytest.approx(0.005)


def test_decode_steps_not_yet_written_to_the_trace_still_count():
    """Observers hear of the end before the lifecycle writes the decode_steps event."""
    trace = Trace("r3", 1000.0, Clock())
    trace.add_decode_steps(3, compute_ms=30.0, queue_ms=2.0)
    metrics = ServingMetrics()
    metrics.observe(finished(trace, "sand"))

    compute = {"stage": "decode", "kind": "compute"}
    assert sample(metrics, "triserve_stage_seconds_sum", **compute) == pytest.approx(0.03)
    queue = {"stage": "decode", "kind": "queue"}
    assert sample(metrics, "triserve_stage_seconds_sum", **queue) == pytest.approx(0.002)


def test_a_missed_single_token_request_has_no_tpot():
    metrics = ServingMetrics()
    metrics.observe(finished(Trace("r4", 1000.0, Clock()), "rock", False, tpot_ms=None))

    assert sample(metrics, "triserve_requests_total", request_class="rock", outcome="missed") == 1
    assert sample(metrics, "triserve_ttft_seconds_count", request_class="rock") == 1
    assert sample(metrics, "triserve_tpot_seconds_count", request_class="rock") is None


@pytest.mark.parametrize("state", ["rejected", "failed", "cancelled"])
def test_unfinished_requests_count_by_outcome_without_latencies(state):
    trace = None if state == "rejected" else image_request_trace()
    metrics = ServingMetrics()
    metrics.observe(EndedRequest("r5", "pebble", state, None, trace))

    assert sample(metrics, "triserve_requests_total", request_class="pebble", outcome=state) == 1
    assert sample(metrics, "triserve_ttft_seconds_count", request_class="pebble") is None
    stage_count = sample(metrics, "triserve_stage_seconds_count", stage="encode", kind="compute")
    assert stage_count == (None if trace is None else 1)  # the work it did still happened


def scheduler_snapshot() -> SchedulerSnapshot:
    ledger = SloLedger(num_prompt_tokens=400, num_cached_prompt_tokens=100)
    ledger.num_images, ledger.num_images_not_encoded = 8, 2
    ledger.classes["sand"].num_finished, ledger.classes["sand"].num_attained = 4, 3
    cost = WorkerCostSnapshot(
        LinearCost(1.0, 0.1), LinearCost(2.0, 0.05), DecodeCost(3.0, 0.5, 0.001),
        {"encode": 1.0, "prefill": 1.25, "decode": 0.8}, {"encode": 0, "prefill": 3, "decode": 7},
        512, 4,
    )  # fmt: skip
    worker = WorkerSnapshot("pd-0", "pd", "tiny", "PD", 1, False, None, 0)
    return SchedulerSnapshot(
        workers={"pd-0": worker}, num_requests_by_state={},
        num_queued_by_stage={"encode": 2, "prefill": 1, "decode": 0},
        costs={"pd-0": cost}, ledger=ledger,
    )  # fmt: skip


def test_scrape_time_gauges_read_the_scheduler_snapshot_and_pool_sizes():
    metrics = ServingMetrics()
    metrics.watch(lambda: ClusterReadings(scheduler_snapshot(), {"pd": 1, "encode": 2}))

    assert sample(metrics, "triserve_prefix_cache_hit_rate") == 0.25
    assert sample(metrics, "triserve_embedding_cache_hit_rate") == 0.25
    assert sample(metrics, "triserve_slo_attainment", request_class="sand") == 0.75
    assert sample(metrics, "triserve_slo_attainment", request_class="rock") is None  # none ended
    assert sample(metrics, "triserve_scheduler_queued_jobs", stage="encode") == 2
    assert sample(metrics, "triserve_scheduler_queued_jobs", stage="decode") == 0
    assert sample(metrics, "triserve_pool_workers", pool="encode") == 2
    assert sample(metrics, "triserve_cost_correction", worker="pd-0", stage="prefill") == 1.25
    assert sample(metrics, "triserve_cost_correction", worker="pd-0", stage="encode") is None


def test_a_failing_scheduler_read_still_serves_the_request_metrics():
    def unreadable() -> ClusterReadings:
        raise TimeoutError("the scheduler's loop is busy")

    metrics = ServingMetrics()
    metrics.watch(unreadable)
    metrics.observe(finished(image_request_trace(), "sand"))

    assert sample(metrics, "triserve_ttft_seconds_count", request_class="sand") == 1
    assert sample(metrics, "triserve_pool_workers", pool="encode") is None


def test_on_loop_runs_the_read_on_the_loops_thread():
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        reader = await asyncio.to_thread(on_loop, loop, threading.get_ident, 5.0)
        return reader, threading.get_ident()

    reader, loop_thread = asyncio.run(main())
    assert reader == loop_thread


def test_metrics_server_serves_the_registry_and_refuses_a_taken_port():
    metrics = ServingMetrics()
    metrics.observe(finished(image_request_trace(), "sand"))
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=10) as answer:
            body = answer.read().decode()
        assert 'triserve_ttft_seconds_count{request_class="sand"} 1.0' in body
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(ConfigError, match="metrics_port"):
                MetricsServer(metrics.registry, "127.0.0.1", taken.getsockname()[1])
    finally:
        server.stop()


def test_the_grafana_dashboard_queries_only_exported_metrics():
    dashboard = json.loads((ROOT / "deploy/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queried = {name for expr in exprs for name in re.findall(r"triserve_\w+", expr)}
    metrics = ServingMetrics()
    metrics.watch(lambda: ClusterReadings(scheduler_snapshot(), {"pd": 1}))
    metrics.observe(finished(image_request_trace(), "sand"))
    exported = {s.name for family in metrics.registry.collect() for s in family.samples}

    assert queried and queried <= exported, queried - exported


def test_a_malformed_trace_is_logged_not_raised_into_the_scheduler(caplog):
    trace = Trace("r6", 1000.0, Clock())
    trace.record("encode_done", compute_ms="not a number")
    metrics = ServingMetrics()
    metrics.observe(EndedRequest("r6", "pebble", "failed", None, trace))

    assert "metrics of request r6 were not recorded" in caplog.text
