"""Prefix caching through the batcher: which admissions start from cached KV, and which never."""

from __future__ import annotations

from workers.contract.block_hash import ImageSpan, extend_block_hashes

PROMPT = list(range(1, 11))  # two full blocks of 4 and a partial one


def first_batch(engine) -> list[tuple[str, int]]:
    plan = engine.step()
    return [(s.request.request_id, s.num_new_tokens) for s in plan.scheduled]


def test_same_prompt_starts_from_the_blocks_of_a_finished_request(make_engine):
    engine = make_engine(block_size=4)
    first = engine.add("a", PROMPT, max_tokens=1)
    engine.run_to_completion()
    assert first.block_table == []
    assert (engine.pool.num_cached, engine.pool.num_used) == (2, 0)

    second = engine.add("b", PROMPT, max_tokens=3)

    assert first_batch(engine) == [("b", 2)]
    assert second.block_table == [0, 1, 3]
    assert second.num_cached_tokens == 8
    engine.run_to_completion()
    assert second.output_token_ids == engine.reference_output(PROMPT, 3)
    batcher = engine.batcher
    assert (batcher.num_prompt_tokens_admitted, batcher.num_prefix_hit_tokens) == (20, 8)


def test_running_requests_with_the_same_prefix_share_its_blocks(make_engine):
    engine = make_engine(block_size=4)
    first = engine.add("a", PROMPT, max_tokens=3)
    engine.step()
    second = engine.add("b", PROMPT + [50, 51], max_tokens=3)

    engine.step()

    assert first.block_table == [0, 1, 2]
    assert second.block_table == [0, 1, 3]
    assert [engine.pool.blocks[i].ref_count for i in range(4)] == [2, 2, 1, 1]
    assert second.num_cached_tokens == 8
    engine.run_to_completion()
    assert second.output_token_ids == engine.reference_output(PROMPT + [50, 51], 3)
    assert engine.pool.num_used == 0


def test_chunked_prefill_offers_each_block_to_the_cache_once_it_is_full(make_engine):
    engine = make_engine(block_size=4, max_num_batched_tokens=3)
    engine.add("a", PROMPT, max_tokens=1)

    num_cached_blocks = []
    for _ in range(4):
        engine.step()
        num_cached_blocks.append(len(engine.pool.cached_hashes()))

    assert num_cached_blocks == [0, 1, 2, 2]


def test_fully_cached_prompt_still_computes_its_last_block(make_engine):
    prompt = PROMPT[:8]
    engine = make_engine(block_size=4)
    engine.add("a", prompt, max_tokens=1)
    engine.run_to_completion()
    assert len(engine.pool.cached_hashes()) == 2

    second = engine.add("b", prompt, max_tokens=2)

    assert first_batch(engine) == [("b", 4)]
    assert second.num_cached_tokens == 4
    engine.run_to_completion()
    assert second.output_token_ids == engine.reference_output(prompt, 2)


def test_one_block_prompt_seen_before_is_computed_again(make_engine):
    engine = make_engine(block_size=4)
    engine.add("a", [1, 2, 3, 4], max_tokens=1)
    engine.run_to_completion()

    second = engine.add("b", [1, 2, 3, 4], max_tokens=1)

    assert first_batch(engine) == [("b", 4)]
    assert second.num_cached_tokens == 0


def test_same_tokens_with_a_different_image_never_hit(make_engine):
    engine = make_engine(block_size=4)
    engine.add(
        "a", PROMPT, max_tokens=1, image_spans=[ImageSpan(offset=2, length=3, image_hash="img-a")]
    )
    engine.run_to_completion()

    other = engine.add(
        "b", PROMPT, max_tokens=1, image_spans=[ImageSpan(offset=2, length=3, image_hash="img-b")]
    )
    assert first_batch(engine) == [("b", 10)]
    assert other.num_cached_tokens == 0

    same = engine.add(
        "c", PROMPT, max_tokens=1, image_spans=[ImageSpan(offset=2, length=3, image_hash="img-a")]
    )
    assert first_batch(engine) == [("c", 2)]
    assert same.num_cached_tokens == 8


def test_text_only_request_does_not_hit_blocks_computed_with_an_image(make_engine):
    engine = make_engine(block_size=4)
    engine.add(
        "a", PROMPT, max_tokens=1, image_spans=[ImageSpan(offset=6, length=2, image_hash="img-a")]
    )
    engine.run_to_completion()

    text_only = engine.add("b", PROMPT, max_tokens=1)

    assert first_batch(engine) == [("b", 6)]
    assert text_only.num_cached_tokens == 4


def test_block_cached_under_a_colliding_hash_is_not_served(make_engine):
    engine = make_engine(block_size=4)
    hashes = extend_block_hashes([], PROMPT, 8, 4, [])
    impostor = engine.pool.allocate(1)
    engine.pool.register(impostor[0], hashes[0], [9, 9, 9, 9])
    engine.pool.free(impostor)

    request = engine.add("a", PROMPT, max_tokens=2)

    assert first_batch(engine) == [("a", 10)]
    assert request.num_cached_tokens == 0
    assert engine.batcher.num_prefix_hit_tokens == 0
    engine.run_to_completion()
    assert request.output_token_ids == engine.reference_output(PROMPT, 2)


def test_prompt_with_prefix_caching_disabled_never_hits_or_caches(make_engine):
    engine = make_engine(block_size=4, enable_prefix_caching=False)
    engine.add("a", PROMPT, max_tokens=1)
    engine.run_to_completion()

    second = engine.add("b", PROMPT, max_tokens=1)

    assert first_batch(engine) == [("b", 10)]
    assert second.num_cached_tokens == 0
    assert engine.pool.cached_hashes() == []
    assert engine.batcher.num_prefix_hit_tokens == 0


def test_blocks_of_an_imported_prompt_serve_later_requests(make_engine):
    engine = make_engine(block_size=4)
    engine.add_prefilled("a", PROMPT, max_tokens=2)
    engine.run_to_completion()

    local = engine.add("b", PROMPT, max_tokens=1)

    assert first_batch(engine) == [("b", 2)]
    assert local.num_cached_tokens == 8
    assert local.output_token_ids == engine.reference_output(PROMPT, 1)
