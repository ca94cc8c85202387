"""What the engine refuses at its entry, before a request reaches the batcher: each failure is an
InvalidRequestError (PromptTooLongError when it cannot fit), never a failed engine step.

A resumed request (request.py) arrives as one token list, the prompt followed by the outputs it
resumes after; the checks cover the whole list, and its KV peak counts max_tokens from the
prompt's end:

    tokens:  | prompt ............. | resumed |                    <- len(tokens)
    peak:    | prompt ............. | max_tokens outputs ....... |  <- KV blocks it may need
"""

from __future__ import annotations

from workers.contract.errors import InvalidRequestError, PromptTooLongError
from workers.contract.sampling_params import SamplingParams
from workers.engine.block_manager import BlockPool


def check_prompt(
    tokens: list[int],
    params: SamplingParams,
    num_resumed: int,
    vocab_size: int,
    max_model_len: int,
    block_pool: BlockPool | None,
) -> None:
    """Raise unless `tokens` (the prompt, then `num_resumed` outputs) can run on this engine
    (`block_pool` None: an engine that checks its own KV capacity, vLLM's)."""
    if not tokens:
        raise InvalidRequestError("the prompt is empty")
    if not 0 <= num_resumed < min(len(tokens), params.max_tokens):
        raise InvalidRequestError(
            f"cannot resume after {num_resumed} outputs of {len(tokens)} tokens with "
            f"max_tokens {params.max_tokens}"
        )
    if any(not 0 <= t < vocab_size for t in tokens):
        raise InvalidRequestError(f"prompt token ids must be in [0, {vocab_size})")
    if len(tokens) >= max_model_len:
        raise PromptTooLongError(
            f"prompt of {len(tokens)} tokens does not fit the context of {max_model_len}"
        )
    if block_pool is None:
        return
    peak_tokens = min(len(tokens) - num_resumed + params.max_tokens, max_model_len)
    if block_pool.blocks_needed(peak_tokens) > block_pool.num_blocks:
        raise PromptTooLongError(
            f"prompt plus max_tokens needs {peak_tokens} tokens of KV; this worker holds "
            f"{block_pool.num_blocks * block_pool.block_size}"
        )


def split_resumed(tokens: list[int], num_resumed: int) -> tuple[list[int], list[int]]:
    """(prompt, resumed outputs): the outputs are the last `num_resumed` tokens."""
    cut = len(tokens) - num_resumed
    return tokens[:cut], tokens[cut:]
