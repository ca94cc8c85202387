"""Starting vLLM for an EngineConfig, and the checks Triserve's engine makes on a prompt, made
before vLLM sees it (so that both backends refuse bad input with the same errors)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from workers.contract.block_hash import ImageSpan
from workers.contract.engine_config import EngineConfig
from workers.contract.errors import InvalidImageError
from workers.contract.sampling_params import SamplingParams
from workers.engine.dtypes import torch_dtype
from workers.engine.embedding_cache import EmbeddingCache
from workers.engine.image_spans import find_image_spans
from workers.engine.model_config import ModelConfig
from workers.engine.prompt import eos_token_ids, load_tokenizer
from workers.engine.validation import check_prompt as check_tokens
from workers.engine_messages import EngineSpec, ImageEmbedding, KVLayout
from workers.vllm.kv_rows import check_layout
from workers.vllm.prefix_hashes import PrefixHashes

CPU_BLOCK_MULTIPLE = 32  # vLLM's CPU attention takes block sizes that are multiples of 32
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # and these head sizes


@dataclass
class VllmParts:
    llm: Any  # vllm.v1.engine.llm_engine.LLMEngine
    scheduler: Any  # its scheduler (in this process)
    spec: EngineSpec
    encoder: Any  # Triserve's encode-only engine, for stages with E; else None
    embedding_cache: EmbeddingCache
    prefix_hashes: PrefixHashes
    eos_token_ids: list[int]


def start_vllm(config: EngineConfig) -> VllmParts:
    from vllm import EngineArgs
    from vllm.config import KVEventsConfig, KVTransferConfig
    from vllm.v1.engine.llm_engine import LLMEngine

    from workers.engine.engine import Engine

    if "P" not in config.stages and "D" not in config.stages:
        raise ValueError("a vLLM engine runs prefill or decode (encode-only pools run Triserve's)")
    model_config = ModelConfig.from_pretrained(config.model_dir)
    text = model_config.text
    max_model_len = min(config.max_model_len or 10**9, text.max_position_embeddings)
    on_cpu = config.device.startswith("cpu")
    if not on_cpu and config.stages in ("P", "D"):
        raise ValueError(
            "vLLM's KV handoff reads and writes its CPU cache layout only (kv_rows.py): on "
            f"{config.device}, run vLLM pools colocated (EPD, or PD with Triserve's encoder)"
        )
    if on_cpu:
        _check_cpu_shapes(config.block_size, text.head_dim)
        check_layout(torch_dtype(config.dtype), config.block_size, text.num_key_value_heads,
                     text.head_dim)  # fmt: skip
    args = EngineArgs(
        model=config.model_dir,
        dtype=config.dtype,
        enforce_eager=on_cpu,
        block_size=config.block_size,
        max_model_len=max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        enable_prefix_caching=config.enable_prefix_caching,
        kv_cache_memory_bytes=None if config.num_kv_blocks else config.kv_cache_memory_bytes,
        num_gpu_blocks_override=config.num_kv_blocks,
        enable_mm_embeds=True,
        structured_outputs_config={"backend": "guidance"},
        kv_transfer_config=KVTransferConfig(
            kv_connector="TriserveKVConnector",
            kv_connector_module_path="workers.vllm.kv_connector",
            kv_role="kv_both",
        ),
        kv_events_config=KVEventsConfig(enable_kv_cache_events=True, publisher="null"),
        disable_log_stats=True,
    )
    # vLLM sets torch to 1 thread for serving unless OMP_NUM_THREADS is set (keep the threads
    # the worker chose), and replaces torch.set_num_threads process-wide with a no-op that
    # guards the OpenMP thread binding of its multiprocess executor; in-process it binds no
    # threads, and other engines in this process (tests, benchmarks) set theirs: put it back.
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    set_num_threads = torch.set_num_threads
    try:
        llm = LLMEngine.from_engine_args(args)
    finally:
        torch.set_num_threads = set_num_threads
    scheduler = llm.engine_core.engine_core.scheduler
    encoder = Engine(replace(config, stages="E")) if config.has_encode else None
    tokenizer = load_tokenizer(config.model_dir)
    spec = EngineSpec(
        num_kv_blocks=scheduler.kv_cache_manager.block_pool.num_gpu_blocks,
        max_model_len=max_model_len,
        kv_layout=KVLayout(text.num_hidden_layers, text.num_key_value_heads, text.head_dim),
        vocab_size=text.vocab_size,
        image_token_id=model_config.image_token_index,
        num_image_tokens=model_config.num_image_tokens,
        image_size=model_config.vision.image_size,
    )
    return VllmParts(
        llm=llm,
        scheduler=scheduler,
        spec=spec,
        encoder=encoder,
        embedding_cache=encoder.embedding_cache
        if encoder
        else EmbeddingCache(config.embedding_cache_size),
        prefix_hashes=PrefixHashes(scheduler, config.block_size, spec.num_kv_blocks),
        eos_token_ids=eos_token_ids(config.model_dir, tokenizer),
    )


def _check_cpu_shapes(block_size: int, head_dim: int) -> None:
    if block_size % CPU_BLOCK_MULTIPLE:
        raise ValueError(
            f"vLLM's CPU attention needs a block_size that is a multiple of "
            f"{CPU_BLOCK_MULTIPLE}; the pool has {block_size}"
        )
    if head_dim not in CPU_HEAD_DIMS:
        raise ValueError(
            f"vLLM's CPU attention takes head_dim {CPU_HEAD_DIMS}; the model has {head_dim} "
            "(the `mini` preset is the smallest that runs)"
        )


def check_prompt(
    spec: EngineSpec,
    tokens: list[int],
    params: SamplingParams,
    num_resumed: int,
    images: Sequence[ImageEmbedding] | None,
) -> list[ImageSpan]:
    """Raise as Triserve's engine does for a prompt it cannot run; its image spans (`images`
    None: a prefilled prompt, whose images are in its KV already)."""
    vocab, max_model_len = spec.vocab_size, spec.max_model_len
    check_tokens(tokens, params, num_resumed, vocab, max_model_len, block_pool=None)
    if images is None:
        return []
    prompt = tokens[: len(tokens) - num_resumed]
    spans = find_image_spans(prompt, spec.image_token_id, images)
    if any(image.embeddings.ndim != 2 for image in images):
        raise InvalidImageError("image embeddings must be [tokens, hidden]")
    return spans  # vLLM checks the hidden size
