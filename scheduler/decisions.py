"""What the deciding parts of the scheduler ask the driver to do.

The event applier (worker events), recovery (failures, lost workers) and the dispatcher (a job
leaves its queue) look at a request and return decisions; only the driver (driver.py) acts on
them: it calls workers, moves the lifecycle and talks to the client. A decision about a request
that an earlier decision ended is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.active_request import ActiveRequest
from scheduler.lifecycle import RequestState
from scheduler.stage import Stage
from scheduler.worker_registry import PendingTransfer, WorkerSlot
from workers.contract.messages import PrefillDone


@dataclass(frozen=True, eq=False)
class StartStage:
    """Queue encode or prefill (the driver may skip encode: placement.embedding_holder)."""

    req: ActiveRequest
    stage: Stage


@dataclass(frozen=True, eq=False)
class Launch:
    """Give the stage's job to this worker now (the dispatcher took it off its queue)."""

    req: ActiveRequest
    stage: Stage  # encode or prefill
    slot: WorkerSlot
    predicted_ms: float  # its compute on this worker, for the worker's backlog


@dataclass(frozen=True, eq=False)
class NoWorker:
    """No worker can run the stage any more (the dispatcher took it off its queue)."""

    req: ActiveRequest
    stage: Stage


@dataclass(frozen=True, eq=False)
class StartDecode:
    """Hand the prefilled request's KV to a decode worker."""

    req: ActiveRequest
    prefill: WorkerSlot
    done: PrefillDone


@dataclass(frozen=True, eq=False)
class Stream:
    """Send tokens to the client; a finish reason ends the request, FINISHED."""

    req: ActiveRequest
    token_ids: list[int]
    finish_reason: str | None


@dataclass(frozen=True, eq=False)
class End:
    """End the request: FINISHED, FAILED (with the error the client sees) or CANCELLED."""

    req: ActiveRequest
    state: RequestState
    finish_reason: str | None = None
    error: Exception | None = None


@dataclass(frozen=True, eq=False)
class Redrive:
    """Start a new attempt from `stage` (recovery.py: the last good stage)."""

    req: ActiveRequest
    stage: Stage
    reason: str  # one line for the trace


@dataclass(frozen=True, eq=False)
class Release:
    """Tell the producers they may free these arrays."""

    transfers: tuple[PendingTransfer, ...]


Decision = StartStage | Launch | NoWorker | StartDecode | Stream | End | Redrive | Release
