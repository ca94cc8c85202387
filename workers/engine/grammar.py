"""Grammar-constrained decoding: a request whose SamplingParams carry a grammar (tools, JSON
answers; cluster/constraints.py builds it) samples every token from the tokens the grammar
allows next, and stops when the grammar is complete.

A matcher's state is a function of the output tokens alone, so a stage that continues a request
rebuilds it by replaying them: a decode worker replays the first token the prefill worker sampled
under the same mask (and a resumed request its earlier outputs). Colocated and disaggregated runs
therefore mask identically and give the same tokens.

    compiler.matcher(grammar, output_token_ids)   a TokenMatcher at the request's position
    apply_grammar_masks(logits, matchers)          disallowed logits -> -inf, in place
    matcher.accept(token_id)                       after each sampled token
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch

from workers.contract.errors import InvalidRequestError


class GrammarCompiler:
    """Matchers for one engine's tokenizer (llguidance's token tables, built on first use)."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size  # the logits' width (may exceed the tokenizer's)

    @cached_property
    def _lltokenizer(self):
        import llguidance.hf

        return llguidance.hf.from_tokenizer(self._tokenizer, n_vocab=self.vocab_size)

    def matcher(self, grammar: str, output_token_ids: Sequence[int] = ()) -> TokenMatcher:
        """A matcher for `grammar`, advanced past the outputs the request already has."""
        import llguidance

        matcher = TokenMatcher(llguidance.LLMatcher(self._lltokenizer, grammar))
        for token_id in output_token_ids:
            matcher.accept(token_id)
        if matcher.error:
            raise InvalidRequestError(f"the request's grammar is invalid: {matcher.error}")
        return matcher


class TokenMatcher:
    """One request's position in its grammar."""

    def __init__(self, ll_matcher) -> None:
        self._matcher = ll_matcher

    @property
    def error(self) -> str:
        return self._matcher.get_error() if self._matcher.is_error() else ""

    @property
    def is_complete(self) -> bool:
        """The grammar accepts the output and allows nothing more; or it broke (`error`), which
        only a token the mask did not allow can do: the request stops, not the batch."""
        return self._matcher.is_stopped() or self._matcher.is_error()

    def accept(self, token_id: int) -> None:
        """Advance past a sampled token."""
        self._matcher.consume_token(token_id)

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        from llguidance.torch import fill_next_token_bitmask

        fill_next_token_bitmask(self._matcher, bitmask, row)


BIT_POSITIONS = torch.arange(32, dtype=torch.int32)


@torch.inference_mode()  # the logits are inference tensors
def apply_grammar_masks(logits: torch.Tensor, matchers: Sequence[TokenMatcher | None]) -> None:
    """logits [N, vocab]; the rows with a matcher keep only the tokens it allows (the others go
    to -inf), in place.

    llguidance fills one bit per token, 32 tokens to an int32 word:
        bitmask [rows, ceil(vocab / 32)]  ->  allowed [rows, vocab]  (bit t % 32 of word t // 32)
    (unpacked here with plain tensor ops: llguidance's own apply compiles a kernel per process.)
    """
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return
    from llguidance.torch import allocate_token_bitmask

    vocab = logits.shape[-1]
    bitmask = allocate_token_bitmask(len(rows), vocab)
    for i, row in enumerate(rows):
        matchers[row].fill_mask(bitmask, i)
    allowed = ((bitmask.unsqueeze(-1) >> BIT_POSITIONS) & 1).flatten(1)[:, :vocab].bool()
    index = torch.tensor(rows, device=logits.device)
    constrained = logits.index_select(0, index)
    constrained.masked_fill_(~allowed.to(logits.device), float("-inf"))
    logits.index_copy_(0, index, constrained)
