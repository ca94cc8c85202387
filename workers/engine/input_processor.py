"""InputProcessor: what the engine's `add_request` and `add_prefilled` take, turned into a
checked Request: the prompt's token ids (validation.py says what is refused), where its images
sit (image_spans.py), the outputs it resumes after (request.py) and its grammar matcher. Pure
of the engine's state: which stage may take what, and ids already running, the engine checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from workers.contract.errors import InvalidImageError, InvalidRequestError
from workers.contract.messages import PausePlan
from workers.contract.sampling_params import SamplingParams
from workers.engine.block_manager import BlockPool
from workers.engine.grammar import GrammarCompiler
from workers.engine.image_spans import find_image_spans
from workers.engine.model_config import ModelConfig
from workers.engine.request import Request
from workers.engine.validation import check_prompt, split_resumed
from workers.engine_messages import ImageEmbedding, PrefillResult


class InputProcessor:
    def __init__(
        self,
        model_config: ModelConfig,
        max_model_len: int,
        block_pool: BlockPool,
        grammars: GrammarCompiler,
        eos_token_ids: Sequence[int],
        detokenize: Callable[[Sequence[int]], str],
    ) -> None:
        self.model_config = model_config
        self.max_model_len = max_model_len
        self.block_pool = block_pool
        self.grammars = grammars
        self.eos_token_ids = tuple(eos_token_ids)
        self.detokenize = detokenize

    def new_request(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        sampling_params: SamplingParams | None,
        images: Sequence[ImageEmbedding],
        *,
        export_kv: bool,
        priority: float,
        num_resumed_tokens: int,
        pause: PausePlan | None,
        resume_from: str | None,
    ) -> Request:
        """A prompt to prefill (see Engine.add_request)."""
        params = (sampling_params or SamplingParams()).with_seed()
        tokens = list(prompt_token_ids)
        self._check(tokens, params, num_resumed_tokens)
        prompt, resumed = split_resumed(tokens, num_resumed_tokens)
        spans = find_image_spans(prompt, self.model_config.image_token_index, images)
        hidden = self.model_config.text.hidden_size
        if any(i.embeddings.ndim != 2 or i.embeddings.shape[1] != hidden for i in images):
            raise InvalidImageError(f"image embeddings must be [tokens, {hidden}]")
        return Request(
            request_id=request_id,
            prompt_token_ids=prompt,
            sampling_params=params,
            resumed_token_ids=resumed,
            image_spans=spans,
            image_embeddings=np.concatenate([i.embeddings for i in images]) if images else None,
            export_kv=export_kv,
            priority=priority,
            grammar=self._grammar(params, resumed),
            pause=pause,
            resume_from=resume_from,
        )

    def prefilled(
        self, prefill: PrefillResult, sampling_params: SamplingParams, pause: PausePlan | None
    ) -> Request:
        """A request prefilled elsewhere, its first token appended (see Engine.add_prefilled)."""
        tokens = list(prefill.prompt_token_ids)
        params = sampling_params.with_seed()
        self._check(tokens, params, prefill.num_resumed_tokens)
        if prefill.kv.num_tokens != len(tokens):
            raise InvalidRequestError(
                f"KV covers {prefill.kv.num_tokens} tokens, the prompt has {len(tokens)}"
            )
        prompt, resumed = split_resumed(tokens, prefill.num_resumed_tokens)
        request = Request(
            request_id=prefill.request_id,
            prompt_token_ids=prompt,
            sampling_params=params,
            resumed_token_ids=resumed,
            image_spans=list(prefill.image_spans),
            prompt_kv=prefill.kv,
            grammar=self._grammar(params, resumed),
            pause=pause,
        )
        request.append_output(prefill.first_token_id)
        reason = request.check_stop(self.eos_token_ids, self.max_model_len, self.detokenize)
        if reason is not None:
            raise InvalidRequestError(f"request already finished at its first token ({reason})")
        return request

    def _grammar(self, params: SamplingParams, outputs: list[int]):
        """The request's grammar matcher, past `outputs`; None without a grammar."""
        return self.grammars.matcher(params.grammar, outputs) if params.grammar else None

    def _check(self, tokens: list[int], params: SamplingParams, num_resumed: int) -> None:
        vocab = self.model_config.text.vocab_size
        check_prompt(tokens, params, num_resumed, vocab, self.max_model_len, self.block_pool)
