"""One gRPC status per failure class. Clients see a clear message, never a traceback."""

from __future__ import annotations

import grpc

from scheduler.errors import AdmissionRejectedError, DuplicateRequestError
from scheduler.request import NoWorkerAvailableError, RequestFailedError, UnknownModelError
from workers.contract.errors import InvalidRequestError


class UnauthenticatedError(Exception):
    """The call needs a bearer token and had none, or a wrong one."""


class UnknownPoolError(ValueError):
    """ScalePool named a pool that the cluster does not have."""


class TraceNotFoundError(LookupError):
    """No trace is kept for that request id (unknown, or evicted)."""


STATUS_BY_ERROR: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownModelError, grpc.StatusCode.INVALID_ARGUMENT),
    (DuplicateRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownPoolError, grpc.StatusCode.INVALID_ARGUMENT),
    (TraceNotFoundError, grpc.StatusCode.NOT_FOUND),
    (AdmissionRejectedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NoWorkerAvailableError, grpc.StatusCode.UNAVAILABLE),
    (RequestFailedError, grpc.StatusCode.UNAVAILABLE),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),  # asyncio.TimeoutError too
)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message for an error, unwrapping Ray's RayTaskError to its cause."""
    cause = getattr(error, "cause", None) or error
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(cause, error_type):
            return code, str(cause.args[0]) if cause.args else error_type.__name__
    if _is_ray_actor_error(cause):  # the control plane is gone or restarting
        return grpc.StatusCode.UNAVAILABLE, "the scheduler is unavailable; retry"
    return grpc.StatusCode.INTERNAL, "internal error; the server log has the details"


def retry_after_ms(error: BaseException) -> float | None:
    """The retry-after hint of a rejection (sent as trailing metadata "retry-after-ms")."""
    cause = getattr(error, "cause", None) or error
    return cause.retry_after_ms if isinstance(cause, AdmissionRejectedError) else None


def _is_ray_actor_error(error: BaseException) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError)
