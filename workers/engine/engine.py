"""The engine: one model on one device, exposing encode, prefill and decode as separate stages.

    encode(images)                      -> [ImageEmbedding]          (E)
    add_request(tokens, images=...)     -> queued; step() runs it    (P, D or both)
    add_request(..., export_kv=True)    -> step() hands off a PrefillResult after the first token
    add_prefilled(PrefillResult)        -> step() continues decoding from imported KV
    add_request(..., pause=PausePlan)   -> its KV stays pinned when it ends (paused_kv.py)
    add_request(..., resume_from=id)    -> continues a paused request's KV (stages P or D)
    release_paused(id), expire_paused() -> paused KV back to the pool; take_pause_events()
    step()                              -> [StepOutput], one per request that advanced

A colocated engine (stages "EPD") runs the same code with no export or import. Workers drive it
through workers/engine_interface.py, which it implements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from workers.cache_delta import CacheDelta
from workers.contract.block_hash import BlockHash
from workers.contract.engine_config import EngineConfig
from workers.contract.errors import InvalidRequestError
from workers.contract.messages import PausedKV, PausePlan, PauseReleased
from workers.contract.sampling_params import SamplingParams
from workers.engine.batcher import Batcher, BatcherConfig
from workers.engine.block_manager import BlockPool
from workers.engine.dtypes import torch_dtype
from workers.engine.embedding_cache import EmbeddingCache
from workers.engine.engine_report import engine_spec, engine_stats
from workers.engine.grammar import GrammarCompiler
from workers.engine.image_encoder import ImageEncoder
from workers.engine.image_processor import ImageProcessorConfig
from workers.engine.input_processor import InputProcessor
from workers.engine.kv_cache import KVCache
from workers.engine.model_config import ModelConfig
from workers.engine.model_runner import ModelRunner
from workers.engine.prompt import eos_token_ids, load_tokenizer
from workers.engine.request import Request, RequestStatus
from workers.engine.weights import load_model
from workers.engine_messages import EngineStats, ImageEmbedding, PrefillResult, StepOutput


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str | None


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.model_config = ModelConfig.from_pretrained(config.model_dir)
        self.tokenizer = load_tokenizer(config.model_dir)
        self.model = load_model(
            config.model_dir, self.model_config, self.device, torch_dtype(config.dtype),
            has_vision=config.has_encode, has_language=config.has_language_model,
        )  # fmt: skip
        self.embedding_cache = EmbeddingCache(config.embedding_cache_size)
        self.encoder: ImageEncoder | None = None
        if config.has_encode:
            image_config = ImageProcessorConfig.from_pretrained(config.model_dir)
            self.encoder = ImageEncoder(self.model, image_config, self.embedding_cache, self.device)
        text = self.model_config.text
        self.max_model_len = min(config.max_model_len or 10**9, text.max_position_embeddings)
        self.batcher: Batcher | None = None
        if config.has_language_model:
            self._init_language_stages()
        self.spec = engine_spec(self.model_config, self.max_model_len, self.batcher)

    def _init_language_stages(self) -> None:
        text, cfg = self.model_config.text, self.config
        per_block = KVCache.bytes_per_block(
            text.num_hidden_layers, cfg.block_size, text.num_key_value_heads, text.head_dim,
            torch_dtype(cfg.dtype),
        )  # fmt: skip
        num_blocks = cfg.num_kv_blocks or max(1, cfg.kv_cache_memory_bytes // per_block)
        self.kv_cache = KVCache(
            text.num_hidden_layers, num_blocks, cfg.block_size, text.num_key_value_heads,
            text.head_dim, torch_dtype(cfg.dtype), self.device,
        )  # fmt: skip
        self.block_pool = BlockPool(num_blocks, cfg.block_size)
        self.batcher = Batcher(
            BatcherConfig(
                max_num_seqs=cfg.max_num_seqs,
                max_num_batched_tokens=cfg.max_num_batched_tokens,
                max_model_len=self.max_model_len,
                enable_prefix_caching=cfg.enable_prefix_caching,
            ),
            self.block_pool,
            eos_token_ids=eos_token_ids(self.config.model_dir, self.tokenizer),
            detokenize=self.detokenize,
        )
        self.runner = ModelRunner(self.model, self.kv_cache, self.device)
        self.grammars = GrammarCompiler(self.tokenizer, text.vocab_size)
        self.inputs = InputProcessor(
            self.model_config, self.max_model_len, self.block_pool, self.grammars,
            self.batcher.eos_token_ids, self.detokenize,
        )  # fmt: skip
        self._requests: dict[str, Request] = {}
        self._pending_outputs: list[StepOutput] = []

    # ----------------------------------------------------------------- encode stage
    def encode(self, images: Sequence[Image.Image]) -> list[ImageEmbedding]:
        """Images -> embeddings [image_tokens, hidden] each, served from the LRU cache when seen."""
        if self.encoder is None:
            raise RuntimeError(f"this engine runs {self.config.stages}, not encode")
        return self.encoder.encode(images)

    # ----------------------------------------------------------------- prefill / decode stages
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        sampling_params: SamplingParams | None = None,
        images: Sequence[ImageEmbedding] = (),
        export_kv: bool = False,
        priority: float = 0.0,
        num_resumed_tokens: int = 0,
        pause: PausePlan | None = None,
        resume_from: str | None = None,
    ) -> None:
        """Queue a prompt (with image placeholders) for prefill, then decode here unless
        `export_kv`, in which case it leaves with a PrefillResult after its first token.
        `priority`: lower prompts get the step's token budget first (see batcher.py).
        `num_resumed_tokens`: the last ones of `prompt_token_ids` are outputs an earlier attempt
        produced; generation resumes after them (request.py). `pause`: keep its KV pinned when
        it ends; `resume_from`: start from the KV paused request `resume_from` left here, a
        decode engine included (paused_kv.py)."""
        stages = ("P", "D") if resume_from is not None else ("P",)  # runs where its KV is
        self._require(*stages)
        if not export_kv and "D" not in self.config.stages:
            raise InvalidRequestError("a prefill-only engine must export the KV (export_kv=True)")
        if pause is not None and export_kv:
            raise InvalidRequestError("an exported request ends elsewhere: pause it there")
        self._check_new(request_id)
        request = self.inputs.new_request(
            request_id, prompt_token_ids, sampling_params, images, export_kv=export_kv,
            priority=priority, num_resumed_tokens=num_resumed_tokens, pause=pause,
            resume_from=resume_from,
        )  # fmt: skip
        self._enqueue(request)

    def add_prefilled(
        self,
        prefill: PrefillResult,
        sampling_params: SamplingParams,
        pause: PausePlan | None = None,
    ) -> None:
        """Continue a request whose prompt was prefilled elsewhere, from its exported KV;
        `pause`: keep its KV pinned when it ends."""
        self._require("D")
        self._check_new(prefill.request_id)
        self._enqueue(self.inputs.prefilled(prefill, sampling_params, pause))

    def step(self) -> list[StepOutput]:
        """Run one batch: every running request advances; new ones join, finished ones leave."""
        self._require("P", "D")
        outputs, self._pending_outputs = self._pending_outputs, []
        plan = self.batcher.schedule()
        for req in plan.kv_imports:
            self.kv_cache.load(req.block_table, req.prompt_kv)
        sampled = self.runner.run(plan)
        for event in self.batcher.postprocess(plan, sampled):
            req = event.request
            prefill = None
            if req.status is RequestStatus.HANDED_OFF:
                prefill = PrefillResult(
                    request_id=req.request_id,
                    prompt_token_ids=req.token_ids[: req.num_prefilled_tokens],
                    first_token_id=event.token_id,
                    kv=self.kv_cache.export(req.block_table, req.num_prefilled_tokens),
                    image_spans=req.image_spans,
                    num_resumed_tokens=len(req.resumed_token_ids),
                )
            if req.is_done:
                self.batcher.release(req)
                del self._requests[req.request_id]
            outputs.append(
                StepOutput(
                    request_id=req.request_id,
                    new_token_ids=[event.token_id],
                    finish_reason=event.finish_reason,
                    prefill=prefill,
                )
            )
        return outputs

    def run_to_completion(self) -> dict[str, Completion]:
        """Step until every request is done (for local use and tests; workers call `step`)."""
        results: dict[str, Completion] = {}
        while self.has_unfinished_requests():
            for out in self.step():
                done = results.setdefault(
                    out.request_id, Completion(token_ids=[], finish_reason=None)
                )
                done.token_ids.extend(out.new_token_ids)
                done.finish_reason = out.finish_reason
        return results

    def abort(self, request_id: str) -> bool:
        """Cancel a request and free its blocks; True if it was here."""
        if self.batcher is None or self.batcher.abort(request_id) is None:
            return False
        del self._requests[request_id]
        abort = StepOutput(request_id=request_id, new_token_ids=[], finish_reason="abort")
        self._pending_outputs.append(abort)
        return True

    def release_paused(self, request_id: str) -> bool:
        """Free a paused request's KV; True if it was here."""
        return bool(self.batcher) and self.batcher.paused.release(request_id, "released")

    def expire_paused(self) -> int:
        """Release paused KV past its deadline (`step` does it too); returns how many."""
        return self.batcher.paused.expire() if self.batcher else 0

    def take_pause_events(self) -> tuple[list[PausedKV], list[PauseReleased]]:
        """Requests paused, and paused KV released, since the last take: each once."""
        return self.batcher.paused.take_events() if self.batcher else ([], [])

    def get_request(self, request_id: str) -> Request | None:
        """The live request while it is in this engine (read it, do not change it)."""
        return self._requests.get(request_id) if self.batcher else None

    def has_unfinished_requests(self) -> bool:
        return bool(self.batcher and (self.batcher.has_unfinished() or self._pending_outputs))

    def set_token_budget(self, num_tokens: int) -> None:
        """Prompt and decode tokens per step from now on: a budget the worker measured (the
        config, frozen, keeps `max_num_batched_tokens` as the ceiling)."""
        self._require("P", "D")
        self.batcher.set_token_budget(num_tokens)

    def reset_caches(self) -> None:
        """Back to as loaded, once idle: no paused KV (each reported released), no prefix-cache
        blocks, no cached embeddings, counters at 0 (after profiling). KV values of freed
        blocks stay; nothing reads them unwritten."""
        if self.has_unfinished_requests():
            raise RuntimeError("requests are still running; reset the caches once idle")
        self.embedding_cache.clear()
        if self.batcher:
            self.batcher.paused.release_all("released")
            self.block_pool.reset()
            self.batcher.reset_counters()

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def stats(self) -> EngineStats:
        return engine_stats(self.batcher, self.embedding_cache)

    # ----------------------------------------------------------------- caches
    def cached_embedding(self, image_hash: str) -> ImageEmbedding | None:
        return self.embedding_cache.get(image_hash)

    def cache_embedding(self, embedding: ImageEmbedding) -> None:
        self.embedding_cache.put(embedding)

    def embedding_cache_keys(self) -> list[str]:
        return self.embedding_cache.keys()

    def prefix_cache_hashes(self) -> list[BlockHash]:
        return self.block_pool.cached_hashes() if self.batcher else []

    def take_embedding_cache_delta(self) -> CacheDelta[str]:
        return self.embedding_cache.cache_delta.take()

    def take_prefix_cache_delta(self) -> CacheDelta[BlockHash]:
        return self.block_pool.cache_delta.take() if self.batcher else CacheDelta()

    # ----------------------------------------------------------------- validation
    def _require(self, *stages: str) -> None:
        if not any(s in self.config.stages for s in stages):
            raise RuntimeError(f"this engine runs {self.config.stages}, not {'/'.join(stages)}")

    def _check_new(self, request_id: str) -> None:
        if request_id in self._requests:
            raise InvalidRequestError(f"request id {request_id!r} is already running")

    def _enqueue(self, request: Request) -> None:
        self._requests[request.request_id] = request
        self.batcher.add(request)
