"""PausedRequests: KV blocks of ended requests kept pinned for the call that continues them
(sessions: a multi-turn chat, an agent's tool call). Pure Python: no torch.

A request with a `PausePlan` that ends with "stop" or "length" keeps its blocks referenced
here (neither free nor evictable) until one of four things happens, each reported once as a
`PauseReleased`:

    resumed    a request with `resume_from` = its id was admitted (it took over the blocks)
    expired    its deadline (ttl_s after it ended) passed: released at the next step or idle
               check
    evicted    a live request needed blocks: an entry overdue (past its expected return) goes
               first, else the one expected back last (InferCept's victim order); all before
               any running request is preempted
    released   the worker was asked to (`release_paused`)

The KV kept covers the tokens whose KV is computed: the prompt and every output but the last
sampled one. A continuation reuses the longest common prefix `m` of its tokens and those
(`reused_prefix`), block by block:

    paused tokens:  | blk 0 | blk 1 | blk 2 | bl..   (computed: n tokens)
    new tokens:     | blk 0 | blk 1 | bl|xxx...       (differs from position m on)
                                        m
    kept:           [ 0 ] [ 1 ]  [2?]   <- block 2 holds position m: kept only if no one else
                                           references it and it is not in the prefix cache (its
                                           tail is overwritten); else dropped and m rounds down
                                           to the block's start
    freed:          the rest of the paused block table

Image placeholder positions match only when the same image (hash) sits at the same offset: the
KV of a placeholder is the image's, not the token's.

Released blocks go back to the pool as any request's do: hashed full blocks become evictable
prefix-cache blocks, so a later request may still hit them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers.contract.block_hash import BlockHash, ImageSpan
from workers.contract.messages import PausedKV, PauseReleased
from workers.engine.block_manager import BlockPool
from workers.engine.request import Request


@dataclass
class PausedEntry:
    request_id: str
    token_ids: list[int]  # tokens whose KV the blocks hold
    block_table: list[int]  # blocks_needed(len(token_ids)) blocks, in token order
    block_hashes: list[BlockHash]  # of its full blocks (empty without prefix caching)
    num_published_blocks: int  # leading blocks already offered to the prefix cache
    image_spans: list[ImageSpan]
    deadline: float  # clock seconds: released after this (ttl_s after it ended)
    expected_return: float  # clock seconds: when its continuation is expected
    order: int  # pause order, oldest first: breaks ties between equal expected returns


def reused_prefix(
    paused_tokens: Sequence[int],
    paused_spans: Sequence[ImageSpan],
    token_ids: Sequence[int],
    image_spans: Sequence[ImageSpan],
) -> int:
    """Length of the longest common prefix of two token lists whose KV is the same: equal tokens,
    and at image placeholders the same image at the same offset (spans in offset order)."""
    length = 0
    for a, b in zip(paused_tokens, token_ids, strict=False):
        if a != b:
            break
        length += 1
    for spans, others in ((paused_spans, image_spans), (image_spans, paused_spans)):
        for span in spans:
            if span.offset >= length:
                break
            if span not in others:
                length = span.offset
                break
    return length


class PausedRequests:
    def __init__(self, block_pool: BlockPool, clock: Callable[[], float] = time.monotonic):
        self.block_pool = block_pool
        self.clock = clock  # seconds, monotonic
        self._entries: dict[str, PausedEntry] = {}
        self._block_refs: Counter[int] = Counter()  # references held by entries, per block
        self._num_paused = 0  # ever: each entry's `order`
        self._paused_events: list[PausedKV] = []
        self._released_events: list[PauseReleased] = []

    # ----------------------------------------------------------------- accounting
    @property
    def num_paused(self) -> int:
        return len(self._entries)

    @property
    def num_pinned_blocks(self) -> int:
        """Distinct blocks that paused entries reference."""
        return len(self._block_refs)

    def num_reclaimable_blocks(self) -> int:
        """Blocks that releasing every entry would return to the pool: those no live request
        references too. O(pinned blocks): for when an allocation falls short."""
        blocks = self.block_pool.blocks
        return sum(1 for b, n in self._block_refs.items() if blocks[b].ref_count == n)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._entries

    def take_events(self) -> tuple[list[PausedKV], list[PauseReleased]]:
        """Entries paused and released since the last take, each once."""
        events = self._paused_events, self._released_events
        self._paused_events, self._released_events = [], []
        return events

    # ----------------------------------------------------------------- pause and resume
    def pause(self, req: Request, ttl_s: float, expected_pause_s: float) -> None:
        """Take over a finished request's blocks: those its computed tokens fill stay pinned,
        any beyond are freed. An entry of the same id already here is released first."""
        self.release(req.request_id, "released")
        num_tokens = req.num_computed_tokens
        num_blocks = self.block_pool.blocks_needed(num_tokens)
        self.block_pool.free(req.block_table[num_blocks:])
        num_full = num_tokens // self.block_pool.block_size
        now = self.clock()
        entry = PausedEntry(
            request_id=req.request_id,
            token_ids=req.token_ids[:num_tokens],
            block_table=req.block_table[:num_blocks],
            block_hashes=list(req.block_hashes[:num_full]),
            num_published_blocks=min(req.num_published_blocks, num_full),
            image_spans=list(req.image_spans),
            deadline=now + ttl_s,
            expected_return=now + expected_pause_s,
            order=self._num_paused,
        )
        req.block_table = []
        self._num_paused += 1
        self._entries[entry.request_id] = entry
        self._block_refs.update(entry.block_table)
        self._paused_events.append(
            PausedKV(request_id=entry.request_id, num_tokens=num_tokens, num_blocks=num_blocks)
        )

    def resume(self, req: Request) -> bool:
        """Start a continuation (`req.resume_from`, not yet admitted) from the paused KV of the
        common prefix (module docstring), leaving at least one token to compute so that there
        are logits to sample from: each block it takes gets one more reference, and its counter
        starts at the reused tokens, which count as cached. False, taking nothing, when the
        entry is gone or nothing matches: a plain prefill then.

        The entry stays until `release(resume_from, "resumed")` once `req` is admitted: if it
        cannot be admitted yet, it drops its references and the entry is as it was."""
        entry = self._entries.get(req.resume_from or "")
        if entry is None:
            return False
        size = self.block_pool.block_size
        tokens = req.token_ids[: req.num_tokens - 1]
        length = reused_prefix(entry.token_ids, entry.image_spans, tokens, req.image_spans)
        num_full = length // size
        table = entry.block_table[:num_full]
        if length % size:
            block = self.block_pool.blocks[entry.block_table[num_full]]
            if block.ref_count == 1 and block.block_hash is None:
                table.append(block.block_id)
            else:
                length = num_full * size
        if length == 0:
            return False
        self.block_pool.share(table)
        req.block_table = table
        req.block_hashes = entry.block_hashes[:num_full]
        req.num_published_blocks = min(entry.num_published_blocks, num_full)
        req.num_computed_tokens = length
        req.num_cached_tokens = min(length, req.num_prompt_tokens)
        return True

    # ----------------------------------------------------------------- release
    def release(self, request_id: str, reason: str) -> bool:
        """Give an entry's blocks back to the pool; False if it is not here."""
        entry = self._entries.pop(request_id, None)
        if entry is None:
            return False
        self.block_pool.free(entry.block_table)
        self._block_refs.subtract(entry.block_table)
        for block_id in entry.block_table:
            if self._block_refs[block_id] == 0:
                del self._block_refs[block_id]
        self._released_events.append(PauseReleased(request_id=request_id, reason=reason))
        return True

    def expire(self) -> int:
        """Release every entry past its deadline; returns how many."""
        if not self._entries:  # every engine step asks
            return 0
        now = self.clock()
        expired = [e.request_id for e in self._entries.values() if e.deadline <= now]
        for request_id in expired:
            self.release(request_id, "expired")
        return len(expired)

    def evict_one(self) -> bool:
        """Release one entry; False if there is none. First one overdue (past its expected
        return: the likeliest never to be continued, the most overdue first), else the one
        expected back last (InferCept's order; of equal ones, the one paused first)."""
        if not self._entries:
            return False
        now = self.clock()
        overdue = [e for e in self._entries.values() if e.expected_return < now]
        if overdue:
            victim = min(overdue, key=lambda e: (e.expected_return, e.order))
        else:
            victim = max(self._entries.values(), key=lambda e: (e.expected_return, -e.order))
        return self.release(victim.request_id, "evicted")

    def release_all(self, reason: str) -> None:
        for request_id in list(self._entries):
            self.release(request_id, reason)
