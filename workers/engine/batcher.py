"""Continuous batching for one worker. Pure Python: no torch.

Each engine step is `schedule() -> run the model -> postprocess()`:

0. Paused requests (sessions, paused_kv.py) past their deadline release their blocks.
1. Running requests are served first, decodes before prefill chunks, under the step's token
   budget (`token_budget`: the config's `max_num_batched_tokens`, or what the worker derived
   from its profile and a TPOT target, see workers/profiler.py). A request that needs a block
   when none is left first releases paused requests' KV (the one expected back last first),
   and only then preempts the most recently admitted running request (preempt by recompute:
   its blocks are freed, its counter goes back to 0 and it returns to the head of the waiting
   queue).
2. Waiting requests are admitted in priority order (lower first; equal priorities first come,
   first served) while tokens, sequence slots and blocks last (paused KV gives way when that
   lets one in). On first admission a request takes its imported KV, or the paused KV it
   continues (`resume_from`), or its prefix-cache hits. A running prompt of a lower priority than
   the first waiting one gets only what the admissions leave of the budget, so an urgent short
   prompt never waits behind the chunks of a long one (with every priority 0 the order is the
   plain first-come-first-served one):

       decodes | prefill chunks with priority <= the first waiting one's | admissions | the rest
3. After the forward pass, each request that caught up with its tokens gets the sampled token,
   is checked for stop conditions, and leaves the batch when done. Its `release` frees its
   blocks, or pins them as paused KV when it has a pause plan and ended with stop or length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from workers.contract.block_hash import extend_block_hashes
from workers.engine.block_manager import BlockPool
from workers.engine.paused_kv import PausedRequests
from workers.engine.request import Request, RequestStatus


@dataclass(frozen=True)
class BatcherConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_model_len: int = 2048
    enable_prefix_caching: bool = True


@dataclass
class ScheduledRequest:
    request: Request
    num_new_tokens: int  # tokens computed this step, from request.num_computed_tokens on
    # True when this step catches the request up, so its last position is sampled.
    is_last_chunk: bool = field(init=False)

    def __post_init__(self) -> None:
        req = self.request
        self.is_last_chunk = req.num_computed_tokens + self.num_new_tokens == req.num_tokens


@dataclass
class BatchPlan:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    kv_imports: list[Request] = field(default_factory=list)  # write their prompt KV first
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


@dataclass(frozen=True)
class TokenEvent:
    request: Request
    token_id: int
    finish_reason: str | None


class Batcher:
    def __init__(
        self,
        config: BatcherConfig,
        block_pool: BlockPool,
        eos_token_ids: Sequence[int],
        detokenize: Callable[[Sequence[int]], str],
        paused: PausedRequests | None = None,  # None: a new holder over `block_pool`
    ) -> None:
        self.config = config
        self.block_pool = block_pool
        self.paused = paused if paused is not None else PausedRequests(block_pool)
        self.eos_token_ids = tuple(eos_token_ids)
        self.detokenize = detokenize
        self.token_budget = config.max_num_batched_tokens  # prompt + decode tokens per step
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # in admission order; the last is preempted first
        self.num_preemptions = 0
        # Prompt tokens of freshly admitted requests, and those served from the prefix cache.
        self.num_prompt_tokens_admitted = 0
        self.num_prefix_hit_tokens = 0

    @property
    def block_size(self) -> int:
        return self.block_pool.block_size

    def set_token_budget(self, num_tokens: int) -> None:
        """Prompt and decode tokens per step from the next `schedule` on."""
        if num_tokens < 1:
            raise ValueError(f"the token budget must be >= 1, got {num_tokens}")
        self.token_budget = num_tokens

    def reset_counters(self) -> None:
        self.num_preemptions = 0
        self.num_prompt_tokens_admitted = 0
        self.num_prefix_hit_tokens = 0

    def add(self, request: Request) -> None:
        """Queue behind every waiting request of the same or a lower priority value."""
        index = len(self.waiting)
        while index > 0 and self.waiting[index - 1].priority > request.priority:
            index -= 1
        self.waiting.insert(index, request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # ----------------------------------------------------------------- schedule
    def schedule(self) -> BatchPlan:
        self.paused.expire()
        plan = BatchPlan()
        budget = self.token_budget
        first_waiting = self.waiting[0].priority if self.waiting else float("inf")
        decodes = [r for r in self.running if r.num_uncomputed_tokens <= 1]
        prefills = sorted(
            (r for r in self.running if r.num_uncomputed_tokens > 1), key=lambda r: r.priority
        )
        urgent = [r for r in prefills if r.priority <= first_waiting]
        deferred = [r for r in prefills if r.priority > first_waiting]
        for req in decodes + urgent:
            if budget == 0:
                break
            if req.status is not RequestStatus.RUNNING:
                continue  # preempted earlier in this loop
            num_new = min(req.num_uncomputed_tokens, budget)
            if self._reserve_or_preempt(req, req.num_computed_tokens + num_new, plan):
                plan.scheduled.append(ScheduledRequest(req, num_new))
                budget -= num_new
        self._unschedule_preempted(plan)

        while self.waiting and budget > 0 and not plan.preempted:
            if len(self.running) >= self.config.max_num_seqs:
                break
            req = self.waiting[0]
            is_import = self._start(req)
            num_new = min(req.num_uncomputed_tokens, budget)
            if not self._reserve(req, req.num_computed_tokens + num_new):
                self._reset(req)
                break
            self.waiting.popleft()
            if req.num_preemptions == 0 and not is_import:
                self.num_prompt_tokens_admitted += req.num_prompt_tokens
                self.num_prefix_hit_tokens += req.num_cached_tokens
                if req.resume_from is not None:  # its blocks are the request's now
                    self.paused.release(req.resume_from, "resumed")
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            if is_import:
                plan.kv_imports.append(req)
            if num_new:
                plan.scheduled.append(ScheduledRequest(req, num_new))
                budget -= num_new
        # What the admissions left: no preemption for these, they just wait a step.
        for req in deferred:
            num_new = min(req.num_uncomputed_tokens, budget)
            if budget == 0 or plan.preempted:
                break
            if self._reserve(req, req.num_computed_tokens + num_new):
                plan.scheduled.append(ScheduledRequest(req, num_new))
                budget -= num_new
        return plan

    def _start(self, req: Request) -> bool:
        """Give a request its already-available KV on admission; True if it must be imported."""
        if req.prompt_kv is not None:
            req.num_computed_tokens = req.num_prefilled_tokens
            return True
        if req.resume_from is not None and req.num_preemptions == 0 and self.paused.resume(req):
            return False
        if self.config.enable_prefix_caching and req.num_computed_tokens == 0:
            # At least one token is always computed, so that there are logits to sample from.
            num_hashable = (req.num_tokens - 1) // self.block_size
            extend_block_hashes(
                req.block_hashes, req.token_ids, num_hashable * self.block_size,
                self.block_size, req.image_spans,
            )  # fmt: skip
            hits = self.block_pool.match_prefix(req.block_hashes[:num_hashable], req.token_ids)
            req.block_table = hits
            req.num_published_blocks = len(hits)
            req.num_computed_tokens = len(hits) * self.block_size
            if req.num_preemptions == 0:
                req.num_cached_tokens = min(req.num_computed_tokens, req.num_prompt_tokens)
        return False

    def _reserve(self, req: Request, num_tokens: int) -> bool:
        """Make the block table cover `num_tokens` slots; False (taking nothing) if it cannot.
        Paused KV is released for it (the entry expected back last first) when that suffices."""
        pool = self.block_pool
        missing = pool.blocks_needed(num_tokens) - len(req.block_table)
        if missing <= 0:
            return True
        if missing > pool.num_allocatable:
            if missing > pool.num_allocatable + self.paused.num_reclaimable_blocks():
                return False
            while missing > pool.num_allocatable and self.paused.evict_one():
                pass
        blocks = pool.allocate(missing)
        if blocks is None:
            return False
        req.block_table.extend(blocks)
        return True

    def _reserve_or_preempt(self, req: Request, num_tokens: int, plan: BatchPlan) -> bool:
        while not self._reserve(req, num_tokens):
            if self.paused.evict_one():
                continue  # every paused request's KV goes before a running request is preempted
            victim = self.running[-1]
            self._preempt(victim)
            plan.preempted.append(victim)
            if victim is req:
                return False
        return True

    @staticmethod
    def _unschedule_preempted(plan: BatchPlan) -> None:
        """Drop already-scheduled work of requests preempted later in the same loop. The freed
        budget stays unused: nothing is admitted in a step that had to preempt."""
        plan.scheduled = [s for s in plan.scheduled if s.request.status is RequestStatus.RUNNING]

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self._reset(req)
        req.status = RequestStatus.WAITING
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def _reset(self, req: Request) -> None:
        self.block_pool.free(req.block_table)
        req.block_table = []
        req.num_computed_tokens = 0
        req.num_published_blocks = 0

    # ----------------------------------------------------------------- postprocess
    def postprocess(self, plan: BatchPlan, sampled: dict[str, int]) -> list[TokenEvent]:
        """Advance counters, append sampled tokens and mark finished requests.

        Finished and handed-off requests leave `running` but keep their blocks until `release`,
        so that the engine can still export their KV.
        """
        events = []
        for item in plan.scheduled:
            req = item.request
            caught_up = item.is_last_chunk
            req.num_computed_tokens += item.num_new_tokens
            self._publish_full_blocks(req)
            if not caught_up:
                continue
            req.append_output(sampled[req.request_id])
            reason = req.check_stop(self.eos_token_ids, self.config.max_model_len, self.detokenize)
            if reason is not None:
                req.status, req.finish_reason = RequestStatus.FINISHED, reason
            elif req.export_kv:
                req.status = RequestStatus.HANDED_OFF
            if req.is_done:
                self.running.remove(req)
            events.append(TokenEvent(req, req.token_ids[-1], reason))
        return events

    def _publish_full_blocks(self, req: Request) -> None:
        if not self.config.enable_prefix_caching:
            return
        extend_block_hashes(
            req.block_hashes, req.token_ids, req.num_computed_tokens, self.block_size,
            req.image_spans,
        )  # fmt: skip
        num_full = req.num_computed_tokens // self.block_size
        for index in range(req.num_published_blocks, num_full):
            start = index * self.block_size
            self.block_pool.register(
                req.block_table[index],
                req.block_hashes[index],
                req.token_ids[start : start + self.block_size],
            )
        req.num_published_blocks = max(req.num_published_blocks, num_full)

    def release(self, req: Request) -> None:
        """Free a done request's blocks, or pin them as paused KV (see the module docstring)."""
        if req.pause is not None and req.status is RequestStatus.FINISHED:
            self.paused.pause(req, req.pause.ttl_s, req.pause.expected_pause_s)
            return
        self.block_pool.free(req.block_table)
        req.block_table = []

    def abort(self, request_id: str) -> Request | None:
        for queue in (self.waiting, self.running):
            for req in queue:
                if req.request_id == request_id:
                    queue.remove(req)
                    req.status = RequestStatus.ABORTED
                    self.release(req)
                    return req
        return None
