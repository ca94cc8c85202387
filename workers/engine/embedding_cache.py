"""LRU cache of image embeddings, keyed by image hash. `cache_delta` records the keys it gained
and lost since the worker last reported them (see workers/cache_delta.py)."""

from __future__ import annotations

from collections import OrderedDict

from workers.cache_delta import CacheDelta
from workers.engine_messages import ImageEmbedding


class EmbeddingCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self.num_queries = 0
        self.num_hits = 0
        self.cache_delta: CacheDelta[str] = CacheDelta()

    def get(self, image_hash: str) -> ImageEmbedding | None:
        self.num_queries += 1
        entry = self._entries.get(image_hash)
        if entry is not None:
            self.num_hits += 1
            self._entries.move_to_end(image_hash)
        return entry

    def put(self, entry: ImageEmbedding) -> None:
        if self.capacity <= 0:
            return
        if entry.image_hash not in self._entries:
            self.cache_delta.add(entry.image_hash)
        self._entries[entry.image_hash] = entry
        self._entries.move_to_end(entry.image_hash)
        while len(self._entries) > self.capacity:
            evicted, _ = self._entries.popitem(last=False)
            self.cache_delta.remove(evicted)

    def clear(self) -> None:
        """Drop every entry and zero the hit counters, as in a new cache."""
        for key in self._entries:
            self.cache_delta.remove(key)
        self._entries.clear()
        self.num_queries = self.num_hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)
