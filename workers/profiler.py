"""Start-up profiling: how long this worker's engine takes to encode, prefill and decode, and
the step budgets that keep one turn within a TPOT target (workers/contract/cost_profile.py).

    encode   calls of 1, 2, 4 fresh random images       -> ms against image tokens
    prefill  one step of 16, 64, 256 and the configured  -> ms against prompt tokens
             max_num_batched_tokens random text tokens
    decode   steps of 1, 4, 16 requests of 32 and 256    -> ms against batch size and summed
             context tokens, on imported zero KV            context tokens

Only the stages the engine runs are measured. Decode starts from imported KV (as a D worker's
requests do), so a D-only engine can measure it and no prefill is paid for. Sizes shrink to
what the engine's KV blocks, context length and batch limits allow. Each kind is warmed up once
(a first call pays one-off costs), and short measurements are taken twice, keeping the faster:
noise on a shared machine only ever adds time. Each engine call returns host values (tokens,
numpy embeddings), so the device work is done when the clock stops.

Workers on one machine profile one at a time (a lock file): side by side, each would measure
the others' work too, and derive budgets too tight for the rest of its life. The engine is driven
through its interface (engine_interface.py), sized by its spec. Afterwards the engine is as
loaded (`reset_caches`): no requests, no cached prefix blocks or embeddings,
counters at 0. The measured budgets are returned; the config stays as it is.
"""

from __future__ import annotations

import fcntl
import io
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from workers.contract.cost_profile import (
    DecodeCost,
    LinearCost,
    StepBudgets,
    WorkerProfile,
    derive_budgets,
)
from workers.contract.engine_config import EngineConfig
from workers.contract.images import decode_image
from workers.contract.sampling_params import SamplingParams
from workers.encode_queue import DEFAULT_MAX_ENCODE_IMAGES
from workers.engine_interface import EngineInterface
from workers.engine_messages import PrefillResult, PromptKV
from workers.job_inputs import KV_NUMPY_DTYPES

ENCODE_IMAGES = (1, 2, 4)  # images per encode call
LARGE_IMAGE = (1600, 1200)  # (width, height) of the PNG that measures the cost per pixel
PREFILL_TOKENS = (16, 64, 256)  # prompt tokens per step, plus the config's max_num_batched_tokens
DECODE_BATCHES = (1, 4, 16)  # requests per decode step...
DECODE_CONTEXTS = (32, 256)  # ...each with this many tokens of context
DECODE_TIMED_STEPS = 2  # per (batch, context), after the step that imports the KV
# The decode step a turn's budgets leave room for (derive_budgets).
REFERENCE_BATCH, REFERENCE_CONTEXT = 8, 256
REPEAT_BELOW_MS = 100.0  # a measurement shorter than this is taken again
PROFILING_LOCK = Path(tempfile.gettempdir()) / "triserve-profiling.lock"  # one per machine


def profile_worker(
    engine: EngineInterface,
    tpot_target_ms: float | None,
    clock: Callable[[], float] = time.perf_counter,  # seconds; tests pass a fake one
) -> WorkerProfile:
    """Measure a fresh, idle engine and leave it as fresh. Without a TPOT target the budgets
    are the untargeted ones (`untargeted_budgets`)."""
    config, spec = engine.config, engine.spec
    with _one_profile_at_a_time():
        start = clock()
        measure = _Measurements(engine, clock)
        encode = measure.encode() if config.has_encode else None
        per_megapixel = measure.encode_per_megapixel() if config.has_encode else 0.0
        prefill = measure.prefill() if "P" in config.stages else None
        decode = measure.decode() if "D" in config.stages else None
        engine.reset_caches()
        profile_ms = (clock() - start) * 1e3
    image_tokens = spec.num_image_tokens if config.has_encode else 0
    budgets = untargeted_budgets(config)
    if tpot_target_ms is not None:
        ceiling = config.max_num_batched_tokens
        budgets = derive_budgets(
            prefill, decode, encode, tpot_target_ms, image_tokens, REFERENCE_BATCH,
            REFERENCE_CONTEXT, token_ceiling=ceiling, token_floor=min(config.block_size, ceiling),
            image_ceiling=DEFAULT_MAX_ENCODE_IMAGES,
        )  # fmt: skip
    return WorkerProfile(
        encode=encode,
        prefill=prefill,
        decode=decode,
        budgets=budgets,
        tpot_target_ms=tpot_target_ms,
        image_tokens_per_image=image_tokens,
        image_token_id=spec.image_token_id,
        block_size=config.block_size,
        profile_ms=profile_ms,
        encode_ms_per_megapixel=per_megapixel,
    )


def untargeted_budgets(config: EngineConfig) -> StepBudgets:
    """Budgets with no TPOT target: the configured tokens per step, and encodes of whole jobs
    in practice."""
    return StepBudgets(
        max_num_batched_tokens=config.max_num_batched_tokens,
        max_encode_images=DEFAULT_MAX_ENCODE_IMAGES,
    )


@contextmanager
def _one_profile_at_a_time() -> Iterator[None]:
    """Hold this machine's profiling lock (threads and processes alike: an flock belongs to
    the open file, and closing the file releases it)."""
    with open(PROFILING_LOCK, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


class _Measurements:
    """Timed engine calls on random inputs, one method per stage."""

    def __init__(self, engine: EngineInterface, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock
        self.rng = np.random.default_rng(0)
        self._request_ids = itertools.count()

    def encode(self) -> LinearCost:
        engine = self.engine
        size, tokens = engine.spec.image_size, engine.spec.num_image_tokens

        def encode_ms(num_images: int) -> float:
            # Fresh random pixels every call, so that the embedding cache never hits.
            pixels = self.rng.integers(0, 256, (num_images, size, size, 3), dtype=np.uint8)
            images = [Image.fromarray(image) for image in pixels]
            return self._ms(lambda: engine.encode(images))

        encode_ms(1)
        return LinearCost.fit([(n * tokens, _fastest(encode_ms, n)) for n in ENCODE_IMAGES])

    def encode_per_megapixel(self) -> float:
        """ms per megapixel of decoding and resizing an encoded image: one call with a large
        PNG against one with a model-sized one (fresh pixels, so the cache never hits)."""
        engine, size = self.engine, self.engine.spec.image_size

        def encode_png_ms(width: int, height: int) -> float:
            pixels = self.rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
            data = buffer.getvalue()
            return self._ms(lambda: engine.encode([decode_image(data)]))

        small = _fastest(lambda _: encode_png_ms(size, size), 1)
        large = _fastest(lambda _: encode_png_ms(*LARGE_IMAGE), 1)
        extra_megapixels = (LARGE_IMAGE[0] * LARGE_IMAGE[1] - size * size) / 1e6
        return max(0.0, (large - small) / extra_megapixels)

    def prefill(self) -> LinearCost:
        engine, config = self.engine, self.engine.config
        export = "D" not in config.stages  # a P-only engine hands off: its step exports the KV
        params = SamplingParams(max_tokens=2 if export else 1, ignore_eos=True, seed=0)
        capacity = engine.spec.num_kv_blocks * config.block_size
        # One step computes the whole prompt (the token budget), and it fits the engine.
        longest = min(config.max_num_batched_tokens, engine.spec.max_model_len - 1, capacity - 2)
        sizes = sorted({min(n, longest) for n in (*PREFILL_TOKENS, config.max_num_batched_tokens)})

        def prefill_ms(num_tokens: int) -> float:
            prompt = self._text_tokens(num_tokens)
            engine.add_request(self._request_id(), prompt, params, export_kv=export)
            ms = self._ms(engine.step)
            if engine.has_unfinished_requests():
                raise RuntimeError("a profiling prefill did not finish in one step")
            return ms

        prefill_ms(sizes[0])
        return LinearCost.fit([(n, _fastest(prefill_ms, n)) for n in sizes])

    def decode(self) -> DecodeCost:
        config, spec = self.engine.config, self.engine.spec
        num_blocks, block_size = spec.num_kv_blocks, config.block_size
        steps = 1 + DECODE_TIMED_STEPS
        # A request's peak is its context, the first token and one token per step.
        longest = min(spec.max_model_len, num_blocks * block_size) - steps - 2
        contexts = sorted({max(1, min(context, longest)) for context in DECODE_CONTEXTS})
        self._decode_point(1, contexts[0], steps)
        points = []
        for context in contexts:
            blocks_per_seq = -(-(context + 1 + steps) // block_size)  # rounded up
            seqs_that_fit = num_blocks // blocks_per_seq
            limit = min(config.max_num_seqs, config.max_num_batched_tokens, seqs_that_fit)
            for batch in sorted({min(batch, limit) for batch in DECODE_BATCHES} - {0}):
                points.append(self._decode_point(batch, context, steps))
        return DecodeCost.fit(points)

    def _decode_point(self, batch: int, context: int, steps: int) -> tuple[int, int, float]:
        """(batch, summed context tokens, ms) of the fastest decode step of `batch` requests
        that start from `context` tokens of imported KV, [layers, 2, context, kv_heads,
        head_dim] zeros. The first step, which imports, is not timed."""
        engine = self.engine
        layout, dtype = engine.spec.kv_layout, engine.config.dtype
        shape = (layout.num_layers, 2, context, layout.num_kv_heads, layout.head_dim)
        zeros = np.zeros(shape, KV_NUMPY_DTYPES[dtype])
        params = SamplingParams(max_tokens=1 + steps, ignore_eos=True, seed=0)
        request_ids = [self._request_id() for _ in range(batch)]
        for request_id in request_ids:
            prompt, [first_token] = self._text_tokens(context), self._text_tokens(1)
            prefill = PrefillResult(
                request_id=request_id,
                prompt_token_ids=prompt,
                first_token_id=first_token,
                kv=PromptKV(kv=zeros, dtype=dtype),
            )
            engine.add_prefilled(prefill, params)
        engine.step()
        # Each request's step reads the KV of all its tokens so far.
        context_tokens = sum(engine.get_request(r).num_tokens for r in request_ids)
        fastest = min(self._ms(engine.step) for _ in range(steps - 1))
        if engine.has_unfinished_requests():
            raise RuntimeError("profiling decodes did not finish")
        return batch, context_tokens, fastest

    def _request_id(self) -> str:
        return f"profile-{next(self._request_ids)}"

    def _text_tokens(self, num_tokens: int) -> list[int]:
        """Random token ids, never the image placeholder (it would need embeddings)."""
        image_token = self.engine.spec.image_token_id
        ids = self.rng.integers(0, self.engine.spec.vocab_size - 1, num_tokens)
        ids[ids >= image_token] += 1
        return ids.tolist()

    def _ms(self, call: Callable[[], object]) -> float:
        start = self.clock()
        call()
        return (self.clock() - start) * 1e3


def _fastest(measure: Callable[[int], float], size: int) -> float:
    ms = measure(size)
    return min(ms, measure(size)) if ms < REPEAT_BELOW_MS else ms
