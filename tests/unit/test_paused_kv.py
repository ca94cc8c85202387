"""Paused KV (sessions) in the batcher: a request with a pause plan keeps its blocks when it ends,
a continuation takes over the blocks of the common prefix, and paused KV goes when it expires,
when asked, or under memory pressure (the one expected back last first) before any running
request is preempted. The fake model reads every token's KV back, so a wrong block kept is
caught by the outputs (see conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence

from tests.unit.conftest import EOS, FakeEngine, detokenize
from workers.contract.block_hash import ImageSpan
from workers.contract.messages import PausedKV, PausePlan, PauseReleased
from workers.contract.sampling_params import SamplingParams
from workers.engine.batcher import Batcher, BatcherConfig
from workers.engine.block_manager import BlockPool
from workers.engine.paused_kv import PausedRequests, reused_prefix
from workers.engine.request import Request, RequestStatus

PROMPT = list(range(1, 10))  # 9 tokens: two full blocks of 4 and one partial
PLAN = PausePlan(ttl_s=100.0, expected_pause_s=10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(num_blocks: int = 64, prefix_caching: bool = True) -> tuple[FakeEngine, Clock]:
    pool, clock = BlockPool(num_blocks, block_size=4), Clock()
    config = BatcherConfig(enable_prefix_caching=prefix_caching)
    batcher = Batcher(config, pool, (EOS,), detokenize, paused=PausedRequests(pool, clock))
    return FakeEngine(batcher), clock


def add(
    engine: FakeEngine,
    request_id: str,
    prompt: Sequence[int],
    max_tokens: int = 3,
    pause: PausePlan | None = None,
    resume_from: str | None = None,
) -> Request:
    request = Request(
        request_id=request_id,
        prompt_token_ids=list(prompt),
        sampling_params=SamplingParams(max_tokens=max_tokens),
        pause=pause,
        resume_from=resume_from,
    )
    engine.batcher.add(request)
    return request


def paused_turn(engine: FakeEngine, request_id: str = "a", prompt=PROMPT, **plan) -> list[int]:
    """Run a request with a pause plan to its end; the tokens whose KV it leaves pinned."""
    request = add(engine, request_id, prompt, pause=PausePlan(**{**vars(PLAN), **plan}))
    engine.run_to_completion()
    return request.token_ids[:-1]


def ref_counts(engine: FakeEngine, block_ids: Sequence[int]) -> list[int]:
    return [engine.pool.blocks[b].ref_count for b in block_ids]


def released(engine: FakeEngine) -> list[tuple[str, str]]:
    return [(e.request_id, e.reason) for e in engine.batcher.paused.take_events()[1]]


def assert_idle(engine: FakeEngine) -> None:
    engine.pool.check_invariants()
    paused = engine.batcher.paused
    assert (engine.pool.num_used, paused.num_paused, paused.num_pinned_blocks) == (0, 0, 0)


def test_a_paused_request_keeps_the_blocks_its_computed_tokens_fill():
    engine, _ = make()
    computed = paused_turn(engine)
    assert len(computed) == 11  # 9 prompt tokens and 2 of the 3 outputs
    paused = engine.batcher.paused
    assert (paused.num_paused, paused.num_pinned_blocks, engine.pool.num_used) == (1, 3, 3)
    assert ref_counts(engine, [0, 1, 2]) == [1, 1, 1]
    assert paused.take_events() == ([PausedKV(request_id="a", num_tokens=11, num_blocks=3)], [])


def test_continuation_takes_over_the_common_prefix_with_its_partial_block():
    engine, _ = make()
    computed = paused_turn(engine)
    prompt = computed + [50, 51]
    b = add(engine, "b", prompt, resume_from="a")
    engine.step()
    assert b.block_table[:3] == [0, 1, 2]
    assert (b.num_cached_tokens, b.num_computed_tokens) == (11, 13)  # 2 prompt tokens computed
    assert released(engine) == [("a", "resumed")]
    engine.run_to_completion()
    assert b.output_token_ids == engine.reference_output(prompt, 3)
    engine.batcher.paused.take_events()
    assert_idle(engine)


def test_continuation_diverging_inside_a_published_block_drops_that_block():
    engine, _ = make()
    computed = paused_turn(engine)
    prompt = computed[:6] + [60, 61, 62]  # differs at 6, inside full block 1 (in the cache)
    b = add(engine, "b", prompt, resume_from="a")
    engine.step()
    # Block 1 stays in the prefix cache (evictable), block 2 goes back to the free list.
    assert (b.block_table, b.num_cached_tokens) == ([0, 3, 4], 4)
    assert engine.pool.num_cached == 1
    engine.run_to_completion()
    assert b.output_token_ids == engine.reference_output(prompt, 3)
    assert_idle(engine)


def test_continuation_overwrites_the_tail_of_a_block_only_the_pause_held():
    engine, _ = make(prefix_caching=False)  # no block is published
    computed = paused_turn(engine)
    prompt = computed[:6] + [60, 61, 62]
    b = add(engine, "b", prompt, resume_from="a")
    engine.step()
    assert (b.block_table, b.num_cached_tokens) == ([0, 1, 3], 6)
    engine.run_to_completion()
    assert b.output_token_ids == engine.reference_output(prompt, 3)
    assert_idle(engine)


def test_continuation_drops_the_block_at_the_prefix_end_when_someone_else_holds_it():
    engine, _ = make()
    computed = paused_turn(engine)
    engine.pool.share([2])  # another holder of the partial block
    prompt = computed[:10] + [70, 71]
    b = add(engine, "b", prompt, resume_from="a")
    engine.step()
    assert (b.block_table, b.num_cached_tokens) == ([0, 1, 3], 8)
    engine.run_to_completion()
    assert b.output_token_ids == engine.reference_output(prompt, 3)
    engine.pool.free([2])
    assert_idle(engine)


def test_image_positions_match_only_the_same_image_at_the_same_offset():
    tokens = [1, 2, 9, 9, 9, 3, 4]
    image = ImageSpan(offset=2, length=3, image_hash="cat")
    assert reused_prefix(tokens, [image], tokens + [5], [image]) == 7
    other = ImageSpan(offset=2, length=3, image_hash="dog")
    assert reused_prefix(tokens, [image], tokens + [5], [other]) == 2
    moved = [1, 9, 9, 9, 2, 3, 4]
    assert reused_prefix(tokens, [image], moved, [ImageSpan(1, 3, "cat")]) == 1
    assert reused_prefix(tokens, [image], tokens[:2] + [7, 7], []) == 2


def test_a_continuation_of_nothing_paused_is_a_plain_prefill_with_the_prefix_cache():
    engine, _ = make()
    computed = paused_turn(engine)
    engine.batcher.paused.release("a", "released")
    b = add(engine, "b", computed + [50], resume_from="a")
    engine.step()
    assert (b.block_table[:2], b.num_cached_tokens) == ([0, 1], 8)  # the cached full blocks
    engine.run_to_completion()
    assert b.output_token_ids == engine.reference_output(computed + [50], 3)
    assert released(engine) == [("a", "released")]
    assert_idle(engine)


def test_paused_kv_expires_at_its_deadline_at_the_next_step():
    engine, clock = make()
    paused_turn(engine, "a", ttl_s=5.0)
    paused_turn(engine, "b", prompt=[20, 21, 22], ttl_s=10.0)
    paused = engine.batcher.paused
    paused.take_events()
    clock.now = 4.9
    assert paused.expire() == 0
    clock.now = 5.0
    engine.step()  # nothing to run: the step only expires
    assert released(engine) == [("a", "expired")]
    clock.now = 20.0
    assert (paused.expire(), released(engine)) == (1, [("b", "expired")])
    assert_idle(engine)
    assert engine.pool.num_cached == 3  # their full blocks stay hittable in the prefix cache


def test_eviction_takes_the_pause_expected_back_last_first():
    engine, clock = make()
    for request_id, expected in (("a", 10.0), ("b", 30.0), ("c", 20.0), ("d", 20.0)):
        paused_turn(engine, request_id, prompt=[ord(request_id), 5, 6], expected_pause_s=expected)
    paused = engine.batcher.paused
    evicted = []
    while paused.evict_one():
        evicted += [e.request_id for e in paused.take_events()[1]]
    assert evicted == ["b", "c", "d", "a"]  # c and d tie: the one paused first goes first
    assert_idle(engine)


def test_eviction_takes_a_pause_past_its_expected_return_first():
    engine, clock = make()
    for request_id, expected in (("a", 10.0), ("b", 30.0), ("c", 5.0)):
        paused_turn(engine, request_id, prompt=[ord(request_id), 5, 6], expected_pause_s=expected)
    clock.now += 12.0  # a and c are overdue (c the most); b is still expected
    paused = engine.batcher.paused
    evicted = []
    while paused.evict_one():
        evicted += [e.request_id for e in paused.take_events()[1]]
    assert evicted == ["c", "a", "b"]
    assert_idle(engine)


def test_running_requests_take_paused_kv_before_any_preemption():
    engine, _ = make(num_blocks=8)
    paused_turn(engine, "a", expected_pause_s=10.0)  # 3 blocks
    paused_turn(engine, "b", prompt=[30, 31, 32], expected_pause_s=50.0)  # 1 block
    engine.batcher.paused.take_events()
    r = add(engine, "r", [40, 41, 42, 43], max_tokens=13)  # grows to 4 blocks
    s = add(engine, "s", [44, 45, 46, 47], max_tokens=13)  # so does s: 8 blocks in all
    engine.run_to_completion()
    assert engine.batcher.num_preemptions == 0
    assert released(engine) == [("b", "evicted"), ("a", "evicted")]
    assert r.output_token_ids == engine.reference_output([40, 41, 42, 43], 13)
    assert s.output_token_ids == engine.reference_output([44, 45, 46, 47], 13)
    assert_idle(engine)


def test_admission_releases_paused_kv_only_when_that_lets_the_request_in():
    engine, _ = make(num_blocks=8)
    paused_turn(engine, "a")  # 3 blocks
    engine.batcher.paused.take_events()
    add(engine, "r", [40, 41, 42, 43, 44, 45, 46, 47, 48], max_tokens=2)  # 3 blocks
    engine.step()  # r's prompt
    w = add(engine, "w", list(range(60, 81)), max_tokens=2)  # 6 blocks
    engine.step()  # r's last token; w does not fit, not even with a's 3 blocks: 2 + 3 < 6
    assert w.status is RequestStatus.WAITING and "a" in engine.batcher.paused
    engine.step()  # r's blocks are back: 5 + 3 >= 6
    assert w.status is RequestStatus.RUNNING
    assert released(engine) == [("a", "evicted")]
    engine.run_to_completion()
    assert_idle(engine)


def test_a_continuation_that_cannot_be_admitted_yet_leaves_the_paused_kv_as_it_was():
    engine, _ = make(num_blocks=6)
    computed = paused_turn(engine)  # blocks 0, 1, 2
    add(engine, "r", list(range(40, 50)), max_tokens=2)  # blocks 3, 4, 5
    engine.step()  # r's prompt
    prompt = computed + list(range(60, 68))  # 19 tokens: 2 blocks more than the paused 3
    c = add(engine, "c", prompt, resume_from="a")
    engine.step()  # r's last token: no room for c yet
    assert c.status is RequestStatus.WAITING and c.block_table == []
    assert "a" in engine.batcher.paused and ref_counts(engine, [0, 1, 2]) == [1, 1, 1]
    engine.step()  # r has finished: c takes over a's blocks
    assert (c.block_table, c.num_cached_tokens) == ([0, 1, 2, 5, 4], 11)
    assert released(engine) == [("a", "resumed")]
    engine.run_to_completion()
    assert c.output_token_ids == engine.reference_output(prompt, 3)
    assert_idle(engine)


def test_an_aborted_request_is_never_paused():
    engine, _ = make()
    add(engine, "a", PROMPT, max_tokens=10, pause=PLAN)
    engine.step()
    engine.batcher.abort("a")
    assert engine.batcher.paused.take_events() == ([], [])
    assert_idle(engine)


def test_pausing_an_id_already_paused_releases_the_earlier_kv():
    engine, _ = make()
    paused_turn(engine, "a")
    del engine.finished["a"]  # the fake engine refuses a reused id otherwise
    paused_turn(engine, "a", prompt=[20, 21])
    paused = engine.batcher.paused
    assert (paused.num_paused, paused.num_pinned_blocks) == (1, 1)
    assert paused.release("a", "released") and not paused.release("a", "released")
    pauses, releases = paused.take_events()
    assert [e.request_id for e in pauses] == ["a", "a"]
    assert releases == [PauseReleased(request_id="a", reason="released")] * 2
    assert_idle(engine)
