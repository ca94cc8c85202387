"""EngineInterface: what a worker drives an engine through. The worker core (worker.py), the stage
runner (stage_runner.py) and the profiler (profiler.py) use nothing else of an engine, so that
another engine can slot in behind it; engine_factory.py is the one place that names a class.

    encode(images)                          -> [ImageEmbedding]                         (E)
    add_request(..., export_kv=False)       -> queued: prefill, then decode here        (P, D)
    add_request(..., export_kv=True)        -> step() hands off a PrefillResult after the
                                               first token                              (P)
    add_prefilled(PrefillResult, params)    -> step() decodes on from the imported KV   (D)
    step()                                  -> [StepOutput], one per request that advanced
    abort(request_id)                       -> its "abort" StepOutput comes out of the next step

Sessions (paused KV, the rule in workers/contract/worker_client.py): `pause` on add_request or
add_prefilled keeps a request's KV pinned when it ends with stop or length; `resume_from` on
add_request continues it (on a decode engine too); `release_paused`, `expire_paused` (when no
step runs) and memory pressure release it; `take_pause_events` reports each pause and release
once.

Plus what it reports: `config` (what it was built with), `spec` (what it loaded), `stats()`
(counters, every turn), and its two caches, which the scheduler mirrors for affinity: the
prefix cache (content hashes of full KV blocks, workers/contract/block_hash.py) and the
embedding cache (image hashes). Each cache's changes are taken as a net delta (cache_delta.py);
its full key list is read rarely, and from a thread other than the one that steps.

The values it takes and returns are in engine_messages.py. One thread calls everything except
`embedding_cache_keys` and `prefix_cache_hashes`; those return copies, and a copy that overlaps
a change raises RuntimeError (take it again).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image

from workers.cache_delta import CacheDelta
from workers.contract.block_hash import BlockHash, ImageSpan
from workers.contract.engine_config import EngineConfig
from workers.contract.messages import PausedKV, PausePlan, PauseReleased
from workers.contract.sampling_params import SamplingParams
from workers.engine_messages import (
    EngineSpec,
    EngineStats,
    ImageEmbedding,
    PrefillResult,
    StepOutput,
)


class RequestProgress(Protocol):
    """A request while it is in the engine, as the worker reads it (never changes it)."""

    @property
    def num_tokens(self) -> int: ...  # prompt plus output tokens so far

    @property
    def num_computed_tokens(self) -> int: ...  # tokens whose KV exists (prefill progress)

    @property
    def num_cached_tokens(self) -> int: ...  # prompt tokens served from the prefix cache

    @property
    def image_spans(self) -> list[ImageSpan]: ...


class EngineInterface(Protocol):
    @property
    def config(self) -> EngineConfig: ...

    @property
    def spec(self) -> EngineSpec: ...

    # ----------------------------------------------------------------- stages
    def encode(self, images: Sequence[Image.Image]) -> list[ImageEmbedding]:
        """Images -> embeddings [image_tokens, hidden] each, in order."""
        ...

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        sampling_params: SamplingParams | None = None,
        images: Sequence[ImageEmbedding] = (),
        export_kv: bool = False,
        priority: float = 0.0,
        num_resumed_tokens: int = 0,
        pause: PausePlan | None = None,
        resume_from: str | None = None,
    ) -> None:
        """Queue a prompt for prefill (raises InvalidRequestError for input it refuses).
        `priority`: lower prompts get the step's token budget first. `num_resumed_tokens`: the
        last ones of the prompt are outputs of an earlier attempt; the first sampled token is
        the output after them, at their position and seed. `pause`: keep the KV pinned when it
        ends (not with `export_kv`); `resume_from`: reuse the paused request's KV of the common
        prefix (gone: a plain prefill, same tokens)."""
        ...

    def add_prefilled(
        self,
        prefill: PrefillResult,
        sampling_params: SamplingParams,
        pause: PausePlan | None = None,
    ) -> None:
        """Continue a request prefilled elsewhere, from its exported KV (`pause`: as above)."""
        ...

    def step(self) -> list[StepOutput]: ...

    def abort(self, request_id: str) -> bool:
        """Cancel a request and free its blocks; True if it was here."""
        ...

    def release_paused(self, request_id: str) -> bool:
        """Free a paused request's KV; True if it was here."""
        ...

    def expire_paused(self) -> int:
        """Release the paused KV past its deadline (each step does it too): cheap, for a worker
        with no step to run. Returns how many."""
        ...

    def take_pause_events(self) -> tuple[list[PausedKV], list[PauseReleased]]:
        """Requests paused, and paused KV released, since the last take: each once."""
        ...

    def has_unfinished_requests(self) -> bool: ...

    def get_request(self, request_id: str) -> RequestProgress | None: ...

    # ----------------------------------------------------------------- budgets and statistics
    def set_token_budget(self, num_tokens: int) -> None:
        """Prompt and decode tokens per step from now on (prefill or decode engines only)."""
        ...

    def reset_caches(self) -> None:
        """Back to as loaded, once idle: empty caches, counters at 0."""
        ...

    def stats(self) -> EngineStats: ...

    # ----------------------------------------------------------------- caches
    def cached_embedding(self, image_hash: str) -> ImageEmbedding | None:
        """The embedding cache's entry (counted as a lookup), or None."""
        ...

    def cache_embedding(self, embedding: ImageEmbedding) -> None: ...

    def embedding_cache_keys(self) -> list[str]: ...

    def prefix_cache_hashes(self) -> list[BlockHash]:
        """Hashes of the full KV blocks a prefix lookup can hit (empty without a KV cache)."""
        ...

    def take_embedding_cache_delta(self) -> CacheDelta[str]:
        """Image hashes the embedding cache gained and lost since the last take."""
        ...

    def take_prefix_cache_delta(self) -> CacheDelta[BlockHash]:
        """Block hashes the prefix cache gained and lost since the last take."""
        ...
