"""A batcher driven by a stand-in forward pass, for CPU tests of scheduling and KV bookkeeping.

The fake model keeps a KV "cache" that stores, for every slot, the token id written there. Each
step writes the scheduled tokens into the slots their block table names, and a request's next
token is computed from what the cache holds for its whole sequence. So a wrong block table, a
wrong prefix-cache hit or a block reused while still referenced changes the output, and is
caught by comparing against `reference_output`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from workers.contract.block_hash import ImageSpan
from workers.contract.sampling_params import SamplingParams
from workers.engine.batcher import Batcher, BatcherConfig, BatchPlan, TokenEvent
from workers.engine.block_manager import BlockPool
from workers.engine.request import Request

VOCAB = 97  # the fake model samples `sum(token ids) % VOCAB`, so 97 and up are never sampled
EOS = 1000  # default end-of-sequence id: never sampled


def next_token(token_ids: Sequence[int]) -> int:
    return sum(token_ids) % VOCAB


def reference_output(prompt: Sequence[int], max_tokens: int) -> list[int]:
    """What a request generates when it runs alone, without batching, chunks or preemption."""
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(next_token(tokens))
    return tokens[len(prompt) :]


def detokenize(token_ids: Sequence[int]) -> str:
    return "".join(chr(ord("a") + t % 26) for t in token_ids)


class FakeEngine:
    """`schedule -> forward -> postprocess -> release`, checking the pool after each stage."""

    next_token = staticmethod(next_token)
    reference_output = staticmethod(reference_output)

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.pool = batcher.block_pool
        self.slots: dict[tuple[int, int], int] = {}  # (block id, offset) -> token id
        self.finished: dict[str, Request] = {}
        self.events: list[TokenEvent] = []

    def add(
        self,
        request_id: str,
        prompt: Sequence[int],
        max_tokens: int = 4,
        image_spans: Sequence[ImageSpan] = (),
        priority: float = 0.0,
        **params,
    ) -> Request:
        request = Request(
            request_id=request_id,
            prompt_token_ids=list(prompt),
            sampling_params=SamplingParams(max_tokens=max_tokens, **params),
            image_spans=list(image_spans),
            priority=priority,
        )
        self.batcher.add(request)
        return request

    def add_prefilled(self, request_id: str, prompt: Sequence[int], max_tokens: int) -> Request:
        """A request whose prompt KV (and first token) came from a prefill worker."""
        request = Request(
            request_id=request_id,
            prompt_token_ids=list(prompt),
            sampling_params=SamplingParams(max_tokens=max_tokens),
            prompt_kv=tuple(prompt),
        )
        request.token_ids.append(next_token(prompt))
        self.batcher.add(request)
        return request

    def step(self) -> BatchPlan:
        plan = self.batcher.schedule()
        self.pool.check_invariants()
        sampled = self.forward(plan)
        events = self.batcher.postprocess(plan, sampled)
        self.events.extend(events)
        self.pool.check_invariants()
        for event in events:
            if event.request.is_done:
                self.batcher.release(event.request)
                assert event.request.request_id not in self.finished
                self.finished[event.request.request_id] = event.request
        self.pool.check_invariants()
        return plan

    def run_to_completion(self, max_steps: int = 1000) -> list[BatchPlan]:
        plans = []
        while self.batcher.has_unfinished():
            assert len(plans) < max_steps, "the batcher made no progress"
            plans.append(self.step())
        return plans

    def forward(self, plan: BatchPlan) -> dict[str, int]:
        for request in plan.kv_imports:
            self._write(request, request.prompt_kv, 0)
        sampled = {}
        for item in plan.scheduled:
            request = item.request
            start = request.num_computed_tokens
            new_tokens = request.token_ids[start : start + item.num_new_tokens]
            self._write(request, new_tokens, start)
            if item.is_last_chunk:
                seen = self._read(request, request.num_tokens)
                assert seen == request.token_ids, f"{request.request_id} reads a wrong KV"
                sampled[request.request_id] = next_token(seen)
        return sampled

    def _write(self, request: Request, token_ids: Sequence[int], start: int) -> None:
        size = self.pool.block_size
        for position, token_id in enumerate(token_ids, start):
            block_id = request.block_table[position // size]
            assert self.pool.blocks[block_id].ref_count > 0, "write into an unowned block"
            self.slots[block_id, position % size] = token_id

    def _read(self, request: Request, num_tokens: int) -> list[int | None]:
        size = self.pool.block_size
        return [
            self.slots.get((request.block_table[p // size], p % size)) for p in range(num_tokens)
        ]


@pytest.fixture
def make_engine():
    def make(
        num_blocks: int = 64,
        block_size: int = 4,
        eos_token_ids: Sequence[int] = (EOS,),
        **config,
    ) -> FakeEngine:
        pool = BlockPool(num_blocks, block_size)
        return FakeEngine(Batcher(BatcherConfig(**config), pool, eos_token_ids, detokenize))

    return make
