"""Chained content hashes of full KV blocks, keyed by token ids and the images they cover.

    tokens:  | block 0 (16) | block 1 (16) | block 2 (16) | partial |
    images:        [== image A ==]
    hash 0 = H(root,   tokens 0..15,  A)
    hash 1 = H(hash 0, tokens 16..31, A)
    hash 2 = H(hash 1, tokens 32..47)      <- still differs per image through the chain

Only full blocks are hashed. The hash is stable across processes (blake2b, not Python's salted
`hash`), so the scheduler can compare hashes that different workers report.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

BlockHash = bytes
ROOT_HASH: BlockHash = b"triserve-kv-v1"


@dataclass(frozen=True)
class ImageSpan:
    """Where one image's placeholder tokens sit in the prompt."""

    offset: int  # index of the first placeholder token
    length: int  # number of placeholder tokens (= embedding rows)
    image_hash: str


def hash_block(parent: BlockHash, token_ids: Sequence[int], extra_keys: Sequence[str]) -> BlockHash:
    digest = hashlib.blake2b(parent, digest_size=16)
    digest.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    for key in extra_keys:
        digest.update(b"\x00img:" + key.encode())
    return digest.digest()


def extend_block_hashes(
    block_hashes: list[BlockHash],
    token_ids: Sequence[int],
    num_computed_tokens: int,
    block_size: int,
    image_spans: Sequence[ImageSpan],
) -> list[BlockHash]:
    """Append the hashes of blocks that became full and computed; return only the new ones."""
    new: list[BlockHash] = []
    for index in range(len(block_hashes), num_computed_tokens // block_size):
        start, end = index * block_size, (index + 1) * block_size
        extra = [
            s.image_hash for s in image_spans if s.offset < end and s.offset + s.length > start
        ]
        parent = block_hashes[-1] if block_hashes else ROOT_HASH
        block_hashes.append(hash_block(parent, token_ids[start:end], extra))
        new.append(block_hashes[-1])
    return new
