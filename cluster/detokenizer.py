"""Token ids -> text, incrementally, for streaming."""

from __future__ import annotations

from collections.abc import Sequence

INCOMPLETE = "\ufffd"  # what a byte-level tokenizer decodes half a UTF-8 character to


class IncrementalDetokenizer:
    """Turns each step's new tokens into the text they add. Text that ends in half a character
    is held back until the character completes; text from a stop string on is never sent."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.token_ids: list[int] = []
        self.num_sent_chars = 0

    def add(self, token_ids: Sequence[int], is_last: bool) -> str:
        self.token_ids.extend(token_ids)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stop if s in text]
        if cuts:
            text = text[: min(cuts)]
        elif not is_last:
            text = text.rstrip(INCOMPLETE)
            # Hold back a tail that could still become a stop string.
            held = max((len(s) - 1 for s in self.stop), default=0)
            text = text[: max(self.num_sent_chars, len(text) - held)]
        new, self.num_sent_chars = text[self.num_sent_chars :], max(self.num_sent_chars, len(text))
        return new
