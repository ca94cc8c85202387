"""The cache directory: which worker holds which prefix blocks and image embeddings, and the
scheduler's prompt hashes, which must equal the ones workers report."""

from __future__ import annotations

from scheduler.cache_directory import CacheDirectory, prompt_block_hashes
from workers.contract.block_hash import ImageSpan, extend_block_hashes

IMG = 99  # the image placeholder id
BLOCK = 4


def worker_hashes(prompt, spans, block_size=BLOCK):
    """What a worker computes for this prompt, given its image spans."""
    return [h.hex() for h in extend_block_hashes([], prompt, len(prompt), block_size, spans)]


def test_reset_replaces_what_a_worker_held():
    caches = CacheDirectory()
    caches.reset_worker("w", ["h0", "h1"], ["cat"])

    caches.reset_worker("w", ["h2"], ["dog"])

    assert caches.num_entries("w") == (1, 1)
    assert caches.num_matching_blocks("w", ["h0"]) == 0
    assert caches.num_matching_blocks("w", ["h2"]) == 1
    assert caches.holds_embeddings("w", ["dog"])
    assert not caches.holds_embeddings("w", ["cat"])


def test_deltas_add_and_remove_entries():
    caches = CacheDirectory()
    caches.reset_worker("w", ["h0", "h1"], ["cat"])

    caches.apply("w", ["h2", "h3"], ["h1"], ["dog"], ["cat"])

    assert caches.num_entries("w") == (3, 1)
    assert caches.num_matching_blocks("w", ["h0", "h1", "h2"]) == 1
    assert caches.holds_embeddings("w", ["dog"])
    assert not caches.holds_embeddings("w", ["cat"])


def test_deltas_for_a_worker_never_reset_start_from_empty():
    caches = CacheDirectory()

    caches.apply("new", ["h0"], ["unknown"], ["cat"], [])

    assert caches.num_entries("new") == (1, 1)
    assert caches.num_matching_blocks("new", ["h0", "h1"]) == 1


def test_prefix_match_stops_at_the_first_missing_block():
    caches = CacheDirectory()
    caches.reset_worker("w", ["h0", "h1", "h3"], [])

    assert caches.num_matching_blocks("w", ["h0", "h1", "h2", "h3"]) == 2
    assert caches.num_matching_blocks("w", ["hx", "h0", "h1"]) == 0
    assert caches.num_matching_blocks("w", []) == 0


def test_unknown_or_removed_worker_holds_nothing():
    caches = CacheDirectory()
    caches.reset_worker("w", ["h0"], ["cat"])

    caches.remove_worker("w")
    caches.remove_worker("w")

    assert caches.num_entries("w") == (0, 0)
    assert caches.num_matching_blocks("w", ["h0"]) == 0
    assert not caches.holds_embeddings("w", ["cat"])
    assert caches.num_matching_blocks("never", ["h0"]) == 0


def test_embeddings_are_held_only_when_every_image_is():
    caches = CacheDirectory()
    caches.reset_worker("w", [], ["cat", "dog"])

    assert caches.holds_embeddings("w", ["cat", "dog"])
    assert not caches.holds_embeddings("w", ["cat", "bird"])


def test_text_prompt_hashes_equal_the_workers_and_skip_the_partial_block():
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]

    hashes = prompt_block_hashes(prompt, [], IMG, 3, BLOCK)

    assert len(hashes) == 2
    assert hashes == worker_hashes(prompt, [])
    assert prompt_block_hashes(prompt, [], None, 0, BLOCK) == hashes


def test_hashes_of_a_prompt_with_two_separated_images_equal_the_workers():
    #         0  1    2    3    4 | 5    6  7  8 |  9    10   11   12 | 13 14
    prompt = [1, IMG, IMG, IMG, 2, 3, 4, IMG, IMG, IMG, 5, 6, 7, 8, 9]
    spans = [ImageSpan(1, 3, "cat"), ImageSpan(7, 3, "dog")]

    hashes = prompt_block_hashes(prompt, ["cat", "dog"], IMG, 3, BLOCK)

    assert len(hashes) == 3
    assert hashes == worker_hashes(prompt, spans)


def test_hashes_of_a_prompt_with_two_adjacent_images_equal_the_workers():
    prompt = [1, IMG, IMG, IMG, IMG, IMG, IMG, 2, 3, 4, 5, 6]
    spans = [ImageSpan(1, 3, "cat"), ImageSpan(4, 3, "dog")]

    hashes = prompt_block_hashes(prompt, ["cat", "dog"], IMG, 3, BLOCK)

    assert hashes == worker_hashes(prompt, spans)
    assert hashes != worker_hashes(prompt, [ImageSpan(1, 6, "cat")])


def test_another_image_changes_its_block_hash_and_every_later_one():
    prompt = [1, 2, 3, 4, IMG, IMG, 5, 6, 7, 8, 9, 10]

    with_cat = prompt_block_hashes(prompt, ["cat"], IMG, 2, BLOCK)
    with_dog = prompt_block_hashes(prompt, ["dog"], IMG, 2, BLOCK)

    assert with_cat[0] == with_dog[0]
    assert with_cat[1] != with_dog[1]
    assert with_cat[2] != with_dog[2]


def test_prompt_hashes_find_the_blocks_a_worker_reported():
    prompt = [1, IMG, IMG, IMG, 2, 3, 4, IMG, IMG, IMG, 5, 6, 7, 8, 9]
    reported = worker_hashes(prompt, [ImageSpan(1, 3, "cat"), ImageSpan(7, 3, "dog")])
    caches = CacheDirectory()
    caches.reset_worker("w", reported[:2], [])

    hashes = prompt_block_hashes(prompt, ["cat", "dog"], IMG, 3, BLOCK)

    assert caches.num_matching_blocks("w", hashes) == 2
