"""The images an `ImageInput` carries: decoding their bytes, and their content hash.

One definition for every process that handles them: the ingress validates and hashes each image,
the scheduler matches hashes for cache affinity, and the worker decodes the bytes and checks that
the engine's hash of the pixels is the one the job names.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, UnidentifiedImageError

from workers.contract.errors import InvalidImageError, LimitExceededError

MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs early (the ingress sets a lower one)


def decode_image(
    data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, limit_name: str = "the image pixel limit"
) -> Image.Image:
    """Decode PNG/JPEG/... bytes, or raise InvalidImageError. An image of more than `max_pixels`
    (width x height, read from its header, before decoding) raises LimitExceededError."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise LimitExceededError(
                f"image of {image.width:,}x{image.height:,} has {pixels:,} pixels; "
                f"the limit is {limit_name} = {max_pixels:,}"
            )
        image.load()
    except LimitExceededError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(
            "cannot decode image: not a PNG, JPEG or other known format"
        ) from None
    except Image.DecompressionBombError:
        # PIL's own bomb guard fired first: the header names far more pixels than any limit.
        raise LimitExceededError(
            f"image has more than {Image.MAX_IMAGE_PIXELS:,} pixels; "
            f"the limit is {limit_name} = {max_pixels:,}"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise InvalidImageError(f"cannot decode image: {e}") from None
    return image


def image_hash(image: Image.Image) -> str:
    """Content hash of the decoded pixels: the key of embedding caches and prefix blocks."""
    digest = hashlib.blake2b(f"{image.mode}:{image.width}x{image.height}:".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.hexdigest()
