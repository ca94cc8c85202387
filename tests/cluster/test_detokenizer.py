"""Streaming text: the pieces add up to the full decode, stop strings never leak."""

from __future__ import annotations

import pytest

from cluster.detokenizer import IncrementalDetokenizer
from workers.engine.prompt import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def stream(tokenizer, token_ids, stop=(), step=3):
    detokenizer = IncrementalDetokenizer(tokenizer, stop)
    pieces = []
    for start in range(0, len(token_ids), step):
        chunk = token_ids[start : start + step]
        pieces.append(detokenizer.add(chunk, is_last=start + step >= len(token_ids)))
    return pieces


def test_streamed_pieces_add_up_to_the_whole_decode(tokenizer):
    text = "Streaming text, with accents: café, naïve — and emoji 🙂 at the end."
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for step in (1, 2, 5):
        pieces = stream(tokenizer, token_ids, step=step)
        assert "".join(pieces) == tokenizer.decode(token_ids)
        assert not any(p.endswith("\ufffd") for p in pieces[:-1])


def test_text_from_a_stop_string_on_is_never_sent(tokenizer):
    token_ids = tokenizer("alpha beta STOP gamma delta", add_special_tokens=False)["input_ids"]
    pieces = stream(tokenizer, token_ids, stop=("STOP",), step=1)
    assert "".join(pieces) == "alpha beta "
