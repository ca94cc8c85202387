"""The vLLM engine's prefix cache under Triserve's block hashes (workers/contract/block_hash.py),
so that the scheduler's cache directory and affinity work as for Triserve's engine.

vLLM hashes blocks its own way (its hashes are not comparable with Triserve's), and reports the
blocks its prefix cache gains and loses as KV events (BlockStored, BlockRemoved). Each request's
full blocks are hashed both ways as they fill, which maps vLLM's hashes onto Triserve's; the
events are then reported in Triserve's hashes. A block that fills in a request's last step (its
request is gone from vLLM's scheduler by then) is not mapped, and so not reported: the directory
misses it, which costs affinity only; so does a map entry dropped to keep the map bounded.
"""

from __future__ import annotations

from typing import Any

from vllm.distributed.kv_events import BlockRemoved, BlockStored

from workers.cache_delta import CacheDelta
from workers.contract.block_hash import BlockHash, extend_block_hashes
from workers.vllm.requests import VllmRequest


class PrefixHashes:
    def __init__(self, scheduler: Any, block_size: int, num_blocks: int) -> None:
        self.block_size = block_size
        # Mapped hashes whose blocks never reach the cache (aborted, or evicted before an event
        # named them) are dropped once the map outgrows this.
        self._max_mapped = 4 * num_blocks
        self._to_triserve: dict[bytes, BlockHash] = {}  # vLLM block hash -> Triserve's
        self._cached: set[BlockHash] = set()  # Triserve hashes of the blocks in vLLM's cache
        self._delta: CacheDelta[BlockHash] = CacheDelta()
        self._events: list[Any] = []
        # vLLM's scheduler drains its block pool's events every step into its publisher; with
        # the "null" publisher they are dropped, so they are taken here instead.
        scheduler.kv_event_publisher.publish = self._events.append

    def map_request(self, request: VllmRequest, live: Any) -> None:
        """Hash the request's blocks that filled since the last call (`live`: vLLM's Request)."""
        vllm_hashes = live.block_hashes
        if len(vllm_hashes) <= len(request.triserve_hashes):
            return
        tokens = live.all_token_ids
        num_full = len(vllm_hashes) * self.block_size
        extend_block_hashes(
            request.triserve_hashes, tokens, num_full, self.block_size, request.image_spans
        )
        for theirs, ours in zip(vllm_hashes, request.triserve_hashes, strict=False):
            self._to_triserve[theirs] = ours

    def apply_events(self) -> None:
        """Turn the events since the last call into the cache's delta."""
        events = list(self._events)
        self._events.clear()  # in place: vLLM's publisher holds this list's append
        for batch in events:
            for event in batch.events:
                if isinstance(event, BlockStored):
                    for block_hash in event.block_hashes:
                        ours = self._to_triserve.get(block_hash)
                        if ours is not None and ours not in self._cached:
                            self._cached.add(ours)
                            self._delta.add(ours)
                elif isinstance(event, BlockRemoved):
                    for block_hash in event.block_hashes:
                        ours = self._to_triserve.pop(block_hash, None)
                        if ours is not None and ours in self._cached:
                            self._cached.discard(ours)
                            self._delta.remove(ours)
        if len(self._to_triserve) > self._max_mapped:
            self._to_triserve = {
                theirs: ours for theirs, ours in self._to_triserve.items() if ours in self._cached
            }

    def __len__(self) -> int:
        """Blocks in vLLM's prefix cache (that a lookup can hit)."""
        return len(self._cached)

    def take_delta(self) -> CacheDelta[BlockHash]:
        return self._delta.take()

    def hashes(self) -> list[BlockHash]:
        return list(self._cached)

    def clear(self) -> None:
        """After vLLM's prefix cache was reset."""
        for ours in self._cached:
            self._delta.remove(ours)
        self._cached.clear()
        self._to_triserve.clear()
