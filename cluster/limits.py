"""The size limits of one request, checked at the ingress before any expensive work.

The `limits:` section of the cluster configuration (its keys are documented in config.py). A
request over any limit is refused with INVALID_ARGUMENT and a message naming the limit and the
value, e.g. "prompt has 4,194,304 characters; the limit is limits.max_prompt_chars = 1,048,576".
The ingress checks them cheapest first: the request's bytes before parsing it, its id, prompt
characters, image count and image bytes before the build lane, image pixels from each image's
header before decoding it, and prompt tokens after tokenising.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from workers.contract.errors import LimitExceededError


@dataclass(frozen=True)
class LimitsConfig:
    max_request_bytes: int = 16 * 2**20  # one serialized GenerateRequest, images included
    max_request_id_chars: int = 256
    max_prompt_chars: int = 2**20  # raw text, or the text parts of all chat messages
    max_prompt_tokens: int | None = None  # None: the model's context length - 1
    max_tokens: int | None = None  # upper bound of sampling.max_tokens; None: the context
    max_images: int = 64
    max_image_bytes: int = 8 * 2**20  # one encoded image
    max_image_pixels: int = 4096 * 4096  # width x height, read from the header
    # Calls one ingress replica holds at once (open streams and requests being built), and
    # calls Serve's proxy queues for it beyond those; past both, the proxy refuses a call with
    # RESOURCE_EXHAUSTED before any of our code runs: the cheapest refusal there is, and what
    # keeps an overloaded ingress from queueing calls for seconds (bench/serve at 3x on 2 cores:
    # refusals after 10 s with no bound, 2 s with 128 / 32).
    max_ongoing_calls: int = 256
    max_queued_calls: int = 64

    def __post_init__(self) -> None:
        for key in (f.name for f in dataclasses.fields(self)):
            value = getattr(self, key)
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if not (value is None and key in OPTIONAL) and not (is_int and value >= 1):
                raise ValueError(f"limits.{key} must be an integer >= 1, got {value!r}")

    def check(self, key: str, what: str, value: int, unit: str) -> None:
        """Refuse `value` above the limit `key`, e.g. check("max_prompt_chars", "prompt has",
        4194304, "characters")."""
        check_limit(what, value, unit, getattr(self, key), f"limits.{key}")

    def prompt_token_limit(self, max_model_len: int) -> tuple[int, str]:
        """The most prompt tokens a model takes, and the limit's name for messages: the room
        for one generated token is always kept."""
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < max_model_len:
            return self.max_prompt_tokens, "limits.max_prompt_tokens"
        return max_model_len - 1, f"the model's context of {max_model_len:,} tokens - 1"

    def max_tokens_limit(self, max_model_len: int) -> tuple[int, str]:
        """The largest `max_tokens` a request may ask of a model, and the limit's name."""
        if self.max_tokens is not None:
            return self.max_tokens, "limits.max_tokens"
        return max_model_len, "limits.max_tokens (null: the model's context)"


OPTIONAL = ("max_prompt_tokens", "max_tokens")


def check_limit(what: str, value: int, unit: str, limit: int, name: str) -> None:
    """Refuse `value` above `limit`, e.g. check_limit("prompt has", 4194304, "characters",
    1048576, "limits.max_prompt_chars") -> "prompt has 4,194,304 characters; the limit is
    limits.max_prompt_chars = 1,048,576"."""
    if value > limit:
        raise LimitExceededError(f"{what} {value:,} {unit}; the limit is {name} = {limit:,}")
