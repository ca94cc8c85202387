"""Synthetic images, drawn with pillow from a numpy generator (same generator state, same bytes).

Every call draws new shapes, colours and noise, so two images are never equal by accident and
embedding caches hit only when the workload reuses an image on purpose. All are PNG bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, 3))


def _scene(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A gradient background with a few filled shapes: a small 'photo'."""
    top, bottom = np.array(_colour(rng)), np.array(_colour(rng))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(8, max(9, width // 2)))
        y1 = y0 + int(rng.integers(8, max(9, height // 2)))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=_colour(rng))
    return image


def photo(rng: np.random.Generator, min_side: int = 192, max_side: int = 384) -> bytes:
    """One small image of random size between `min_side` and `max_side` pixels a side."""
    width, height = (int(s) for s in rng.integers(min_side, max_side + 1, 2))
    return _png(_scene(rng, width, height))


def document(rng: np.random.Generator, width: int = 2400, height: int = 1200) -> bytes:
    """A scanned-page look: white paper, lines of dark glyph strokes grouped into words."""
    image = Image.new("RGB", (width, height), _colour(rng, 235, 256))
    draw = ImageDraw.Draw(image)
    ink = _colour(rng, 0, 60)
    line_height = int(rng.integers(28, 44))
    glyph = line_height // 2
    margin = width // 20
    for y in range(margin, height - margin - line_height, line_height):
        x = margin + int(rng.integers(0, glyph * 4))
        while x < width - margin - glyph * 3:
            for _ in range(int(rng.integers(2, 9))):  # the glyphs of one word
                top = y + int(rng.integers(0, glyph // 2 + 1))
                bottom = y + glyph + int(rng.integers(0, glyph // 2 + 1))
                slant = int(rng.integers(-glyph // 3, glyph // 3 + 1))
                draw.line((x, bottom, x + slant, top), fill=ink, width=3)
                if rng.random() < 0.5:
                    draw.line((x, (top + bottom) // 2, x + glyph // 2, top), fill=ink, width=2)
                x += glyph // 2 + int(rng.integers(2, 6))
            x += glyph
    return _png(image)


def video(rng: np.random.Generator, num_frames: int, side: int = 160) -> list[bytes]:
    """`num_frames` frames of one scene: a disc moves across it and the sensor noise changes,
    so every frame differs from the last."""
    background = np.asarray(_scene(rng, side, side), dtype=np.int16)
    radius = side // 8
    x, y = (int(v) for v in rng.integers(radius, side - radius, 2))
    dx, dy = (int(v) for v in rng.integers(-side // 16, side // 16 + 1, 2))
    disc = _colour(rng)
    frames = []
    for _ in range(num_frames):
        noise = rng.integers(-6, 7, background.shape, dtype=np.int16)
        frame = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
        ImageDraw.Draw(frame).ellipse((x - radius, y - radius, x + radius, y + radius), fill=disc)
        frames.append(_png(frame))
        x = int(np.clip(x + dx, radius, side - radius))
        y = int(np.clip(y + dy, radius, side - radius))
    return frames


def size_of(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, read from its header."""
    with Image.open(io.BytesIO(png)) as image:
        return image.size
