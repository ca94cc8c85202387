"""Raw prompt text + images -> token ids with image placeholders, as transformers'
`LlavaProcessor` builds them: each `<image>` in the text is expanded to one placeholder token per
image embedding row, then the whole text is tokenised with the tokenizer's special tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from workers.contract.errors import InvalidImageError, InvalidRequestError
from workers.engine.image_processor import ImageProcessorConfig, preprocess
from workers.engine.model_config import ModelConfig


@dataclass(frozen=True)
class Prompt:
    token_ids: list[int]
    images: list[Image.Image]  # in placeholder order


def load_tokenizer(model_dir: str | Path):
    # Imported when a checkpoint is read, not with this module: transformers loads torch,
    # and the ingress (which imports this module) must not until it loads a model.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


class PromptBuilder:
    def __init__(self, model_dir: str | Path, model_config: ModelConfig, tokenizer=None) -> None:
        self.tokenizer = tokenizer or load_tokenizer(model_dir)
        self.image_config = ImageProcessorConfig.from_pretrained(model_dir)
        path = Path(model_dir) / "processor_config.json"
        processor = json.loads(path.read_text()) if path.exists() else {}
        self.image_token = processor.get("image_token", "<image>")
        self.num_image_tokens = _processor_image_tokens(processor, model_config, self.image_config)
        if self.num_image_tokens != model_config.num_image_tokens:
            raise ValueError(
                f"{model_dir}: the processor expands <image> to {self.num_image_tokens} tokens but "
                f"the model produces {model_config.num_image_tokens} embeddings per image"
            )

    def build(
        self, text: str, images: list[Image.Image], add_special_tokens: bool = True
    ) -> Prompt:
        """`add_special_tokens` False: a continuation of token ids that already start with
        BOS (a session's next turn)."""
        if not text.strip():
            raise InvalidRequestError("the prompt is empty")
        num_slots = text.count(self.image_token)
        if num_slots != len(images):
            raise InvalidImageError(
                f"the prompt has {num_slots} {self.image_token} slots but {len(images)} images"
            )
        expanded = text.replace(self.image_token, self.image_token * self.num_image_tokens)
        token_ids = self.tokenizer(expanded, add_special_tokens=add_special_tokens)["input_ids"]
        return Prompt(token_ids=list(token_ids), images=list(images))

    def holds_images(self, token_ids: list[int], num_images: int) -> bool:
        """Whether `token_ids` hold the placeholders of exactly `num_images` images."""
        placeholder = self.tokenizer.convert_tokens_to_ids(self.image_token)
        return token_ids.count(placeholder) == num_images * self.num_image_tokens

    def pixel_values(self, images: list[Image.Image]) -> np.ndarray:
        """[images, 3, H, W] float32, ready for the vision tower."""
        return np.stack([preprocess(image, self.image_config) for image in images])


def _processor_image_tokens(
    processor: dict, model_config: ModelConfig, image_config: ImageProcessorConfig
) -> int:
    patch = processor.get("patch_size") or model_config.vision.patch_size
    strategy = (
        processor.get("vision_feature_select_strategy")
        or model_config.vision_feature_select_strategy
    )
    height, width = image_config.crop_size
    tokens = (height // patch) * (width // patch) + processor.get("num_additional_image_tokens", 1)
    return tokens - 1 if strategy == "default" else tokens


def eos_token_ids(model_dir: str, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any listed in `generation_config.json` (Llama 3 has several)."""
    ids = {tokenizer.eos_token_id} - {None}
    path = Path(model_dir) / "generation_config.json"
    if path.exists():
        listed = json.loads(path.read_text()).get("eos_token_id")
        ids.update([listed] if isinstance(listed, int) else listed or [])
    return sorted(ids)
