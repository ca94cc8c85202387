"""Where a session's call goes, and the paused KV a client lets go (sessions.py keeps the
books; this acts on a request and on workers).

    place(req)       a continuation's prefill runs on the worker holding the paused KV it
                     continues (placement.py makes it the only candidate); under the SLO policy
                     it also keeps its session's place in the queues: its latest start moves
                     back by as long as the session has been going (program-level priority,
                     so returning turns do not queue behind new sessions)
    forget(id)       the client is done with a call: its worker releases the paused KV
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from scheduler.active_request import ActiveRequest
from scheduler.mode import SchedulingMode
from scheduler.sessions import SessionDirectory
from scheduler.trace_events import EventName
from scheduler.worker_registry import WorkerRegistry

logger = logging.getLogger(__name__)


class SessionRouter:
    def __init__(
        self,
        directory: SessionDirectory,
        workers: WorkerRegistry,
        mode: SchedulingMode,
        clock_ms: Callable[[], float],
    ) -> None:
        self.directory = directory
        self.workers = workers
        self.is_slo_aware = mode.is_slo_aware
        self.clock_ms = clock_ms

    def place(self, req: ActiveRequest) -> None:
        spec = req.spec
        if spec.session is None:
            return
        if self.is_slo_aware:
            session_age_s = spec.arrival_time - self.directory.session_arrival(spec)
            req.latest_start_ms -= session_age_s * 1000.0
        continuation = self.directory.continuation(spec)
        if continuation is None or continuation.worker_id not in self.workers:
            req.trace.record(EventName.NOT_CONTINUED, session_id=spec.session.session_id)
            return
        req.continuation = continuation
        req.trace.record(
            EventName.CONTINUES,
            worker=continuation.worker_id,
            resume_from=continuation.resume_from,
            paused_ms=continuation.paused_ms,
        )

    async def forget(self, request_id: str) -> bool:
        """Release the paused KV of a call (False: none is known)."""
        call = self.directory.forget(request_id)
        if call is None:
            return False
        slot = self.workers.get(call.worker_id)
        if slot is not None:
            try:
                await slot.client.release_paused([call.job_id])
            except Exception as error:  # the poller finds out whether the worker is gone
                logger.warning("release_paused on %s raised: %r", call.worker_id, error)
        return True
