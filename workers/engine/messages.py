"""What the engine's stages hand out and take in. Plain dataclasses of numpy arrays and Python
values, so that they travel through Ray's object store without pickling torch tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workers.engine.block_hash import ImageSpan


@dataclass(frozen=True)
class ImageEmbedding:
    """Output of the encode stage for one image."""

    image_hash: str  # content hash of the decoded image (see image_processor.image_hash)
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
    prompt_token_ids: list[int]
    first_token_id: int
    kv: PromptKV
    image_spans: list[ImageSpan] = field(default_factory=list)  # keys for prefix caching


@dataclass(frozen=True)
class StepOutput:
    """One request's progress in one engine step."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: str | None  # "stop", "length", "abort", or None while it continues
    # Set when a prefill-only request hands off: it leaves this engine after its first token.
    prefill: PrefillResult | None = None
