"""What a client asks for (`RequestSpec`) and what it gets back (`RequestOutput`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from scheduler.errors import NoWorkerAvailableError, RequestFailedError, UnknownModelError
from workers.contract.errors import InvalidRequestError
from workers.contract.messages import ImageInput
from workers.contract.sampling_params import SamplingParams

# The errors a request can end with live in errors.py; the ingress imports them from here too.
__all__ = [
    "NoWorkerAvailableError",
    "RequestFailedError",
    "Refusal",
    "RequestOutput",
    "RequestSpec",
    "UnknownModelError",
    "SessionSpec",
    "Usage",
]


@dataclass(frozen=True)
class RequestSpec:
    """One validated request, as the ingress hands it to the scheduler."""

    request_id: str
    model: str
    prompt_token_ids: list[int]  # image placeholders already expanded
    images: list[ImageInput] = field(default_factory=list)  # in placeholder order
    # Given a concrete seed on construction, so that every stage and every re-drive of this
    # request samples the same tokens.
    sampling_params: SamplingParams = field(default_factory=SamplingParams)
    slo_ttft_ms: float | None = None  # time-to-first-token target; None: the class default
    slo_tpot_ms: float | None = None  # time-per-output-token target; None: the class default
    priority: str = "interactive"  # "interactive" or "batch" (batch yields, see stage_queue.py)
    # What happens when it is predicted to miss its SLO: "reject", "degrade", "best_effort";
    # None: the scheduler's configured default (scheduler/admission.py).
    admission: str | None = None
    # Wall-clock seconds (time.time), so that an ingress in another process can stamp it.
    arrival_time: float = field(default_factory=time.time)
    session: SessionSpec | None = None  # a call of a conversation (see SessionSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_token_ids", list(self.prompt_token_ids))
        object.__setattr__(self, "images", list(self.images))
        object.__setattr__(self, "sampling_params", self.sampling_params.with_seed())
        for name in ("slo_ttft_ms", "slo_tpot_ms"):  # the ingress checks too; this is the rule
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidRequestError(f"{name} must be a finite number > 0, got {value!r}")

    @property
    def has_images(self) -> bool:
        return bool(self.images)


@dataclass(frozen=True)
class SessionSpec:
    """A call's place in a conversation (the proto's `Session` says what each field means)."""

    session_id: str
    pause: bool = False  # keep the KV when the call ends, for the call that continues it
    resume_of: str | None = None  # the request id of the paused call this one continues
    expected_pause_s: float | None = None  # until the next call, when the client knows


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int  # prompt tokens served from a prefix cache instead of computed


@dataclass(frozen=True)
class RequestOutput:
    """New tokens of one request since its previous output."""

    request_id: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop", "length", "abort"; None while it continues
    usage: Usage | None = None  # on the last output only


@dataclass(frozen=True)
class Refusal:
    """The one output of a request refused at once (at admission, or an unknown model, no worker,
    a duplicate id). The control plane yields it instead of raising: an exception raised across
    Ray is shipped with a formatted traceback, which under overload costs more than the refusal
    itself (cluster/control_plane.py)."""

    error: Exception
