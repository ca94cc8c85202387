"""A request as the engine's batcher sees it. Plain Python: no torch.

The batcher has no prefill or decode phase. A request only has `num_computed_tokens` catching up
with `num_tokens`: a prefix-cache hit, imported KV, a prefill chunk and a decode step all advance
the same counter. When the counter catches up, the step's sampled token is appended.

    token_ids:  | prompt ........................ | output ..... |
                0                    num_prompt_tokens      num_tokens
    computed:   |=========== num_computed_tokens ====|  (KV exists for these)

A resumed request (a re-drive after a lost decode worker) starts with the outputs an earlier
attempt produced already in `token_ids`: they are computed like the prompt, but count as
outputs, so the next token is sampled at the same output index (and seed) as in an
uninterrupted run, and max_tokens and stop conditions count from the prompt's end.

    token_ids:  | prompt ................ | resumed outputs | new outputs ... |

A continuation (`resume_from`, sessions) starts, like a prefix-cache hit, with the counter at
the common prefix whose KV a paused request left pinned (paused_kv.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.contract.block_hash import BlockHash, ImageSpan
from workers.contract.messages import PausePlan
from workers.contract.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"  # hit a stop condition
    HANDED_OFF = "handed_off"  # prefill-only: first token sampled, KV exported for a decoder
    ABORTED = "aborted"


@dataclass
class Request:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    image_spans: list[ImageSpan] = field(default_factory=list)
    # [num_image_tokens, hidden] rows for the image placeholders, in prompt order (numpy).
    image_embeddings: Any = None
    # KV of the prompt imported from a prefill worker (a `PromptKV`); kept so that a preempted
    # request can be re-imported instead of re-encoded (a decoder has no vision tower).
    prompt_kv: Any = None
    export_kv: bool = False
    # Order among prompts being prefilled on this worker, lower first (the global scheduler's
    # latest start time); equal priorities keep arrival order (all 0: first come, first served).
    priority: float = 0.0
    # Outputs of an earlier attempt this request resumes after (their KV is in prompt_kv, when
    # imported).
    resumed_token_ids: list[int] = field(default_factory=list)
    # Where the output is in the request's grammar (a grammar.TokenMatcher), when it has one:
    # the sampler masks with it, and each appended output advances it.
    grammar: Any = None
    # Sessions (paused_kv.py): keep the KV pinned when it ends with "stop" or "length"; and the
    # paused request whose KV it continues, taken over on first admission (batcher.py).
    pause: PausePlan | None = None
    resume_from: str | None = None

    token_ids: list[int] = field(init=False)
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    num_preemptions: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[BlockHash] = field(default_factory=list)
    num_published_blocks: int = 0  # leading blocks already offered to the prefix cache
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        self.prompt_token_ids = list(self.prompt_token_ids)
        self.token_ids = self.prompt_token_ids + list(self.resumed_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_prefilled_tokens(self) -> int:
        """Tokens computed before the first sampled one: the prompt and any resumed outputs."""
        return self.num_prompt_tokens + len(self.resumed_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_done(self) -> bool:
        return self.status in (
            RequestStatus.FINISHED,
            RequestStatus.HANDED_OFF,
            RequestStatus.ABORTED,
        )

    def append_output(self, token_id: int) -> None:
        """A sampled token joins the output (and advances the grammar)."""
        self.token_ids.append(token_id)
        if self.grammar is not None:
            self.grammar.accept(token_id)

    def check_stop(
        self,
        eos_token_ids: Sequence[int],
        max_model_len: int,
        detokenize: Callable[[Sequence[int]], str],
    ) -> str | None:
        """The finish reason after the last appended token, or None to continue."""
        params = self.sampling_params
        last = self.token_ids[-1]
        if self.grammar is not None and self.grammar.is_complete:
            return "stop"
        if last in params.stop_token_ids or (not params.ignore_eos and last in eos_token_ids):
            return "stop"
        if params.stop:
            # A stop string of n characters spans at most 4n byte-level tokens.
            window = 4 * max(len(s) for s in params.stop) + 4
            tail = detokenize(self.output_token_ids[-window:])
            if any(s in tail for s in params.stop):
                return "stop"
        if len(self.output_token_ids) >= params.max_tokens or self.num_tokens >= max_model_len:
            return "length"
        return None
