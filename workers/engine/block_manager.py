"""Paged KV block pool with reference counts and prefix caching. Pure Python: no torch.

Each block holds the KV of `block_size` consecutive tokens in every layer. A request owns a
block table: the list of its block ids, in token order. Requests that share a cached prefix share
its blocks, so blocks are reference-counted.

Every block is in exactly one of three states, which gives the invariant
`num_free + num_cached + num_used == num_blocks`:

    free    ref_count == 0, no hash   in `_free`       (handed out first)
    cached  ref_count == 0, hashed    in `_evictable`  (LRU; evicted when `_free` is empty)
    used    ref_count  > 0            owned by one or more requests (may also be hashed)

All operations are O(1) per block: `_free` is a deque and `_evictable` an insertion-ordered dict.
`cache_delta` records, also in O(1), which hashes became hittable and which stopped being since
the worker last reported them (see workers/cache_delta.py).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from workers.cache_delta import CacheDelta
from workers.contract.block_hash import BlockHash


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    # Set once the block is full and computed; the token ids let a hit be verified exactly.
    block_hash: BlockHash | None = None
    token_ids: tuple[int, ...] = ()


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._cached: dict[BlockHash, int] = {}
        self.cache_delta: CacheDelta[BlockHash] = CacheDelta()  # keys of `_cached`, net

    # ----------------------------------------------------------------- accounting
    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free - self.num_cached

    @property
    def num_allocatable(self) -> int:
        return self.num_free + self.num_cached

    @property
    def num_hashed_blocks(self) -> int:
        """How many blocks a prefix lookup can hit: O(1), for per-step load reports."""
        return len(self._cached)

    def cached_hashes(self) -> list[BlockHash]:
        """Hashes of every block that a prefix lookup can hit (used or evictable)."""
        return list(self._cached)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ----------------------------------------------------------------- allocation
    def allocate(self, num_blocks: int) -> list[int] | None:
        """Take `num_blocks` blocks (ref_count 1 each), or None, taking nothing, if too few."""
        if num_blocks > self.num_allocatable:
            return None
        return [self._take_one() for _ in range(num_blocks)]

    def _take_one(self) -> int:
        if self._free:
            block_id = self._free.popleft()
        else:
            block_id, _ = self._evictable.popitem(last=False)
            self._evict(self.blocks[block_id])
        self.blocks[block_id].ref_count = 1
        return block_id

    def _evict(self, block: Block) -> None:
        if self._cached.get(block.block_hash) == block.block_id:
            del self._cached[block.block_hash]
            self.cache_delta.remove(block.block_hash)
        block.block_hash = None
        block.token_ids = ()

    def free(self, block_table: Sequence[int]) -> None:
        """Drop one reference to each block. Tail blocks are released first so that, among the
        blocks of one request, the end of the prompt is evicted before its shared beginning."""
        for block_id in reversed(block_table):
            block = self.blocks[block_id]
            if block.ref_count <= 0:
                raise RuntimeError(f"double free of block {block_id}")
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.block_hash is None:
                    self._free.append(block_id)
                else:
                    self._evictable[block_id] = None

    def share(self, block_table: Sequence[int]) -> None:
        """Take one more reference to each block, all in use (a paused request's blocks that
        its continuation takes over, see paused_kv.py)."""
        for block_id in block_table:
            block = self.blocks[block_id]
            if block.ref_count <= 0:
                raise RuntimeError(f"block {block_id} is not in use: it cannot be shared")
            block.ref_count += 1

    # ----------------------------------------------------------------- prefix caching
    def match_prefix(
        self, block_hashes: Sequence[BlockHash], token_ids: Sequence[int]
    ) -> list[int]:
        """Longest run of cached blocks matching `block_hashes` from the start, each verified
        against its token ids. Takes a reference on every returned block."""
        hits: list[int] = []
        for index, block_hash in enumerate(block_hashes):
            block_id = self._cached.get(block_hash)
            if block_id is None:
                break
            start = index * self.block_size
            expected = tuple(token_ids[start : start + self.block_size])
            if self.blocks[block_id].token_ids != expected:
                break
            hits.append(block_id)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._evictable[block_id]
            block.ref_count += 1
        return hits

    def register(self, block_id: int, block_hash: BlockHash, token_ids: Sequence[int]) -> None:
        """Publish a full, computed block for prefix lookups. If another block already holds the
        same content, that one stays the canonical copy and this one stays private."""
        block = self.blocks[block_id]
        if block.block_hash is not None or block_hash in self._cached:
            return
        block.block_hash = block_hash
        block.token_ids = tuple(token_ids)
        self._cached[block_hash] = block_id
        self.cache_delta.add(block_hash)

    def reset(self) -> None:
        """Forget every cached block and hand blocks out in id order again, as a new pool
        does. Every block must be free or evictable (no request holds one)."""
        if self.num_used:
            raise RuntimeError(f"{self.num_used} blocks are still in use")
        for block_id in self._evictable:
            self._evict(self.blocks[block_id])
        self._evictable.clear()
        self._free = deque(range(self.num_blocks))

    def check_invariants(self) -> None:
        """Raise if the bookkeeping is inconsistent. Cheap enough for tests, not for every step."""
        free, evictable = set(self._free), set(self._evictable)
        for block in self.blocks:
            if block.block_id in free:
                assert block.ref_count == 0 and block.block_hash is None, block
            elif block.block_id in evictable:
                assert block.ref_count == 0 and block.block_hash is not None, block
            else:
                assert block.ref_count > 0, block
        for block_hash, block_id in self._cached.items():
            assert self.blocks[block_id].block_hash == block_hash
        assert self.num_free + self.num_cached + self.num_used == self.num_blocks
