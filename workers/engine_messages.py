"""What an engine's stages hand out and take in, and what it reports about itself: the values of
the engine interface (engine_interface.py). Plain dataclasses of numpy arrays and Python values,
engine-neutral, so that they travel through Ray's object store without pickling torch tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workers.contract.block_hash import ImageSpan


@dataclass(frozen=True)
class ImageEmbedding:
    """Output of the encode stage for one image."""

    image_hash: str  # content hash of the decoded image (workers/contract/images.py)
    embeddings: np.ndarray  # [image_tokens, text_hidden]; float32, or float16 for fp16 models


@dataclass(frozen=True)
class PromptKV:
    """The KV cache of a whole prompt, as one contiguous layer-major array."""

    # [num_layers, 2 (key, value), num_tokens, num_kv_heads, head_dim]. bfloat16 values, which
    # numpy lacks, are carried bit for bit as uint16.
    kv: np.ndarray
    dtype: str  # torch dtype of the values: "float32", "float16" or "bfloat16"

    @property
    def num_tokens(self) -> int:
        return self.kv.shape[2]


@dataclass(frozen=True)
class PrefillResult:
    """Output of the prefill stage: everything a decode worker needs to continue."""

    request_id: str
    prompt_token_ids: list[int]  # every token the KV covers: the prompt, then resumed outputs
    first_token_id: int
    kv: PromptKV
    image_spans: list[ImageSpan] = field(default_factory=list)  # keys for prefix caching
    # Trailing tokens of prompt_token_ids that are outputs produced before (a resumed
    # re-drive, see workers/contract/messages.py PrefillJob): first_token_id comes after them.
    num_resumed_tokens: int = 0


@dataclass(frozen=True)
class StepOutput:
    """One request's progress in one engine step."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: str | None  # "stop", "length", "abort", or None while it continues
    # Set when a prefill-only request hands off: it leaves this engine after its first token.
    prefill: PrefillResult | None = None


@dataclass(frozen=True)
class KVLayout:
    """The KV an engine's cache holds: [num_layers, 2, tokens, num_kv_heads, head_dim]."""

    num_layers: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class EngineSpec:
    """What an engine loaded, fixed from then on: the values its config leaves open (measured or
    read from the checkpoint), for the worker to size its jobs and profiling by."""

    num_kv_blocks: int  # 0: the engine runs no language model (encode only)
    max_model_len: int  # tokens of context a request may reach
    kv_layout: KVLayout | None  # None: no KV cache (encode only)
    vocab_size: int  # prompt token ids are in [0, vocab_size)
    image_token_id: int  # the prompt's image placeholder token
    num_image_tokens: int  # embedding rows (placeholder tokens) one image becomes
    image_size: int  # pixels per side of the square image the vision tower takes


@dataclass(frozen=True)
class EngineStats:
    """The engine's counters after its last step (cheap: read every turn). An engine without a
    KV cache (encode only) leaves the KV and prefix counters at 0."""

    num_waiting: int = 0
    num_running: int = 0
    num_kv_blocks: int = 0
    num_free_blocks: int = 0
    num_cached_blocks: int = 0
    num_used_blocks: int = 0
    num_preemptions: int = 0
    prefix_cache_hit_rate: float = 0.0  # prompt tokens served from the cache / admitted
    embedding_cache_hit_rate: float = 0.0
    # Full KV blocks a prefix lookup can hit (used or evictable), and images in the embedding
    # cache: the sizes of the caches whose entries `prefix_cache_hashes` and
    # `embedding_cache_keys` list.
    num_prefix_cache_blocks: int = 0
    num_embedding_cache_entries: int = 0
    # Paused requests (sessions) and the distinct KV blocks they keep pinned.
    num_paused: int = 0
    num_pinned_blocks: int = 0
