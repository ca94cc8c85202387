"""Locate each image's placeholder tokens in a prompt."""

from __future__ import annotations

from collections.abc import Sequence

from workers.contract.block_hash import ImageSpan
from workers.contract.errors import InvalidImageError
from workers.engine_messages import ImageEmbedding


def find_image_spans(
    prompt_token_ids: Sequence[int], image_token_id: int, images: Sequence[ImageEmbedding]
) -> list[ImageSpan]:
    """One span per image, in order; each image's placeholders must be one contiguous run of
    exactly as many tokens as it has embedding rows. Only the prompt is scanned: a generated
    placeholder token is text."""
    positions = [i for i, t in enumerate(prompt_token_ids) if t == image_token_id]
    needed = sum(image.embeddings.shape[0] for image in images)
    if len(positions) != needed:
        raise InvalidImageError(
            f"the prompt has {len(positions)} image placeholder tokens; "
            f"{len(images)} images need {needed}"
        )
    spans, cursor = [], 0
    for image in images:
        length = image.embeddings.shape[0]
        run = positions[cursor : cursor + length]
        if run[-1] - run[0] != length - 1:
            raise InvalidImageError("an image's placeholder tokens must be contiguous")
        spans.append(ImageSpan(offset=run[0], length=length, image_hash=image.image_hash))
        cursor += length
    return spans
