"""BlockPool: which block ids come out, in which order blocks are reused, and the accounting."""

from __future__ import annotations

import random

import pytest

from workers.engine.block_manager import BlockPool


def h(name: str) -> bytes:
    return name.encode()


def check(pool: BlockPool) -> None:
    """The pool's own check, plus its counters against states counted block by block."""
    pool.check_invariants()
    free = sum(b.ref_count == 0 and b.block_hash is None for b in pool.blocks)
    cached = sum(b.ref_count == 0 and b.block_hash is not None for b in pool.blocks)
    used = sum(b.ref_count > 0 for b in pool.blocks)
    assert (pool.num_free, pool.num_cached, pool.num_used) == (free, cached, used)
    assert free + cached + used == pool.num_blocks


def ref_counts(pool: BlockPool) -> list[int]:
    return [b.ref_count for b in pool.blocks]


def test_fresh_pool_hands_out_block_ids_in_order():
    pool = BlockPool(num_blocks=8, block_size=4)

    assert pool.allocate(3) == [0, 1, 2]
    check(pool)
    assert pool.allocate(2) == [3, 4]
    check(pool)
    assert ref_counts(pool) == [1, 1, 1, 1, 1, 0, 0, 0]
    assert (pool.num_free, pool.num_cached, pool.num_used) == (3, 0, 5)


def test_freed_blocks_are_reused_after_never_used_ones_tail_first():
    pool = BlockPool(num_blocks=4, block_size=4)
    table = pool.allocate(2)
    pool.free(table)
    check(pool)

    assert (pool.num_free, pool.num_used) == (4, 0)
    assert pool.allocate(4) == [2, 3, 1, 0]
    check(pool)


def test_allocate_zero_blocks_takes_nothing():
    pool = BlockPool(num_blocks=2, block_size=4)

    assert pool.allocate(0) == []
    check(pool)
    assert pool.num_free == 2


def test_allocate_returns_none_and_takes_nothing_when_too_few_blocks():
    pool = BlockPool(num_blocks=4, block_size=4)
    assert pool.allocate(3) == [0, 1, 2]

    assert pool.allocate(2) is None
    check(pool)
    assert (pool.num_free, pool.num_used) == (1, 3)
    assert pool.allocate(1) == [3]
    assert pool.allocate(1) is None
    check(pool)


def test_allocate_that_fails_leaves_cached_blocks_cached():
    pool = BlockPool(num_blocks=2, block_size=1)
    first, second = pool.allocate(1), pool.allocate(1)
    pool.register(first[0], h("a"), [7])
    pool.register(second[0], h("b"), [8])
    pool.free(first)
    pool.free(second)

    assert pool.allocate(3) is None
    check(pool)
    assert (pool.num_free, pool.num_cached) == (0, 2)
    assert pool.cached_hashes() == [h("a"), h("b")]


def test_double_free_raises_and_keeps_the_block_free():
    pool = BlockPool(num_blocks=4, block_size=4)
    table = pool.allocate(1)
    pool.free(table)

    with pytest.raises(RuntimeError, match=r"^double free of block 0$"):
        pool.free(table)
    check(pool)
    assert pool.num_free == 4


def test_freeing_a_block_that_was_never_allocated_raises():
    pool = BlockPool(num_blocks=4, block_size=4)

    with pytest.raises(RuntimeError, match=r"^double free of block 3$"):
        pool.free([3])
    check(pool)


def test_pool_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="must be positive"):
        BlockPool(num_blocks=0, block_size=4)
    with pytest.raises(ValueError, match="must be positive"):
        BlockPool(num_blocks=4, block_size=0)


@pytest.mark.parametrize(
    ("num_tokens", "expected"), [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (9, 3)]
)
def test_blocks_needed_rounds_up_to_whole_blocks(num_tokens, expected):
    assert BlockPool(num_blocks=1, block_size=4).blocks_needed(num_tokens) == expected


def test_requests_sharing_a_prefix_share_its_blocks_by_reference():
    pool = BlockPool(num_blocks=8, block_size=2)
    first = pool.allocate(3)
    pool.register(first[0], h("0"), [1, 2])
    pool.register(first[1], h("1"), [3, 4])

    second = pool.match_prefix([h("0"), h("1")], [1, 2, 3, 4, 5])
    check(pool)
    assert second == [0, 1]
    assert ref_counts(pool)[:3] == [2, 2, 1]
    assert (pool.num_free, pool.num_cached, pool.num_used) == (5, 0, 3)

    pool.free(first)
    check(pool)
    assert ref_counts(pool)[:3] == [1, 1, 0]
    assert (pool.num_free, pool.num_cached, pool.num_used) == (6, 0, 2)

    pool.free(second)
    check(pool)
    assert (pool.num_free, pool.num_cached, pool.num_used) == (6, 2, 0)


def test_free_blocks_without_a_hash_are_used_before_cached_blocks_are_evicted():
    pool = BlockPool(num_blocks=4, block_size=1)
    table = pool.allocate(2)
    pool.register(table[0], h("a"), [5])
    pool.free(table)
    check(pool)
    assert (pool.num_free, pool.num_cached) == (3, 1)

    assert pool.allocate(3) == [2, 3, 1]
    check(pool)
    assert pool.cached_hashes() == [h("a")]

    assert pool.allocate(1) == [0]
    check(pool)
    assert pool.cached_hashes() == []
    assert pool.blocks[0].block_hash is None
    assert pool.match_prefix([h("a")], [5]) == []


def test_cached_blocks_are_evicted_least_recently_freed_first():
    pool = BlockPool(num_blocks=3, block_size=1)
    tables = [pool.allocate(1) for _ in range(3)]
    for table, name in zip(tables, "abc", strict=True):
        pool.register(table[0], h(name), [ord(name)])
    pool.free(tables[1])
    pool.free(tables[0])
    pool.free(tables[2])
    check(pool)

    assert pool.allocate(1) == [1]
    check(pool)
    assert pool.cached_hashes() == [h("a"), h("c")]
    assert pool.allocate(1) == [0]
    check(pool)
    assert pool.cached_hashes() == [h("c")]
    assert pool.allocate(1) == [2]
    check(pool)
    assert pool.cached_hashes() == []


def test_a_prefix_hit_makes_a_cached_block_most_recently_used():
    pool = BlockPool(num_blocks=2, block_size=1)
    first, second = pool.allocate(1), pool.allocate(1)
    pool.register(first[0], h("a"), [5])
    pool.register(second[0], h("b"), [6])
    pool.free(first)
    pool.free(second)

    hit = pool.match_prefix([h("a")], [5])
    check(pool)
    assert hit == [0]
    assert (pool.num_cached, pool.num_used) == (1, 1)
    pool.free(hit)
    check(pool)

    assert pool.allocate(1) == [1]
    assert pool.cached_hashes() == [h("a")]


def test_blocks_of_one_request_are_evicted_tail_first():
    pool = BlockPool(num_blocks=3, block_size=2)
    tokens = [1, 2, 3, 4, 5, 6]
    hashes = [h("0"), h("1"), h("2")]
    table = pool.allocate(3)
    for index, block_id in enumerate(table):
        pool.register(block_id, hashes[index], tokens[2 * index : 2 * index + 2])
    pool.free(table)
    check(pool)

    assert pool.allocate(1) == [2]
    check(pool)
    assert pool.match_prefix(hashes, tokens) == [0, 1]
    check(pool)
    assert ref_counts(pool) == [1, 1, 1]


def test_prefix_match_stops_at_the_first_block_not_cached():
    pool = BlockPool(num_blocks=4, block_size=1)
    table = pool.allocate(3)
    pool.register(table[0], h("0"), [10])
    pool.register(table[2], h("2"), [12])

    assert pool.match_prefix([h("0"), h("1"), h("2")], [10, 11, 12]) == [0]
    check(pool)
    assert ref_counts(pool) == [2, 1, 1, 0]


def test_prefix_hit_with_other_token_ids_under_the_same_hash_is_refused():
    pool = BlockPool(num_blocks=2, block_size=2)
    table = pool.allocate(1)
    pool.register(table[0], h("collision"), [1, 2])
    pool.free(table)

    assert pool.match_prefix([h("collision")], [1, 3]) == []
    check(pool)
    assert (pool.num_cached, pool.num_used) == (1, 0)
    assert pool.match_prefix([h("collision")], [1, 2]) == [0]
    check(pool)


def test_second_copy_of_a_cached_block_stays_private():
    pool = BlockPool(num_blocks=4, block_size=2)
    original, duplicate = pool.allocate(1), pool.allocate(1)
    pool.register(original[0], h("x"), [1, 2])
    pool.register(duplicate[0], h("x"), [1, 2])
    assert pool.blocks[duplicate[0]].block_hash is None

    pool.free(duplicate)
    check(pool)
    assert (pool.num_free, pool.num_cached, pool.num_used) == (3, 0, 1)
    pool.free(original)
    check(pool)
    assert (pool.num_free, pool.num_cached, pool.num_used) == (3, 1, 0)
    assert pool.match_prefix([h("x")], [1, 2]) == [0]


def test_registering_a_block_twice_keeps_its_first_hash():
    pool = BlockPool(num_blocks=1, block_size=1)
    table = pool.allocate(1)
    pool.register(table[0], h("first"), [1])
    pool.register(table[0], h("second"), [2])

    assert pool.cached_hashes() == [h("first")]
    assert pool.blocks[0].token_ids == (1,)


def test_random_operations_keep_every_block_in_exactly_one_state():
    rng = random.Random(0)
    pool = BlockPool(num_blocks=16, block_size=2)
    tables: list[list[int]] = []
    num_hashes = 0
    for _ in range(500):
        op = rng.choice(["allocate", "free", "register", "match"])
        if op == "allocate":
            table = pool.allocate(rng.randint(0, 5))
            if table is not None:
                tables.append(table)
        elif op == "free" and tables:
            pool.free(tables.pop(rng.randrange(len(tables))))
        elif op == "register" and any(tables):
            block_id = rng.choice(rng.choice([t for t in tables if t]))
            num_hashes += 1
            pool.register(block_id, h(str(rng.randrange(8))), [num_hashes, 0])
        elif op == "match":
            hashes = [h(str(rng.randrange(8))) for _ in range(rng.randint(1, 3))]
            tokens = [rng.randrange(1, num_hashes + 2) if i % 2 == 0 else 0 for i in range(6)]
            tables.append(pool.match_prefix(hashes, tokens))
        check(pool)
    for table in tables:
        pool.free(table)
    check(pool)
    assert pool.num_used == 0
