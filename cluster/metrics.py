"""Prometheus metrics of the serving cluster, on a private registry the control plane serves.

Two sources, two ways of updating:

    a request ends     -> the scheduler calls `ServingMetrics.observe` (its observer, on its
                          event loop: a few histogram observations, no I/O)
                          TTFT / TPOT / E2E per class, requests by outcome, stage times, bytes
    Prometheus scrapes -> `SchedulerGauges.collect` reads the scheduler's snapshot (hopping onto
                          the scheduler's loop; its state is not thread-safe) and the pool sizes
                          hit rates, attainment, stage queues, pool sizes, cost corrections

Stage times come from the ended request's trace, read by scheduler/trace_breakdown.py:
"scheduler_queue" is the wait in the scheduler's stage queue (`dispatched` waited_ms),
"queue" the wait on the worker (queue_ms), "compute" its engine time (compute_ms), "transfer"
the fetch of the stage's input (embeddings for prefill, KV for decode). A request's attempts
add up: one observation per request and stage.

Agent runs (tool calls, FTR, cost per run) have their series in cluster/agent_metrics.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cluster.config import ConfigError
from scheduler.request_class import RequestClass
from scheduler.slo_ledger import EndedRequest
from scheduler.snapshot import SchedulerSnapshot
from scheduler.stage import Stage
from scheduler.trace import Trace
from scheduler.trace_breakdown import (
    CONSUMER_STAGE,
    TRANSFER_KINDS,
    TraceBreakdown,
    trace_breakdown,
)
from scheduler.trace_events import EventName

logger = logging.getLogger("triserve.metrics")
T = TypeVar("T")

REQUEST_CLASSES = tuple(c.value for c in RequestClass)
OUTCOMES = ("attained", "missed", "rejected", "failed", "cancelled")
STAGES = tuple(s.value for s in Stage)
TIME_KINDS = ("scheduler_queue", "queue", "compute", "transfer")
# Bucket bounds (s) include the default SLO targets (TTFT 1, 3, 15 s; TPOT 0.2 s).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCRAPE_TIMEOUT_S = 5.0  # how long a scrape waits for the scheduler's loop


class ServingMetrics:
    """Every metric of the cluster, on its own registry (`registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        by_class = ["request_class"]
        self.ttft = Histogram(
            "triserve_ttft_seconds",
            "Time to first token of finished requests.",
            by_class,
            registry=self.registry,
            buckets=TTFT_BUCKETS,
        )
        self.tpot = Histogram(
            "triserve_tpot_seconds",
            "Time per output token after the first (2+ tokens).",
            by_class,
            registry=self.registry,
            buckets=TPOT_BUCKETS,
        )
        self.e2e = Histogram(
            "triserve_e2e_latency_seconds",
            "Arrival to last token of finished requests.",
            by_class,
            registry=self.registry,
            buckets=E2E_BUCKETS,
        )
        self.requests = Counter(
            "triserve_requests",
            "Ended requests: attained or missed their SLO (finished), "
            "rejected at admission, failed or cancelled.",
            ["request_class", "outcome"],
            registry=self.registry,
        )
        self.stage_time = Histogram(
            "triserve_stage_seconds",
            "Per request and stage: time in the scheduler's queue, "
            "the worker's queue, engine compute, and the transfer of the stage's input.",
            ["stage", "kind"],
            registry=self.registry,
            buckets=STAGE_BUCKETS,
        )
        self.transfer_bytes = Counter(
            "triserve_transfer_bytes",
            "Bytes fetched between workers (embeddings, KV).",
            ["kind"],
            registry=self.registry,
        )
        for request_class in REQUEST_CLASSES:  # every series exists from the start (rate() works)
            for outcome in OUTCOMES:
                self.requests.labels(request_class, outcome)
        for kind in TRANSFER_KINDS:
            self.transfer_bytes.labels(kind)

    def observe(self, ended: EndedRequest) -> None:
        """The scheduler's observer: called once per request that ended or was rejected. Never
        raises: it runs inside the scheduler's end of the request."""
        try:
            self._observe(ended)
        except Exception:
            logger.exception("metrics of request %s were not recorded", ended.request_id)

    def _observe(self, ended: EndedRequest) -> None:
        outcome = ended.outcome
        if outcome is not None:
            label = "attained" if outcome.attained else "missed"
            self.ttft.labels(ended.request_class).observe(outcome.ttft_ms / 1000.0)
            if outcome.tpot_ms is not None:
                self.tpot.labels(ended.request_class).observe(outcome.tpot_ms / 1000.0)
            self.e2e.labels(ended.request_class).observe(outcome.e2e_ms / 1000.0)
        else:
            label = ended.state if ended.state in OUTCOMES else "failed"
        self.requests.labels(ended.request_class, label).inc()
        if ended.trace is not None:
            split = trace_breakdown(ended.trace.events)
            for (stage, kind), ms in stage_times_ms(ended.trace, split).items():
                self.stage_time.labels(stage, kind).observe(ms / 1000.0)
            for kind, nbytes in split.transfer_bytes.items():
                self.transfer_bytes.labels(kind).inc(nbytes)

    def watch(self, read: Callable[[], ClusterReadings]) -> None:
        """Serve the scrape-time gauges from `read` (called on every scrape)."""
        self.registry.register(SchedulerGauges(read))


def stage_times_ms(trace: Trace, split: TraceBreakdown) -> dict[tuple[str, str], float]:
    """(stage, kind) -> ms the request spent there, summed over its attempts (`split`: the
    breakdown of `trace`)."""
    times: dict[tuple[str, str], float] = defaultdict(float)
    for kind, by_stage in (
        ("scheduler_queue", split.scheduler_queue_ms),
        ("queue", split.queue_ms),
        ("compute", split.compute_ms),
    ):
        for stage, ms in by_stage.items():
            times[stage, kind] += ms
    for transfer_kind, ms in split.transfer_ms.items():
        times[CONSUMER_STAGE[transfer_kind], "transfer"] += ms
    # Observers hear of an end before the lifecycle writes its decode_steps event.
    if trace.num_decode_steps and trace.event(EventName.DECODE_STEPS) is None:
        times["decode", "queue"] += trace.decode_queue_ms
        times["decode", "compute"] += trace.decode_compute_ms
    return dict(times)


@dataclass(frozen=True)
class ClusterReadings:
    """What the scrape-time gauges read: the scheduler's view and each pool's active workers."""

    snapshot: SchedulerSnapshot
    num_workers_by_pool: dict[str, int]


class SchedulerGauges(Collector):
    """Gauges computed when Prometheus scrapes, so they never go stale (a removed worker's
    series disappears with it)."""

    def __init__(self, read: Callable[[], ClusterReadings]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        try:
            readings = self._read()
        except Exception:  # the request metrics are still worth serving
            logger.warning("reading the scheduler for a scrape failed", exc_info=True)
            return
        snapshot = readings.snapshot
        ledger = snapshot.ledger
        if ledger is not None:
            yield _gauge(
                "triserve_prefix_cache_hit_rate",
                "Prompt tokens served from a prefix cache / prompt tokens prefilled.",
                [],
                [([], ledger.prefix_hit_rate)],
            )
            yield _gauge(
                "triserve_embedding_cache_hit_rate",
                "Images whose embeddings a worker already held / images admitted.",
                [],
                [([], ledger.embedding_hit_rate)],
            )
            attainment = [
                ([name], counts.num_attained / counts.num_finished)
                for name, counts in ledger.classes.items()
                if counts.num_finished
            ]
            yield _gauge(
                "triserve_slo_attainment",
                "Finished requests that met both SLO targets / finished requests, since start.",
                ["request_class"],
                attainment,
            )
        queued = [([stage], count) for stage, count in snapshot.num_queued_by_stage.items()]
        yield _gauge(
            "triserve_scheduler_queued_jobs",
            "Jobs waiting in the scheduler's stage queues.",
            ["stage"],
            queued,
        )
        pools = [([pool], size) for pool, size in readings.num_workers_by_pool.items()]
        yield _gauge(
            "triserve_pool_workers", "Active (not draining) workers per pool.", ["pool"], pools
        )
        suspected = [
            ([pool], sum(w.is_suspected for w in snapshot.workers.values() if w.pool == pool))
            for pool in readings.num_workers_by_pool
        ]
        yield _gauge(
            "triserve_pool_suspected_workers",
            "Workers per pool whose last poll failed (no new work until they answer).",
            ["pool"],
            suspected,
        )
        pinned = [
            ([worker_id], worker.load.num_pinned_blocks)
            for worker_id, worker in sorted(snapshot.workers.items())
            if worker.load is not None
        ]
        yield _gauge(
            "triserve_pinned_kv_blocks",
            "KV blocks held by paused session calls, per worker.",
            ["worker"],
            pinned,
        )
        corrections = [
            ([worker_id, stage], value)
            for worker_id, costs in sorted(snapshot.costs.items())
            for stage, value in costs.corrections.items()
            if _runs(snapshot, worker_id, stage)
        ]
        yield _gauge(
            "triserve_cost_correction",
            "Observed / profiled stage time per worker (EWMA; 1 = as profiled).",
            ["worker", "stage"],
            corrections,
        )


def _runs(snapshot: SchedulerSnapshot, worker_id: str, stage: str) -> bool:
    worker = snapshot.workers.get(worker_id)
    return worker is None or Stage(stage).letter in worker.stages


def _gauge(name: str, doc: str, labels: list[str], samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, float(value))
    return family


def on_loop(loop: asyncio.AbstractEventLoop, read: Callable[[], T], timeout_s: float) -> T:
    """`read()` run on `loop` (from another thread, e.g. the metrics server's), its result."""
    try:
        if asyncio.get_running_loop() is loop:
            return read()
    except RuntimeError:  # no loop in this thread
        pass
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(read())
        except Exception as error:
            future.set_exception(error)

    loop.call_soon_threadsafe(run)
    return future.result(timeout_s)


class MetricsServer:
    """http://host:port/metrics, served from a daemon thread; port 0 takes any free port."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            raise ConfigError(
                f"metrics_port {port}: cannot listen on {host} ({e.strerror}); "
                "set metrics_port to 0 (any free port) or null (off)"
            ) from None
        self.address = f"{host}:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
