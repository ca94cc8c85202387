"""Which worker holds which cached state: prefix-cache blocks and image embeddings.

Built from what workers report: the full lists in the answer to `load()` when a worker joins
(or restarts), then the entries gained and lost in every `WorkerEvents`. The scheduler hashes a
request's prompt exactly as the workers do (workers/contract/block_hash.py), so a lookup is a set
membership test per block:

    prompt:   | block 0 | block 1 | block 2 | partial |      hashes chain: h0 -> h1 -> h2
    worker A:   h0        h1                                 matches 2 blocks (32 tokens)
    worker B:   h0                                           matches 1 block
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from workers.contract.block_hash import ImageSpan, extend_block_hashes


class CacheDirectory:
    def __init__(self) -> None:
        self._prefix_blocks: dict[str, set[str]] = {}  # worker id -> hex block hashes
        self._embeddings: dict[str, set[str]] = {}  # worker id -> image hashes

    def reset_worker(
        self, worker_id: str, prefix_blocks: Iterable[str], embeddings: Iterable[str]
    ) -> None:
        self._prefix_blocks[worker_id] = set(prefix_blocks)
        self._embeddings[worker_id] = set(embeddings)

    def remove_worker(self, worker_id: str) -> None:
        self._prefix_blocks.pop(worker_id, None)
        self._embeddings.pop(worker_id, None)

    def apply(
        self,
        worker_id: str,
        prefix_added: Iterable[str],
        prefix_removed: Iterable[str],
        embeddings_added: Iterable[str],
        embeddings_removed: Iterable[str],
    ) -> None:
        blocks = self._prefix_blocks.setdefault(worker_id, set())
        blocks.difference_update(prefix_removed)
        blocks.update(prefix_added)
        images = self._embeddings.setdefault(worker_id, set())
        images.difference_update(embeddings_removed)
        images.update(embeddings_added)

    def num_matching_blocks(self, worker_id: str, block_hashes: Sequence[str]) -> int:
        """Leading blocks of the prompt this worker holds (a prefix hit stops at the first
        miss, since each hash chains its parent's)."""
        held = self._prefix_blocks.get(worker_id, ())
        count = 0
        for block_hash in block_hashes:
            if block_hash not in held:
                break
            count += 1
        return count

    def holds_embeddings(self, worker_id: str, image_hashes: Iterable[str]) -> bool:
        held = self._embeddings.get(worker_id, ())
        return all(image_hash in held for image_hash in image_hashes)

    def num_entries(self, worker_id: str) -> tuple[int, int]:
        """(prefix blocks, embeddings) the directory believes the worker holds."""
        return len(self._prefix_blocks.get(worker_id, ())), len(self._embeddings.get(worker_id, ()))


def prompt_block_hashes(
    prompt_token_ids: Sequence[int],
    image_hashes: Sequence[str],
    image_token_id: int | None,
    image_tokens_per_image: int,
    block_size: int,
) -> list[str]:
    """Hex hashes of the prompt's full blocks, as a worker computes them. Image placeholders
    come in runs of `image_tokens_per_image` per image, in image order (two adjacent images make
    one run of twice the length)."""
    spans: list[ImageSpan] = []
    if image_token_id is not None and image_tokens_per_image > 0:
        offsets = [i for i, token in enumerate(prompt_token_ids) if token == image_token_id]
        starts = offsets[::image_tokens_per_image]
        spans = [
            ImageSpan(offset, image_tokens_per_image, image_hash)
            for offset, image_hash in zip(starts, image_hashes, strict=False)
        ]
    hashes = extend_block_hashes([], prompt_token_ids, len(prompt_token_ids), block_size, spans)
    return [block_hash.hex() for block_hash in hashes]
