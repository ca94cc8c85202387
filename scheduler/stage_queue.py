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

The work ahead of a new job (what admission forecasts its wait from) is the queued work that
sorts before it, plus the work that jobs arriving *after* it will put before it while it waits:
a pebble admitted now is overtaken by every sand job arriving in the next second or two. The
queue remembers the jobs pushed in the last `arrival_window_ms`; each stands for a flow of work
(predicted ms / window per ms) whose future jobs start by `arrival + lead`. A flow overtakes a
job with latest start L for as long as `t + lead < L`, i.e. for `window = L - lead - now` ms
(at most `arrival_window_ms`: the rate is not extrapolated further ahead than it was measured
back), but only while the job still waits. Its wait W is then the solution of

    W = queued ahead + sum over flows of rate * min(window, W)

(M/G/1 with priorities, to first order, on one worker). When the flows it cannot escape carry
more than one ms of work per ms, W runs to the end of their windows: the job is rejected.
`arrival_window_ms` 0 counts the queued work only.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from scheduler.mode import SchedulingMode
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


@dataclass(frozen=True)
class Arrival:
    """A job pushed recently: a sample of the flow of work arriving at the stage."""

    enqueued_ms: float
    lead_ms: float  # latest_start - enqueued: how soon after arriving a job like it must start
    predicted_ms: float


class StageQueue:
    def __init__(
        self,
        stage: Stage,
        mode: SchedulingMode,
        low_priority_max_wait_ms: float,
        arrival_window_ms: float = 0.0,
    ) -> None:
        self.stage = stage
        self.mode = mode
        self.low_priority_max_wait_ms = low_priority_max_wait_ms
        self.arrival_window_ms = arrival_window_ms
        self._jobs: dict[str, QueuedJob] = {}  # by request id
        self._seq = itertools.count()
        self._arrivals: deque[Arrival] = deque()  # interactive jobs pushed within the window

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._jobs

    def push(self, job: QueuedJob) -> None:
        if job.request_id in self._jobs:
            raise ValueError(f"request {job.request_id!r} is already queued for {self.stage.value}")
        job.seq = next(self._seq)
        self._jobs[job.request_id] = job
        if self.mode.is_slo_aware and not job.is_low_priority and self.arrival_window_ms > 0:
            lead = job.latest_start_ms - job.enqueued_ms
            self._arrivals.append(Arrival(job.enqueued_ms, lead, job.predicted_ms))

    def remove(self, request_id: str) -> QueuedJob | None:
        return self._jobs.pop(request_id, None)

    def key(self, job: QueuedJob, now_ms: float) -> tuple[int, float, int]:
        if not self.mode.is_slo_aware:
            return (0, 0.0, job.seq)
        yields = job.is_low_priority and now_ms - job.enqueued_ms < self.low_priority_max_wait_ms
        return (int(yields), job.latest_start_ms, job.seq)

    def in_order(self, now_ms: float) -> list[QueuedJob]:
        """The waiting jobs, the one to dispatch first first."""
        return sorted(self._jobs.values(), key=lambda job: self.key(job, now_ms))

    def work_ahead_ms(self, candidate: QueuedJob, now_ms: float) -> float:
        """Predicted compute that would be dispatched before `candidate`: the queued jobs that
        sort before it, and the jobs that will arrive and overtake it while it waits."""
        if not self.mode.is_slo_aware:
            return sum(job.predicted_ms for job in self._jobs.values())
        mine = self.key(candidate, now_ms)
        queued = sum(
            job.predicted_ms for job in self._jobs.values() if self.key(job, now_ms) < mine
        )
        if candidate.is_low_priority:
            return queued  # best effort: a forecast of it is moot, it yields to everything
        return wait_with_overtaking(queued, self._flows(candidate.latest_start_ms, now_ms))

    def _flows(self, latest_start_ms: float, now_ms: float) -> list[tuple[float, float]]:
        """(rate, window) of each recent arrival's flow that would overtake such a job."""
        while self._arrivals and self._arrivals[0].enqueued_ms < now_ms - self.arrival_window_ms:
            self._arrivals.popleft()
        flows = []
        for arrival in self._arrivals:
            # No further ahead than the queue looked back, all the rate was measured over.
            window = min(latest_start_ms - arrival.lead_ms - now_ms, self.arrival_window_ms)
            if window > 0:
                flows.append((arrival.predicted_ms / self.arrival_window_ms, window))
        return flows


def wait_with_overtaking(queued_ms: float, flows: list[tuple[float, float]]) -> float:
    """The W solving W = queued_ms + sum(rate * min(window, W)) over `flows` (rate, window):
    piecewise linear in W, so close the flows in order of window until W fits the segment."""
    fixed, open_rate = queued_ms, sum(rate for rate, _ in flows)
    for rate, window in sorted(flows, key=lambda flow: flow[1]):
        if open_rate < 1.0:
            wait = fixed / (1.0 - open_rate)
            if wait <= window:
                return wait
        fixed += rate * window  # W outlasts this flow's window: all of it gets ahead
        open_rate -= rate
    return fixed
