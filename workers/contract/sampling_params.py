"""Per-request sampling parameters. Plain Python: crosses process boundaries as is."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from workers.contract.errors import InvalidSamplingParamsError

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token and when to stop.

    `temperature == 0` is greedy. `top_k <= 0` and `top_p == 1` disable those filters. A request
    without a `seed` gets a random one at admission (`with_seed`), so that the same request gives
    the same tokens wherever its stages run.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    # A llguidance grammar (JSON text) the output must follow: every step's logits are masked to
    # the tokens it allows, and the request stops when it is complete. Built and checked at the
    # ingress from tools and response_format (cluster/constraints.py); None: free text.
    grammar: str | None = None

    def __post_init__(self) -> None:
        # Accept lists from JSON or protobuf callers; store tuples so the object stays hashable.
        # A lone string is one stop string (as in the OpenAI API), not one per character.
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        object.__setattr__(self, "stop_token_ids", _as_tuple(self.stop_token_ids, "stop_token_ids"))
        object.__setattr__(self, "stop", _as_tuple(stop, "stop"))
        self.validate()

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise InvalidSamplingParamsError(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if not _is_number(self.temperature) or not 0.0 <= self.temperature <= 100.0:
            raise InvalidSamplingParamsError(
                f"temperature must be in [0, 100], got {self.temperature!r}"
            )
        if not _is_int(self.top_k):
            raise InvalidSamplingParamsError(f"top_k must be an integer, got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise InvalidSamplingParamsError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and not (_is_int(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise InvalidSamplingParamsError(
                f"seed must be an integer in [0, 2^63), got {self.seed!r}"
            )
        if any(not _is_int(t) or t < 0 for t in self.stop_token_ids):
            raise InvalidSamplingParamsError("stop_token_ids must be non-negative integers")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidSamplingParamsError("stop strings must be non-empty strings")
        if self.grammar is not None and not (isinstance(self.grammar, str) and self.grammar):
            raise InvalidSamplingParamsError("grammar must be a non-empty string or None")

    def with_seed(self) -> SamplingParams:
        """This request with a concrete seed (a random one if none was given)."""
        if self.seed is not None:
            return self
        return replace(self, seed=random.randrange(MAX_SEED))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON `true` is not 1


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_tuple(values: object, name: str) -> tuple:
    try:
        return tuple(values)
    except TypeError:
        raise InvalidSamplingParamsError(f"{name} must be a list, got {values!r}") from None
