"""The sessions of a run: seeded, so every mode gets sessions of the same shape (the same turn
count, lengths, images and pauses); the words differ per mode, so that no mode finds another's
prompts in the prefix cache.

    session = [turn 1: user text (+ an image), pause, turn 2: user text, pause, ...]

Pauses stand for the user thinking or a tool running between turns: log-normal (heavy-tailed),
capped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.common.words import WORDS


@dataclass(frozen=True)
class SessionShape:
    num_sessions: int = 12
    num_turns: int = 6
    first_turn_words: int = 300  # the opening message: a document, instructions
    turn_words: int = 24  # each later user message
    output_tokens: int = 32  # every answer (EOS ignored)
    image_fraction: float = 0.3  # sessions whose first turn carries an image
    pause_median_s: float = 1.0
    pause_sigma: float = 1.0  # of the log-normal: heavy tail
    pause_max_s: float = 8.0

    @classmethod
    def quick(cls) -> SessionShape:
        return cls(num_sessions=3, num_turns=4, first_turn_words=60, turn_words=8,
                   output_tokens=8, pause_median_s=0.2, pause_max_s=0.5)  # fmt: skip


@dataclass(frozen=True)
class Turn:
    text: str
    image_png: bytes | None  # the first turn's, in some sessions
    pause_before_s: float  # 0 for the first turn


@dataclass(frozen=True)
class Session:
    index: int
    turns: list[Turn]


def sessions(shape: SessionShape, seed: int, words_seed: int) -> list[Session]:
    """The run's sessions: shapes from `seed`, words from `words_seed` (one per mode)."""
    rng = np.random.default_rng(seed)
    words = np.random.default_rng(words_seed)
    out = []
    for index in range(shape.num_sessions):
        has_image = rng.random() < shape.image_fraction
        turns = []
        for t in range(shape.num_turns):
            n = shape.first_turn_words if t == 0 else shape.turn_words
            pause = 0.0 if t == 0 else _pause(rng, shape)
            image = _image(rng) if t == 0 and has_image else None
            turns.append(Turn(" ".join(words.choice(WORDS, size=n)), image, pause))
        out.append(Session(index, turns))
    return out


def _pause(rng: np.random.Generator, shape: SessionShape) -> float:
    drawn = shape.pause_median_s * float(np.exp(rng.normal(0.0, shape.pause_sigma)))
    return min(shape.pause_max_s, drawn)


def _image(rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
