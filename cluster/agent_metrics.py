"""Finished agent runs -> Prometheus series and the per-class figures cluster state shows (seed
001 §9: FTR and E2E tails, tool-call rate, cache hits, cost per successful run, runs within
budget, each split by request class).

    the ingress ends a run -> ControlPlane.record_agent_run(summary) -> AgentRunMetrics.record
                               |- AgentRunStats (counts, sums, the last MAX_SAMPLES latencies)
                               |     -> snapshot() -> ClusterSnapshot.agent -> `triserve status`
                               '- the triserve_agent_* series on the control plane's registry

Which runs count where (the same rules on both sides, so a PromQL ratio of the series equals
the figure cluster state shows):
  - every run counts by status, and in the work sums: tool calls and cache hits, prompt,
    cached and reprefilled tokens, engine-seconds (failed work was still spent);
  - latencies (FTR, E2E) are of runs that answered ("completed" or "incomplete"): a failure
    or a client that left says nothing about how fast the cluster answers, and is counted;
  - tool time before FTR is summed over the runs whose FTR was observed, so that over the FTR
    sum it is the share of FTR spent waiting on tools;
  - "within budget" is a completed run whose E2E met its budget (or that had none);
  - cost per successful run: engine-seconds of completed runs / completed runs (engine-seconds
    are labelled by status so PromQL can do the same division).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from agent.run_summary import REQUEST_CLASSES, RunSummary

logger = logging.getLogger("triserve.agent_metrics")
RUN_STATUSES = ("completed", "incomplete", "failed", "cancelled")  # RunSummary.status
ANSWERED = ("completed", "incomplete")  # the runs whose latencies count
OVERALL = "all"  # the row over every class
MAX_SAMPLES = 1000  # latencies kept per row for the percentiles: the most recent runs
# Bounds (s): an agent run spans several model calls and tools, so longer than one request's.
FTR_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0)
E2E_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class AgentStatsSnapshot:
    """One request class's agent runs since start-up (or every class's: `OVERALL`). Latency
    percentiles are over the last MAX_SAMPLES answered runs; None where nothing was measured."""

    request_class: str
    num_runs: int
    num_completed: int
    num_incomplete: int
    num_failed: int
    num_cancelled: int
    num_within_budget: int  # completed with E2E <= budget (or no budget)
    ftr_p50_ms: float | None
    ftr_p90_ms: float | None
    ftr_p99_ms: float | None
    e2e_p50_ms: float | None
    e2e_p90_ms: float | None
    e2e_p99_ms: float | None
    tool_calls_per_run: float
    tool_share_of_ftr: float | None  # tool time before FTR / FTR, both summed
    tool_cache_hit_rate: float | None  # tool calls answered from the result cache / tool calls
    cached_share: float | None  # prompt tokens whose KV was reused / prompt tokens
    num_reprefilled_tokens: int  # prompt tokens prefilled again (not reused)
    cost_per_successful_run_s: float | None  # engine-seconds of completed runs / completed runs


class _RunTally:
    """Counts, sums and recent latencies of one row."""

    def __init__(self) -> None:
        self.num_by_status: dict[str, int] = {}
        self.num_within_budget = 0
        self.num_tool_calls = 0
        self.num_tool_cache_hits = 0
        self.tool_ms_before_ftr = 0.0
        self.ftr_ms = 0.0  # summed over the runs whose FTR was observed
        self.num_prompt_tokens = 0
        self.num_cached_tokens = 0
        self.completed_engine_s = 0.0
        self.recent_ftr_ms: deque[float] = deque(maxlen=MAX_SAMPLES)
        self.recent_e2e_ms: deque[float] = deque(maxlen=MAX_SAMPLES)

    def add(self, summary: RunSummary) -> None:
        status = summary.status
        self.num_by_status[status] = self.num_by_status.get(status, 0) + 1
        self.num_within_budget += _is_within_budget(summary)
        self.num_tool_calls += summary.num_tool_calls
        self.num_tool_cache_hits += summary.num_tool_cache_hits
        self.num_prompt_tokens += summary.num_prompt_tokens
        self.num_cached_tokens += summary.num_cached_tokens
        if status == "completed":
            self.completed_engine_s += summary.engine_s
        if status in ANSWERED:
            self.recent_e2e_ms.append(summary.e2e_ms)
            if summary.ftr_ms is not None:
                self.recent_ftr_ms.append(summary.ftr_ms)
                self.ftr_ms += summary.ftr_ms
                self.tool_ms_before_ftr += summary.tool_ms_before_ftr

    def snapshot(self, request_class: str) -> AgentStatsSnapshot:
        num_runs = sum(self.num_by_status.values())
        num_completed = self.num_by_status.get("completed", 0)
        ftr = percentiles(self.recent_ftr_ms, (50, 90, 99))
        e2e = percentiles(self.recent_e2e_ms, (50, 90, 99))
        return AgentStatsSnapshot(
            request_class=request_class,
            num_runs=num_runs,
            num_completed=num_completed,
            num_incomplete=self.num_by_status.get("incomplete", 0),
            num_failed=self.num_by_status.get("failed", 0),
            num_cancelled=self.num_by_status.get("cancelled", 0),
            num_within_budget=self.num_within_budget,
            ftr_p50_ms=ftr[0],
            ftr_p90_ms=ftr[1],
            ftr_p99_ms=ftr[2],
            e2e_p50_ms=e2e[0],
            e2e_p90_ms=e2e[1],
            e2e_p99_ms=e2e[2],
            tool_calls_per_run=self.num_tool_calls / num_runs if num_runs else 0.0,
            tool_share_of_ftr=_ratio(self.tool_ms_before_ftr, self.ftr_ms),
            tool_cache_hit_rate=_ratio(self.num_tool_cache_hits, self.num_tool_calls),
            cached_share=_ratio(self.num_cached_tokens, self.num_prompt_tokens),
            num_reprefilled_tokens=self.num_prompt_tokens - self.num_cached_tokens,
            cost_per_successful_run_s=_ratio(self.completed_engine_s, num_completed),
        )


class AgentRunStats:
    """The figures of finished agent runs, per request class and over all of them. Plain
    Python, kept by the control plane on its event loop (not thread-safe)."""

    def __init__(self) -> None:
        self._classes: dict[str, _RunTally] = {}
        self._overall = _RunTally()

    def record(self, summary: RunSummary) -> None:
        self._classes.setdefault(summary.request_class, _RunTally()).add(summary)
        self._overall.add(summary)

    def snapshot(self) -> list[AgentStatsSnapshot]:
        """One row per class that had runs (REQUEST_CLASSES' order first), then the OVERALL
        row; empty before the first run."""
        if not self._classes:
            return []
        known = [name for name in REQUEST_CLASSES if name in self._classes]
        others = sorted(set(self._classes) - set(known))
        rows = [self._classes[name].snapshot(name) for name in [*known, *others]]
        return [*rows, self._overall.snapshot(OVERALL)]


class AgentRunMetrics:
    """The triserve_agent_* series, on the control plane's registry (cluster/metrics.py), and
    the AgentRunStats behind cluster state: `record` feeds both."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stats = AgentRunStats()
        by_class = ["request_class"]
        by_status = ["request_class", "status"]

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.ftr = Histogram(
            "triserve_agent_ftr_seconds",
            "Agent runs that answered: arrival to the first token of the final answer.",
            by_class,
            registry=registry,
            buckets=FTR_BUCKETS,
        )
        self.e2e = Histogram(
            "triserve_agent_e2e_seconds",
            "Agent runs that answered (completed or incomplete): arrival to the last token.",
            by_class,
            registry=registry,
            buckets=E2E_BUCKETS,
        )
        self.runs = counter("triserve_agent_runs", "Finished agent runs by status.", by_status)
        self.within_budget = counter(
            "triserve_agent_runs_within_budget",
            "Completed agent runs whose E2E met their budget (or that had none).",
            by_class,
        )
        self.tool_calls = counter(
            "triserve_agent_tool_calls", "Tool calls the controller answered.", by_class
        )
        self.tool_cache_hits = counter(
            "triserve_agent_tool_cache_hits",
            "Tool calls answered from the result cache.",
            by_class,
        )
        self.tool_seconds_before_ftr = counter(
            "triserve_agent_tool_seconds_before_ftr",
            "Wall time a tool ran before FTR, of the runs in triserve_agent_ftr_seconds.",
            by_class,
        )
        self.prompt_tokens = counter(
            "triserve_agent_prompt_tokens", "Prompt tokens over a run's model calls.", by_class
        )
        self.cached_tokens = counter(
            "triserve_agent_cached_tokens",
            "Prompt tokens whose KV was reused (paused KV or the prefix cache).",
            by_class,
        )
        self.reprefilled_tokens = counter(
            "triserve_agent_reprefilled_tokens",
            "Prompt tokens prefilled again (prompt - cached).",
            by_class,
        )
        self.engine_seconds = counter(
            "triserve_agent_engine_seconds",
            "Engine compute of a run's model calls, by the run's status.",
            by_status,
        )
        for request_class in REQUEST_CLASSES:  # every series exists from the start (rate() works)
            for status in RUN_STATUSES:
                self.runs.labels(request_class, status)
                self.engine_seconds.labels(request_class, status)
            for series in self._by_class():
                series.labels(request_class)

    def record(self, summary: RunSummary) -> None:
        """One finished run. Never raises: the ingress sends it and does not wait."""
        try:
            self.stats.record(summary)
            self._observe(summary)
        except Exception:
            logger.exception("an agent run's metrics were not recorded")

    def _observe(self, summary: RunSummary) -> None:
        request_class, status = summary.request_class, summary.status
        self.runs.labels(request_class, status).inc()
        self.engine_seconds.labels(request_class, status).inc(summary.engine_s)
        if _is_within_budget(summary):
            self.within_budget.labels(request_class).inc()
        self.tool_calls.labels(request_class).inc(summary.num_tool_calls)
        self.tool_cache_hits.labels(request_class).inc(summary.num_tool_cache_hits)
        self.prompt_tokens.labels(request_class).inc(summary.num_prompt_tokens)
        self.cached_tokens.labels(request_class).inc(summary.num_cached_tokens)
        self.reprefilled_tokens.labels(request_class).inc(summary.num_reprefilled_tokens)
        if status in ANSWERED:
            self.e2e.labels(request_class).observe(summary.e2e_ms / 1000.0)
            if summary.ftr_ms is not None:
                self.ftr.labels(request_class).observe(summary.ftr_ms / 1000.0)
                seconds = summary.tool_ms_before_ftr / 1000.0
                self.tool_seconds_before_ftr.labels(request_class).inc(seconds)

    def _by_class(self) -> list[Counter | Histogram]:
        return [
            self.ftr,
            self.e2e,
            self.within_budget,
            self.tool_calls,
            self.tool_cache_hits,
            self.tool_seconds_before_ftr,
            self.prompt_tokens,
            self.cached_tokens,
            self.reprefilled_tokens,
        ]


def percentiles(values: Iterable[float], points: Sequence[float]) -> list[float | None]:
    """The `points` percentiles of `values`, interpolated linearly between the sorted samples
    (numpy's default, as bench/common/stats.py reports them); None each when there are none."""
    ordered = sorted(values)
    if not ordered:
        return [None for _ in points]
    found = []
    for point in points:
        rank = (len(ordered) - 1) * point / 100.0
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        found.append(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
    return found


def _is_within_budget(summary: RunSummary) -> bool:
    return summary.status == "completed" and summary.is_within_budget


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None
