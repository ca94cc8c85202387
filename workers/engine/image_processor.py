"""CLIP-style image preprocessing with pillow, driven by the checkpoint's
`preprocessor_config.json`: convert to RGB, resize, center-crop, rescale, normalise. (Decoding
an image's bytes and its content hash are the contract's: workers/contract/images.py.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageProcessorConfig:
    shortest_edge: int | None = 224  # resize so the short side has this length...
    resize_to: tuple[int, int] | None = None  # ...or to exactly (height, width)
    crop_size: tuple[int, int] = (224, 224)  # (height, width)
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    resample: int = Image.Resampling.BICUBIC
    do_convert_rgb: bool = True

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> ImageProcessorConfig:
        """Read `preprocessor_config.json`, or the `image_processor` section that
        transformers >= 5 nests in `processor_config.json`."""
        model_dir = Path(model_dir)
        legacy, nested = model_dir / "preprocessor_config.json", model_dir / "processor_config.json"
        if legacy.exists():
            raw = json.loads(legacy.read_text())
        elif nested.exists() and "image_processor" in json.loads(nested.read_text()):
            raw = json.loads(nested.read_text())["image_processor"]
        else:
            raise FileNotFoundError(f"{model_dir} has no image processor config")
        size = raw.get("size", {"shortest_edge": 224})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = raw.get("crop_size", {"height": 224, "width": 224})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        return cls(
            shortest_edge=size.get("shortest_edge"),
            resize_to=(size["height"], size["width"]) if "height" in size else None,
            crop_size=(crop["height"], crop["width"]),
            do_resize=raw.get("do_resize", True),
            do_center_crop=raw.get("do_center_crop", True),
            do_rescale=raw.get("do_rescale", True),
            rescale_factor=raw.get("rescale_factor", 1 / 255),
            do_normalize=raw.get("do_normalize", True),
            image_mean=tuple(raw.get("image_mean", CLIP_MEAN)),
            image_std=tuple(raw.get("image_std", CLIP_STD)),
            resample=raw.get("resample", Image.Resampling.BICUBIC),
            do_convert_rgb=raw.get("do_convert_rgb", True),
        )


def preprocess(image: Image.Image, config: ImageProcessorConfig) -> np.ndarray:
    """One image -> float32 pixel values [3, crop_height, crop_width]."""
    if config.do_convert_rgb and image.mode != "RGB":
        image = image.convert("RGB")
    if config.do_resize:
        image = image.resize(_resized_size(image, config), resample=config.resample)
    pixels = np.asarray(image)
    if config.do_center_crop:
        pixels = _center_crop(pixels, config.crop_size)
    pixels = pixels.transpose(2, 0, 1)  # HWC -> CHW
    if config.do_rescale:
        pixels = (pixels.astype(np.float64) * config.rescale_factor).astype(np.float32)
    if config.do_normalize:
        mean = np.asarray(config.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(config.image_std, dtype=np.float32)[:, None, None]
        pixels = ((pixels - mean) / std).astype(np.float32)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _resized_size(image: Image.Image, config: ImageProcessorConfig) -> tuple[int, int]:
    """(width, height) for PIL, following transformers' shortest-edge rule."""
    if config.resize_to is not None:
        height, width = config.resize_to
        return width, height
    short, long = sorted((image.width, image.height))
    new_short, new_long = config.shortest_edge, int(config.shortest_edge * long / short)
    return (new_short, new_long) if image.width <= image.height else (new_long, new_short)


def _center_crop(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop [H, W, C] to `size`, zero-padding first when the image is smaller."""
    crop_h, crop_w = size
    height, width = pixels.shape[:2]
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), pixels.shape[2]), pixels.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = pixels
        pixels, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = int((height - crop_h) / 2.0), int((width - crop_w) / 2.0)
    return pixels[top : top + crop_h, left : left + crop_w]
