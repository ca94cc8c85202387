"""What the engine reports about itself through the engine interface: its spec, fixed once it is
loaded, and its stats, read every turn. Plain Python over the engine's parts (no torch)."""

from __future__ import annotations

from workers.engine.batcher import Batcher
from workers.engine.embedding_cache import EmbeddingCache
from workers.engine.model_config import ModelConfig
from workers.engine_messages import EngineSpec, EngineStats, KVLayout


def engine_spec(
    model_config: ModelConfig, max_model_len: int, batcher: Batcher | None
) -> EngineSpec:
    """`batcher` None: an encode-only engine, with no KV cache."""
    text = model_config.text
    kv_layout = KVLayout(
        num_layers=text.num_hidden_layers,
        num_kv_heads=text.num_key_value_heads,
        head_dim=text.head_dim,
    )
    return EngineSpec(
        num_kv_blocks=batcher.block_pool.num_blocks if batcher else 0,
        max_model_len=max_model_len,
        kv_layout=kv_layout if batcher else None,
        vocab_size=text.vocab_size,
        image_token_id=model_config.image_token_index,
        num_image_tokens=model_config.num_image_tokens,
        image_size=model_config.vision.image_size,
    )


def engine_stats(batcher: Batcher | None, embedding_cache: EmbeddingCache) -> EngineStats:
    """`batcher` None: an encode-only engine, whose KV counters are all 0."""
    cache = embedding_cache
    embedding_hit_rate = cache.num_hits / max(1, cache.num_queries)
    if batcher is None:
        return EngineStats(
            embedding_cache_hit_rate=embedding_hit_rate, num_embedding_cache_entries=len(cache)
        )
    pool = batcher.block_pool
    return EngineStats(
        num_waiting=len(batcher.waiting),
        num_running=len(batcher.running),
        num_kv_blocks=pool.num_blocks,
        num_free_blocks=pool.num_free,
        num_cached_blocks=pool.num_cached,
        num_used_blocks=pool.num_used,
        num_preemptions=batcher.num_preemptions,
        prefix_cache_hit_rate=batcher.num_prefix_hit_tokens
        / max(1, batcher.num_prompt_tokens_admitted),
        embedding_cache_hit_rate=embedding_hit_rate,
        num_prefix_cache_blocks=pool.num_hashed_blocks,
        num_embedding_cache_entries=len(cache),
        num_paused=batcher.paused.num_paused,
        num_pinned_blocks=batcher.paused.num_pinned_blocks,
    )
