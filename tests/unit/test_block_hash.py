"""Chained block hashes: only full blocks, each depends on every token and image before it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from workers.contract.block_hash import ROOT_HASH, ImageSpan, extend_block_hashes, hash_block

TOKENS = list(range(100, 112))  # three blocks of 4


def hashes_of(token_ids, num_computed_tokens=None, spans=(), block_size=4):
    computed = len(token_ids) if num_computed_tokens is None else num_computed_tokens
    return extend_block_hashes([], token_ids, computed, block_size, spans)


def test_only_full_computed_blocks_are_hashed():
    assert len(hashes_of(TOKENS, num_computed_tokens=3)) == 0
    assert len(hashes_of(TOKENS, num_computed_tokens=7)) == 1
    assert len(hashes_of(TOKENS, num_computed_tokens=8)) == 2
    assert len(hashes_of(TOKENS[:10])) == 2


def test_extending_appends_only_the_blocks_that_became_full():
    block_hashes = []
    first = extend_block_hashes(block_hashes, TOKENS, 5, 4, [])
    second = extend_block_hashes(block_hashes, TOKENS, 5, 4, [])
    third = extend_block_hashes(block_hashes, TOKENS, 12, 4, [])

    assert len(first) == 1
    assert second == []
    assert len(third) == 2
    assert block_hashes == first + third
    assert block_hashes == hashes_of(TOKENS)


def test_each_hash_chains_on_the_previous_block():
    block_hashes = hashes_of(TOKENS)

    assert block_hashes[0] == hash_block(ROOT_HASH, TOKENS[0:4], [])
    assert block_hashes[1] == hash_block(block_hashes[0], TOKENS[4:8], [])
    assert block_hashes[2] == hash_block(block_hashes[1], TOKENS[8:12], [])


def test_changing_one_token_changes_that_block_and_every_later_one():
    edited = list(TOKENS)
    edited[5] += 1
    original, changed = hashes_of(TOKENS), hashes_of(edited)

    assert original[0] == changed[0]
    assert original[1] != changed[1]
    assert original[2] != changed[2]


def test_same_block_tokens_after_a_different_prefix_hash_differently():
    first = hashes_of([1, 2, 3, 4, 9, 9, 9, 9])
    second = hashes_of([5, 6, 7, 8, 9, 9, 9, 9])

    assert first[1] != second[1]


def test_an_image_is_an_extra_key_of_every_block_it_overlaps():
    span = ImageSpan(offset=2, length=4, image_hash="img-a")
    block_hashes = hashes_of(TOKENS, spans=[span])

    assert block_hashes[0] == hash_block(ROOT_HASH, TOKENS[0:4], ["img-a"])
    assert block_hashes[1] == hash_block(block_hashes[0], TOKENS[4:8], ["img-a"])
    assert block_hashes[2] == hash_block(block_hashes[1], TOKENS[8:12], [])


def test_an_image_ending_on_a_block_boundary_is_not_a_key_of_the_next_block():
    block_hashes = hashes_of(TOKENS, spans=[ImageSpan(offset=4, length=4, image_hash="img-a")])

    assert block_hashes[0] == hash_block(ROOT_HASH, TOKENS[0:4], [])
    assert block_hashes[1] == hash_block(block_hashes[0], TOKENS[4:8], ["img-a"])
    assert block_hashes[2] == hash_block(block_hashes[1], TOKENS[8:12], [])


def test_every_image_in_a_block_is_a_key_of_that_block():
    spans = [
        ImageSpan(offset=0, length=1, image_hash="img-a"),
        ImageSpan(offset=2, length=1, image_hash="img-b"),
    ]

    assert hashes_of(TOKENS[:4], spans=spans) == [
        hash_block(ROOT_HASH, TOKENS[:4], ["img-a", "img-b"])
    ]
    assert hashes_of(TOKENS[:4], spans=spans[:1]) != hashes_of(TOKENS[:4], spans=spans)


def test_same_tokens_with_a_different_image_hash_differently_in_every_block():
    with_a = hashes_of(TOKENS, spans=[ImageSpan(offset=0, length=2, image_hash="img-a")])
    with_b = hashes_of(TOKENS, spans=[ImageSpan(offset=0, length=2, image_hash="img-b")])
    without = hashes_of(TOKENS)

    assert all(a != b for a, b in zip(with_a, with_b, strict=True))
    assert all(a != n for a, n in zip(with_a, without, strict=True))


def test_block_hash_is_the_same_in_every_process():
    script = (
        "from workers.contract.block_hash import ROOT_HASH, hash_block;"
        "print(hash_block(ROOT_HASH, [1, 2, 3, 4], ['img']).hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip

    assert out.stdout.strip() == hash_block(ROOT_HASH, [1, 2, 3, 4], ["img"]).hex()
