"""LRU cache of image embeddings, keyed by image hash."""

from __future__ import annotations

from collections import OrderedDict

from workers.engine.messages import ImageEmbedding


class EmbeddingCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self.num_queries = 0
        self.num_hits = 0

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
        self._entries[entry.image_hash] = entry
        self._entries.move_to_end(entry.image_hash)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def keys(self) -> list[str]:
        return list(self._entries)
