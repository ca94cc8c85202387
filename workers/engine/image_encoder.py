"""The encode stage: images -> embeddings through the vision tower, each image served from the
engine's LRU embedding cache when its content hash was seen before."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from workers.contract.images import image_hash
from workers.engine.embedding_cache import EmbeddingCache
from workers.engine.image_processor import ImageProcessorConfig, preprocess
from workers.engine.llava import LlavaModel
from workers.engine_messages import ImageEmbedding


class ImageEncoder:
    def __init__(
        self,
        model: LlavaModel,
        image_config: ImageProcessorConfig,
        embedding_cache: EmbeddingCache,
        device: torch.device,
    ) -> None:
        self.model = model
        self.image_config = image_config
        self.embedding_cache = embedding_cache
        self.device = device

    def encode(self, images: Sequence[Image.Image]) -> list[ImageEmbedding]:
        """Images -> embeddings [image_tokens, hidden] each (float32, or the model's float16),
        in order; an image seen twice is encoded once."""
        hashes = [image_hash(image) for image in images]
        results: dict[str, ImageEmbedding] = {}
        todo: dict[str, Image.Image] = {}
        for key, image in zip(hashes, images, strict=True):
            cached = self.embedding_cache.get(key)
            if cached is not None:
                results[key] = cached
            else:
                todo.setdefault(key, image)
        if todo:
            pixels = np.stack([preprocess(image, self.image_config) for image in todo.values()])
            pixel_values = torch.from_numpy(pixels).to(self.device)
            embeddings = self.model.encode_images(pixel_values)
            if embeddings.dtype == torch.bfloat16:
                embeddings = embeddings.float()
            for key, rows in zip(todo, embeddings.cpu().numpy(), strict=True):
                results[key] = ImageEmbedding(image_hash=key, embeddings=rows)
                self.embedding_cache.put(results[key])
        return [results[key] for key in hashes]
