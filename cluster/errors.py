"""One gRPC status, and one HTTP status, per failure class. Clients see a clear message, never a
traceback, and the log gets one line per failed call (in gRPC's words, whichever API it came
through); only an INTERNAL error, a bug of ours, logs its traceback."""

from __future__ import annotations

import logging

import grpc

from scheduler.errors import AdmissionRejectedError, DuplicateRequestError
from scheduler.request import NoWorkerAvailableError, RequestFailedError, UnknownModelError
from workers.contract.errors import InvalidRequestError, LimitExceededError


class UnauthenticatedError(Exception):
    """The call needs a bearer token and had none, or a wrong one."""


class UnknownPoolError(ValueError):
    """ScalePool named a pool that the cluster does not have."""


class TraceNotFoundError(LookupError):
    """No trace is kept for that request id (unknown, or evicted)."""


class RequestTooLargeError(LimitExceededError):
    """An HTTP request's body is over limits.max_request_bytes (413; refused before parsing)."""


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
# The OpenAI-compatible HTTP API's statuses (cluster/openai/); first match wins.
HTTP_STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (UnauthenticatedError, 401),
    (RequestTooLargeError, 413),
    (InvalidRequestError, 400),
    (UnknownModelError, 404),
    (DuplicateRequestError, 409),
    (UnknownPoolError, 400),
    (TraceNotFoundError, 404),
    (AdmissionRejectedError, 429),  # with Retry-After
    (NoWorkerAvailableError, 503),
    (RequestFailedError, 503),
    (TimeoutError, 504),
)
SCHEDULER_UNAVAILABLE = "the scheduler is unavailable; retry"
INTERNAL_ERROR = "internal error; the server log has the details"


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message for an error, unwrapping Ray's RayTaskError to its cause."""
    return _lookup(
        error,
        STATUS_BY_ERROR,
        unavailable=grpc.StatusCode.UNAVAILABLE,
        internal=grpc.StatusCode.INTERNAL,
    )


def http_status_for(error: BaseException) -> tuple[int, str]:
    """The HTTP status and message for an error (as `status_for`)."""
    return _lookup(error, HTTP_STATUS_BY_ERROR, unavailable=503, internal=500)


def _lookup(error: BaseException, table: tuple, unavailable, internal) -> tuple:
    cause = getattr(error, "cause", None) or error
    for error_type, code in table:
        if isinstance(cause, error_type):
            return code, str(cause.args[0]) if cause.args else error_type.__name__
    if _is_ray_actor_error(cause):  # the control plane is gone or restarting
        return unavailable, SCHEDULER_UNAVAILABLE
    return internal, INTERNAL_ERROR


LOG_FIELD_CHARS = 128  # a client-chosen text longer than this is cut in log lines


def cut(text: str, max_chars: int = LOG_FIELD_CHARS) -> str:
    """`text`, cut to `max_chars` characters, saying how many were left out."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}... ({len(text) - max_chars:,} more characters)"


def failure_line(code: grpc.StatusCode, message: str, request_id: str = "") -> str:
    """One log line for a failed call, its client-chosen texts cut."""
    request = f"request {cut(request_id)!r}: " if request_id else ""
    return f"{request}{code.name}: {cut(message, 2 * LOG_FIELD_CHARS)}"


def log_failure(
    logger: logging.Logger,
    error: BaseException,
    code: grpc.StatusCode,
    message: str,
    request_id: str = "",
) -> None:
    """An INTERNAL error with its traceback; any other failure as one warning line."""
    if code == grpc.StatusCode.INTERNAL:
        logger.error(failure_line(code, message, request_id), exc_info=error)
    else:
        logger.warning(failure_line(code, message, request_id))


def retry_after_ms(error: BaseException) -> float | None:
    """The retry-after hint of a rejection (sent as trailing metadata "retry-after-ms")."""
    cause = getattr(error, "cause", None) or error
    return cause.retry_after_ms if isinstance(cause, AdmissionRejectedError) else None


def _is_ray_actor_error(error: BaseException) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError)
