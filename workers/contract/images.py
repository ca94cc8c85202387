"""The images an `ImageInput` carries: decoding their bytes, and their content hash.

One definition for every process that handles them: the ingress validates and hashes each image,
the scheduler matches hashes for cache affinity, and the worker decodes the bytes and checks that
the engine's hash of the pixels is the one the job names.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, UnidentifiedImageError

from workers.contract.errors import InvalidImageError

MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs early


def decode_image(data: bytes) -> Image.Image:
    """Decode PNG/JPEG/... bytes, or raise InvalidImageError."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidImageError(f"image of {image.width}x{image.height} pixels is too large")
        image.load()
    except UnidentifiedImageError:
        raise InvalidImageError(
            "cannot decode image: not a PNG, JPEG or other known format"
        ) from None
    except (OSError, Image.DecompressionBombError, ValueError) as e:
        raise InvalidImageError(f"cannot decode image: {e}") from None
    return image


def image_hash(image: Image.Image) -> str:
    """Content hash of the decoded pixels: the key of embedding caches and prefix blocks."""
    digest = hashlib.blake2b(f"{image.mode}:{image.width}x{image.height}:".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.hexdigest()
