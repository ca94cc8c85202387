"""Triserve's side of the engine benchmark: one colocated (EPD) engine, driven step by step
through the engine interface: Triserve's engine, or vLLM's (`backend="vllm"`, workers/vllm/)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch
from PIL import Image

from bench.engine.membw import synchronize
from bench.engine.workloads import IMAGE_PROMPT, BatchRun, DecodeStep, MixedBatch, Timeline
from workers.contract.engine_config import EngineConfig
from workers.contract.sampling_params import SamplingParams
from workers.contract.worker_config import WorkerConfig
from workers.engine.dtypes import torch_dtype
from workers.engine.kv_cache import KVCache
from workers.engine.model_config import ModelConfig
from workers.engine.prompt import PromptBuilder
from workers.engine_factory import build_engine

DEFAULT_KV_CACHE_BYTES = EngineConfig.kv_cache_memory_bytes


class TriserveRunner:
    def __init__(
        self,
        model_dir: Path,
        device: str,
        dtype: str,
        peak_tokens: list[int],
        backend: str = "native",
    ) -> None:
        """`peak_tokens`: prompt + max_tokens of each sequence of the biggest batch. The KV cache
        is grown to hold them all at once (never shrunk below the engine's default), so the
        batch measures batching, not preemption. vLLM's CPU attention takes 32-token blocks."""
        self.name = "triserve" if backend == "native" else backend
        self.device = torch.device(device)
        block_size = 32 if backend == "vllm" else EngineConfig.block_size
        self.config = EngineConfig(
            model_dir=str(model_dir),
            backend=backend,
            device=device,
            dtype=dtype,
            block_size=block_size,
            kv_cache_memory_bytes=max(
                DEFAULT_KV_CACHE_BYTES, _kv_cache_bytes(model_dir, dtype, peak_tokens, block_size)
            ),
        )
        self.engine = build_engine(WorkerConfig(worker_id=self.name, engine=self.config))
        self.prompt_builder = PromptBuilder(model_dir, ModelConfig.from_pretrained(model_dir))
        self._ids = itertools.count()

    def _request_id(self) -> str:
        return f"bench-{next(self._ids)}"

    def generate_one(self, prompt: list[int], max_tokens: int) -> Timeline:
        """Batch 1: add the request, step until it finishes, stamp every token."""
        synchronize(self.device)
        timeline = Timeline(start=time.perf_counter())
        self.engine.add_request(
            self._request_id(), prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        )
        while self.engine.has_unfinished_requests():
            outputs = self.engine.step()
            synchronize(self.device)
            now = time.perf_counter()
            for output in outputs:
                timeline.token_ids += output.new_token_ids
                timeline.token_times += [now] * len(output.new_token_ids)
        return timeline

    def generate_batch(self, batch: MixedBatch) -> BatchRun:
        """Continuous batching: add every request at once, step until all are done.

        A step is a pure decode step when every unfinished request already has its first
        token: then each one decodes exactly one token over prompt + outputs-so-far of KV."""
        synchronize(self.device)
        start = time.perf_counter()
        prompt_len, num_outputs = {}, {}
        for prompt, max_tokens in zip(batch.prompts, batch.max_tokens, strict=True):
            request_id = self._request_id()
            prompt_len[request_id], num_outputs[request_id] = len(prompt), 0
            params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
            self.engine.add_request(request_id, prompt, params)
        num_generated, steps = 0, []
        while self.engine.has_unfinished_requests():
            is_decode_only = all(n > 0 for n in num_outputs.values())
            kv_tokens = sum(prompt_len[r] + n for r, n in num_outputs.items())
            batch_size = len(num_outputs)
            step_start = time.perf_counter()
            outputs = self.engine.step()
            synchronize(self.device)
            seconds = time.perf_counter() - step_start
            for output in outputs:
                num_outputs[output.request_id] += len(output.new_token_ids)
                num_generated += len(output.new_token_ids)
                if output.finish_reason is not None:
                    del num_outputs[output.request_id]
            if is_decode_only:
                if len(outputs) != batch_size:
                    raise RuntimeError(f"a decode step advanced {len(outputs)} of {batch_size}")
                steps.append(
                    DecodeStep(batch_size=batch_size, kv_tokens=kv_tokens, seconds=seconds)
                )
        synchronize(self.device)
        return BatchRun(
            wall_s=time.perf_counter() - start,
            num_generated_tokens=num_generated,
            decode_steps=steps,
        )

    def image_ttft(self, image: Image.Image) -> float:
        """Prompt building + image encode + prefill + first token, in seconds."""
        synchronize(self.device)
        start = time.perf_counter()
        prompt = self.prompt_builder.build(IMAGE_PROMPT, [image])
        embeddings = self.engine.encode([image])
        params = SamplingParams(max_tokens=1, ignore_eos=True)
        self.engine.add_request(self._request_id(), prompt.token_ids, params, images=embeddings)
        num_tokens = 0
        while num_tokens == 0:
            num_tokens = sum(len(o.new_token_ids) for o in self.engine.step())
        synchronize(self.device)
        return time.perf_counter() - start

    def stats(self) -> dict:
        stats = self.engine.stats()
        return {
            "num_kv_blocks": stats.num_kv_blocks,
            "prefix_cache_hit_rate": stats.prefix_cache_hit_rate,
            "embedding_cache_hit_rate": stats.embedding_cache_hit_rate,
        }


def _kv_cache_bytes(model_dir: Path, dtype: str, peak_tokens: list[int], block_size: int) -> int:
    text = ModelConfig.from_pretrained(model_dir).text
    per_block = KVCache.bytes_per_block(
        num_layers=text.num_hidden_layers,
        block_size=block_size,
        num_kv_heads=text.num_key_value_heads,
        head_dim=text.head_dim,
        dtype=torch_dtype(dtype),
    )
    num_blocks = sum(-(-tokens // block_size) for tokens in peak_tokens)
    return num_blocks * per_block
