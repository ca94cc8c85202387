"""Cache deltas: what the prefix and embedding caches gained and lost since the last look, net
over the interval, so that a reader's copy stays exact without listing the cache again."""

from __future__ import annotations

import numpy as np

from workers.cache_delta import CacheDelta
from workers.engine.block_manager import BlockPool
from workers.engine.embedding_cache import EmbeddingCache
from workers.engine_messages import ImageEmbedding


def delta(added=(), removed=()) -> CacheDelta:
    return CacheDelta(dict.fromkeys(added), dict.fromkeys(removed))


def test_an_entry_gained_and_lost_in_one_interval_is_in_neither_list():
    changes = CacheDelta()
    changes.add("a")
    changes.add("b")
    changes.remove("a")
    assert changes == delta(added=["b"])


def test_an_entry_lost_and_regained_in_one_interval_is_in_neither_list():
    changes = CacheDelta()
    changes.remove("a")
    changes.add("a")
    changes.remove("b")
    assert changes == delta(removed=["b"])


def test_merging_consecutive_intervals_nets_out_across_them():
    first = delta(added=["new", "short-lived"], removed=["old", "back"])
    second = delta(added=["back", "newer"], removed=["short-lived", "older"])
    first.merge(second)
    assert first == delta(added=["new", "newer"], removed=["old", "older"])


def test_take_hands_over_the_delta_and_starts_an_empty_one():
    changes = delta(added=["a"])
    assert changes.take() == delta(added=["a"])
    assert changes.is_empty()


def test_block_pool_reports_registered_hashes_and_evicted_ones():
    pool = BlockPool(num_blocks=2, block_size=2)
    blocks = pool.allocate(2)
    pool.register(blocks[0], b"h0", [1, 2])
    pool.register(blocks[1], b"h1", [3, 4])
    pool.free(blocks)  # the tail first: block 1 is evicted before block 0
    assert pool.cache_delta.take() == delta(added=[b"h0", b"h1"])

    [reused] = pool.allocate(1)
    pool.register(reused, b"h2", [5, 6])
    assert (reused, pool.cache_delta.take()) == (1, delta(added=[b"h2"], removed=[b"h1"]))


def test_block_pool_ignores_a_duplicate_that_stays_private():
    pool = BlockPool(num_blocks=2, block_size=2)
    first, second = pool.allocate(2)
    pool.register(first, b"h0", [1, 2])
    pool.register(second, b"h0", [1, 2])  # same content: `first` stays the canonical copy
    pool.free([second])
    pool.allocate(1)  # the free `second`: nothing evicted
    assert pool.cache_delta.take() == delta(added=[b"h0"])


def test_block_pool_reset_reports_every_hash_it_forgets():
    pool = BlockPool(num_blocks=3, block_size=2)
    blocks = pool.allocate(2)
    pool.register(blocks[0], b"h0", [1, 2])
    pool.free(blocks)
    pool.cache_delta.take()
    pool.reset()
    assert pool.cache_delta.take() == delta(removed=[b"h0"])
    assert (pool.num_hashed_blocks, pool.allocate(3)) == (0, [0, 1, 2])


def embedding(key: str) -> ImageEmbedding:
    return ImageEmbedding(image_hash=key, embeddings=np.zeros((1, 1), np.float32))


def test_embedding_cache_reports_new_keys_and_lru_evictions_but_not_refreshes():
    cache = EmbeddingCache(capacity=2)
    cache.put(embedding("a"))
    cache.put(embedding("b"))
    cache.put(embedding("a"))  # already there: moved to the end only
    assert cache.cache_delta.take() == delta(added=["a", "b"])

    cache.put(embedding("c"))  # evicts "b", the least recently used
    assert cache.cache_delta.take() == delta(added=["c"], removed=["b"])
    cache.clear()
    assert cache.cache_delta.take() == delta(removed=["a", "c"])
    assert (len(cache), cache.num_queries, cache.num_hits) == (0, 0, 0)
