"""Preemption by recompute: when blocks run out, the most recently admitted request gives its
blocks back, waits at the head of the queue, and later finishes with the tokens it would have
produced without being preempted."""

from __future__ import annotations

import random

from workers.contract.block_hash import ImageSpan
from workers.engine.batcher import BatchPlan
from workers.engine.request import RequestStatus

PROMPTS = {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9, 10, 11, 12]}


def batch(plan: BatchPlan) -> list[tuple[str, int]]:
    return [(s.request.request_id, s.num_new_tokens) for s in plan.scheduled]


def ids(requests) -> list[str]:
    return [r.request_id for r in requests]


def three_decoding_requests(make_engine, num_blocks=6):
    """Three one-block prompts that each need a third block at their fifth output token."""
    engine = make_engine(num_blocks=num_blocks, block_size=4)
    requests = {name: engine.add(name, prompt, max_tokens=8) for name, prompt in PROMPTS.items()}
    for _ in range(5):
        plan = engine.step()
        assert plan.preempted == []
    assert [r.block_table for r in requests.values()] == [[0, 3], [1, 4], [2, 5]]
    return engine, requests


def test_request_needing_a_block_preempts_the_most_recently_admitted_one(make_engine):
    engine, requests = three_decoding_requests(make_engine)
    a, b, c = requests.values()

    plan = engine.step()

    assert ids(plan.preempted) == ["c"]
    assert batch(plan) == [("a", 1), ("b", 1)]
    assert (a.block_table, b.block_table) == ([0, 3, 5], [1, 4, 2])
    assert c.status is RequestStatus.WAITING
    assert (c.block_table, c.num_computed_tokens, c.num_preemptions) == ([], 0, 1)
    assert len(c.output_token_ids) == 5
    assert ids(engine.batcher.waiting) == ["c"]
    assert ids(engine.batcher.running) == ["a", "b"]


def test_preempted_request_waits_at_the_head_of_the_queue(make_engine):
    engine, requests = three_decoding_requests(make_engine)
    engine.add("d", [13, 14], max_tokens=1)

    engine.step()

    assert ids(engine.batcher.waiting) == ["c", "d"]


def test_preempted_request_finishes_with_the_tokens_it_would_have_produced(make_engine):
    engine, requests = three_decoding_requests(make_engine)

    plans = engine.run_to_completion()

    assert [ids(p.preempted) for p in plans] == [["c"]] + [[]] * (len(plans) - 1)
    assert [batch(p) for p in plans[3:5]] == [[("c", 9)], [("c", 1)]]
    for name, prompt in PROMPTS.items():
        assert requests[name].output_token_ids == engine.reference_output(prompt, 8), name
        assert requests[name].finish_reason == "length"
    assert requests["c"].num_preemptions == 1
    assert engine.pool.num_used == 0


def test_request_that_is_itself_the_most_recently_admitted_preempts_itself(make_engine):
    engine = make_engine(num_blocks=3, block_size=4)
    first = engine.add("a", [1, 2, 3, 4, 5], max_tokens=3)
    last = engine.add("b", [6, 7, 8, 9], max_tokens=2)
    engine.step()
    assert (first.block_table, last.block_table) == ([0, 1], [2])

    plan = engine.step()

    assert ids(plan.preempted) == ["b"]
    assert batch(plan) == [("a", 1)]
    assert first.block_table == [0, 1]
    engine.run_to_completion()
    assert last.output_token_ids == engine.reference_output([6, 7, 8, 9], 2)


def test_request_added_later_does_not_overtake_a_preempted_one(make_engine):
    engine, _ = three_decoding_requests(make_engine, num_blocks=7)
    engine.add("d", [13], max_tokens=1)

    plans = engine.run_to_completion()

    assert ids(plans[0].preempted) == ["c"]
    assert [batch(p) for p in plans[:4]] == [
        [("a", 1), ("b", 1)],
        [("a", 1), ("b", 1)],
        [("a", 1), ("b", 1)],
        [("c", 5), ("d", 1)],
    ]


def test_preempted_request_is_recomputed_from_its_own_cached_blocks(make_engine):
    engine = make_engine(num_blocks=4, block_size=4)
    first = engine.add("a", [1, 2, 3, 4], max_tokens=3)
    victim = engine.add("b", list(range(5, 14)), max_tokens=2)
    engine.step()
    assert (first.block_table, victim.block_table) == ([0], [1, 2, 3])

    plan = engine.step()
    assert ids(plan.preempted) == ["b"]
    assert first.block_table == [0, 3]
    assert engine.pool.num_cached == 2

    plans = engine.run_to_completion()
    assert [batch(p) for p in plans] == [[("a", 1)], [("b", 2)]]  # 8 of its 10 tokens hit
    assert victim.num_cached_tokens == 0  # counted at first admission only
    assert victim.output_token_ids == engine.reference_output(list(range(5, 14)), 2)


def test_preempted_prefilled_request_imports_its_kv_again(make_engine):
    engine = make_engine(num_blocks=3, block_size=4)
    first = engine.add("a", [1, 2, 3, 4, 5], max_tokens=3)
    imported = engine.add_prefilled("b", [6, 7, 8], max_tokens=4)
    plans = engine.run_to_completion()

    assert [ids(p.kv_imports) for p in plans[:2]] == [["b"], []]
    assert [ids(p.preempted) for p in plans[:2]] == [[], ["b"]]
    assert ids(plans[3].kv_imports) == ["b"]
    assert imported.num_preemptions == 1
    assert imported.output_token_ids == engine.reference_output([6, 7, 8], 4)
    assert first.output_token_ids == engine.reference_output([1, 2, 3, 4, 5], 3)


def test_preempted_request_is_not_readmitted_in_the_step_that_preempted_it(make_engine):
    # The victim's freed blocks would fit its next, budget-limited chunk; taking it back at once
    # would only preempt it again in the next step.
    engine = make_engine(num_blocks=5, block_size=4, max_num_batched_tokens=3)
    engine.add("r", [1, 2, 3], max_tokens=8)
    victim = engine.add_prefilled("v", [4, 5, 6, 7, 8, 9], max_tokens=8)

    plans = engine.run_to_completion()

    assert [(batch(p), ids(p.preempted), ids(p.kv_imports)) for p in plans[5:8]] == [
        ([("r", 1), ("v", 1)], [], []),
        ([("r", 1)], ["v"], []),
        ([("r", 1), ("v", 2)], [], ["v"]),
    ]
    assert victim.output_token_ids == engine.reference_output([4, 5, 6, 7, 8, 9], 8)


def test_preempting_a_request_already_in_the_batch_gives_its_tokens_back(make_engine):
    # As in test_batcher, reorder `running` so that the victim is served first in the step.
    engine = make_engine(num_blocks=2, block_size=4, max_num_batched_tokens=4)
    decode = engine.add("d", [1], max_tokens=5)
    engine.step()
    prefill = engine.add("p", list(range(10, 17)), max_tokens=1)
    engine.step()
    assert (decode.block_table, prefill.block_table) == ([0], [1])
    engine.batcher.running.reverse()

    plan = engine.step()

    assert ids(plan.preempted) == ["d"]
    assert batch(plan) == [("p", 3)]
    assert prefill.block_table == [1, 0]
    engine.run_to_completion()
    assert decode.output_token_ids == engine.reference_output([1], 5)
    assert prefill.output_token_ids == engine.reference_output(list(range(10, 17)), 1)


def test_random_workload_under_block_pressure_loses_no_request(make_engine):
    rng = random.Random(0)
    engine = make_engine(num_blocks=14, block_size=4, max_num_batched_tokens=12, max_num_seqs=5)
    shared = [[rng.randrange(97) for _ in range(9)] for _ in range(3)]
    expected = {}
    for i in range(40):
        prompt = rng.choice(shared)[: rng.randint(1, 9)] + [rng.randrange(97) for _ in range(3)]
        name, max_tokens = f"r{i}", rng.randint(1, 12)
        if i % 7 == 3:
            engine.add_prefilled(name, prompt, max_tokens)
        else:
            image = [ImageSpan(offset=0, length=2, image_hash=f"img{i % 2}")] if i % 5 == 0 else []
            engine.add(name, prompt, max_tokens, image_spans=image)
        expected[name] = engine.reference_output(prompt, max_tokens)
    aborted = set()

    for step in range(1000):
        live = ids([*engine.batcher.running, *engine.batcher.waiting])
        assert sorted(live + list(engine.finished) + list(aborted)) == sorted(expected)
        if not live:
            break
        if step % 11 == 5:
            aborted.add(engine.batcher.abort(rng.choice(live)).request_id)
            engine.pool.check_invariants()
        engine.step()

    num_preemptions = sum(r.num_preemptions for r in engine.finished.values())
    assert num_preemptions >= 10, "the workload must exercise preemption"
    hits = engine.batcher.num_prefix_hit_tokens
    assert hits >= 5 * engine.pool.block_size, "the workload must exercise prefix hits"
    assert set(engine.finished) | aborted == set(expected)
    assert not set(engine.finished) & aborted
    for name, request in engine.finished.items():
        assert request.output_token_ids == expected[name], name
    assert engine.pool.num_used == 0
