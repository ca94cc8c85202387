"""Errors the scheduler raises: one class per failure, each mapped to one gRPC status."""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class of everything the scheduler raises on purpose."""


class UnknownModelError(SchedulerError):
    """No worker serves the requested model (INVALID_ARGUMENT)."""


class DuplicateRequestError(SchedulerError):
    """A request with this id is already in flight (INVALID_ARGUMENT)."""


class NoWorkerAvailableError(SchedulerError):
    """No live, non-draining worker of the model can run a stage the request needs (UNAVAILABLE)."""

    @classmethod
    def for_stage(cls, model: str, stage: str) -> NoWorkerAvailableError:
        return cls(f"no live, non-draining worker of model {model!r} runs {stage}")


class AdmissionRejectedError(SchedulerError):
    """The request cannot make its SLO, or its queue is full, and its policy is to be rejected
    (RESOURCE_EXHAUSTED, with `retry_after_ms` as the hint when to try again)."""

    def __init__(self, message: str, retry_after_ms: float) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def __reduce__(self):  # it crosses Ray (control plane -> ingress) with its hint
        return type(self), (self.args[0], self.retry_after_ms)


class RequestFailedError(SchedulerError):
    """The request was admitted but cannot complete: a stage failed for good, its re-drives ran
    out, or its worker died mid-decode (UNAVAILABLE: the client may retry)."""


class IllegalTransitionError(RuntimeError):
    """A request state change that the lifecycle forbids: a scheduler bug, never user input."""
