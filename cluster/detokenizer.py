"""Token ids -> text, incrementally, for streaming."""

from __future__ import annotations

from collections.abc import Sequence

INCOMPLETE = "\ufffd"  # what a byte-level tokenizer decodes half a UTF-8 character to


class IncrementalDetokenizer:
    """Turns each step's new tokens into the text they add, in time independent of how long the
    answer already is: only a short window of tokens is decoded per step.

        token_ids: [ ...... | prefix_offset ...... | read_offset ...... ]
                             \\ context, decoded   / \\ new this step    /
                             again for spacing    (appended when complete)

    Text that ends in half a character is held back until the character completes; text from a
    stop string on is never sent, and a tail that could still become one waits."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.token_ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # text of token_ids[:read_offset]
        self.num_sent_chars = 0

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def add(self, token_ids: Sequence[int], is_last: bool) -> str:
        self.token_ids.extend(token_ids)
        context = self._decode(self.token_ids[self.prefix_offset : self.read_offset])
        window = self._decode(self.token_ids[self.prefix_offset :])
        if len(window) > len(context) and (is_last or not window.endswith(INCOMPLETE)):
            self.text += window[len(context) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.token_ids)
        return self._release(is_last)

    def _release(self, is_last: bool) -> str:
        """The text not sent yet, up to a stop string or the held-back tail."""
        longest_stop = max((len(s) for s in self.stop), default=0)
        search_from = max(0, self.num_sent_chars - longest_stop)
        cuts = [i for s in self.stop if (i := self.text.find(s, search_from)) >= 0]
        if cuts:
            end = min(cuts)
        elif is_last:
            end = len(self.text)
        else:
            end = max(self.num_sent_chars, len(self.text) - max(longest_stop - 1, 0))
        new = self.text[self.num_sent_chars : end]
        self.num_sent_chars = max(self.num_sent_chars, end)
        return new
