"""The engine benchmark's workloads (seeded, so both systems see the same requests) and the
timings each system returns for them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

IMAGE_PROMPT = "<image>\nDescribe this image in detail."


@dataclass(frozen=True)
class BenchSizes:
    """How big each workload is. `quick()` is for the smoke test, not for numbers."""

    single_prompt_tokens: int = 64  # batch 1: prompt length (BOS included)
    single_new_tokens: int = 128  # batch 1: tokens generated
    single_repeats: int = 5
    batch_size: int = 32
    batch_prompt_tokens: tuple[int, int] = (16, 256)  # inclusive range, uniform
    batch_max_tokens: tuple[int, int] = (16, 128)  # inclusive range, uniform
    batch_repeats: int = 3
    image_size: tuple[int, int] = (336, 448)  # (height, width) before the processor's resize
    ttft_repeats: int = 5

    @classmethod
    def quick(cls) -> BenchSizes:
        return cls(
            single_prompt_tokens=16,
            single_new_tokens=8,
            single_repeats=1,
            batch_size=4,
            batch_prompt_tokens=(4, 24),
            batch_max_tokens=(2, 8),
            batch_repeats=1,
            image_size=(40, 48),
            ttft_repeats=2,
        )


@dataclass(frozen=True)
class MixedBatch:
    prompts: list[list[int]]
    max_tokens: list[int]

    @property
    def num_useful_tokens(self) -> int:
        return sum(self.max_tokens)

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


class PromptSource:
    """Random prompts of ordinary tokens (no special or image tokens), each starting with BOS.
    Every prompt is fresh, so Triserve's prefix cache never hits across repetitions."""

    def __init__(self, tokenizer, image_token_index: int, seed: int) -> None:
        special = set(tokenizer.all_special_ids) | {image_token_index}
        self.ordinary_ids = np.array([t for t in range(len(tokenizer)) if t not in special])
        self.bos = tokenizer.bos_token_id
        self.rng = np.random.default_rng(seed)

    def prompt(self, num_tokens: int) -> list[int]:
        body = self.rng.choice(self.ordinary_ids, size=num_tokens - 1).tolist()
        return [self.bos, *body]

    def mixed_batch(self, sizes: BenchSizes) -> MixedBatch:
        lo, hi = sizes.batch_prompt_tokens
        lengths = self.rng.integers(lo, hi + 1, size=sizes.batch_size)
        lo, hi = sizes.batch_max_tokens
        max_tokens = self.rng.integers(lo, hi + 1, size=sizes.batch_size)
        return MixedBatch(
            prompts=[self.prompt(int(n)) for n in lengths], max_tokens=[int(m) for m in max_tokens]
        )

    def redraw(self, batch: MixedBatch) -> MixedBatch:
        """The same lengths and max_tokens with fresh tokens: a repeat that the prefix cache
        cannot serve."""
        return MixedBatch(
            prompts=[self.prompt(len(p)) for p in batch.prompts], max_tokens=batch.max_tokens
        )

    def image(self, size: tuple[int, int]) -> Image.Image:
        """Noise, fresh each call, so Triserve's embedding cache never hits."""
        pixels = self.rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        return Image.fromarray(pixels)


@dataclass
class Timeline:
    """When each token of one request became available (time.perf_counter seconds)."""

    start: float
    token_times: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)

    @property
    def ttft_s(self) -> float:
        return self.token_times[0] - self.start

    @property
    def num_decode_steps(self) -> int:
        """Steps after the first token: the first token comes from prefill."""
        return len(self.token_times) - 1

    @property
    def decode_s(self) -> float:
        return self.token_times[-1] - self.token_times[0]


@dataclass(frozen=True)
class DecodeStep:
    """One step in which every running sequence decoded one token and none prefilled."""

    batch_size: int
    kv_tokens: int  # KV the step attends over, summed over the batch (its own token included)
    seconds: float


@dataclass
class BatchRun:
    wall_s: float
    num_generated_tokens: int  # every token produced, useful or not
    decode_steps: list[DecodeStep]


def single_summary(timelines: list[Timeline], prompt_tokens: int) -> dict:
    """Median over repetitions of batch-1 decode speed; decode excludes the first token."""
    ms_per_step = statistics.median(t.decode_s / t.num_decode_steps for t in timelines) * 1e3
    return {
        "decode_tok_s": 1e3 / ms_per_step,
        "ms_per_step": ms_per_step,
        "ttft_ms": statistics.median(t.ttft_s for t in timelines) * 1e3,
        "ms_per_step_samples": [t.decode_s / t.num_decode_steps * 1e3 for t in timelines],
        "num_repeats": len(timelines),
        # Decode step j (1..N-1) attends over prompt + j tokens: the mean is prompt + N / 2.
        "mean_kv_tokens": prompt_tokens + len(timelines[0].token_times) / 2,
    }


def batch_summary(runs: list[BatchRun], batch: MixedBatch) -> dict:
    wall_s = statistics.median(r.wall_s for r in runs)
    steps = [s for r in runs for s in r.decode_steps]
    return {
        "wall_s": wall_s,
        "wall_s_samples": [r.wall_s for r in runs],
        "useful_tokens": batch.num_useful_tokens,
        "useful_tok_s": batch.num_useful_tokens / wall_s,
        "generated_tokens": runs[0].num_generated_tokens,
        "generated_tok_s": runs[0].num_generated_tokens / wall_s,
        "num_decode_steps": len(steps) // len(runs),
        "decode_ms_per_step": statistics.mean(s.seconds for s in steps) * 1e3 if steps else None,
        "decode_mean_batch": statistics.mean(s.batch_size for s in steps) if steps else None,
        "decode_mean_kv_tokens": statistics.mean(s.kv_tokens for s in steps) if steps else None,
        "num_repeats": len(runs),
    }
