"""The scheduler's queue of jobs waiting for a worker of one stage (encode or prefill).

Order (policy "slo"): least slack first. A job's slack at time t is

    slack(t) = deadline - t - predicted remaining work to its first token
             = latest_start - t,      latest_start = deadline - predicted remaining work

so ordering by slack is ordering by `latest_start`, a number fixed when the job is queued. It
also ages every job: a job that waits keeps its latest start while newer arrivals get later
ones, so a rock (long TTFT target, lots of work) is overtaken by sand only until sand arriving
after `rock.latest_start - sand's (TTFT target - work)` sorts behind it. Its wait is bounded by
its own slack plus the work ahead of it.

Best-effort jobs (admitted although predicted to miss, or of batch priority) sort after every
other job until they have waited `low_priority_max_wait_ms`; from then on they compete by
slack like the rest (their slack is usually the least by then), so they too wait a bounded time.

Policy "fcfs": arrival order, nothing else.

    key = (yields, latest_start_ms, seq)       yields: low priority and not yet aged
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from scheduler.stage import Stage


@dataclass
class QueuedJob:
    request_id: str
    stage: Stage
    latest_start_ms: float  # deadline - predicted remaining work to the first token (clock ms)
    enqueued_ms: float  # clock ms
    predicted_ms: float  # this stage's compute, on the worker predicted to run it
    is_low_priority: bool = False
    seq: int = field(default=0)  # arrival order, set by the queue


class StageQueue:
    def __init__(self, stage: Stage, by_slack: bool, low_priority_max_wait_ms: float) -> None:
        self.stage = stage
        self.by_slack = by_slack
        self.low_priority_max_wait_ms = low_priority_max_wait_ms
        self._jobs: dict[str, QueuedJob] = {}  # by request id
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._jobs

    def push(self, job: QueuedJob) -> None:
        if job.request_id in self._jobs:
            raise ValueError(f"request {job.request_id!r} is already queued for {self.stage.value}")
        job.seq = next(self._seq)
        self._jobs[job.request_id] = job

    def remove(self, request_id: str) -> QueuedJob | None:
        return self._jobs.pop(request_id, None)

    def key(self, job: QueuedJob, now_ms: float) -> tuple[int, float, int]:
        if not self.by_slack:
            return (0, 0.0, job.seq)
        yields = job.is_low_priority and now_ms - job.enqueued_ms < self.low_priority_max_wait_ms
        return (int(yields), job.latest_start_ms, job.seq)

    def in_order(self, now_ms: float) -> list[QueuedJob]:
        """The waiting jobs, the one to dispatch first first."""
        return sorted(self._jobs.values(), key=lambda job: self.key(job, now_ms))

    def work_ahead_ms(self, candidate: QueuedJob, now_ms: float) -> float:
        """Predicted compute of the queued jobs that would be dispatched before `candidate`."""
        if not self._jobs:
            return 0.0
        if not self.by_slack:
            return sum(job.predicted_ms for job in self._jobs.values())
        mine = self.key(candidate, now_ms)
        return sum(job.predicted_ms for job in self._jobs.values() if self.key(job, now_ms) < mine)
