"""Each poll says what the worker's prefix and embedding caches gained and lost since the last
one, so that the scheduler's copy of them (listed once by `load()`) stays exact."""

from __future__ import annotations

from tests.workers.support import has, is_finished, poll_until, wait_for
from workers.contract.block_hash import ROOT_HASH, hash_block
from workers.contract.messages import PrefillJob, WorkerEvents
from workers.contract.sampling_params import SamplingParams

ONE_TOKEN = SamplingParams(max_tokens=1, ignore_eos=True, seed=0)
FIRST = list(range(5, 45))  # 40 tokens: 2 full blocks of 16, and 8 more
SECOND = list(range(100, 140))


def block_hashes(prompt: list[int], num_blocks: int) -> list[str]:
    """The hex hashes of the prompt's first full blocks (no images), as load() lists them."""
    hashes, parent = [], ROOT_HASH
    for index in range(num_blocks):
        parent = hash_block(parent, prompt[index * 16 : (index + 1) * 16], [])
        hashes.append(parent.hex())
    return hashes


def prefill(worker, request_id: str, prompt: list[int]) -> None:
    worker.submit_prefill(
        PrefillJob(
            request_id=request_id,
            prompt_token_ids=prompt,
            sampling_params=ONE_TOKEN,
            images=[],
            decode_here=True,
        )
    )


def changes(seen: list[WorkerEvents]) -> tuple[list[str], list[str]]:
    """(added, removed) over several messages, which never cancel out in these tests."""
    added = [h for events in seen for h in events.prefix_blocks_added]
    removed = [h for events in seen for h in events.prefix_blocks_removed]
    return added, removed


def test_a_prefill_reports_its_full_blocks_as_new_prefix_cache_entries(start_worker):
    worker = start_worker("pd-0", "PD")
    prefill(worker, "r1", FIRST)
    seen = poll_until(worker.poll, is_finished("r1"))

    assert changes(seen) == (block_hashes(FIRST, 2), [])
    assert worker.load().prefix_block_hashes == block_hashes(FIRST, 2)


def test_an_evicted_block_is_reported_as_removed(start_worker):
    worker = start_worker("pd-0", "PD", num_kv_blocks=4)  # 2 prompts of 3 blocks do not fit
    prefill(worker, "r1", FIRST)
    poll_until(worker.poll, is_finished("r1"))
    prefill(worker, "r2", SECOND)
    seen = poll_until(worker.poll, is_finished("r2"))

    # FIRST's tail block goes first (a request frees its blocks from the end).
    first, second = block_hashes(FIRST, 2), block_hashes(SECOND, 2)
    assert changes(seen) == (second, [first[1]])
    assert worker.load().prefix_block_hashes == [first[0], *second]


def test_a_poll_after_several_turns_nets_their_changes(start_worker):
    worker = start_worker("pd-0", "PD", num_kv_blocks=4)
    prefill(worker, "r1", FIRST)
    wait_for(worker.is_idle)
    prefill(worker, "r2", SECOND)
    wait_for(worker.is_idle)
    events = worker.poll(0.0)

    # FIRST's second block came and went between two polls: the poller never hears of it.
    first, second = block_hashes(FIRST, 2), block_hashes(SECOND, 2)
    assert (events.prefix_blocks_added, events.prefix_blocks_removed) == ([first[0], *second], [])
    assert worker.load().prefix_block_hashes == events.prefix_blocks_added


def test_an_image_kept_for_prefill_is_reported_as_a_new_embedding_cache_entry(
    start_worker, cat_request
):
    worker = start_worker("epd-0", "EPD")
    worker.submit_encode(cat_request.encode_job("r1", export=False))
    seen = poll_until(worker.poll, has("encodes"))

    added = [key for events in seen for key in events.embeddings_added]
    assert (added, [k for events in seen for k in events.embeddings_removed]) == (
        [cat_request.image.image_hash], [],
    )  # fmt: skip
    assert worker.load().embedding_cache_keys == added
