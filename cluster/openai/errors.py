"""Errors as the OpenAI API writes them: `{"error": {"message", "type", "param", "code"}}`, with
the HTTP status of the error's class (cluster/errors.py, HTTP_STATUS_BY_ERROR, next to the gRPC
statuses). A refusal before the answer began is a JSON response with that status; an error
after a stream began (its status line is sent) is one SSE event of the same object, then
`data: [DONE]`. A rejected request gets `Retry-After` (seconds, rounded up) and
`retry-after-ms`, which the OpenAI SDK reads first. Failures only the HTTP API has (the
Responses API's stored responses) have their statuses here, ahead of cluster/errors.py's.
"""

from __future__ import annotations

import json
import logging
import math

import grpc
from fastapi.responses import JSONResponse

from agent.mcp_endpoint import McpUnavailableError
from cluster.errors import http_status_for, log_failure, retry_after_ms, status_for

logger = logging.getLogger("triserve.openai")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    424: "external_connector_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ResponseNotFoundError(LookupError):
    """No stored response has that id: never stored (`store: false`), deleted, or expired."""


# (error class, HTTP status, the gRPC status its log line names). An MCP server that cannot be
# reached when its tools are listed: 424 Failed Dependency, as OpenAI answers it.
HTTP_ONLY_STATUS_BY_ERROR = (
    (ResponseNotFoundError, 404, grpc.StatusCode.NOT_FOUND),
    (McpUnavailableError, 424, grpc.StatusCode.FAILED_PRECONDITION),
)


def error_body(error: BaseException) -> tuple[int, dict]:
    """The HTTP status and OpenAI error object of `error`."""
    status, message = _http_only(error, 1) or http_status_for(error)
    cause = getattr(error, "cause", None) or error
    return status, {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "api_error"),
            "param": getattr(cause, "param", None),
            "code": type(cause).__name__ if status < 500 else None,
        }
    }


def error_response(error: BaseException, request_id: str = "") -> JSONResponse:
    """The response refusing a request: logged once (a traceback only for a bug of ours)."""
    _log(error, request_id)
    status, body = error_body(error)
    headers = {}
    retry_ms = retry_after_ms(error)
    if retry_ms is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_ms / 1000.0)))
        headers["retry-after-ms"] = str(round(retry_ms))
    return JSONResponse(body, status_code=status, headers=headers)


def error_event(error: BaseException, request_id: str = "") -> str:
    """The SSE event ending a stream that failed after it began (then `data: [DONE]`)."""
    return f"data: {json.dumps(logged_error_body(error, request_id))}\n\n"


def logged_error_body(error: BaseException, request_id: str = "") -> dict:
    """The error object of a failure after a stream began: logged once."""
    _log(error, request_id)
    return error_body(error)[1]


def _log(error: BaseException, request_id: str) -> None:
    code, message = _http_only(error, 2) or status_for(error)  # one wording for both APIs
    log_failure(logger, error, code, message, request_id)


def _http_only(error: BaseException, column: int) -> tuple | None:
    for row in HTTP_ONLY_STATUS_BY_ERROR:
        if isinstance(error, row[0]):
            return row[column], str(error)
    return None
