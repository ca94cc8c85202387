"""JobArrivals: which jobs reached this worker, and which were aborted before theirs did.

The scheduler submits a job and aborts it with two separate calls, and a worker actor runs its
calls on several threads: an abort sent while its job's submit is still on its way can run
first. That abort finds nothing to abort; without a memory of it, the job arriving next would
run to its max_tokens for a client that has gone.

    abort(job) before arrive(job):  remembered (bounded, for `ttl_s`); arrive -> False: drop it
    abort(job) after arrive(job):   True: abort it in order, behind its job (command_queue.py)

An id is remembered as arrived for the last `max_jobs` jobs, so that the usual abort of a job
that already ran (a cancelled request's prefill worker) is not mistaken for an early one. Not
thread-safe: WorkerCore calls it under its lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_JOBS = 4096  # arrived job ids remembered
MAX_EARLY_ABORTS = 1024  # early aborts remembered
EARLY_ABORT_TTL_S = 120.0  # after that, a job that never came is not waited for any more


class JobArrivals:
    def __init__(
        self,
        max_jobs: int = MAX_JOBS,
        max_early_aborts: int = MAX_EARLY_ABORTS,
        ttl_s: float = EARLY_ABORT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_jobs, self.max_early_aborts, self.ttl_s = max_jobs, max_early_aborts, ttl_s
        self.clock = clock
        self._arrived: OrderedDict[str, None] = OrderedDict()  # oldest first
        self._early_aborts: OrderedDict[str, float] = OrderedDict()  # job id -> when aborted

    def arrive(self, job_id: str) -> bool:
        """A job reached the worker; False if it was aborted already (drop it)."""
        self._expire()
        if self._early_aborts.pop(job_id, None) is not None:
            return False
        self._arrived[job_id] = None
        self._arrived.move_to_end(job_id)
        if len(self._arrived) > self.max_jobs:
            self._arrived.popitem(last=False)
        return True

    def abort(self, job_id: str) -> bool:
        """True if the job arrived (abort it now); else it is remembered for when it does."""
        self._expire()
        if job_id in self._arrived:
            return True
        self._early_aborts[job_id] = self.clock()
        self._early_aborts.move_to_end(job_id)
        if len(self._early_aborts) > self.max_early_aborts:
            self._early_aborts.popitem(last=False)
        return False

    @property
    def num_early_aborts(self) -> int:
        return len(self._early_aborts)

    def _expire(self) -> None:
        oldest = self.clock() - self.ttl_s
        while self._early_aborts and next(iter(self._early_aborts.values())) < oldest:
            self._early_aborts.popitem(last=False)
