"""How the SDK turns a failed call into a TriserveError (no server needed)."""

from __future__ import annotations

import grpc

from cluster.client import TriserveError


class _FailedCall(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing=()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._trailing


EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def test_retry_hint_comes_from_the_trailer_when_the_server_sends_one():
    call = _FailedCall(EXHAUSTED, "rejected; retry after 40 ms", (("retry-after-ms", "250"),))
    assert TriserveError.from_rpc_error(call).retry_after_ms == 250.0


def test_retry_hint_comes_from_the_details_when_the_proxy_dropped_the_trailer():
    error = TriserveError.from_rpc_error(_FailedCall(EXHAUSTED, "rejected; retry after 40 ms"))
    assert (error.code, error.retry_after_ms) == (EXHAUSTED, 40.0)
    assert error.details == "rejected; retry after 40 ms"


def test_no_retry_hint_without_one_or_on_other_statuses():
    assert TriserveError.from_rpc_error(_FailedCall(EXHAUSTED, "queue full")).retry_after_ms is None
    invalid = _FailedCall(grpc.StatusCode.INVALID_ARGUMENT, "retry after 40 ms")
    assert TriserveError.from_rpc_error(invalid).retry_after_ms is None
