"""The overhead benchmark's requests (seeded) and the client-side clock around each of them.

Every request is fresh: its text starts with different random words and its image is new noise,
so neither the prefix cache nor the embedding cache ever hits (the report checks
cached_prompt_tokens == 0). Requests go through the public client SDK only.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.common.words import WORDS
from bench.overhead.breakdown import RequestTiming
from cluster.client import TriserveClient

CLASSES = ("text", "one_image")


@dataclass(frozen=True)
class WorkloadConfig:
    prompt_tokens: int = 64  # text tokens per prompt, BOS included (the image adds its own)
    max_tokens: int = 64  # output tokens; EOS is ignored, so every request makes exactly these
    image_size: tuple[int, int] = (240, 320)  # (height, width) of the noise PNG
    seed: int = 0


class RequestSource:
    """Prompts of about `prompt_tokens` tokens (counted with the model's tokenizer) and PNGs."""

    def __init__(self, tokenizer, config: WorkloadConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def text(self) -> str:
        words: list[str] = []
        while len(self.tokenizer(" ".join(words))["input_ids"]) < self.config.prompt_tokens:
            words.append(str(self.rng.choice(WORDS)))
        return " ".join(words)

    def png(self) -> bytes:
        pixels = self.rng.integers(0, 256, (*self.config.image_size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    def request(self, request_class: str) -> dict:
        """Keyword arguments for `TriserveClient.generate` (greedy, EOS ignored)."""
        sampling = {"max_tokens": self.config.max_tokens, "ignore_eos": True, "temperature": 0.0}
        if request_class == "text":
            return {"prompt": self.text(), **sampling}
        if request_class == "one_image":
            return {"prompt": "<image>\n" + self.text(), "images": [self.png()], **sampling}
        raise ValueError(f"unknown request class {request_class!r}; classes: {CLASSES}")


def timed_request(
    client: TriserveClient, request_id: str, request_class: str, kwargs: dict
) -> RequestTiming:
    """Send one request and wait for its last token; ms from the send, on the client's clock."""
    num_chunks = num_tokens = 0
    usage = None
    first_token_s = last_token_s = None
    start = time.perf_counter()
    for chunk in client.generate(request_id=request_id, **kwargs):
        if chunk.token_ids:
            last_token_s = time.perf_counter()
            first_token_s = first_token_s or last_token_s
            num_chunks += 1
            num_tokens += len(chunk.token_ids)
        usage = chunk.usage or usage
    if first_token_s is None or usage is None:
        raise RuntimeError(f"request {request_id} ended without tokens or usage")
    return RequestTiming(
        request_id=request_id,
        request_class=request_class,
        e2e_ms=(last_token_s - start) * 1e3,
        ttft_ms=(first_token_s - start) * 1e3,
        num_chunks=num_chunks,
        num_output_tokens=num_tokens,
        num_prompt_tokens=usage.prompt_tokens,
        num_cached_prompt_tokens=usage.cached_prompt_tokens,
    )
