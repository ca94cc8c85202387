"""How one job's error becomes a `StageFailed` for that job only, never for the worker's batch.

    TransferError          retriable: a transfer missing, stale or corrupt; re-drive from the
                           last good stage
    InvalidRequestError    invalid input (bad images, too-long prompts): fail the request
    UnrunnableJobError     no worker could run it (a scheduler bug, KV of another layout)
    anything else          "internal error", not retriable

A reason is one short line and never an unknown exception's text, which may hold paths and
addresses: that exception goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from workers.contract.errors import InvalidRequestError
from workers.contract.messages import StageFailed
from workers.job_inputs import UnrunnableJobError
from workers.transport import TransferError

logger = logging.getLogger(__name__)


@contextmanager
def failures_of(
    failures: list[StageFailed], worker_id: str, request_id: str, stage: str
) -> Iterator[None]:
    """Run one job's step; its error, if any, is appended to `failures` and goes no further."""
    try:
        yield
    except TransferError as e:
        failures.append(
            StageFailed(request_id=request_id, stage=stage, reason=str(e), retriable=True)
        )
    except InvalidRequestError as e:  # its subclasses too
        failures.append(
            StageFailed(
                request_id=request_id,
                stage=stage,
                reason=str(e),
                retriable=False,
                is_invalid_input=True,
            )
        )
    except UnrunnableJobError as e:
        failures.append(
            StageFailed(request_id=request_id, stage=stage, reason=str(e), retriable=False)
        )
    except Exception:
        logger.exception("%s of %s failed on %s", stage, request_id, worker_id)
        failures.append(
            StageFailed(
                request_id=request_id, stage=stage, reason="internal error", retriable=False
            )
        )
