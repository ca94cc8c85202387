"""The baseline side of the engine benchmark: transformers' LlavaForConditionalGeneration.generate
on the same checkpoint, greedy, generating exactly max_new_tokens (EOS disabled)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoProcessor,
    LlavaForConditionalGeneration,
    LogitsProcessor,
    LogitsProcessorList,
)

from bench.engine.membw import synchronize
from bench.engine.workloads import IMAGE_PROMPT, BatchRun, DecodeStep, MixedBatch, Timeline
from workers.engine.dtypes import DTYPES


class StepClock(LogitsProcessor):
    """Stamps the time at every generation step (after the step's forward pass). generate()
    calls logits processors once per step, whatever the batch size; streamers allow batch 1
    only."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())
        return scores


class HFRunner:
    name = "transformers"

    def __init__(self, model_dir: Path, device: str, dtype: str) -> None:
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=self.dtype)
        self.model = self.model.to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.pad_token_id = self.processor.tokenizer.pad_token_id

    def _generate(self, max_new_tokens: int, clock: StepClock | None = None, **inputs):
        """Greedy, exactly `max_new_tokens` per row: eos_token_id=None turns off EOS stopping;
        min_new_tokens backs that up on versions that fall back to the config's EOS."""
        with torch.inference_mode():
            return self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                eos_token_id=None,
                pad_token_id=self.pad_token_id,
                do_sample=False,
                logits_processor=LogitsProcessorList([clock] if clock else []),
            )

    def generate_one(self, prompt: list[int], max_tokens: int) -> Timeline:
        """Batch 1; each token is stamped right after the forward pass that yields its logits
        (the argmax that follows is microseconds)."""
        input_ids = torch.tensor([prompt], device=self.device)
        clock = StepClock(self.device)
        synchronize(self.device)
        timeline = Timeline(start=time.perf_counter())
        out = self._generate(
            max_tokens, clock, input_ids=input_ids, attention_mask=torch.ones_like(input_ids)
        )
        synchronize(self.device)
        timeline.token_times = clock.stamps
        timeline.token_ids = out[0, len(prompt) :].tolist()
        _check_length(len(timeline.token_ids), max_tokens)
        return timeline

    def generate_batch(self, batch: MixedBatch) -> BatchRun:
        """The whole batch as one left-padded generate call, to the largest max_tokens: rows that
        wanted fewer tokens keep generating (waste that the caller does not count as useful)."""
        width = max(len(p) for p in batch.prompts)
        input_ids = torch.full((len(batch.prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(batch.prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1
        max_new_tokens = max(batch.max_tokens)
        clock = StepClock(self.device)
        synchronize(self.device)
        start = time.perf_counter()
        out = self._generate(
            max_new_tokens,
            clock,
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
        )
        synchronize(self.device)
        wall_s = time.perf_counter() - start
        _check_length(out.shape[1] - width, max_new_tokens)
        # Stamp j follows the forward pass of step j; step j >= 1 decodes one token per row over
        # the padded cache of width + j positions.
        steps = [
            DecodeStep(
                batch_size=len(batch.prompts),
                kv_tokens=len(batch.prompts) * (width + j),
                seconds=after - before,
            )
            for j, (before, after) in enumerate(
                zip(clock.stamps, clock.stamps[1:], strict=False), start=1
            )
        ]
        return BatchRun(
            wall_s=wall_s,
            num_generated_tokens=len(batch.prompts) * max_new_tokens,
            decode_steps=steps,
        )

    def image_ttft(self, image: Image.Image) -> float:
        """Processor (tokenise + pixel values) + generate(max_new_tokens=1), in seconds."""
        synchronize(self.device)
        start = time.perf_counter()
        inputs = self.processor(text=IMAGE_PROMPT, images=[image], return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        self._generate(1, **inputs)
        synchronize(self.device)
        return time.perf_counter() - start


def _check_length(num_generated: int, expected: int) -> None:
    if num_generated != expected:
        raise RuntimeError(f"transformers generated {num_generated} tokens, not {expected}")
