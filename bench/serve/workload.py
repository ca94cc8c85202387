"""The requests of one sweep point: kinds drawn from the mix (or taken from a trace), prompts,
images, output lengths, SLO class and targets. Built before the point starts, so drawing images
costs nothing during the run, and built once per point, so every layout gets the same requests
at the same times.

Every prompt is  [images] context question : the context is the bulk of the text, the question
a short tail. A reused request (a `reuse_fraction` share) repeats an earlier request of the same
kind in the same point: the same images and context, a new question, so the prefix cache (image
blocks, then context blocks) and the embedding cache can hit. Mooncake `hash_ids` name 512-token
context blocks: the same id is the same text, so trace prefixes are shared as in the trace.
Two generators: `shape` (kinds, lengths, counts, reuse) and `content` (words, pixels); see
points.py for why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from bench.common.words import IMAGE_WORDS
from bench.common.words import WORDS as TEXT_WORDS
from bench.serve import images as draw
from bench.serve.mix import KINDS
from bench.serve.trace_files import TraceRequest
from scheduler.config import SchedulerConfig
from scheduler.request_class import RequestCost, classify
from scheduler.slo import SloTargets

QUESTION_TOKENS = 8  # the tail that differs between a request and its reuse
MOONCAKE_BLOCK_TOKENS = 512
WORDS = TEXT_WORDS + IMAGE_WORDS


@dataclass(frozen=True)
class WorkloadSpec:
    mix: dict[str, float]
    prompt_tokens: tuple[int, int] = (16, 256)  # text tokens per prompt (context + question)
    output_tokens: tuple[int, int] = (16, 128)  # max_tokens; EOS is ignored, so exactly these
    multi_images: tuple[int, int] = (4, 8)
    video_frames: tuple[int, int] = (16, 24)
    ocr_size: tuple[int, int] = (2400, 1200)  # (width, height)
    reuse_fraction: float = 0.1
    prompt_format: str = "raw"  # "raw" text with <image> slots, or "chat" messages


@dataclass(frozen=True)
class ModelLimits:
    num_image_tokens: int  # placeholder tokens per image
    max_model_len: int  # context length

    def max_images(self, spec: WorkloadSpec) -> int:
        """Images that fit next to the longest text and output (and a chat template's tokens)."""
        room = self.max_model_len - spec.prompt_tokens[1] - spec.output_tokens[1] - 64
        return max(0, room // self.num_image_tokens)


@dataclass(frozen=True)
class BenchRequest:
    index: int  # position in the point, in arrival order
    kind: str  # one of mix.KINDS
    arrival_s: float  # when to send it, from the start of the point
    context: str
    question: str
    images: tuple[bytes, ...]
    max_tokens: int
    slo_class: str  # sand, pebble or rock, by the scheduler's own classifier
    targets: SloTargets
    max_image_pixels: int = 0
    est_prompt_tokens: int = 0  # text + image placeholder tokens (the server's count differs)
    reuse_of: int | None = None  # the index of the request it repeats the prefix of
    extra: dict = field(default_factory=dict)  # e.g. the trace's own lengths

    def generate_kwargs(
        self, prompt_format: str, ttft_ms: float | None = None, tpot_ms: float | None = None
    ) -> dict:
        """Keyword arguments of AsyncTriserveClient.generate (greedy, EOS ignored). SLO targets
        are sent only when given (`--ttft-ms`, `--tpot-ms`); else the server's class defaults
        apply, which `targets` already holds."""
        kwargs: dict = {"max_tokens": self.max_tokens, "ignore_eos": True, "temperature": 0.0}
        if ttft_ms is not None:
            kwargs["ttft_ms"] = ttft_ms
        if tpot_ms is not None:
            kwargs["tpot_ms"] = tpot_ms
        text = f"{self.context} {self.question}"
        if prompt_format == "chat":
            parts = [{"type": "image", "image": image} for image in self.images]
            parts.append({"type": "text", "text": text})
            return {"messages": [{"role": "user", "content": parts}], **kwargs}
        slots = "<image>" * len(self.images) + "\n" if self.images else ""
        return {"prompt": slots + text, "images": list(self.images), **kwargs}


class TextSource:
    """Text of about n tokens of the model's tokenizer: random words, cut at n tokens."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def text(self, rng: np.random.Generator, num_tokens: int) -> str:
        if num_tokens <= 0:
            return ""
        words = " ".join(rng.choice(WORDS, size=num_tokens * 2))
        ids = self.tokenizer(words, add_special_tokens=False)["input_ids"][:num_tokens]
        return self.tokenizer.decode(ids).strip()


class WorkloadBuilder:
    """Turns kinds (or trace rows) and arrival times into BenchRequests."""

    def __init__(
        self,
        spec: WorkloadSpec,
        limits: ModelLimits,
        scheduler: SchedulerConfig,
        text: TextSource,
        ttft_ms: float | None = None,
        tpot_ms: float | None = None,
    ) -> None:
        self.spec, self.limits, self.scheduler = spec, limits, scheduler
        self.text, self.ttft_ms, self.tpot_ms = text, ttft_ms, tpot_ms
        # multi_image and video counts are capped at this (the report says so): the small
        # preset's 256-token images fit 14 to a 4096-token context, not 16.
        self.max_images = limits.max_images(spec)
        has_images = any(spec.mix.get(kind, 0) > 0 for kind in KINDS if kind != "text")
        if has_images and self.max_images < 1:
            raise ValueError(
                f"no image of {limits.num_image_tokens} tokens fits the context of "
                f"{limits.max_model_len} next to the longest text and output"
            )

    def synthetic(
        self, arrivals: Sequence[float], shape: np.random.Generator, content: np.random.Generator
    ) -> list[BenchRequest]:
        """`shape` draws kinds, lengths, counts and reuse; `content` draws words and pixels.
        Each request takes a fixed number of shape draws, so with the same `shape` seed a
        longer point starts with the same requests as a shorter one (common random numbers
        across rates), while a new `content` seed keeps caches from hitting across points."""
        kinds = list(self.spec.mix)
        shares = np.array([self.spec.mix[k] for k in kinds])
        requests: list[BenchRequest] = []
        for index, arrival in enumerate(arrivals):
            kind = kinds[int(shape.choice(len(kinds), p=shares / shares.sum()))]
            earlier = self._reusable(requests, kind, shape)
            if earlier is not None:
                context, images = earlier.context, earlier.images
            else:
                images = self._images(kind, shape, content)
                num_tokens = self._draw(self.spec.prompt_tokens, shape) - QUESTION_TOKENS
                context = self.text.text(content, num_tokens)
            request = self._request(
                index=index,
                kind=kind,
                arrival=arrival,
                context=context,
                images=images,
                shape=shape,
                content=content,
            )
            requests.append(
                request if earlier is None else replace(request, reuse_of=earlier.index)
            )
        return requests

    def from_trace(
        self, rows: Sequence[TraceRequest], arrivals: Sequence[float], content: np.random.Generator
    ) -> list[BenchRequest]:
        """Trace lengths, clamped to the prompt and output ranges' upper ends so that every
        request fits the context (the JSON keeps the trace's own lengths in `extra`)."""
        requests = []
        blocks: dict[int, str] = {}
        salt = int(content.integers(2**32))  # a new point, new block texts: no cross-point hits
        for index, (row, arrival) in enumerate(zip(rows, arrivals, strict=True)):
            num_images = min(row.num_images, self.max_images)
            kind = "text" if num_images == 0 else "image" if num_images == 1 else "multi_image"
            images = tuple(draw.photo(content) for _ in range(num_images))
            num_tokens = max(1, min(row.input_tokens, self.spec.prompt_tokens[1]) - QUESTION_TOKENS)
            context = self._trace_context(row, num_tokens, blocks, salt, content)
            max_tokens = max(1, min(row.output_tokens, self.spec.output_tokens[1]))
            extra = {
                "trace_input_tokens": row.input_tokens,
                "trace_output_tokens": row.output_tokens,
                "trace_num_images": row.num_images,
            }
            requests.append(
                self._request(
                    index=index,
                    kind=kind,
                    arrival=arrival,
                    context=context,
                    images=images,
                    shape=None,
                    content=content,
                    max_tokens=max_tokens,
                    extra=extra,
                )
            )
        return requests

    # ------------------------------------------------------------------ pieces
    def _images(self, kind: str, shape, content) -> tuple[bytes, ...]:
        if kind == "image":
            return (draw.photo(content),)
        if kind == "ocr":
            return (draw.document(content, *self.spec.ocr_size),)
        if kind == "multi_image":
            count = min(self._draw(self.spec.multi_images, shape), self.max_images)
            return tuple(draw.photo(content) for _ in range(count))
        if kind == "video":
            count = min(self._draw(self.spec.video_frames, shape), self.max_images)
            return tuple(draw.video(content, count))
        if kind == "text":
            return ()
        raise ValueError(f"unknown workload kind {kind!r}; kinds: {KINDS}")

    def _trace_context(self, row: TraceRequest, num_tokens: int, blocks, salt, content) -> str:
        if not row.hash_ids:
            return self.text.text(content, num_tokens)
        parts, total = [], 0
        for hash_id in row.hash_ids:
            if total >= num_tokens:
                break
            if hash_id not in blocks:
                block_rng = np.random.default_rng([salt, hash_id])
                blocks[hash_id] = self.text.text(block_rng, MOONCAKE_BLOCK_TOKENS)
            parts.append(blocks[hash_id])
            total += MOONCAKE_BLOCK_TOKENS
        ids = self.text.tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"]
        return self.text.tokenizer.decode(ids[:num_tokens]).strip()

    def _reusable(self, requests, kind: str, shape) -> BenchRequest | None:
        if self.spec.reuse_fraction <= 0 or shape.random() >= self.spec.reuse_fraction:
            return None
        same = [r for r in requests if r.kind == kind and r.reuse_of is None]
        return same[int(shape.integers(len(same)))] if same else None

    def _request(
        self, index, kind, arrival, context, images, shape, content, max_tokens=None, extra=None
    ) -> BenchRequest:
        question = self.text.text(content, QUESTION_TOKENS)
        pixels = max((w * h for w, h in map(draw.size_of, images)), default=0)
        num_image_tokens = len(images) * self.limits.num_image_tokens
        num_tokens = len(self.text.tokenizer(f"{context} {question}")["input_ids"])
        num_tokens += num_image_tokens
        cost = RequestCost(
            num_images=len(images),
            num_image_tokens=num_image_tokens,
            num_prompt_tokens=num_tokens,
            max_image_pixels=pixels,
        )
        slo_class = classify(cost, self.scheduler).value
        ttft_ms, tpot_ms = self.scheduler.slo_for(slo_class)
        targets = SloTargets(ttft_ms=self.ttft_ms or ttft_ms, tpot_ms=self.tpot_ms or tpot_ms)
        return BenchRequest(
            index=index,
            kind=kind,
            arrival_s=float(arrival),
            context=context,
            question=question,
            images=tuple(images),
            max_tokens=max_tokens or self._draw(self.spec.output_tokens, shape),
            slo_class=slo_class,
            targets=targets,
            max_image_pixels=pixels,
            est_prompt_tokens=num_tokens,
            extra=extra or {},
        )

    @staticmethod
    def _draw(bounds: tuple[int, int], rng: np.random.Generator) -> int:
        return int(rng.integers(bounds[0], bounds[1] + 1))
