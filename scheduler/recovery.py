"""Recovery: what a failed stage or a lost worker does to a request.

    StageFailed, invalid input    -> fail with InvalidRequestError: no re-drive fixes the input
    StageFailed, worker lost,     -> re-drive from the last good stage (`restart_stage`) while
    embeddings unreachable           `redrive_refusal` allows it, else fail (RequestFailedError)
    no worker for a stage         -> fail with NoWorkerAvailableError

What a client sees (RequestFailedError, sent as gRPC details, and the trace's "failed" reason)
names the stage and a failure class only: "prefill failed: internal error", "decode failed
after 2 re-drives: decode worker lost". Worker-supplied text and exceptions (a Ray
ActorDiedError carries a whole traceback, file paths and addresses) go to the log; the trace's
"redrive" event keeps one short line of detail (`one_line`), never a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.active_request import ActiveRequest
from scheduler.errors import NoWorkerAvailableError, RequestFailedError
from scheduler.lifecycle import RequestState, redrive_refusal, restart_stage
from scheduler.stage import Stage
from scheduler.worker_registry import WorkerSlot
from workers.engine.errors import InvalidRequestError
from workers.protocol import StageFailed

if TYPE_CHECKING:
    from scheduler.driver import RequestDriver

logger = logging.getLogger(__name__)
MAX_DETAIL_CHARS = 200
_ROLE_OF_TRANSFER = {"embedding": "encode", "kv": "prefill"}  # who produced it


@dataclass(frozen=True)
class StageFailure:
    stage: Stage  # the stage that failed: the request's, or the one a lost worker ran for it
    cause: str  # the failure class, safe to show clients: "decode worker lost", "internal error"
    detail: str  # one line for the trace and the log: which worker, which transfer, what went wrong
    retriable: bool  # False: fail at once, no re-drive
    suspect: bool = False  # the embeddings may be bad: encode again instead of reusing them


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """The first line of `text`, at most `limit` characters: keeps tracebacks out of traces."""
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Recovery:
    """Turns failures into re-drives or ends. Shares the driver's requests and job index."""

    def __init__(self, driver: RequestDriver) -> None:
        self.driver = driver

    async def fail_over(self, worker_id: str, reason: str) -> None:
        """Re-drive (or fail) every request that needs what this worker had. `reason`: a short
        phrase for the trace ("failed to poll"), never an exception's text."""
        driver = self.driver
        for req in [r for r in driver.requests.values() if r.depends_on(worker_id)]:
            stage = req.lifecycle.stage
            if stage is None or not req.depends_on(worker_id):
                continue  # ended, or already being re-driven
            failure = StageFailure(
                stage, f"{_role_of(req, worker_id, stage)} worker lost",
                f"worker {worker_id} {one_line(reason)}", retriable=True,
                suspect=req.encode_worker == worker_id,
            )  # fmt: skip
            await self.stage_failed(req, failure)

    async def on_stage_failed(self, slot: WorkerSlot, failure: StageFailed) -> None:
        req = self.driver.job(failure.request_id)
        if req is None or slot.worker_id not in req.touched:
            return
        reason = one_line(failure.reason)
        if failure.is_invalid_input:  # no re-drive can fix the client's input
            error = InvalidRequestError(f"request {req.request_id!r}: {reason}")
            return await self.driver.end(req, RequestState.FAILED, error=error)
        stages = {stage.value: stage for stage in Stage}
        stage = stages.get(failure.stage) or req.lifecycle.stage or Stage.PREFILL
        cause = "worker error" if failure.retriable else "internal error"
        detail = f"{reason} (on {slot.worker_id})"
        # A failed prefill may have fetched bad embeddings: never reuse them.
        suspect = stage is Stage.PREFILL
        await self.stage_failed(req, StageFailure(stage, cause, detail, failure.retriable, suspect))

    async def stage_failed(self, req: ActiveRequest, failure: StageFailure) -> None:
        """Re-drive from the last good stage, or fail."""
        stage, num_streamed = failure.stage, len(req.stream.token_ids)
        refusal = redrive_refusal(
            stage, failure.cause, failure.retriable, req.attempt, num_streamed,
            self.driver.config,
        )  # fmt: skip
        if refusal is not None:
            logger.warning("request %s failed: %s", req.request_id, failure.detail)
            error = RequestFailedError(f"request {req.request_id!r}: {refusal}")
            return await self.driver.end(req, RequestState.FAILED, error=error)
        reusable = not failure.suspect and self._embeddings_reachable(req)
        restart = restart_stage(stage, req.spec.has_images, reusable)
        await self._redrive(req, restart, f"{stage.value}: {failure.detail}")

    async def fail(self, req: ActiveRequest, stage: Stage, detail: str) -> None:
        """End the request over a scheduler-side inconsistency (a worker broke the protocol)."""
        logger.error("request %s: %s", req.request_id, detail)
        message = f"request {req.request_id!r}: {stage.value} failed: internal error"
        await self.driver.end(req, RequestState.FAILED, error=RequestFailedError(message))

    async def fail_no_worker(self, req: ActiveRequest, stage: Stage) -> None:
        error = NoWorkerAvailableError.for_stage(req.spec.model, stage.value)
        await self.driver.end(req, RequestState.FAILED, error=error)

    def _embeddings_reachable(self, req: ActiveRequest) -> bool:
        slot = self.driver.workers.get(req.encode_worker)
        if slot is None or not req.embeddings:
            return False
        view = slot.view()
        return req.has_embedding_refs() or (view.can_run(Stage.PREFILL) and not view.is_draining)

    async def _redrive(self, req: ActiveRequest, stage: Stage, reason: str) -> None:
        driver = self.driver
        old_job, old_touched = req.job_id, req.touched
        driver.begin_attempt(req)
        req.trace.record("redrive", stage=stage.value, attempt=req.attempt, reason=reason)
        if req.state is not RequestState.QUEUED:
            req.lifecycle.advance(RequestState.QUEUED)
        dropped = req.take_transfers("kv")
        if stage is Stage.ENCODE:
            dropped += req.forget_embeddings()
        attempt = req.attempt
        await driver.workers.abort(old_touched, old_job)
        await driver.workers.release(dropped)
        if req.is_current(attempt):
            await driver.start_stage(req, stage)


def _role_of(req: ActiveRequest, worker_id: str, stage: Stage) -> str:
    """What a lost worker did for the request: its current stage, or the stage that produced
    an array the request still needs from it."""
    if req.stage_worker == worker_id:
        return stage.value
    kinds = sorted(t.kind for t in req.transfers.values() if t.producer_id == worker_id)
    return _ROLE_OF_TRANSFER.get(kinds[0], stage.value) if kinds else stage.value
