"""Recovery: what a failed stage or a lost worker does to a request. It decides (an `End` or a
`Redrive`, decisions.py); the driver acts.

    StageFailed, invalid input    -> fail with InvalidRequestError: no re-drive fixes the input
    StageFailed, worker lost,     -> re-drive from the last good stage (`restart_stage`), resuming
    embeddings unreachable           after the tokens already streamed, while `redrive_refusal`
                                     allows it, else fail (RequestFailedError)
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

from scheduler.active_request import ActiveRequest
from scheduler.config import SchedulerConfig
from scheduler.decisions import End, Redrive
from scheduler.errors import NoWorkerAvailableError, RequestFailedError
from scheduler.in_flight import InFlight
from scheduler.lifecycle import RequestState, redrive_refusal, restart_stage
from scheduler.stage import Stage
from scheduler.worker_registry import WorkerRegistry, WorkerSlot
from workers.contract.errors import InvalidRequestError
from workers.contract.messages import StageFailed

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
    """Turns failures into re-drives or ends."""

    def __init__(
        self, config: SchedulerConfig, requests: InFlight, workers: WorkerRegistry
    ) -> None:
        self.config = config
        self.requests = requests
        self.workers = workers

    def worker_lost(self, req: ActiveRequest, worker_id: str, reason: str) -> End | Redrive | None:
        """What losing this worker does to a request that depends on it (None: nothing, it is
        ended or already being re-driven). `reason`: a short phrase for the trace ("failed to
        poll"), never an exception's text."""
        stage = req.lifecycle.stage
        if stage is None or not req.depends_on(worker_id):
            return None
        failure = StageFailure(
            stage=stage,
            cause=f"{_role_of(req, worker_id, stage)} worker lost",
            detail=f"worker {worker_id} {one_line(reason)}",
            retriable=True,
            suspect=req.encode_worker == worker_id,
        )
        return self.stage_failed(req, failure)

    def on_stage_failed(self, slot: WorkerSlot, failure: StageFailed) -> End | Redrive | None:
        req = self.requests.job(failure.request_id)
        if req is None or slot.worker_id not in req.touched:
            return None
        reason = one_line(failure.reason)
        if failure.is_invalid_input:  # no re-drive can fix the client's input
            error = InvalidRequestError(f"request {req.request_id!r}: {reason}")
            return End(req, RequestState.FAILED, error=error)
        stages = {stage.value: stage for stage in Stage}
        stage = stages.get(failure.stage) or req.lifecycle.stage or Stage.PREFILL
        cause = "worker error" if failure.retriable else "internal error"
        detail = f"{reason} (on {slot.worker_id})"
        # A failed prefill may have fetched bad embeddings: never reuse them.
        suspect = stage is Stage.PREFILL
        stage_failure = StageFailure(
            stage=stage, cause=cause, detail=detail, retriable=failure.retriable, suspect=suspect
        )
        return self.stage_failed(req, stage_failure)

    def stage_failed(self, req: ActiveRequest, failure: StageFailure) -> End | Redrive:
        """Re-drive from the last good stage, or fail."""
        refusal = redrive_refusal(
            failed=failure.stage,
            cause=failure.cause,
            retriable=failure.retriable,
            num_redrives=req.attempt,
            config=self.config,
        )
        if refusal is not None:
            logger.warning("request %s failed: %s", req.request_id, failure.detail)
            error = RequestFailedError(f"request {req.request_id!r}: {refusal}")
            return End(req, RequestState.FAILED, error=error)
        reusable = not failure.suspect and self._embeddings_reachable(req)
        restart = restart_stage(failure.stage, req.spec.has_images, reusable)
        return Redrive(req, restart, f"{failure.stage.value}: {failure.detail}")

    def no_worker(self, req: ActiveRequest, stage: Stage) -> End | Redrive:
        """No worker can run the stage: encode again when prefill lost the only holder of the
        embeddings, else fail."""
        if stage is Stage.PREFILL and req.encode_worker and not req.has_embedding_refs():
            return self.embeddings_unreachable(req)
        return self.fail_no_worker(req, stage)

    def embeddings_unreachable(self, req: ActiveRequest) -> End | Redrive:
        """Prefill cannot get the embeddings (their only holder left): encode again."""
        failure = StageFailure(
            stage=Stage.PREFILL,
            cause="image embeddings lost",
            detail="the image embeddings are no longer reachable",
            retriable=True,
            suspect=True,
        )
        return self.stage_failed(req, failure)

    def fail_no_worker(self, req: ActiveRequest, stage: Stage) -> End:
        error = NoWorkerAvailableError.for_stage(req.spec.model, stage.value)
        return End(req, RequestState.FAILED, error=error)

    def protocol_error(self, req: ActiveRequest, stage: Stage, detail: str) -> End:
        """End the request over a scheduler-side inconsistency (a worker broke the protocol)."""
        logger.error("request %s: %s", req.request_id, detail)
        message = f"request {req.request_id!r}: {stage.value} failed: internal error"
        return End(req, RequestState.FAILED, error=RequestFailedError(message))

    def _embeddings_reachable(self, req: ActiveRequest) -> bool:
        slot = self.workers.get(req.encode_worker)
        if slot is None or not req.embeddings:
            return False
        view = slot.view()
        return req.has_embedding_refs() or (view.can_run(Stage.PREFILL) and not view.is_draining)


def _role_of(req: ActiveRequest, worker_id: str, stage: Stage) -> str:
    """What a lost worker did for the request: its current stage, or the stage that produced
    an array the request still needs from it."""
    if req.stage_worker == worker_id:
        return stage.value
    kinds = sorted(t.kind for t in req.transfers.values() if t.producer_id == worker_id)
    return _ROLE_OF_TRANSFER.get(kinds[0], stage.value) if kinds else stage.value
