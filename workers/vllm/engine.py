"""VllmEngine: vLLM's engine, in-process, behind workers/engine_interface.py, so that a pool with
`engine: vllm` runs under Triserve's workers, scheduler, handoffs and APIs unchanged.

    encode(images)              Triserve's encoder (workers/engine/): vLLM takes the embeddings
    add_request(...)            vLLM request: prompt with one placeholder per image, embeddings
                                as multi_modal_data; export_kv: max_tokens 1, and the connector
                                (kv_connector.py) copies the prompt's KV out in that step
    add_prefilled(prefill)      vLLM request of prompt + first token, whose KV the connector
                                writes into its blocks; vLLM computes the first token only
    step()                      vLLM's step, its outputs as StepOutputs (new tokens only)

What depends on the backend (README "The vLLM engine backend"): sessions' paused KV is not
pinned here (a continuation reuses vLLM's prefix cache, or prefills again, with the same
tokens); seeded sampling reproduces within vLLM but does not match Triserve's engine, nor itself
across a P/D split (vLLM seeds each engine's generator afresh); preemptions are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from vllm.exceptions import VLLMClientError

from workers.cache_delta import CacheDelta
from workers.contract.block_hash import BlockHash
from workers.contract.engine_config import EngineConfig
from workers.contract.errors import InvalidRequestError
from workers.contract.messages import PausedKV, PausePlan, PauseReleased
from workers.contract.sampling_params import SamplingParams
from workers.engine_messages import (
    EngineStats,
    ImageEmbedding,
    PrefillResult,
    PromptKV,
    StepOutput,
)
from workers.vllm.kv_connector import EXPORT_KEY, IMPORT_KEY, KV_EXCHANGE, SENT_KEY
from workers.vllm.requests import (
    VllmRequest,
    cache_salt,
    collapsed_prompt,
    image_data,
    vllm_sampling,
)
from workers.vllm.vllm_setup import VllmParts, check_prompt, start_vllm


class VllmEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        parts: VllmParts = start_vllm(config)
        self.llm, self.scheduler, self.spec = parts.llm, parts.scheduler, parts.spec
        self.encoder, self.embedding_cache = parts.encoder, parts.embedding_cache
        self.hashes, self.eos_token_ids = parts.prefix_hashes, parts.eos_token_ids
        self._requests: dict[str, VllmRequest] = {}
        self._pending: list[StepOutput] = []  # aborts, out with the next step
        self._num_prompt_tokens = self._num_cached_tokens = 0

    # ----------------------------------------------------------------- encode stage
    def encode(self, images: Sequence[Image.Image]) -> list[ImageEmbedding]:
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
        """As Triserve's engine's; `pause` and `resume_from` are accepted and change nothing
        here (vLLM's prefix cache serves a continuation), `priority` is not used."""
        self._require("P")
        if not export_kv and "D" not in self.config.stages:
            raise InvalidRequestError("a prefill-only engine must export the KV (export_kv=True)")
        if export_kv:
            self._require_handoff()
        params = (sampling_params or SamplingParams()).with_seed()
        tokens = list(prompt_token_ids)
        spans = check_prompt(self.spec, tokens, params, num_resumed_tokens, images)
        transfer = {EXPORT_KEY: request_id} if export_kv else {}
        if num_resumed_tokens and params.grammar:
            transfer[SENT_KEY] = tokens[len(tokens) - num_resumed_tokens :]
        prompt = {"prompt_token_ids": collapsed_prompt(tokens, spans)}
        if images:
            prompt["multi_modal_data"] = image_data(images)
        max_tokens = 1 if export_kv else params.max_tokens - num_resumed_tokens
        request = VllmRequest(
            request_id, "", tokens, spans, params, self.scheduler, export_kv, num_resumed_tokens
        )
        self._add(request, prompt, vllm_sampling(params, max_tokens, transfer or None))

    def add_prefilled(
        self,
        prefill: PrefillResult,
        sampling_params: SamplingParams,
        pause: PausePlan | None = None,
    ) -> None:
        """Decode on from KV prefilled elsewhere (by vLLM or Triserve's engine: same layout)."""
        self._require("D")
        self._require_handoff()
        self._check_new(prefill.request_id)  # before its KV goes where the connector finds it
        params = sampling_params.with_seed()
        tokens = [*prefill.prompt_token_ids, prefill.first_token_id]
        check_prompt(self.spec, tokens[:-1], params, prefill.num_resumed_tokens, None)
        if prefill.kv.num_tokens != len(tokens) - 1 or prefill.kv.kv.shape[0] != (
            self.spec.kv_layout.num_layers
        ):
            raise InvalidRequestError(f"KV of shape {prefill.kv.kv.shape} does not fit the prompt")
        num_sent = prefill.num_resumed_tokens + 1  # outputs before this engine's first
        if params.max_tokens <= num_sent:
            raise InvalidRequestError("request already finished at its first token (length)")
        transfer = {IMPORT_KEY: prefill.request_id}
        if params.grammar:
            transfer[SENT_KEY] = tokens[len(tokens) - num_sent :]
        prompt = {"prompt_token_ids": tokens}
        if (salt := cache_salt(prefill.image_spans)) is not None:
            prompt["cache_salt"] = salt
        KV_EXCHANGE.imports[prefill.request_id] = prompt_kv_tensor(prefill.kv)
        request = VllmRequest(
            prefill.request_id, "", tokens, list(prefill.image_spans), params, self.scheduler
        )
        max_tokens = params.max_tokens - num_sent
        try:
            self._add(request, prompt, vllm_sampling(params, max_tokens, transfer))
        except BaseException:
            KV_EXCHANGE.imports.pop(prefill.request_id, None)
            raise

    def _check_new(self, request_id: str) -> None:
        if request_id in self._requests:
            raise InvalidRequestError(f"request id {request_id!r} is already running")

    def _add(self, request: VllmRequest, prompt: dict, params) -> None:
        self._check_new(request.request_id)
        try:
            request.internal_id = self.llm.add_request(request.request_id, prompt, params)
        except (ValueError, TypeError, VLLMClientError) as e:  # not an engine failure
            raise InvalidRequestError(f"vLLM refused the request: {e}") from e
        self._requests[request.request_id] = request
        self._num_prompt_tokens += len(request.prompt_token_ids)
        live = self.scheduler.requests.get(request.internal_id)
        if live is not None:
            self.hashes.map_request(request, live)

    def step(self) -> list[StepOutput]:
        self._require("P", "D")
        outputs, self._pending = self._pending, []
        for out in self.llm.step():
            request = self._requests.get(out.request_id)
            if request is None:  # aborted: its "abort" output went out already
                continue
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            request.num_output_tokens += len(tokens)
            if out.num_cached_tokens and not request.num_cached_tokens:
                request.num_cached_tokens = out.num_cached_tokens
                self._num_cached_tokens += out.num_cached_tokens
            finish = completion.finish_reason if out.finished else None
            if finish == "stop" and request.sampling_params.grammar and tokens:
                tokens = self._without_grammar_eos(tokens)
            prefill = None
            if request.export_kv and tokens:
                finish = self._export_finish(request, finish)
                prefill = self._prefill_result(request, tokens[0])
            if out.finished:
                self._forget(request.request_id)
            if tokens or finish:
                outputs.append(StepOutput(out.request_id, tokens, finish, prefill))
        for request in self._requests.values():
            live = self.scheduler.requests.get(request.internal_id)
            if live is not None:
                self.hashes.map_request(request, live)
        self.hashes.apply_events()
        return outputs

    def _without_grammar_eos(self, tokens: list[int]) -> list[int]:
        """vLLM ends a completed grammar by sampling EOS, Triserve's engine by stopping: the
        answer is the same without that EOS."""
        return tokens[:-1] if tokens[-1] in self.eos_token_ids else tokens

    def _export_finish(self, request: VllmRequest, finish: str | None) -> str | None:
        """An export ran with max_tokens 1, so vLLM says "length": the request's own reason."""
        if finish == "stop":
            return "stop"
        return "length" if request.sampling_params.max_tokens == 1 else None

    def _prefill_result(self, request: VllmRequest, first_token_id: int) -> PrefillResult:
        kv = KV_EXCHANGE.exports.pop(request.request_id)
        return PrefillResult(
            request_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            first_token_id=first_token_id,
            kv=PromptKV(kv=kv, dtype=self.config.dtype),
            image_spans=request.image_spans,
            num_resumed_tokens=request.num_resumed_tokens,
        )

    def _forget(self, request_id: str) -> None:
        self._requests.pop(request_id, None)
        KV_EXCHANGE.imports.pop(request_id, None)
        KV_EXCHANGE.exports.pop(request_id, None)

    def abort(self, request_id: str) -> bool:
        if request_id not in self._requests:
            return False
        self.llm.abort_request([request_id])
        self._forget(request_id)
        self._pending.append(StepOutput(request_id, [], "abort"))
        return True

    # ----------------------------------------------------------------- sessions (not pinned)
    def release_paused(self, request_id: str) -> bool:
        return False

    def expire_paused(self) -> int:
        return 0

    def take_pause_events(self) -> tuple[list[PausedKV], list[PauseReleased]]:
        return [], []

    # ----------------------------------------------------------------- state
    def has_unfinished_requests(self) -> bool:
        return bool(self._pending) or self.llm.has_unfinished_requests()

    def get_request(self, request_id: str) -> VllmRequest | None:
        return self._requests.get(request_id)

    def set_token_budget(self, num_tokens: int) -> None:
        self._require("P", "D")
        self.scheduler.max_num_scheduled_tokens = max(1, num_tokens)

    def reset_caches(self) -> None:
        if self.has_unfinished_requests():
            raise RuntimeError("requests are still running; reset the caches once idle")
        self.embedding_cache.clear()
        self.llm.reset_prefix_cache()
        self.hashes.clear()
        self._num_prompt_tokens = self._num_cached_tokens = 0

    def stats(self) -> EngineStats:
        pool = self.scheduler.kv_cache_manager.block_pool
        num_free = pool.get_num_free_blocks()
        hit_rate = self._num_cached_tokens / max(1, self._num_prompt_tokens)
        num_cached, cache = len(self.hashes), self.embedding_cache
        return EngineStats(
            num_waiting=len(self.scheduler.waiting),
            num_running=len(self.scheduler.running),
            num_kv_blocks=pool.num_gpu_blocks,
            num_free_blocks=num_free,
            num_cached_blocks=num_cached,
            num_used_blocks=pool.num_gpu_blocks - num_free,
            prefix_cache_hit_rate=hit_rate,
            embedding_cache_hit_rate=cache.num_hits / max(1, cache.num_queries),
            num_prefix_cache_blocks=num_cached,
            num_embedding_cache_entries=len(self.embedding_cache),
        )

    # ----------------------------------------------------------------- caches
    def cached_embedding(self, image_hash: str) -> ImageEmbedding | None:
        return self.embedding_cache.get(image_hash)

    def cache_embedding(self, embedding: ImageEmbedding) -> None:
        self.embedding_cache.put(embedding)

    def embedding_cache_keys(self) -> list[str]:
        return self.embedding_cache.keys()

    def prefix_cache_hashes(self) -> list[BlockHash]:
        return self.hashes.hashes()

    def take_embedding_cache_delta(self) -> CacheDelta[str]:
        return self.embedding_cache.cache_delta.take()

    def take_prefix_cache_delta(self) -> CacheDelta[BlockHash]:
        return self.hashes.take_delta()

    def _require_handoff(self) -> None:
        if not self.config.device.startswith("cpu"):
            raise InvalidRequestError(
                f"KV handoff on vLLM reads its CPU cache layout only, not {self.config.device}'s"
            )

    def _require(self, *stages: str) -> None:
        if not any(s in self.config.stages for s in stages):
            raise RuntimeError(f"this engine runs {self.config.stages}, not {'/'.join(stages)}")


def prompt_kv_tensor(kv: PromptKV):
    """A PromptKV's array as a torch tensor of its dtype (bfloat16 travels as uint16)."""
    values = torch.from_numpy(np.ascontiguousarray(kv.kv))
    return values.view(torch.bfloat16) if kv.dtype == "bfloat16" else values
