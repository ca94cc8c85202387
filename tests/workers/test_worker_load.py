"""A worker's load: cheap enough for every poll, with the cache contents only when asked."""

from __future__ import annotations

from tests.workers.support import colocated_tokens


def test_polls_carry_cache_sizes_and_only_an_explicit_load_lists_the_entries(
    start_worker, cat_request
):
    worker = start_worker("epd-0", "EPD")
    colocated_tokens(worker, cat_request, "r1")  # one image; a prompt of several full blocks
    polled = worker.poll(0.0).load
    asked = worker.load()

    assert (polled.num_embedding_cache_entries, polled.embedding_cache_keys) == (1, [])
    assert polled.num_prefix_cache_blocks >= 2
    assert polled.prefix_block_hashes == []  # no O(cached blocks) work in every step
    assert asked.embedding_cache_keys == [cat_request.image.image_hash]
    assert len(asked.prefix_block_hashes) == polled.num_prefix_cache_blocks
    assert all(len(block_hash) == 32 for block_hash in asked.prefix_block_hashes)  # hex
    assert (asked.num_embedding_cache_entries, asked.num_prefix_cache_blocks) == (
        1, len(asked.prefix_block_hashes),
    )  # fmt: skip
