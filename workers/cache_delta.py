"""CacheDelta: the keys a cache gained and lost since someone last looked. Pure Python.

A reader that once listed the cache (the scheduler, through `load()`) keeps its copy exact by
applying deltas instead of listing again. A delta is net over its interval:

    gained, then lost   -> in neither list   (the reader never knew it)
    lost, then regained -> in neither list   (the reader's copy already has it)

so `added` = now minus then, and `removed` = then minus now. Each change costs O(1): a key's
membership can only alternate (a cache adds a key it lacks and removes one it has), so each
event either cancels the opposite pending one or records itself. Deltas of consecutive
intervals merge by the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class CacheDelta(Generic[K]):
    added: dict[K, None] = field(default_factory=dict)  # insertion-ordered sets
    removed: dict[K, None] = field(default_factory=dict)

    def add(self, key: K) -> None:
        """The cache gained `key` (it did not hold it)."""
        if key in self.removed:
            del self.removed[key]
        else:
            self.added[key] = None

    def remove(self, key: K) -> None:
        """The cache lost `key` (it held it)."""
        if key in self.added:
            del self.added[key]
        else:
            self.removed[key] = None

    def merge(self, later: CacheDelta[K]) -> None:
        """Extend this interval by the one right after it. Within one delta a key is in at most
        one list, so the order of the two loops does not matter."""
        for key in later.removed:
            self.remove(key)
        for key in later.added:
            self.add(key)

    def take(self) -> CacheDelta[K]:
        """The delta so far; this one starts a new interval."""
        taken = CacheDelta(self.added, self.removed)
        self.added, self.removed = {}, {}
        return taken

    def mapped(self, to_key: Callable[[K], Hashable]) -> CacheDelta:
        """The same delta with every key converted (e.g. block hashes to hex strings)."""
        return CacheDelta(
            {to_key(k): None for k in self.added}, {to_key(k): None for k in self.removed}
        )

    def is_empty(self) -> bool:
        return not (self.added or self.removed)
