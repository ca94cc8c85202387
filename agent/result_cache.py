"""Tier-0 tool results (tools.py): the same tool called with the same arguments within its
cache_ttl_s answers from here, costing no time from the budget.

An entry answers calls in [stored_s, stored_s + cache_ttl_s). Keys use canonical arguments
(tools.canonical_arguments), so `{"a":1,"b":2}` and `{"b": 2, "a": 1}` are one entry. Errors are
never stored: a failed call is worth retrying. The bound is least-recently-used: a hit counts
as a use.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from agent.tools import ToolResult, ToolSpec, canonical_arguments


@dataclass(frozen=True)
class _Entry:
    result: ToolResult
    expires_s: float


class ToolResultCache:
    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()  # oldest use first
        self.num_hits = 0
        self.num_misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, spec: ToolSpec, arguments: str | dict, now_s: float) -> ToolResult | None:
        """The stored result, marked cached with no latency; None on a miss or an expired
        entry (which is dropped)."""
        key = (spec.key, canonical_arguments(arguments))
        entry = self._entries.get(key)
        if entry is not None and now_s >= entry.expires_s:
            del self._entries[key]
            entry = None
        if entry is None:
            self.num_misses += 1
            return None
        self._entries.move_to_end(key)
        self.num_hits += 1
        return replace(entry.result, is_cached=True, latency_ms=0.0)

    def peek(self, spec: ToolSpec, arguments: str | dict, now_s: float) -> ToolResult | None:
        """`get` without counting a lookup: a result already counted when it was looked up."""
        entry = self._entries.get((spec.key, canonical_arguments(arguments)))
        if entry is None or now_s >= entry.expires_s:
            return None
        return replace(entry.result, is_cached=True, latency_ms=0.0)

    def put(self, spec: ToolSpec, arguments: str | dict, result: ToolResult, now_s: float) -> bool:
        """Store a result (True) when its tool allows caching and it is not an error."""
        ttl_s = spec.settings.cache_ttl_s
        if ttl_s <= 0 or result.is_error:
            return False
        key = (spec.key, canonical_arguments(arguments))
        self._entries[key] = _Entry(result=result, expires_s=now_s + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True
