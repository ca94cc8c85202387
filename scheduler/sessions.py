"""Sessions: the calls of one conversation (RequestSpec.session), and the paused KV they leave on
workers. Pure bookkeeping; the driver and the scheduler act on what it answers.

    the worker reports paused KV  apply(worker, paused, released), before the poll's tokens
    the call's last token ends it driver: ended_paused(req, worker)    -> the KV is pinned there
                                  (whichever comes first waits for the other; the client
                                  cannot send its next call in between)
    a call continues one          continuation(spec) -> Continuation: run its prefill on that
                                  worker, resuming that job's KV (or None: a plain prefill)
    queue order                   session_arrival(spec): the session's first call's arrival, so
                                  a returning turn does not queue behind new sessions
    the KV goes                   a PauseReleased, forget(request) (the client is done with it),
                                  forget_worker (lost or removed)

A continuation names the call it continues (`resume_of`), or the scheduler takes the session's
last paused call. The directory only routes: whether the KV is still there is the worker's
business, and a continuation whose KV is gone is a plain prefill with the same tokens.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scheduler.request import RequestSpec
from workers.contract.messages import PausedKV, PauseReleased

MAX_SESSIONS = 100_000  # remembered sessions (first arrivals), least recent dropped first
PAUSE_SAMPLES = 512  # observed pauses the expected pause is the median of


@dataclass(frozen=True)
class PausedCall:
    request_id: str  # the call's id
    job_id: str  # the id its worker knows the KV by (the last attempt's)
    worker_id: str
    session_id: str
    num_tokens: int = 0
    num_blocks: int = 0
    paused_at_ms: float = 0.0


@dataclass(frozen=True)
class Continuation:
    worker_id: str  # holds the paused KV: the continuation's prefill runs there
    resume_from: str  # the job id the worker knows the KV by
    paused_ms: float  # how long the KV waited


class SessionDirectory:
    def __init__(self, clock_ms: Callable[[], float]) -> None:
        self._clock_ms = clock_ms
        self._expected: dict[tuple[str, str], PausedCall] = {}  # (worker, job) -> ended paused
        self._unclaimed: dict[tuple[str, str], PausedKV] = {}  # reported, call not ended yet
        self._paused: dict[str, PausedCall] = {}  # request id -> pinned on its worker
        self._by_job: dict[tuple[str, str], str] = {}  # (worker, job) -> request id
        self._last_of_session: dict[str, str] = {}  # session id -> its last paused request
        self._first_arrival: OrderedDict[str, float] = OrderedDict()  # session id -> unix s
        self._pauses_s: deque[float] = deque(maxlen=PAUSE_SAMPLES)

    # ------------------------------------------------------------------ calls
    def session_arrival(self, spec: RequestSpec) -> float:
        """The arrival its queue order counts from: its session's first call's."""
        if spec.session is None:
            return spec.arrival_time
        first = self._first_arrival.setdefault(spec.session.session_id, spec.arrival_time)
        self._first_arrival.move_to_end(spec.session.session_id)
        while len(self._first_arrival) > MAX_SESSIONS:
            self._first_arrival.popitem(last=False)
        return min(first, spec.arrival_time)

    def continuation(self, spec: RequestSpec) -> Continuation | None:
        """Where the call's prefill should run to reuse a paused call's KV (None: anywhere)."""
        session = spec.session
        if session is None:
            return None
        request_id = session.resume_of or self._last_of_session.get(session.session_id)
        paused = self._paused.get(request_id) if request_id else None
        if paused is None:
            return None
        paused_ms = self._clock_ms() - paused.paused_at_ms
        self._pauses_s.append(paused_ms / 1000.0)
        return Continuation(paused.worker_id, paused.job_id, paused_ms)

    def expected_pause_s(self, spec: RequestSpec, default_s: float) -> float:
        """What the client said, else the median pause seen so far, else `default_s`."""
        if spec.session is not None and spec.session.expected_pause_s is not None:
            return spec.session.expected_pause_s
        return statistics.median(self._pauses_s) if self._pauses_s else default_s

    # ------------------------------------------------------------------ paused KV
    def ended_paused(self, spec: RequestSpec, job_id: str, worker_id: str) -> None:
        """A call that ran with a pause plan finished on `worker_id`."""
        if spec.session is None:
            return
        call = PausedCall(spec.request_id, job_id, worker_id, spec.session.session_id)
        kv = self._unclaimed.pop((worker_id, job_id), None)
        if kv is None:
            self._expected[worker_id, job_id] = call  # the worker's word is awaited
        else:
            self._pin(call, kv)

    def apply(
        self, worker_id: str, paused: Iterable[PausedKV], released: Iterable[PauseReleased]
    ) -> None:
        """A worker's poll: calls that ended paused there, and paused KV it let go."""
        for kv in paused:
            call = self._expected.pop((worker_id, kv.request_id), None)
            if call is None:  # its last token comes in this poll too
                self._unclaimed[worker_id, kv.request_id] = kv
            else:
                self._pin(call, kv)
        for release in released:
            self._unclaimed.pop((worker_id, release.request_id), None)
            request_id = self._by_job.get((worker_id, release.request_id))
            if request_id is not None:
                self._drop(request_id)

    def _pin(self, call: PausedCall, kv: PausedKV) -> None:
        self._drop(call.request_id)
        call = PausedCall(
            call.request_id, call.job_id, call.worker_id, call.session_id,
            kv.num_tokens, kv.num_blocks, self._clock_ms(),
        )  # fmt: skip
        self._paused[call.request_id] = call
        self._by_job[call.worker_id, call.job_id] = call.request_id
        self._last_of_session[call.session_id] = call.request_id

    def forget(self, request_id: str) -> PausedCall | None:
        """The client is done with this call: the paused call to release on its worker."""
        return self._drop(request_id)

    def forget_worker(self, worker_id: str) -> None:
        """The worker is gone, and every KV it held with it."""
        for call in [c for c in self._paused.values() if c.worker_id == worker_id]:
            self._drop(call.request_id)
        for pending in (self._expected, self._unclaimed):
            for key in [k for k in pending if k[0] == worker_id]:
                del pending[key]

    def pinned(self) -> list[PausedCall]:
        return list(self._paused.values())

    def _drop(self, request_id: str) -> PausedCall | None:
        call = self._paused.pop(request_id, None)
        if call is None:
            return None
        self._by_job.pop((call.worker_id, call.job_id), None)
        if self._last_of_session.get(call.session_id) == request_id:
            del self._last_of_session[call.session_id]
        return call
