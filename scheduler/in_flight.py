"""The requests in flight, by request id and by the job id of their current attempt.

Workers echo job ids (see workers/contract/worker_client.py), so events are matched through
`job()`: an event of an attempt that ended or was superseded finds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from scheduler.active_request import ActiveRequest


class InFlight:
    def __init__(self) -> None:
        self._by_request: dict[str, ActiveRequest] = {}
        self._by_job: dict[str, ActiveRequest] = {}

    def add(self, req: ActiveRequest) -> None:
        self._by_request[req.request_id] = self._by_job[req.job_id] = req

    def remove(self, req: ActiveRequest) -> None:
        self._by_request.pop(req.request_id, None)
        self._by_job.pop(req.job_id, None)

    def new_attempt(self, req: ActiveRequest) -> None:
        """Start the request's next attempt: the old attempt's job id finds nothing any more."""
        self._by_job.pop(req.job_id, None)
        req.begin_attempt()
        self._by_job[req.job_id] = req

    def get(self, request_id: str) -> ActiveRequest | None:
        return self._by_request.get(request_id)

    def job(self, job_id: str) -> ActiveRequest | None:
        """The request whose current attempt has this job id (None: ended or superseded)."""
        return self._by_job.get(job_id)

    def depending_on(self, worker_id: str) -> list[ActiveRequest]:
        """The requests that would lose work or state with this worker, now."""
        return [req for req in self._by_request.values() if req.depends_on(worker_id)]

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._by_request

    def __iter__(self) -> Iterator[ActiveRequest]:
        return iter(list(self._by_request.values()))

    def __len__(self) -> int:
        return len(self._by_request)
