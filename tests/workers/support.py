"""Helpers for worker tests: a multimodal request on the tiny model, and polling with a deadline."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.support import make_image
from workers.contract.images import image_hash
from workers.contract.messages import (
    EmbeddingInput,
    EncodeJob,
    ImageInput,
    PrefillJob,
    WorkerEvents,
)
from workers.contract.sampling_params import SamplingParams
from workers.engine.model_config import ModelConfig
from workers.engine.prompt import PromptBuilder

DEADLINE_S = 60.0
GREEDY = SamplingParams(max_tokens=8, ignore_eos=True, seed=0)


@dataclass(frozen=True)
class ImageRequest:
    prompt_token_ids: list[int]
    image: ImageInput

    def encode_job(self, request_id: str, export: bool = True) -> EncodeJob:
        return EncodeJob(request_id=request_id, images=[self.image], export=export)


def image_request(model_dir: Path, seed: int = 1, text: str = "What is it?") -> ImageRequest:
    image = make_image(seed)
    builder = PromptBuilder(model_dir, ModelConfig.from_pretrained(model_dir))
    prompt = builder.build(f"USER: <image>\n{text} ASSISTANT:", [image])
    return ImageRequest(prompt.token_ids, image_input(image))


def image_input(image: Image.Image) -> ImageInput:
    """What the ingress sends a worker: PNG bytes and the decoded pixels' hash."""
    png = io.BytesIO()
    image.save(png, format="PNG")
    return ImageInput(image_hash=image_hash(image), data=png.getvalue())


def distinct_images(count: int, first_seed: int = 100) -> list[ImageInput]:
    """`count` different random images (none equal to another, so no cache hits among them)."""
    return [image_input(make_image(seed)) for seed in range(first_seed, first_seed + count)]


def poll_until(
    poll: Callable[[float], WorkerEvents],
    is_done: Callable[[list[WorkerEvents]], bool],
    deadline_s: float = DEADLINE_S,
) -> list[WorkerEvents]:
    """Poll until `is_done(everything so far)`; fail the test at the deadline."""
    deadline = time.monotonic() + deadline_s
    seen: list[WorkerEvents] = []
    while not is_done(seen):
        assert time.monotonic() < deadline, f"gave up waiting; saw {seen}"
        seen.append(poll(0.5))
    return seen


def wait_for(condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    """Check `condition` every 10 ms until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def token_ids(events: list[WorkerEvents], request_id: str) -> list[int]:
    return [t for e in events for d in e.tokens if d.request_id == request_id for t in d.token_ids]


def finish_reason(events: list[WorkerEvents], request_id: str) -> str | None:
    reasons = [d.finish_reason for e in events for d in e.tokens if d.request_id == request_id]
    return next((r for r in reversed(reasons) if r is not None), None)


def has(kind: str) -> Callable[[list[WorkerEvents]], bool]:
    """`has("encodes")`: some message so far carries an EncodeDone."""
    return lambda seen: any(getattr(events, kind) for events in seen)


def colocated_tokens(worker, request: ImageRequest, request_id: str) -> list[int]:
    """The tokens of `request` on one EPD worker, embeddings taken from its own cache."""
    worker.submit_encode(request.encode_job(request_id, export=False))
    poll_until(worker.poll, has("encodes"))
    cached = [EmbeddingInput(image_hash=request.image.image_hash, ref=None)]
    worker.submit_prefill(
        PrefillJob(
            request_id=request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling_params=GREEDY,
            images=cached,
            decode_here=True,
        )
    )
    return token_ids(poll_until(worker.poll, is_finished(request_id)), request_id)


def is_finished(request_id: str) -> Callable[[list[WorkerEvents]], bool]:
    return lambda events: finish_reason(events, request_id) is not None
