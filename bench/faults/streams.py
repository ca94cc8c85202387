"""A fault under streams: send a set of requests at once, inject a fault while they stream, and
compare what each client received with the same request's tokens on an undisturbed run.

    reference = await run_streams(address, requests)             # no fault
    faulted = await run_streams(address, requests, fault=...)    # fault(progress) mid-stream
    outcome = compare(reference, faulted)

Requests are greedy with EOS ignored, so the undisturbed tokens are the right answer. Against
it, per stream: tokens lost (the reference's, missing from what the client got), duplicated
(what the client got beyond the reference's length, or a token repeated where the reference
moves on) and wrong (a different token at a position), and whether the stream failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from bench.common.words import IMAGE_WORDS, WORDS

STREAM_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class StreamRequest:
    request_id: str
    prompt: str
    images: tuple[bytes, ...]
    max_tokens: int


@dataclass
class StreamResult:
    request_id: str
    token_ids: list[int] = field(default_factory=list)
    error: str | None = None  # the gRPC status name and details of a failed stream


@dataclass
class Progress:
    """What the streams have received so far, for a fault to decide when to strike."""

    num_started: int = 0
    num_tokens: dict[str, int] = field(default_factory=dict)  # request id -> tokens so far

    def streamed_at_least(self, num_tokens: int) -> int:
        return sum(1 for n in self.num_tokens.values() if n >= num_tokens)


@dataclass(frozen=True)
class StreamsOutcome:
    num_streams: int
    num_failed: int
    num_lost_tokens: int
    num_duplicated_tokens: int
    num_wrong_tokens: int
    errors: list[str]


def make_requests(
    tag: str, num: int, num_words: int, max_tokens: int, png: Callable[[], bytes] | None, seed: int
) -> list[StreamRequest]:
    """`num` fresh prompts of `num_words` random words (one `<image>` each when `png`)."""
    rng = random.Random(seed)
    requests = []
    for i in range(num):
        words = [rng.choice(IMAGE_WORDS if png else WORDS) for _ in range(num_words)]
        prompt = ("<image> " if png else "") + " ".join(words)
        images = (png(),) if png else ()
        requests.append(StreamRequest(f"{tag}-{i}", prompt, images, max_tokens))
    return requests


def noise_png(rng: np.random.Generator, height: int = 96, width: int = 128) -> bytes:
    import io

    from PIL import Image

    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def run_streams(
    address: str,
    requests: list[StreamRequest],
    suffix: str,
    fault: Callable[[Progress], Awaitable[None]] | None = None,
) -> dict[str, StreamResult]:
    """Stream every request at once (request ids get `suffix`); `fault` runs alongside, given
    the live progress. Results by the request's own id."""
    from cluster.client import AsyncTriserveClient, TriserveError

    progress = Progress()
    results = {r.request_id: StreamResult(r.request_id) for r in requests}

    async def one(client, request: StreamRequest) -> None:
        result = results[request.request_id]
        progress.num_tokens[request.request_id] = 0
        try:
            stream = client.generate(
                prompt=request.prompt,
                images=list(request.images),
                request_id=f"{request.request_id}-{suffix}",
                max_tokens=request.max_tokens,
                ignore_eos=True,
                admission="best_effort",  # a fault benchmark measures recovery, not admission
            )
            progress.num_started += 1
            async for chunk in stream:
                result.token_ids.extend(chunk.token_ids)
                progress.num_tokens[request.request_id] = len(result.token_ids)
        except TriserveError as error:
            result.error = f"{error.code.name}: {error.details}"

    async with AsyncTriserveClient(address, timeout_s=STREAM_TIMEOUT_S) as client:
        tasks = [asyncio.create_task(one(client, r)) for r in requests]
        if fault is not None:
            tasks.append(asyncio.create_task(fault(progress)))
        await asyncio.wait_for(asyncio.gather(*tasks), STREAM_TIMEOUT_S)
    return results


def compare(reference: dict[str, StreamResult], faulted: dict[str, StreamResult]) -> StreamsOutcome:
    lost = duplicated = wrong = failed = 0
    errors = []
    for request_id, expected in reference.items():
        got = faulted[request_id]
        if got.error is not None:
            failed += 1
            errors.append(f"{request_id}: {got.error}")
        want = expected.token_ids
        wrong += sum(1 for a, b in zip(want, got.token_ids) if a != b)  # noqa: B905 (lengths differ)
        duplicated += max(0, len(got.token_ids) - len(want))
        lost += max(0, len(want) - len(got.token_ids))
    return StreamsOutcome(len(reference), failed, lost, duplicated, wrong, errors)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)
    return True
