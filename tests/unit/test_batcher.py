"""Batcher: which requests run in each step, with how many tokens, and what leaves the batch.

`make_engine` (conftest.py) drives the batcher with a fake model whose tokens depend on the KV
it reads, so every completed request is also compared against running it alone.
"""

from __future__ import annotations

from workers.contract.sampling_params import SamplingParams
from workers.engine.batcher import BatchPlan
from workers.engine.request import Request, RequestStatus


def batch(plan: BatchPlan) -> list[tuple[str, int]]:
    return [(s.request.request_id, s.num_new_tokens) for s in plan.scheduled]


def test_short_prompt_is_prefilled_and_sampled_in_one_step(make_engine):
    engine = make_engine(block_size=4)
    request = engine.add("a", [1, 2, 3, 4, 5], max_tokens=3)

    plan = engine.step()

    assert batch(plan) == [("a", 5)]
    assert request.block_table == [0, 1]
    assert request.num_computed_tokens == 5
    assert request.output_token_ids == engine.reference_output([1, 2, 3, 4, 5], 1)
    assert [(e.request, e.token_id, e.finish_reason) for e in engine.events] == [
        (request, request.token_ids[-1], None)
    ]


def test_decode_computes_one_token_per_step_until_max_tokens(make_engine):
    engine = make_engine(block_size=4)
    request = engine.add("a", [1, 2, 3], max_tokens=4)

    plans = engine.run_to_completion()

    assert [batch(p) for p in plans] == [[("a", 3)], [("a", 1)], [("a", 1)], [("a", 1)]]
    assert request.output_token_ids == engine.reference_output([1, 2, 3], 4)
    assert (request.status, request.finish_reason) == (RequestStatus.FINISHED, "length")
    assert [e.finish_reason for e in engine.events] == [None, None, None, "length"]
    assert engine.batcher.running == []


def test_long_prompt_is_prefilled_in_chunks_under_the_token_budget(make_engine):
    engine = make_engine(block_size=4, max_num_batched_tokens=4)
    prompt = list(range(1, 11))
    request = engine.add("a", prompt, max_tokens=2)

    tables = []
    for _ in range(3):
        engine.step()
        tables.append(list(request.block_table))
    assert tables == [[0], [0, 1], [0, 1, 2]]
    assert len(engine.events) == 1
    plans = engine.run_to_completion()

    assert [batch(p) for p in plans] == [[("a", 1)]]
    assert request.output_token_ids == engine.reference_output(prompt, 2)


def test_only_the_last_chunk_of_a_prompt_yields_a_token(make_engine):
    engine = make_engine(block_size=4, max_num_batched_tokens=4)
    engine.add("a", list(range(1, 11)), max_tokens=1)

    steps = []
    for _ in range(3):
        plan = engine.batcher.schedule()
        is_last_chunk = [s.is_last_chunk for s in plan.scheduled]
        events = engine.batcher.postprocess(plan, engine.forward(plan))
        steps.append((is_last_chunk, len(events)))

    assert steps == [([False], 0), ([False], 0), ([True], 1)]


def test_running_decodes_are_served_before_a_prompt_gets_the_rest_of_the_budget(make_engine):
    engine = make_engine(max_num_batched_tokens=3)
    engine.add("d1", [1], max_tokens=5)
    engine.add("d2", [2], max_tokens=5)
    long_prompt = engine.add("p", list(range(10, 20)), max_tokens=1)

    plans = [engine.step() for _ in range(3)]

    assert [batch(p) for p in plans] == [
        [("d1", 1), ("d2", 1), ("p", 1)],
        [("d1", 1), ("d2", 1), ("p", 1)],
        [("d1", 1), ("d2", 1), ("p", 1)],
    ]
    assert long_prompt.num_computed_tokens == 3


def test_prompt_waits_while_decodes_use_the_whole_budget(make_engine):
    engine = make_engine(max_num_batched_tokens=2)
    engine.add("d1", [1], max_tokens=3)
    engine.add("d2", [2], max_tokens=3)
    waiting = engine.add("p", [3, 4], max_tokens=1)

    plans = [engine.step() for _ in range(3)]

    assert [batch(p) for p in plans] == [
        [("d1", 1), ("d2", 1)],
        [("d1", 1), ("d2", 1)],
        [("d1", 1), ("d2", 1)],
    ]
    assert list(engine.batcher.waiting) == [waiting]
    assert waiting.block_table == []
    assert batch(engine.step()) == [("p", 2)]


def test_decode_is_scheduled_before_a_prefill_chunk_admitted_earlier(make_engine):
    # FCFS admission with chunking leaves at most one partly prefilled request, always the last
    # admitted; reorder `running` to check the decode-first rule on its own.
    engine = make_engine(max_num_batched_tokens=4)
    decode = engine.add("d", [1], max_tokens=5)
    engine.step()
    prefill = engine.add("p", list(range(10, 20)), max_tokens=1)
    engine.step()
    engine.batcher.running.reverse()
    assert engine.batcher.running == [prefill, decode]

    assert batch(engine.step()) == [("d", 1), ("p", 3)]


def test_waiting_requests_are_admitted_first_come_first_served(make_engine):
    engine = make_engine(max_num_batched_tokens=8)
    for name in "abc":
        engine.add(name, [1, 2, 3], max_tokens=1)

    plan = engine.step()

    assert batch(plan) == [("a", 3), ("b", 3), ("c", 2)]
    assert [r.request_id for r in engine.batcher.running] == ["c"]


def test_request_that_does_not_fit_the_free_blocks_holds_back_later_ones(make_engine):
    engine = make_engine(num_blocks=3, block_size=4)
    first = engine.add("a", list(range(1, 9)), max_tokens=4)
    big = engine.add("b", list(range(21, 33)), max_tokens=1)
    small = engine.add("c", [41, 42], max_tokens=1)

    assert batch(engine.step()) == [("a", 8)]
    assert first.block_table == [0, 1]
    assert list(engine.batcher.waiting) == [big, small]
    assert (big.block_table, small.block_table) == ([], [])

    plans = engine.run_to_completion()

    assert [batch(p) for p in plans] == [
        [("a", 1)],
        [("a", 1)],
        [("a", 1)],
        [("b", 12)],
        [("c", 2)],
    ]


def test_request_that_does_not_fit_gives_back_its_prefix_hits_while_it_waits(make_engine):
    engine = make_engine(num_blocks=4, block_size=4)
    engine.add("a", list(range(1, 9)), max_tokens=1)
    running = engine.add("x", [20, 21, 22, 23, 24], max_tokens=3)
    engine.step()
    assert (running.block_table, engine.pool.num_cached) == ([2, 3], 2)
    blocked = engine.add("b", list(range(1, 13)), max_tokens=1)

    assert batch(engine.step()) == [("x", 1)]
    assert list(engine.batcher.waiting) == [blocked]
    assert (blocked.block_table, blocked.num_computed_tokens) == ([], 0)
    assert (engine.pool.num_cached, engine.pool.num_used) == (2, 2)
    plans = engine.run_to_completion()

    assert [batch(p) for p in plans] == [[("x", 1)], [("b", 4)]]
    assert blocked.num_cached_tokens == 8


def test_max_num_seqs_caps_the_number_of_running_requests(make_engine):
    engine = make_engine(max_num_seqs=2)
    for name in "abc":
        engine.add(name, [1, 2, 3], max_tokens=2)

    plans = engine.run_to_completion()

    assert [batch(p) for p in plans] == [
        [("a", 3), ("b", 3)],
        [("a", 1), ("b", 1)],
        [("c", 3)],
        [("c", 1)],
    ]
    assert max(len(p.scheduled) for p in plans) == 2


def test_request_stops_when_the_model_samples_eos(make_engine):
    prompt = [1, 2, 3]
    engine = make_engine(eos_token_ids=[sum(prompt) + 6])  # the second token
    request = engine.add("a", prompt, max_tokens=10)

    engine.run_to_completion()

    assert request.output_token_ids == [6, 12]
    assert (request.status, request.finish_reason) == (RequestStatus.FINISHED, "stop")
    assert engine.events[-1].finish_reason == "stop"


def test_request_stops_at_max_model_len(make_engine):
    engine = make_engine(max_model_len=6)
    request = engine.add("a", [1, 2, 3, 4], max_tokens=10)

    engine.run_to_completion()

    assert len(request.output_token_ids) == 2
    assert request.finish_reason == "length"


def test_prefilled_request_is_admitted_with_its_imported_kv(make_engine):
    engine = make_engine(block_size=4)
    prompt = list(range(1, 10))
    request = engine.add_prefilled("a", prompt, max_tokens=3)

    plan = engine.batcher.schedule()

    assert plan.kv_imports == [request]
    assert request.num_computed_tokens == request.num_prompt_tokens == 9
    assert batch(plan) == [("a", 1)]
    assert request.block_table == [0, 1, 2]
    assert request.num_cached_tokens == 0
    engine.batcher.postprocess(plan, engine.forward(plan))
    engine.run_to_completion()
    assert request.output_token_ids == engine.reference_output(prompt, 3)


def test_prefill_only_request_hands_off_and_keeps_its_blocks_until_released(make_engine):
    engine = make_engine(block_size=4)
    batcher = engine.batcher
    request = Request("a", [1, 2, 3, 4, 5], SamplingParams(max_tokens=8), export_kv=True)
    batcher.add(request)

    plan = batcher.schedule()
    events = batcher.postprocess(plan, {"a": 42})

    assert [(e.token_id, e.finish_reason) for e in events] == [(42, None)]
    assert request.status is RequestStatus.HANDED_OFF
    assert batcher.running == []
    assert not batcher.has_unfinished()
    assert request.block_table == [0, 1]
    assert engine.pool.num_used == 2
    batcher.release(request)
    assert (request.block_table, engine.pool.num_used) == ([], 0)


def test_prefill_only_request_that_stops_at_its_first_token_finishes(make_engine):
    engine = make_engine(eos_token_ids=[42])
    request = Request("a", [1, 2], SamplingParams(), export_kv=True)
    engine.batcher.add(request)

    plan = engine.batcher.schedule()
    engine.batcher.postprocess(plan, {"a": 42})

    assert (request.status, request.finish_reason) == (RequestStatus.FINISHED, "stop")


def test_abort_of_a_running_request_frees_its_blocks(make_engine):
    engine = make_engine(block_size=4, max_num_batched_tokens=4)
    request = engine.add("a", list(range(1, 11)), max_tokens=4)
    engine.step()
    engine.step()
    assert (request.block_table, engine.pool.num_used) == ([0, 1], 2)

    assert engine.batcher.abort("a") is request

    engine.pool.check_invariants()
    assert request.status is RequestStatus.ABORTED
    assert request.block_table == []
    assert (engine.pool.num_used, engine.pool.num_cached) == (0, 2)
    assert engine.batcher.running == []
    assert not engine.batcher.has_unfinished()


def test_abort_of_a_waiting_request_removes_it_from_the_queue(make_engine):
    engine = make_engine()
    first = engine.add("a", [1], max_tokens=1)
    engine.add("b", [2], max_tokens=1)

    aborted = engine.batcher.abort("b")

    assert aborted.status is RequestStatus.ABORTED
    assert list(engine.batcher.waiting) == [first]
    assert batch(engine.step()) == [("a", 1)]


def test_abort_of_an_unknown_request_returns_none(make_engine):
    engine = make_engine()
    engine.add("a", [1], max_tokens=1)

    assert engine.batcher.abort("missing") is None
    assert len(engine.batcher.waiting) == 1


def test_all_blocks_are_back_after_every_request_finished(make_engine):
    engine = make_engine(num_blocks=16, block_size=4, max_num_batched_tokens=8, max_num_seqs=3)
    prompts = {f"r{i}": list(range(i, i + 3 + 2 * i)) for i in range(6)}
    requests = {name: engine.add(name, prompt, max_tokens=5) for name, prompt in prompts.items()}

    engine.run_to_completion()

    assert set(engine.finished) == set(prompts)
    for name, prompt in prompts.items():
        assert requests[name].output_token_ids == engine.reference_output(prompt, 5), name
    assert engine.pool.num_used == 0
    assert engine.pool.num_free + engine.pool.num_cached == 16
