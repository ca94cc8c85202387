"""Turn logits into tokens: greedy, or temperature / top-k / top-p with a per-request seed.

A sampled token's randomness depends only on (seed, output index), not on a generator's running
state, so a request gives the same tokens whether its stages ran in one process or in several.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workers.contract.sampling_params import SamplingParams


def _step_seed(seed: int, output_index: int) -> int:
    return (seed * 1_000_003 + output_index) % (2**63 - 1)


def sample(
    logits: torch.Tensor, params: Sequence[SamplingParams], output_index: Sequence[int]
) -> list[int]:
    """logits [N, vocab] (fp32); one SamplingParams and output position per row."""
    tokens = logits.argmax(dim=-1).tolist()
    for row, p in enumerate(params):
        if not p.is_greedy:
            tokens[row] = _sample_row(logits[row], p, output_index[row])
    return tokens


def _sample_row(logits: torch.Tensor, p: SamplingParams, output_index: int) -> int:
    logits = logits.float().cpu() / p.temperature
    if 0 < p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Drop a token when the tokens above it already reach top_p; the first always stays.
        drop = sorted_probs.cumsum(0) - sorted_probs >= p.top_p
        probs[order[drop]] = 0.0
    generator = torch.Generator().manual_seed(_step_seed(p.seed, output_index))
    return int(torch.multinomial(probs, 1, generator=generator))
